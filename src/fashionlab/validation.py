"""Shared checks of settings: integers and numbers, seeds, counts of threads and processes,
memory, and a TOML table against a config dataclass.

Every message names the setting, the bad value, what is expected and the fix, in one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = [
    "ALL",
    "SEED_LIMIT",
    "is_int",
    "is_number",
    "check_int",
    "check_count",
    "check_seed",
    "check_parallel",
    "parallel_limit",
    "check_memory",
    "available_memory",
    "check_table",
    "nearest",
]

# Field metadata of a count of examples whose None means "all of them": a config file and the
# command line say "all" for it, never 0 (0 is refused everywhere).
ALL: Mapping[str, str] = types.MappingProxyType({"none": "all"})


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``True`` and ``False`` are not, though Python's bool is an
    int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any, *, finite: bool = False) -> bool:
    """Whether ``value`` is an int or a float, not a bool (and, if ``finite``, not nan or inf)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return math.isfinite(value) or not finite


def check_int(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    """Refuse anything but an integer >= ``low`` (or None when ``optional``).

    Raises:
        ConfigError: naming ``name``, the value and the expected range.
    """
    if optional and value is None:
        return
    if not is_int(value) or value < low:
        raise ConfigError(
            f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {value!r}"
        )


# torch.manual_seed and torch.Generator take seeds in [-2**63, 2**64); NumPy's default_rng any
# integer >= 0; the legacy np.random.seed < 2**32 (seed_everything reduces modulo 2**32). Seeds are
# derived by adding small numbers (trial number, run, k-th retrain), so a seed below 2**63 keeps
# every derived one in torch's range.
SEED_LIMIT = 2**63


def check_seed(name: str, value: Any) -> None:
    """Refuse a seed that is not an integer in ``0 .. SEED_LIMIT - 1``.

    Raises:
        ConfigError: naming ``name``, the value and the range.
    """
    if not is_int(value) or not 0 <= value < SEED_LIMIT:
        raise ConfigError(
            f"{name} must be an integer from 0 to 2**63 - 1 = {SEED_LIMIT - 1} (what the random "
            f"generators accept, with room for the seeds derived from it), got {value!r}",
            fix="give a seed in that range, e.g. 0",
        )


def parallel_limit() -> int:
    """The most threads or processes a setting may ask for: the CPUs this process may use (at
    least 2, so that the multi-process paths can run on any machine)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(2, cpus)


def check_parallel(name: str, value: Any, low: int = 1, *, optional: bool = False) -> None:
    """Refuse a count of threads or processes outside ``low .. parallel_limit()``.

    More than the machine's CPUs only slows a run down, and every worker process holds its own
    copy of the data: a thousand of them exhaust the memory before they start.

    Raises:
        ConfigError: naming ``name``, the value and the limit.
    """
    if optional and value is None:
        return
    limit = parallel_limit()
    if not is_int(value) or not low <= value <= limit:
        raise ConfigError(
            f"{name} must be an integer from {low} to {limit} (the CPUs this machine gives "
            f"fashionlab){' or None' if optional else ''}, got {value!r}",
            fix=f"give {low} to {limit} (at most {limit} on this machine)",
        )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(what: str, needed: float, fix: str) -> None:
    """Refuse settings whose arrays need more bytes than the memory available now.

    Raises:
        ConfigError: naming ``what``, the bytes it needs and those available, and ``fix``.
    """
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"{what} would need about {_bytes(needed)} of memory, more than the "
            f"{_bytes(available)} available",
            fix=fix,
        )


def _bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.3g} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_count(name: str, value: Any, low: int = 1, *, option: str | None = None) -> None:
    """A count of examples: None (all of them) or an integer >= ``low``; 0 is not "all".

    ``option`` is the command-line spelling the message gives (default: ``name`` with dashes).

    Raises:
        ConfigError: naming ``name``, the value, and how to ask for all the examples.
    """
    if value is None or (is_int(value) and value >= low):
        return
    option = option or name.replace("_", "-")
    raise ConfigError(
        f"{name} must be an integer >= {low}, or None for all the examples, got {value!r}; "
        f'for all of them say all (--{option} all, or {name} = "all" in a config file)'
    )


def nearest(word: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known`` (difflib), or ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_table(
    where: str, values: Any, cls: type, fixed: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Check a config-file table against the fields of dataclass ``cls``; return it ready to use.

    Unknown keys (with the nearest known one), keys in ``fixed`` (set by the caller; the value
    says why) and values of the wrong type or shape are refused. ``"all"`` becomes None for the
    fields marked :data:`ALL`; a nested dataclass field takes a sub-table, checked the same way.
    Ranges are left to the dataclass itself.

    Args:
        where: the table as the user wrote it, e.g. ``"[tune]"``.
        values: the table's contents.
        cls: the config dataclass the table fills.
        fixed: field names the table may not set, each with the reason.

    Raises:
        ConfigError: one line naming the table, the key, the value and what is expected.
    """
    fixed = dict(fixed or {})
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a table of settings, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in fixed}
    hints = typing.get_type_hints(cls)
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key in fixed:
            raise ConfigError(f"{where} {key} cannot be set here: {fixed[key]}; fix: remove it")
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ConfigError(
                f"{where} has no setting {key!r}{nearest(key, fields)} (settings: {known})"
            )
        hint = hints[key]
        if value == "all" and fields[key].metadata.get("none") == "all":
            value = None
        elif dataclasses.is_dataclass(_dataclass_arm(hint)) and isinstance(value, Mapping):
            value = check_table(f"{where[:-1]}.{key}]", value, _dataclass_arm(hint))
        elif not _matches(value, hint):
            expected = _describe(hint) + (
                ' or "all"' if fields[key].metadata.get("none") == "all" else ""
            )
            raise ConfigError(
                f"{where} {key} = {_toml(value)} is not {expected}; fix: "
                f"{_example(key, value, hint)}"
            )
        checked[key] = value
    return checked


def _arms(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _dataclass_arm(hint: Any) -> Any:
    return next((arm for arm in _arms(hint) if dataclasses.is_dataclass(arm)), None)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a type hint (the hints our config dataclasses use)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(
            _matches(v, a) for v, a in zip(value, args, strict=True)
        )
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (Mapping, hint))
    if hint is Callable or origin is Callable:
        return callable(value)
    return True  # a hint these checks do not know: the dataclass decides


_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        # TOML has no null: None is what leaving the key out gives, so it is not offered here.
        return " or ".join(_describe(arm) for arm in args if arm is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(_toml(arg) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURAL.get(args[0], 'values')}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
        return f"a list of {len(args)} values"
    if dataclasses.is_dataclass(hint):
        return f"a table of {hint.__name__} settings"
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        return "a table"
    if hint is Callable or origin is Callable:
        return "a callable"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, str(hint)
    )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _example(key: str, value: Any, hint: Any) -> str:
    """What to write instead: a one-element list for a bare list item, else the expected type."""
    for arm in _arms(hint):
        args = typing.get_args(arm)
        if (
            typing.get_origin(arm) is tuple
            and len(args) == 2
            and args[1] is Ellipsis
            and _matches(value, args[0])
        ):
            return f"{key} = [{_toml(value)}]"
    return f"give {key} as {_describe(hint)}, or leave it out for the default"
