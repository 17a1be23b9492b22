"""Lazy re-exports for package faces: a name is imported from its submodule on first use.

``import fashionlab`` (or one of its experiment packages) then costs nothing until a name is
used, so ``fashionlab --help`` does not import torch. Only submodules of the package itself are
named, so no import runs back up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, modules: dict[str, tuple[str, ...]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` exporting ``modules``' names.

    Args:
        package: the package's ``__name__``.
        modules: submodule (relative, dotted) -> the public names it defines.
    """
    table = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(table)

    return list(table), __getattr__, __dir__
