"""The classical nucleus segmenter: colour deconvolution, thresholds, distance watershed.

No weights and no training, only image processing at a stated resolution, with every
size given in µm so one configuration serves 20x and 40x:

1. haematoxylin concentration by colour deconvolution (:mod:`.deconvolution`) with
   the image's own stain vectors (Macenko's estimate, ``stain_weight`` of the way from
   the published ones), smoothed with a Gaussian of ``smooth_um``;
2. foreground where the haematoxylin is above ``otsu_factor`` × its Otsu threshold
   *and* above its local mean over ``local_window_um`` by ``local_offset`` × the image's
   90th-percentile haematoxylin (the global test rejects pale stroma, the local one
   splits touching dark regions; relative to the image, a pale stain's nuclei pass it
   as a dark one's do);
3. opening (``open_um``) and hole filling;
4. the split: distance transform, smoothed, plus ``intensity_weight`` µm per unit of
   haematoxylin (relative to the foreground's mean), so a dark core outweighs a
   bulge; one marker per local maximum within ``marker_um``; marker-controlled
   watershed of its negation inside the foreground; neighbouring basins merged where
   the lower peak stands less than ``marker_depth_px`` above the pass between them
   (the split by h-maxima: two nuclei touch at a neck, the ripples of one do not);
   instances smaller than ``min_area_um2`` dropped;
5. outline refinement, ``refine_passes`` times: each nucleus gets its own threshold,
   ``refine_level`` of the way from the mean haematoxylin of the ring ``refine_um``
   around it to its own mean (a pale nucleus is not cut by a threshold set for dark
   ones; a dark one does not bleed into its halo); the pixels above their nucleus's
   threshold, inside it or in its ring, are cleaned and split again as in step 4;
6. the gate (:mod:`.gate`, ``gate``; None turns it off) drops what is not nuclear:
   too little haematoxylin, too elongated, or ringed by glass (flakes in a lumen).

The defaults were tuned on fold 1 of 2 of the shipped annotated tiles
(:func:`.data.tuning_split`: three CPM-15 and five MoNuSeg tiles); ``benchmarks/cells.py``
reports the held-out fold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from embedders.dense.base import Segmenter, TileSegmentation
from embedders.dense.deconvolution import estimated_stain_vectors, stain_concentrations
from embedders.dense.gate import GateConfig, gate_instances
from embedders.dense.morphology import (
    clean_mask,
    drop_small,
    flood,
    label_means,
    merge_shallow,
    peak_markers,
    ring_labels,
)
from embedders.dense.registry import register_segmenter


@dataclass(frozen=True, kw_only=True)
class ClassicalConfig:
    """Parameters of :class:`ClassicalSegmenter` (lengths in µm, areas in µm²).

    Parameters
    ----------
    mpp
        µm per pixel of the images it is given (whole-slide runs read at this resolution).
    stain_weight
        Share of each image's own estimate in the stain vectors it is unmixed with
        (:func:`.deconvolution.estimated_stain_vectors`; 0: the published vectors).
    smooth_um
        Gaussian sigma applied to the haematoxylin map.
    otsu_factor
        Multiple of the image's Otsu threshold a pixel must exceed.
    local_window_um, local_offset
        Side of the local-mean window, and how far above that mean a pixel must be, as a
        share of the image's 90th-percentile haematoxylin.
    open_um
        Radius of the opening that removes specks and bridges.
    marker_um
        Radius within which a distance maximum must be the highest to seed a nucleus.
    min_marker_um
        Smallest distance to the background a marker may have.
    marker_depth_px
        Least rise of a peak of the split's height above the pass to a higher one for
        it to keep its own nucleus (0: every marker does). In pixels, as the ripples of
        a pixel distance map are about a pixel deep at any resolution. 1 px scores the
        same on the tuning tiles but merges touching nuclei of the synthetic slides.
    min_area_um2
        Smallest nucleus kept.
    intensity_weight
        µm of distance one unit of (foreground-mean-relative) haematoxylin is worth
        when seeding and flooding the split (0: distance alone).
    refine_passes
        Passes of per-nucleus thresholding and re-splitting (0: none).
    refine_um
        Width of the ring around each nucleus that its threshold is set against and
        its outline may grow into.
    refine_level
        Where each nucleus's threshold sits between its ring's mean haematoxylin (0)
        and its own (1).
    gate
        Tests every nucleus must pass (None: keep all).
    """

    mpp: float = 0.5
    stain_weight: float = 0.75
    smooth_um: float = 0.5
    otsu_factor: float = 0.7
    local_window_um: float = 30.0
    local_offset: float = 0.083
    open_um: float = 0.5
    marker_um: float = 1.0
    min_marker_um: float = 1.25
    marker_depth_px: float = 0.75
    min_area_um2: float = 8.0
    intensity_weight: float = 0.5
    refine_passes: int = 2
    refine_um: float = 1.5
    refine_level: float = 0.4
    gate: GateConfig | None = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        positive = {
            "mpp": self.mpp,
            "smooth_um": self.smooth_um,
            "otsu_factor": self.otsu_factor,
            "local_window_um": self.local_window_um,
            "open_um": self.open_um,
            "marker_um": self.marker_um,
            "refine_um": self.refine_um,
        }
        bad = [f"{k}={v!r}" for k, v in positive.items() if not v > 0]
        bad += [
            f"{k}={v!r}"
            for k, v in {
                "min_marker_um": self.min_marker_um,
                "marker_depth_px": self.marker_depth_px,
                "min_area_um2": self.min_area_um2,
                "intensity_weight": self.intensity_weight,
                "refine_passes": self.refine_passes,
            }.items()
            if not v >= 0
        ]
        if not 0 <= self.stain_weight <= 1:
            bad.append(f"stain_weight={self.stain_weight!r} (must be in [0, 1])")
        if not 0 < self.refine_level < 1:
            bad.append(f"refine_level={self.refine_level!r} (must be in (0, 1))")
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
    description=(
        "haematoxylin deconvolution, Otsu + local threshold, distance watershed, "
        "per-nucleus outline refinement"
    ),
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
        vectors = estimated_stain_vectors(image, c.stain_weight) if c.stain_weight else None
        stains = stain_concentrations(image, vectors)
        h = cv2.GaussianBlur(stains[0], (0, 0), c.px(c.smooth_um))
        if float(h.max()) - float(h.min()) < 1e-6:  # blank (glass) or constant
            return TileSegmentation(np.zeros(h.shape, np.int32))
        window = int(c.px(c.local_window_um)) | 1
        local = cv2.blur(h, (window, window))
        offset = c.local_offset * float(np.percentile(h[::4, ::4], 90))  # a sample suffices
        foreground = (h > c.otsu_factor * threshold_otsu(h)) & (h > local + offset)
        labels = self._split(clean_mask(foreground, c.px(c.open_um)), h)
        for _ in range(c.refine_passes):
            labels = self._split(self._refined(labels, h), h)
        if c.gate is not None:
            labels = gate_instances(labels, image, mpp=c.mpp, config=c.gate, stains=stains)
        return TileSegmentation(labels)

    def _split(self, foreground: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Nuclei of a foreground mask: distance-and-intensity markers, watershed."""
        c = self.config
        distance = cv2.distanceTransform(foreground.astype(np.uint8), cv2.DIST_L2, 5)
        height = cv2.GaussianBlur(distance, (0, 0), max(1.0, c.px(c.smooth_um)))
        if c.intensity_weight and foreground.any():
            scale = c.px(c.intensity_weight) / max(float(h[foreground].mean()), 1e-6)
            height = height + scale * h
        markers = peak_markers(
            height, radius_px=c.px(c.marker_um), min_height=c.px(c.min_marker_um)
        )
        basins = flood(-height, markers, foreground)
        if c.marker_depth_px:
            basins = merge_shallow(basins, height, c.marker_depth_px)
        return drop_small(basins, c.min_area_um2 / c.mpp**2)

    def _refined(self, labels: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Foreground of each nucleus re-thresholded between its ring's level and its own."""
        c = self.config
        n = int(labels.max(initial=0))
        if n == 0:
            return labels > 0
        own = np.maximum(labels, ring_labels(labels, c.px(c.refine_um)))
        flat, values = own.ravel(), h.ravel()
        near = np.flatnonzero(flat)  # the nuclei and their rings
        ids, inner = flat[near], labels.ravel()[near] > 0
        means = [label_means(ids[part], values[near][part], n) for part in (inner, ~inner)]
        threshold = means[1] + c.refine_level * (means[0] - means[1])
        above = np.zeros(flat.size, bool)
        above[near] = values[near] > threshold[ids - 1]
        return clean_mask(above.reshape(h.shape), c.px(c.open_um))
