"""OME-XML calibration: ``PhysicalSizeX/Y`` with their units, converted to µm per pixel.

OME-TIFF writers (tifffile, bfconvert, QuPath and many exporters) may record the
pixel size only in the OME-XML ``ImageDescription`` and leave the TIFF resolution
tags empty, so neither OpenSlide nor TiffSlide reports an mpp for such files.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

# Micrometres per unit of the OME ``UnitsLength`` values a pixel size can use. "pixel"
# and "reference frame" are not physical units and give no calibration.
_UM_PER_UNIT = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "μm": 1.0,  # Greek mu (U+03BC), which some writers use instead of the micro sign
    "um": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "dm": 1e5,
    "m": 1e6,
    "thou": 25.4,
    "in": 25_400.0,
}
# The OME schema's default unit for PhysicalSizeX/Y.
_DEFAULT_UNIT = "µm"


def ome_pixel_size_um(description: str) -> tuple[float, float] | None:
    """``(mpp_x, mpp_y)`` of the largest image described by an OME-XML document.

    Parameters
    ----------
    description
        A TIFF ``ImageDescription``; anything that is not OME-XML gives ``None``.

    Returns
    -------
    tuple of float, or None
        µm per pixel along x and y, converted from the recorded units; ``None`` when
        the document has no physical size, a non-physical unit, or is not OME-XML.
    """
    if "<OME" not in description[:4096]:
        return None
    try:
        root = ET.fromstring(description)
    except ET.ParseError:
        return None
    best: tuple[int, tuple[float, float]] | None = None
    for pixels in root.iter():
        if not pixels.tag.endswith("}Pixels") and pixels.tag != "Pixels":
            continue
        size = _um(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"))
        if size is None:
            continue
        size_y = _um(pixels.get("PhysicalSizeY"), pixels.get("PhysicalSizeYUnit")) or size
        area = _int(pixels.get("SizeX")) * _int(pixels.get("SizeY"))
        if best is None or area > best[0]:
            best = (area, (size, size_y))
    return best[1] if best else None


def _um(value: str | None, unit: str | None) -> float | None:
    if value is None:
        return None
    factor = _UM_PER_UNIT.get(unit or _DEFAULT_UNIT)
    try:
        number = float(value) * factor if factor is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
