"""Exceptions raised by slideflow-core.

Every error names the file or row it is about and, where there is one, the fix.
They all derive from :class:`SlideflowError` so a cohort runner can catch one
type, record the message against the slide, and go on with the rest.
"""

from __future__ import annotations

import errno
import traceback


class SlideflowError(Exception):
    """Base class of every error slideflow-core raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def details(self) -> list[str]:
        """Extra lines (one per problem) shown under the message; none by default."""
        return []

    def __str__(self) -> str:
        lines = [self.message, *(f"  - {d}" for d in self.details())]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class SlideReadError(SlideflowError):
    """A slide could not be opened or decoded by any usable backend."""


class MissingResolutionError(SlideflowError):
    """A slide has no trustworthy microns-per-pixel calibration."""


class ResolutionError(SlideflowError):
    """A requested physical resolution cannot be served within tolerance."""


class RegistryError(SlideflowError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return SlideflowError.__str__(self)


class ManifestError(SlideflowError):
    """A cohort manifest is malformed; ``problems`` lists every bad row at once."""

    def __init__(self, message: str, problems: list[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems

    def details(self) -> list[str]:
        return list(self.problems)


class DiskFullError(SlideflowError):
    """The disk being written is full: the slide in hand fails, and so would the next."""


#: OS errors that mean "no room to write": a full disk or an exhausted quota.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> OSError | None:
    """The "no space left" error behind ``exc`` (itself, its cause or its context), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return current
        current = current.__cause__ or current.__context__
    return None


def failure_text(exc: BaseException) -> str:
    """One line describing a failure, for reports and status files.

    Our errors give their message and hint; anything else gives its type, its
    message and the tail of its traceback (an unexpected error needs its location).
    """
    if isinstance(exc, SlideflowError):
        return str(exc).replace("\n", " ")
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
    return f"{type(exc).__name__}: {exc} | " + " ".join(line.strip() for line in tail)
