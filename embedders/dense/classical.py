"""The classical nucleus segmenter: colour deconvolution, thresholds, distance watershed.

No weights and no training, only image processing at a stated resolution, with every
size given in µm so one configuration serves 20x and 40x:

1. haematoxylin concentration by colour deconvolution (:mod:`.deconvolution`),
   smoothed with a Gaussian of ``smooth_um``;
2. foreground where the haematoxylin is above ``otsu_factor`` × its Otsu threshold
   *and* above its local mean over ``local_window_um`` plus ``local_offset`` (the global
   test rejects pale stroma, the local one splits touching dark regions);
3. opening (``open_um``) and hole filling;
4. distance transform, smoothed; one marker per local maximum within ``marker_um``;
5. marker-controlled watershed of the negated distance inside the foreground;
6. instances smaller than ``min_area_um2`` are dropped;
7. the gate (:mod:`.gate`, ``gate``; None turns it off) drops what is not nuclear:
   too little haematoxylin, too elongated, or ringed by glass (flakes in a lumen).

The defaults were tuned on half of the shipped annotated tiles (three CPM-15 and five
MoNuSeg tiles; ``benchmarks/cells.py`` reports both halves).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from embedders.dense.base import Segmenter, TileSegmentation
from embedders.dense.deconvolution import stain_concentrations
from embedders.dense.gate import GateConfig, gate_instances
from embedders.dense.morphology import clean_mask, drop_small, flood, peak_markers
from embedders.dense.registry import register_segmenter


@dataclass(frozen=True, kw_only=True)
class ClassicalConfig:
    """Parameters of :class:`ClassicalSegmenter` (lengths in µm, areas in µm²).

    Parameters
    ----------
    mpp
        µm per pixel of the images it is given (whole-slide runs read at this resolution).
    smooth_um
        Gaussian sigma applied to the haematoxylin map.
    otsu_factor
        Multiple of the image's Otsu threshold a pixel must exceed.
    local_window_um, local_offset
        Side of the local-mean window, and how far above that mean (in optical-density
        units) a pixel must be.
    open_um
        Radius of the opening that removes specks and bridges.
    marker_um
        Radius within which a distance maximum must be the highest to seed a nucleus.
    min_marker_um
        Smallest distance to the background a marker may have.
    min_area_um2
        Smallest nucleus kept.
    gate
        Tests every nucleus must pass (None: keep all).
    """

    mpp: float = 0.5
    smooth_um: float = 0.5
    otsu_factor: float = 0.7
    local_window_um: float = 30.0
    local_offset: float = 0.05
    open_um: float = 0.5
    marker_um: float = 2.5
    min_marker_um: float = 0.5
    min_area_um2: float = 8.0
    gate: GateConfig | None = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        positive = {
            "mpp": self.mpp,
            "smooth_um": self.smooth_um,
            "otsu_factor": self.otsu_factor,
            "local_window_um": self.local_window_um,
            "open_um": self.open_um,
            "marker_um": self.marker_um,
        }
        bad = [f"{k}={v!r}" for k, v in positive.items() if not v > 0]
        bad += [
            f"{k}={v!r}"
            for k, v in {
                "min_marker_um": self.min_marker_um,
                "min_area_um2": self.min_area_um2,
            }.items()
            if not v >= 0
        ]
        if bad:
            raise ValueError(f"invalid ClassicalConfig: {', '.join(bad)} (must be positive)")

    def px(self, um: float) -> float:
        """``um`` micrometres in pixels at :attr:`mpp`."""
        return um / self.mpp


@register_segmenter(
    "classical",
    kind="classical",
    needs_weights=False,
    classes=(),
    description="haematoxylin deconvolution, Otsu + local threshold, distance watershed",
)
class ClassicalSegmenter(Segmenter):
    """Nuclei by colour deconvolution and marker-controlled watershed (no weights).

    Parameters
    ----------
    config
        A :class:`ClassicalConfig`; or give its fields as keyword arguments.
    """

    name = "classical"

    def __init__(self, config: ClassicalConfig | None = None, **fields: Any) -> None:
        if config is not None and fields:
            raise TypeError("give either config= or its fields as keyword arguments, not both")
        self.config = config or ClassicalConfig(**fields)

    @property
    def mpp(self) -> float:
        """µm per pixel the segmenter expects."""
        return self.config.mpp

    def identity(self) -> dict[str, Any]:
        """The segmenter and every parameter."""
        return {"name": self.name, "config": asdict(self.config)}

    def segment(self, image: np.ndarray) -> TileSegmentation:
        """Instance map of the nuclei in one uint8 RGB image at :attr:`mpp`."""
        c = self.config
        h, _ = stain_concentrations(image)
        h = cv2.GaussianBlur(h, (0, 0), c.px(c.smooth_um))
        if float(h.max()) - float(h.min()) < 1e-6:  # blank (glass) or constant
            return TileSegmentation(np.zeros(h.shape, np.int32))
        window = int(c.px(c.local_window_um)) | 1
        local = cv2.blur(h, (window, window))
        foreground = (h > c.otsu_factor * threshold_otsu(h)) & (h > local + c.local_offset)
        foreground = clean_mask(foreground, c.px(c.open_um))
        distance = cv2.distanceTransform(foreground.astype(np.uint8), cv2.DIST_L2, 5)
        distance = cv2.GaussianBlur(distance, (0, 0), max(1.0, c.px(c.smooth_um)))
        markers = peak_markers(
            distance, radius_px=c.px(c.marker_um), min_height=c.px(c.min_marker_um)
        )
        labels = drop_small(flood(-distance, markers, foreground), c.min_area_um2 / c.mpp**2)
        if c.gate is not None:
            labels = gate_instances(labels, image, mpp=c.mpp, config=c.gate)
        return TileSegmentation(labels)
