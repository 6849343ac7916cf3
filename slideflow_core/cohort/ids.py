"""Slide ids that are safe to use as file and folder names on every platform.

Stores, thumbnails and status files are named after slide ids, so an id taken
from a manifest must never escape its folder (``../``), hide itself (``.x``),
look like a command-line option (``-x``) or hit a Windows-reserved name.
"""

from __future__ import annotations

import unicodedata

from slideflow_core.errors import SlideflowError

#: How to fix an unsafe id, wherever one is reported.
ID_HINT = "ids name output files; use letters, digits, '-', '_' and '.'"
#: Longest id accepted, in UTF-8 bytes: file names are limited to 255 bytes and
#: outputs append suffixes such as ``.zarr``.
MAX_ID_BYTES = 200

# Characters Windows refuses in file names (':' also opens NTFS alternate streams).
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
# Device names Windows reserves whatever the extension ("nul.zarr" is the device too).
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)

#: Extensions that mark a file as a slide (lower case, with the dot).
SLIDE_EXTENSIONS = (
    ".svs",
    ".svslide",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".mrxs",
    ".scn",
    ".bif",
    ".dcm",
    ".qptiff",
)
# Inner suffixes that belong to the format rather than to the slide's name.
_FORMAT_INFIXES = (".ome",)


def unsafe_reason(value: str) -> str | None:
    """Why ``value`` cannot be a slide id, or ``None`` when it can.

    Parameters
    ----------
    value
        Candidate slide id.

    Returns
    -------
    str or None
        A short reason ("contains a path separator ...") or ``None``.
    """
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "is empty"
    if value in (".", ".."):
        return "is '.' or '..', which name folders"
    if "/" in value or "\\" in value:
        return "contains a path separator ('/' or '\\')"
    control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        return f"contains the control character {control!r}"
    try:
        n_bytes = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate)"
    if n_bytes > MAX_ID_BYTES:
        return f"is {n_bytes} bytes long in UTF-8; the limit is {MAX_ID_BYTES}"
    if value[0] == ".":
        return "starts with '.', which hides the file"
    if value[0] == "-":
        return "starts with '-', which command-line tools read as an option"
    if value != value.strip():
        return "starts or ends with whitespace"
    if value[-1] == ".":
        return "ends with '.', which Windows drops"
    forbidden = sorted({c for c in value if c in _WINDOWS_FORBIDDEN})
    if forbidden:
        return f"contains {''.join(forbidden)!r}, not allowed in Windows file names"
    if value.split(".")[0].rstrip().upper() in _WINDOWS_RESERVED:
        return f"{value.split('.')[0]!r} is a reserved device name on Windows"
    return None


class UnsafeSlideIdError(SlideflowError, ValueError):
    """A slide id (or run name) that cannot name a file; also a ``ValueError``."""


def printable(text: str) -> str:
    r"""``text`` safe to show on a terminal: every non-printable character escaped.

    Control characters (ESC, carriage return...) and invisible ones (such as
    bidirectional overrides) are written as Python escapes (``\x1b``), so a
    hostile slide id or path in a message can neither recolour nor rewrite the
    user's terminal. Printable text, accents included, is returned unchanged.

    Examples
    --------
    >>> printable("\x1b[31mred")
    '\\x1b[31mred'
    >>> printable("Gewebe-µ1")
    'Gewebe-µ1'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def safe_slide_id(value: str) -> str:
    """Return ``value`` if it is safe as a file name, else raise :class:`UnsafeSlideIdError`.

    Parameters
    ----------
    value
        Candidate slide id (or run name).

    Returns
    -------
    str
        ``value`` unchanged.

    Raises
    ------
    UnsafeSlideIdError
        (a ``ValueError``) If ``value`` is empty, ``.``/``..``, contains ``/`` or ``\\``, a control
        character or a character Windows forbids, starts with ``.`` or ``-``,
        starts or ends with whitespace, ends with ``.``, is longer than
        :data:`MAX_ID_BYTES` UTF-8 bytes, or is a Windows device name (``CON``,
        ``NUL``, ``COM1``...). The message says which, with the id escaped.

    Examples
    --------
    >>> safe_slide_id("TCGA-A1-A0SB-01Z-00-DX1")
    'TCGA-A1-A0SB-01Z-00-DX1'
    >>> try:
    ...     safe_slide_id("CON")
    ... except ValueError as exc:
    ...     print(exc)
    unsafe slide id 'CON': 'CON' is a reserved device name on Windows
    hint: ids name output files; use letters, digits, '-', '_' and '.'
    """
    reason = unsafe_reason(value)
    if reason is not None:
        raise UnsafeSlideIdError(f"unsafe slide id {value!r}: {reason}", hint=ID_HINT)
    return value


def slide_id_from_filename(name: str) -> str:
    """The slide id a file name implies: the name without its slide extension.

    Only the slide extension (and an ``.ome`` before it) is removed, so dots
    inside a name survive: ``a.b.svs`` -> ``a.b``, ``x.ome.tif`` -> ``x``.
    """
    lower = name.lower()
    for ext in SLIDE_EXTENSIONS:
        if lower.endswith(ext):
            name, lower = name[: -len(ext)], lower[: -len(ext)]
            break
    for infix in _FORMAT_INFIXES:
        if lower.endswith(infix):
            name = name[: -len(infix)]
    return name
