"""A gate against non-nuclear detections: stain, contrast and shape of each found nucleus.

Stroma, collagen and lumen edges can pass a segmenter's foreground test as fragments
that look like nuclei in one respect and not in others. Each instance is measured once
(vectorised over all instances with ``bincount``) and kept only when it

- holds haematoxylin: its mean haematoxylin optical density is at least
  ``min_haematoxylin`` and at least ``min_h_fraction`` of its stain (H / (H + E));
  collagen and eosinophilic stroma are pink;
- stands out from its surroundings: mean haematoxylin above that of a ring
  ``ring_um`` wide around it by ``min_contrast`` (a nucleus is darker than its
  neighbourhood; a fragment of dark stroma is not);
- has a nuclear shape: the ratio of its principal axes at most ``max_elongation``
  (collagen fibres and stroma slivers are long and thin);
- lies in tissue: at most ``max_glass_fraction`` of the ring around it is glass
  (optical density below ``GLASS_OD``). Nuclei sit in cytoplasm or stroma; flakes of
  keratin, collagen or debris floating in a lumen or at a torn edge are ringed by glass;
- is not a piece of a strand: a group of instances less than ``group_gap_um`` apart
  larger than ``group_um2`` whose ring is more than
  ``max_group_glass_fraction`` glass is dropped whole. Keratin lamellae and torn
  collagen are cut by the split into pieces that each look nuclear and each touch glass
  on a side or two only; the strand they make up is ringed by glass, while a clump of
  touching nuclei sits in tissue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from embedders.dense.deconvolution import optical_density, stain_concentrations
from embedders.dense.morphology import components, disk, drop_small, label_means, ring_labels

#: Summed RGB optical density below which a pixel is glass (unstained background).
GLASS_OD = 0.15


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """Thresholds of :func:`gate_instances` (optical density units, µm).

    Parameters
    ----------
    min_haematoxylin
        Least mean haematoxylin optical density of a nucleus.
    min_h_fraction
        Least share of haematoxylin in its stain, H / (H + E).
    min_contrast
        Least excess of its mean haematoxylin over the ring around it.
    ring_um
        Width of that ring.
    max_elongation
        Largest ratio of its long to its short principal axis.
    max_glass_fraction
        Largest share of glass in the ring around it.
    group_um2, max_group_glass_fraction, group_gap_um
        Groups of instances (less than ``group_gap_um`` apart) larger than ``group_um2``
        are dropped whole when more than ``max_group_glass_fraction`` of the ring around
        the group is glass.
    """

    min_haematoxylin: float = 0.1
    min_h_fraction: float = 0.35
    min_contrast: float = 0.05
    ring_um: float = 2.0
    max_elongation: float = 6.0
    max_glass_fraction: float = 0.6
    group_um2: float = 50.0
    max_group_glass_fraction: float = 0.35
    group_gap_um: float = 1.0

    def __post_init__(self) -> None:
        if min(self.min_haematoxylin, self.min_h_fraction) < 0 or not self.ring_um > 0:
            raise ValueError(f"invalid GateConfig: {self}")
        if not min(self.group_um2, self.group_gap_um) >= 0:
            raise ValueError(f"invalid GateConfig: group_um2, group_gap_um must be >= 0: {self}")
        for name in ("max_glass_fraction", "max_group_glass_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"invalid GateConfig: {name}={getattr(self, name)}")
        if not self.max_elongation >= 1:
            raise ValueError(f"invalid GateConfig: max_elongation={self.max_elongation} < 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for identities and cards)."""
        return asdict(self)


def _means_over(ids: np.ndarray, n: int) -> Callable[[np.ndarray], np.ndarray]:
    """Per label 1..n, the mean of values given for the pixels labelled ``ids``.

    :func:`.morphology.label_means` with the pixel count taken once for every mean.
    """
    count = np.maximum(np.bincount(ids, minlength=n + 1)[1 : n + 1], 1)
    return lambda values: np.bincount(ids, weights=values, minlength=n + 1)[1 : n + 1] / count


def instance_features(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    mpp: float,
    ring_um: float = 2.0,
    group_gap_um: float = 0.0,
    stains: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per instance 1..n: haematoxylin, H fraction, contrast, glass in its ring, elongation,
    and the area (µm²) and ring glass of the group of touching instances it belongs to.

    ``stains`` are the image's haematoxylin and eosin maps when the caller has them
    (:func:`.deconvolution.stain_concentrations`); else they are computed here.
    Instances less than ``group_gap_um`` apart belong to one group.
    """
    n = int(labels.max(initial=0))
    h, e = stain_concentrations(image) if stains is None else stains
    ring = ring_labels(labels, ring_um / mpp)
    around = np.flatnonzero(ring)
    ring_ids = ring.ravel()[around]
    glass = optical_density(image.reshape(-1, 3)[around][None])[0].sum(axis=-1) < GLASS_OD
    inside = np.flatnonzero(labels)
    ids = labels.ravel()[inside]
    mean, ring_mean = _means_over(ids, n), _means_over(ring_ids, n)
    mean_h = mean(h.ravel()[inside])
    ys, xs = (v.astype(np.float64) for v in np.divmod(inside, labels.shape[1]))
    my, mx = mean(ys), mean(xs)
    vyy = mean(ys * ys) - my**2 + 1 / 12
    vxx = mean(xs * xs) - mx**2 + 1 / 12
    vxy = mean(xs * ys) - mx * my
    mask = labels > 0
    if group_gap_um > 0:
        mask = cv2.dilate(mask.astype(np.uint8), disk(group_gap_um / (2 * mpp))) > 0
    groups, n_groups = components(mask)
    group_of = np.zeros(n + 1, np.int64)
    group_of[ids] = groups.ravel()[inside]
    group_area = np.bincount(group_of[ids], minlength=n_groups + 1) * mpp**2
    # the ring of a group is the union of its instances' rings
    group_glass = label_means(group_of[ring_ids], glass.astype(np.float64), n_groups)
    spread = np.sqrt(np.maximum(((vxx - vyy) / 2) ** 2 + vxy**2, 0))
    major, minor = (vxx + vyy) / 2 + spread, np.maximum((vxx + vyy) / 2 - spread, 1e-6)
    return {
        "haematoxylin": mean_h,
        "h_fraction": mean_h / np.maximum(mean_h + mean(e.ravel()[inside]), 1e-6),
        "contrast": mean_h - ring_mean(h.ravel()[around]),
        "elongation": np.sqrt(major / minor),
        "glass_fraction": ring_mean(glass.astype(np.float64)),
        "group_area_um2": group_area[group_of[1:]],
        "group_glass_fraction": np.concatenate([[0.0], group_glass])[group_of[1:]],
    }


def gate_instances(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    mpp: float,
    config: GateConfig,
    stains: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``labels`` without the instances that fail the gate, renumbered 1..n.

    ``stains``: the image's haematoxylin and eosin maps, when the caller has them.
    """
    if not labels.any():
        return labels
    f = instance_features(
        labels,
        image,
        mpp=mpp,
        ring_um=config.ring_um,
        group_gap_um=config.group_gap_um,
        stains=stains,
    )
    keep = (
        (f["haematoxylin"] >= config.min_haematoxylin)
        & (f["h_fraction"] >= config.min_h_fraction)
        & (f["contrast"] >= config.min_contrast)
        & (f["elongation"] <= config.max_elongation)
        & (f["glass_fraction"] <= config.max_glass_fraction)
        & ~(
            (f["group_area_um2"] > config.group_um2)
            & (f["group_glass_fraction"] > config.max_group_glass_fraction)
        )
    )
    lookup = np.concatenate([[0], np.where(keep, 1, 0)]).astype(np.int32)
    return drop_small(labels * np.take(lookup, labels), 1)
