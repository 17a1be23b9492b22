"""The one place an entry point (the CLI, a stage or tuning worker process) sets up logging."""

from __future__ import annotations

import logging
import sys

from .redaction import RedactingFilter

# Third-party chatter: Optuna logs every trial itself; SQLAlchemy logs a cursor it cannot close
# after an interrupt cut a query short (with a traceback): the interrupt is reported by us, and any
# database error that matters reaches us as an exception.
_QUIET = {"optuna": logging.WARNING, "matplotlib": logging.WARNING, "sqlalchemy": logging.CRITICAL}


def configure_logging(level: int, fmt: str, *, force: bool = False) -> None:
    """Log to stderr at ``level`` in ``fmt``, with storage passwords hidden in every line."""
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=force)
    for handler in logging.getLogger().handlers:  # no password of a storage URL in a log line
        handler.addFilter(RedactingFilter())
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(quiet)
