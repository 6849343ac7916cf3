"""Typing manifest cells: missing values, numbers, mpp and label kinds.

CSV cells arrive as text and Parquet/DataFrame cells as typed values; both end
up as plain Python values (``None``, ``bool``, ``int``, ``float``, ``str``) so
records compare and pickle the same whatever the manifest format.
"""

from __future__ import annotations

import math
import re
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

from slideflow_core.slides.resolution import is_placeholder_mpp

# Cell texts that mean "no value" in CSV exports from pandas, R and spreadsheets.
MISSING_TEXT = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL"})
# In an mpp cell "nan" is a number gone wrong (a calibration computed from
# nothing), not a blank: it is an error, never "use the file's calibration".
_MISSING_MPP_TEXT = MISSING_TEXT - {"NaN", "nan"}
_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

MPP_HINT = (
    "give level-0 µm per pixel (e.g. 0.25 at 40×, 0.5 at 20×), "
    "or leave it empty to use the file's calibration"
)


def parse_mpp(value: Any) -> tuple[float | None, str | None]:
    """Read an ``mpp`` cell: ``(value, None)``, ``(None, None)`` if empty, or ``(None, error)``.

    Empty text (or ``NA``, ``N/A``, ``null``) and a missing typed value (``None``,
    or the NaN pandas stores for an empty float cell) mean no override. Anything
    else must be a positive, finite calibration: text such as ``nan``, ``inf``,
    ``0``, ``-0.5`` or ``abc`` is an error naming the value.
    """
    value = native_value(value)
    if isinstance(value, str):
        if value.strip() in _MISSING_MPP_TEXT:
            return None, None
        try:
            number = float(value)
        except ValueError:
            return None, f"mpp must be a positive number of µm per pixel, got {value!r}"
    elif value is None:
        return None, None
    elif isinstance(value, Real) and not isinstance(value, bool):
        number = float(value)
    else:
        return None, f"mpp must be a positive number of µm per pixel, got {value!r}"
    if not (math.isfinite(number) and number > 0):
        return None, f"mpp must be a positive number of µm per pixel, got {value!r}"
    if is_placeholder_mpp(number):
        return None, (
            f"mpp {number:g} is not a microscope calibration (outside 0.01-100 µm/px, "
            "or a 72-dpi style placeholder)"
        )
    return number, None


def native_value(value: Any) -> Any:
    """A plain Python value for a table cell; ``None`` for every kind of missing."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def parse_label_text(cell: str) -> Any:
    """A CSV label cell as ``None``, ``int``, ``float`` or stripped text.

    A cell that reads as a number becomes one, so ``007`` is the number 7; keep
    such codes in Parquet, or make them non-numeric (``P007``), to keep text.
    """
    text = cell.strip()
    if text in MISSING_TEXT:
        return None
    if _INT_TEXT.fullmatch(text):
        return int(text)
    if _FLOAT_TEXT.fullmatch(text):
        return float(text)
    return text


def value_kind(value: Any) -> str:
    """Kind of a non-missing label value: ``boolean``, ``number``, ``text`` or a type name."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Real):
        return "number"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def as_text(value: Any) -> str:
    """An id or path cell as text: ``""`` when missing, ``3`` rather than ``3.0``."""
    value = native_value(value)
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # integer ids in a column that also holds NaN
    return str(value)
