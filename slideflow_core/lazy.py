"""Lazy public names for stage packages whose implementations import torch or timm."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], *, preload: Iterable[str] = ()
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each public name from its module on first use.

    Stage packages expose their API at the top level, but ``sfc`` imports every
    stage's ``cli`` module to build its parser; importing torch and timm there
    would cost seconds on every command.

    Parameters
    ----------
    package
        The package's ``__name__`` (for error messages and the cache).
    exports
        Public name -> module that defines it.
    preload
        Modules imported before the first name is resolved (ones that register
        registry entries as a side effect).
    """
    preload = tuple(preload)

    def resolve(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        for dependency in preload:
            importlib.import_module(dependency)
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return resolve
