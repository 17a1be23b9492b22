"""The one conversion of a frozen config dataclass to and from its canonical dict.

Every config dataclass of a stage (``HeInitConfig``, ``TuneConfig``, ``ClassifierConfig``,
``LandscapeConfig``, ``AutoencoderConfig``, ``ReportConfig``, ``TrainConfig``) inherits
:class:`Canonical`. ``to_dict`` gives plain JSON values (nested configs as dicts, tuples as
lists): what run.json and stage.json record and what a stage's cache key hashes.
``from_dict`` is its inverse, and also builds a config from a config-file table or from presets
that mix plain and typed values: a nested config may be given as a dict, a tuple as a list.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import ConfigError
from .validation import nearest

__all__ = ["Canonical"]

C = TypeVar("C", bound="Canonical")


class Canonical:
    """Mixin of a frozen config dataclass: ``to_dict`` and its inverse ``from_dict``.

    Invariant: ``cls.from_dict(config.to_dict()) == config`` for every field value that JSON can
    hold; a callable (the landscape's model given as a function) is recorded by its name only.
    """

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values: nested configs as dicts, tuples as lists."""
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return {f.name: _plain(getattr(self, f.name)) for f in fields}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """The config whose fields ``data`` gives (the rest at their defaults).

        A field typed as a nested config takes a dict (or the config itself), a tuple field a
        list; everything else is passed on as it is, and the dataclass checks it.

        Raises:
            ConfigError: a key that is no field of ``cls`` (naming the nearest one), or a value
                the dataclass refuses.
        """
        fields = _init_fields(cls)
        for key in data:
            if key not in fields:
                raise ConfigError(
                    f"{cls.__name__} has no setting {key!r}{nearest(key, fields)} "
                    f"(settings: {', '.join(fields)})"
                )
        return cls(**{key: _typed(value, fields[key]) for key, value in data.items()})


@functools.cache
def _init_fields(cls: type) -> dict[str, Any]:
    """Field name -> type hint of ``cls``'s fields that ``__init__`` takes."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _plain(value: Any) -> Any:
    if isinstance(value, Canonical):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return getattr(value, "__qualname__", repr(value))  # a callable: named, not kept


def _typed(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` wants it: a dict as the nested config, a list as a tuple."""
    arms = typing.get_args(hint) if _is_union(hint) else (hint,)
    for arm in arms:
        if isinstance(arm, type) and issubclass(arm, Canonical) and isinstance(value, Mapping):
            return arm.from_dict(value)
        if typing.get_origin(arm) is tuple and isinstance(value, list):
            args = typing.get_args(arm)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_typed(item, args[0]) for item in value)
            if len(args) == len(value):
                return tuple(_typed(item, a) for item, a in zip(value, args, strict=True))
            return tuple(value)  # the wrong length: the dataclass says so
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
