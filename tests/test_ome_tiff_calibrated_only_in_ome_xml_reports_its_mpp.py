"""An OME-TIFF whose µm/px lives only in its OME-XML (no resolution tags) is calibrated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slideflow_core.errors import MissingResolutionError
from slideflow_core.slides import open_slide


def write_ome_tiff(
    path: Path, size: float | None, unit: str | None, *, resolution: tuple | None = None
) -> Path:
    """A tiled RGB OME-TIFF as tifffile writes it; calibration only where given."""
    image = np.random.default_rng(0).integers(0, 255, (512, 512, 3), np.uint8)
    metadata: dict[str, object] = {"axes": "YXS"}
    if size is not None:
        metadata |= {"PhysicalSizeX": size, "PhysicalSizeY": size}
    if unit is not None:
        metadata |= {"PhysicalSizeXUnit": unit, "PhysicalSizeYUnit": unit}
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(
            image,
            tile=(256, 256),
            photometric="rgb",
            compression="jpeg",
            metadata=metadata,
            resolution=resolution,
        )
    with tifffile.TiffFile(path) as tif:  # what makes the case: no usable resolution tags
        tags = tif.pages[0].tags
        assert resolution is not None or tags["ResolutionUnit"].value == 1  # RESUNIT.NONE
    return path


@pytest.mark.parametrize(
    ("size", "unit"),
    [(0.499, "µm"), (499.0, "nm"), (0.000499, "mm"), (4990.0, "Å"), (0.499, None)],
)
@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_units_are_converted_to_microns(tmp_path, size, unit, backend):
    path = write_ome_tiff(tmp_path / "s.ome.tif", size, unit)
    with open_slide(path, backend=backend) as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert slide.resolution.source == "OME-XML PhysicalSizeX"


def test_sfc_info_names_the_ome_xml_as_the_source(tmp_path):
    path = write_ome_tiff(tmp_path / "s.ome.tif", 0.499, "µm")
    out = subprocess.run(
        [sys.executable, "-m", "slideflow_core.cli", "info", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mpp         0.4990 µm/px from OME-XML PhysicalSizeX" in out


def test_ome_xml_beats_a_72_dpi_placeholder_tag(tmp_path):
    path = write_ome_tiff(tmp_path / "s.ome.tif", 0.25, "µm", resolution=(72, 72, "INCH"))
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25)


def test_a_pixel_unit_is_not_a_calibration(tmp_path):
    path = write_ome_tiff(tmp_path / "s.ome.tif", 1.0, "pixel")
    with open_slide(path) as slide, pytest.raises(MissingResolutionError):
        _ = slide.mpp
