"""Secrets kept out of everything printed and saved: the one home of password redaction.

A storage URL may carry a password in two places: its user info (``postgresql://user:pw@host/db``)
and its query (``?password=pw``, ``?sslpassword=pw``). Both are hidden as ``***`` wherever a URL
is printed, logged or written (run.json, stage.json, best.json, trials.json, the lock file, the
report, error lines), and in a command line before it is recorded. Secret query keys are libpq's
connection parameters that hold a secret (``password``, ``sslpassword``,
``oauth_client_secret``) and any key ending in ``password``, ``passwd``, ``pwd`` or ``secret``;
``passfile`` and ``sslkey`` name files and stay.

A user info password is hidden as SQLAlchemy parses it (from the first ``:`` after the user name
to the next ``@``), and, should it hold an unescaped ``@``, further up to the last ``@`` that no
``/`` or ``?`` separates from it (a host holds neither): too much is hidden rather than too little.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MASK",
    "RedactingFilter",
    "is_secret_key",
    "redact_command",
    "redact_text",
    "redact_tree",
    "redact_url",
]

MASK = "***"

_SECRET_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword", "oauth_client_secret"})
_SECRET_ENDINGS = ("password", "passwd", "pwd", "secret")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://\S+")
# ``key=value`` outside a URL, as in a libpq connection string (``host=h password='a b'``).
_PAIR = re.compile(r"(?<![\w%.\-])([\w%.\-]+)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;]+)")


def is_secret_key(key: str) -> bool:
    """Whether the connection parameter ``key`` holds a secret (case and %-escapes ignored)."""
    name = unquote(key).strip().lower()
    return name in _SECRET_KEYS or name.endswith(_SECRET_ENDINGS)


def redact_url(url: str) -> str:
    """``url`` with its user-info password and secret query values hidden as ``***``.

    Everything else is kept as given (a file path is not re-escaped); a URL without a secret
    comes back unchanged. Text that is not a URL has its ``key=value`` secrets hidden.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return _redact_pairs(url)
    head, rest = url[: scheme.end()], url[scheme.end() :]
    user = re.match(r"[^:/]*:", rest)  # SQLAlchemy: the user name runs to ':' or '/'
    host_from = 0
    if user is not None and "@" in rest[user.end() :]:
        end = rest.index("@", user.end())
        while True:  # an '@' that no '/' or '?' separates from this one: still the password
            following = rest.find("@", end + 1)
            if following < 0 or any(c in rest[end + 1 : following] for c in "/?"):
                break
            end = following
        rest = rest[: user.end()] + MASK + rest[end:]
        host_from = user.end() + len(MASK) + 1
    query = rest.find("?", host_from)
    if query >= 0:
        rest = rest[: query + 1] + _redact_query(rest[query + 1 :])
    return head + rest


def _redact_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        key, equals, _ = part.partition("=")
        parts.append(f"{key}={MASK}" if equals and is_secret_key(key) else part)
    return "&".join(parts)


def _redact_pairs(text: str) -> str:
    def hide(match: re.Match[str]) -> str:
        key, equals, _ = match.groups()
        return f"{key}{equals}{MASK}" if is_secret_key(key) else match.group(0)

    return _PAIR.sub(hide, text)


def redact_text(text: str) -> str:
    """Free text (an error line, a log line, a command) with every secret in it hidden: the URLs
    in it as :func:`redact_url` does, and ``password=...`` pairs outside URLs."""
    pieces, last = [], 0
    for match in _URL.finditer(text):
        url, start = match.group(0), match.start()
        # A quoted URL ('...' or "..."): its closing quote stays outside, shown.
        quote = text[start - 1] if start > 0 and text[start - 1] in "'\"" else ""
        closing = quote if quote and url.endswith(quote) else ""
        pieces.append(_redact_pairs(text[last:start]))
        pieces.append(redact_url(url[: len(url) - len(closing)]) + closing)
        last = match.end()
    pieces.append(_redact_pairs(text[last:]))
    return "".join(pieces)


def redact_command(argv: Sequence[str]) -> str:
    """A command line (``sys.argv``) as one string, every argument through :func:`redact_text`
    (a URL on its own, ``--storage=URL``, a ``password=...`` connection string)."""
    return " ".join(redact_text(str(arg)) for arg in argv)


def redact_tree(obj: Any) -> Any:
    """A JSON-like value (dicts, lists, tuples) with every string in it through
    :func:`redact_text`; keys are kept, other values come back as they are."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {key: redact_tree(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_tree(value) for value in obj)
    return obj


class RedactingFilter(logging.Filter):
    """A handler filter that hides secrets in every record's message (see :func:`redact_text`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = redact_text(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True
