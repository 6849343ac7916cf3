"""A small registry: choose things by name, with their metadata kept as data.

Readers, tissue detectors, stain normalisers, embedders, MIL heads and segmenters
all register through :class:`Registry`, so every user-facing choice can be listed
(``list_entries``) together with the reason an entry is unavailable.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from slideflow_core.errors import RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its metadata.

    Attributes
    ----------
    name
        The name users pass.
    obj
        The registered class or factory.
    meta
        Free-form metadata (description, formats, output size, licence...).
    check
        Optional callable returning ``None`` when the entry is usable here, or
        a string saying why not (a missing optional dependency, for example).
    """

    name: str
    obj: T
    meta: dict[str, Any] = field(default_factory=dict)
    check: Callable[[], str | None] | None = None

    def unavailable_reason(self) -> str | None:
        """Why this entry cannot be used on this machine, or ``None``."""
        return self.check() if self.check is not None else None


class Registry(Generic[T]):
    """Name → object mapping filled by a decorator.

    Parameters
    ----------
    kind
        What the registry holds, used in messages ("slide reader", "embedder").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        *,
        check: Callable[[], str | None] | None = None,
        **meta: Any,
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with metadata ``meta``."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name=name, obj=obj, meta=dict(meta), check=check)
            return obj

        return decorator

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as ``name``; a clear error suggests close names."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else None
            raise RegistryError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}",
                hint=hint,
            ) from None

    def get(self, name: str) -> T:
        """The object registered as ``name``, refusing unavailable entries."""
        entry = self.entry(name)
        reason = entry.unavailable_reason()
        if reason is not None:
            raise RegistryError(f"{self.kind} {name!r} is not available here: {reason}")
        return entry.obj

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def list_entries(self) -> list[dict[str, Any]]:
        """Every entry as a row: name, availability, why not, and metadata."""
        rows = []
        for entry in self._entries.values():
            reason = entry.unavailable_reason()
            rows.append(
                {"name": entry.name, "available": reason is None, "reason": reason, **entry.meta}
            )
        return rows

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
