"""Stain normalisation: map the colours of H&E tiles onto a reference's.

A normaliser is *fitted* on a reference (an image, or tissue tiles sampled from a slide with
:func:`fit_to_slide`) and then *transforms* tiles, mapping a source stain onto the
reference's. The source is each tile's own estimate (the classic per-image methods), or a
fixed profile, typically fitted once per slide (``fit_source`` or
``fit_to_slide(..., as_source=True)``), which keeps the differences between tiles that come
from their content. Fitted parameters are plain data (:meth:`~StainNormalizer.to_dict`), so
they are recorded in a store and rebuilt anywhere.

Glass is left alone: only tissue pixels enter the statistics, and white stays white-ish
(Macenko maps zero stain to white; Reinhard does not touch background pixels). A tile with
too little tissue for its own estimate is returned unchanged.

Vahadane's method is not offered: it needs sparse non-negative dictionary learning (SPAMS or
scikit-learn, neither a dependency), costs far more per tile, and published comparisons show
no consistent gain over Macenko for downstream models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import cv2
import numpy as np

from slideflow_core.registry import Registry
from slideflow_core.slides import Slide
from tiling.qc import background_mask
from tiling.tissue import TissueMask, detect_tissue

if TYPE_CHECKING:
    from typing_extensions import Self

stain_normalizers: Registry[type] = Registry("stain normaliser")

# Fewer tissue pixels than this give unstable statistics: fitting refuses, a tile is kept as is.
_MIN_TISSUE_PIXELS = 500
# Optical density of every 8-bit intensity, -ln((I + 1) / 256), so that 255 is exactly zero.
_OD_LUT = (-np.log((np.arange(256) + 1) / 256)).astype(np.float32)
# Least angle between a tile's two extreme stain directions for them to be trusted; below it
# the tile holds essentially one stain and the reference's stain vectors are used instead.
_MIN_STAIN_ANGLE_RAD = np.deg2rad(10.0)
# Sampled tiles must be at least this much tissue to be used for fitting.
_FIT_MIN_COVERAGE = 0.5


@runtime_checkable
class StainNormalizer(Protocol):
    """What every normaliser does; build one with :func:`create_normalizer`."""

    name: str

    def fit(self, image: np.ndarray) -> StainNormalizer:
        """Learn the reference from an ``(..., 3)`` uint8 RGB image (or stack); returns self."""
        ...

    def fit_source(self, image: np.ndarray) -> StainNormalizer:
        """Fix the source stain (of a whole slide, say) instead of estimating it per tile."""
        ...

    def transform(self, tiles: np.ndarray) -> np.ndarray:
        """Normalise ``(H, W, 3)`` or ``(B, H, W, 3)`` uint8 tiles (same shape and dtype)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Settings and fitted parameters as JSON-ready values."""
        ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StainNormalizer:
        """Rebuild a normaliser from :meth:`to_dict`."""
        ...


def create_normalizer(name: str, **kwargs: Any) -> StainNormalizer:
    """A new, unfitted normaliser registered as ``name`` (``"reinhard"`` or ``"macenko"``)."""
    return stain_normalizers.get(name)(**kwargs)


def _as_batch(tiles: np.ndarray) -> np.ndarray:
    """``tiles`` as a ``(B, H, W, 3)`` uint8 batch (a single tile becomes B = 1)."""
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim not in (3, 4) or tiles.shape[-1] != 3:
        raise ValueError(
            f"tiles must be (H, W, 3) or (B, H, W, 3) uint8, got {tiles.dtype} {tiles.shape}"
        )
    return tiles if tiles.ndim == 4 else tiles[None]


def _pixels(image: np.ndarray) -> np.ndarray:
    """An ``(..., 3)`` uint8 RGB array as ``(N, 3)`` pixels."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 RGB (..., 3), got {image.dtype} {image.shape}")
    return image.reshape(-1, 3)


Profile = dict[str, np.ndarray]


def _profile_to_json(profile: Profile | None) -> dict[str, list[Any]] | None:
    return None if profile is None else {key: value.tolist() for key, value in profile.items()}


def _profile_from_json(data: dict[str, Any] | None) -> Profile | None:
    return None if data is None else {k: np.asarray(v, dtype=np.float64) for k, v in data.items()}


class _ProfileNormalizer(ABC):
    """Fitting, per-tile transform and serialisation shared by the normalisers.

    A subclass describes an image's stain by a *profile* (a few arrays): it estimates one
    from pixels (:meth:`_estimate`) and re-colours pixels from a source profile to the
    reference profile (:meth:`_apply`).

    Parameters
    ----------
    reference
        Fitted reference profile (from :meth:`to_dict`); set by :meth:`fit`.
    source
        Optional fixed source profile, set by :meth:`fit_source`: every tile is then mapped
        from it instead of from its own estimate.
    """

    name: ClassVar[str]

    def __init__(
        self, *, reference: dict[str, Any] | None = None, source: dict[str, Any] | None = None
    ) -> None:
        self.reference = _profile_from_json(reference)
        self.source = _profile_from_json(source)

    @abstractmethod
    def _estimate(self, pixels: np.ndarray) -> Profile | None:
        """The stain profile of ``(N, 3)`` uint8 pixels, or None if they hold too little tissue."""

    @abstractmethod
    def _apply(self, pixels: np.ndarray, source: Profile) -> np.ndarray:
        """``(N, 3)`` uint8 pixels re-coloured from ``source`` to the reference profile."""

    def _settings(self) -> dict[str, Any]:
        """Constructor settings other than the profiles."""
        return {}

    def _fit_profile(self, image: np.ndarray) -> Profile:
        profile = self._estimate(_pixels(image))
        if profile is None:
            raise ValueError(
                f"the image has too little stained tissue to fit the {self.name} normaliser "
                f"(at least {_MIN_TISSUE_PIXELS} tissue pixels are needed)"
            )
        return profile

    def fit(self, image: np.ndarray) -> Self:
        """Learn the reference stain from an ``(..., 3)`` uint8 RGB image or stack of tiles."""
        self.reference = self._fit_profile(image)
        return self

    def fit_source(self, image: np.ndarray) -> Self:
        """Fix the source stain (say, of a whole slide) instead of estimating it per tile.

        Per-tile estimates also absorb differences in content (a tile full of nuclei is
        pulled towards the average tile); a slide-level source keeps them.
        """
        self.source = self._fit_profile(image)
        return self

    def transform(self, tiles: np.ndarray) -> np.ndarray:
        """Normalise ``(H, W, 3)`` or ``(B, H, W, 3)`` uint8 tiles (same shape and dtype).

        Each tile is mapped from the fixed source profile if there is one, else from its own
        estimate; a tile with too little tissue for an estimate is returned unchanged.
        """
        if self.reference is None:
            raise RuntimeError(
                f"the {self.name} normaliser is not fitted; call fit() or fit_to_slide() first"
            )
        batch = _as_batch(tiles)
        out = batch.copy()
        for tile in out:
            pixels = tile.reshape(-1, 3)
            source = self.source if self.source is not None else self._estimate(pixels)
            if source is not None:
                tile[...] = self._apply(pixels, source).reshape(tile.shape)
        return out if np.ndim(tiles) == 4 else out[0]

    def to_dict(self) -> dict[str, Any]:
        """Name, settings and fitted profiles as JSON-ready values."""
        return {
            "name": self.name,
            **self._settings(),
            "reference": _profile_to_json(self.reference),
            "source": _profile_to_json(self.source),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a normaliser from :meth:`to_dict`."""
        data = dict(data)
        name = data.pop("name", cls.name)
        if name != cls.name:
            raise ValueError(f"parameters are for the {name!r} normaliser, not {cls.name!r}")
        return cls(**data)


# -- Reinhard -------------------------------------------------------------------------------
def _to_lab(pixels: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 RGB → float32 CIELAB (L 0-100, a and b about -128-127)."""
    rgb = pixels.reshape(1, -1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3)


def _from_lab(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.reshape(1, -1, 3).astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb.reshape(-1, 3) * 255.0), 0, 255).astype(np.uint8)


@stain_normalizers.register(
    "reinhard",
    description="Reinhard: match per-channel mean and std of tissue pixels in CIELAB",
    params={},
    reference="Reinhard et al., IEEE CG&A 2001",
)
class ReinhardNormalizer(_ProfileNormalizer):
    """Match the mean and standard deviation of each CIELAB channel over tissue pixels.

    Glass pixels (see :func:`tiling.qc.background_mask`) are excluded from the statistics
    and left unchanged.
    """

    name = "reinhard"

    def _estimate(self, pixels: np.ndarray) -> Profile | None:
        tissue = pixels[~background_mask(pixels)]
        if len(tissue) < _MIN_TISSUE_PIXELS:
            return None
        lab = _to_lab(tissue).astype(np.float64)
        # A flat channel would divide by zero; a tenth of a LAB unit is below visibility.
        return {"mean_lab": lab.mean(axis=0), "std_lab": np.maximum(lab.std(axis=0), 0.1)}

    def _apply(self, pixels: np.ndarray, source: Profile) -> np.ndarray:
        assert self.reference is not None
        out = pixels.copy()
        tissue = ~background_mask(pixels)
        if not tissue.any():
            return out
        lab = _to_lab(pixels[tissue])
        scale = self.reference["std_lab"] / source["std_lab"]
        lab = (lab - source["mean_lab"]) * scale + self.reference["mean_lab"]
        out[tissue] = _from_lab(lab)
        return out


# -- Macenko --------------------------------------------------------------------------------
def _optical_density(pixels: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 pixels → float32 optical densities."""
    return cv2.LUT(pixels.reshape(1, -1, 3), _OD_LUT).reshape(-1, 3)


def _linear(values: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``values @ matrix.T`` for ``(N, k)`` values and an ``(m, k)`` matrix, as float32."""
    # OpenCV's per-pixel transform is many times faster than a BLAS product this narrow.
    rows, columns = matrix.shape
    src = np.ascontiguousarray(values, dtype=np.float32).reshape(1, -1, columns)
    return cv2.transform(src, matrix.astype(np.float32)).reshape(-1, rows)


def _stain_vectors(od: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Unit H and E optical-density vectors (rows, H first) of tissue ``od``, and their angle.

    The plane of the two largest singular directions holds the stains; the extreme angles
    (``alpha`` and ``100 - alpha`` percentiles) of the pixels within it are the pure stains.
    The second moment is not centred: Beer-Lambert mixtures span a plane through the origin,
    and a plane through the mean would leave a larger residual.
    """
    _, vectors = np.linalg.eigh((od.T @ od).astype(np.float64))
    plane = vectors[:, [2, 1]]  # eigh sorts ascending
    # Optical densities are positive; orient the axes so the stains project positively.
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
    projected = _linear(od, plane.T)
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [alpha, 100 - alpha])
    stains = np.stack([plane @ [np.cos(a), np.sin(a)] for a in (low, high)])
    # Haematoxylin absorbs more red than eosin does.
    if stains[0, 0] < stains[1, 0]:
        stains = stains[::-1]
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    return stains, float(high - low)


@stain_normalizers.register(
    "macenko",
    description="Macenko: H and E vectors from the SVD plane of optical density, "
    "concentrations scaled to the reference's 99th percentile",
    params={"beta": 0.15, "alpha": 1.0},
    reference="Macenko et al., ISBI 2009",
)
class MacenkoNormalizer(_ProfileNormalizer):
    """Separate H and E by optical-density geometry and re-colour with the reference's stains.

    Optical density is ``-ln((I + 1) / 256)``. Each pixel's stain amounts are rescaled so
    that their 99th percentiles match the reference's and re-coloured with the reference's
    stain vectors; the small part of the density the two stains do not explain (JPEG noise,
    other pigments) is carried over, so an image normalised to its own reference comes back
    unchanged. Zero stain is white, so glass stays white.

    Parameters
    ----------
    beta
        Optical-density floor: a pixel below it in every channel is glass and does not enter
        the estimates.
    alpha
        Percentile (and ``100 - alpha``) of the stain angles taken as the pure stains.
    reference, source
        Fitted profiles (``stain_matrix``: ``(2, 3)`` unit H and E vectors;
        ``max_concentrations``: each stain's 99th percentile); see :class:`_ProfileNormalizer`.
    """

    name = "macenko"

    def __init__(self, *, beta: float = 0.15, alpha: float = 1.0, **profiles: Any) -> None:
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        if not 0 <= alpha < 50:
            raise ValueError(f"alpha must be a percentile in [0, 50), got {alpha!r}")
        super().__init__(**profiles)
        self.beta = float(beta)
        self.alpha = float(alpha)

    def _settings(self) -> dict[str, Any]:
        return {"beta": self.beta, "alpha": self.alpha}

    def _estimate(self, pixels: np.ndarray) -> Profile | None:
        od = _optical_density(pixels)
        tissue = od[np.any(od >= self.beta, axis=1)]
        if len(tissue) < _MIN_TISSUE_PIXELS:
            return None
        stains, angle = _stain_vectors(tissue, self.alpha)
        if angle < _MIN_STAIN_ANGLE_RAD:
            if self.reference is None:
                raise ValueError("the reference shows a single stain; fit on H&E with both")
            stains = self.reference["stain_matrix"]
        amounts = _linear(tissue, np.linalg.pinv(stains).T)
        return {
            "stain_matrix": stains,
            "max_concentrations": np.percentile(amounts, 99, axis=0).astype(np.float64),
        }

    def _apply(self, pixels: np.ndarray, source: Profile) -> np.ndarray:
        assert self.reference is not None
        unmix = np.linalg.pinv(source["stain_matrix"])  # density -> stain amounts
        # A stain absent from the source keeps its amounts rather than being blown up.
        source_max = source["max_concentrations"]
        scaled = self.reference["max_concentrations"] / np.maximum(source_max, 1e-6)
        ratio = np.where(source_max > 1e-6, scaled, 1.0)
        # Rescaled amounts in the reference's colours, plus the unexplained residual: one
        # linear map of optical density.
        recolour = unmix @ np.diag(ratio) @ self.reference["stain_matrix"]
        residual = np.eye(3) - unmix @ source["stain_matrix"]
        density = _linear(_optical_density(pixels), (recolour + residual).T)
        rgb = 256.0 * np.exp(-density) - 1.0
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# -- fitting on a slide ---------------------------------------------------------------------
def fit_to_slide(
    normalizer: StainNormalizer,
    slide: Slide,
    tissue: TissueMask | None = None,
    *,
    n_tiles: int = 32,
    tile_px: int = 256,
    mpp: float | None = None,
    seed: int = 0,
    as_source: bool = False,
) -> StainNormalizer:
    """Fit ``normalizer`` on tissue tiles sampled at random from ``slide``.

    Parameters
    ----------
    normalizer
        The normaliser to fit (fitted in place and returned).
    slide
        The slide whose stain is learnt.
    tissue
        Its tissue mask; detected with the defaults when omitted.
    n_tiles
        Number of tiles sampled among grid positions at least half tissue.
    tile_px
        Tile side in pixels.
    mpp
        Resolution of the sampled tiles (use the tiling resolution: colour statistics vary a
        little with it); ``None`` reads level-0 pixels, which also works without calibration.
    seed
        Seed of the sampling, so a slide always gives the same result.
    as_source
        Learn the slide's stain as the fixed source of its tiles (see ``fit_source``)
        instead of as the reference.

    Raises
    ------
    ValueError
        If the slide has no tissue to sample.
    """
    if n_tiles < 1 or tile_px < 1:
        raise ValueError(f"n_tiles and tile_px must be positive, got {n_tiles}, {tile_px}")
    tissue = tissue if tissue is not None else detect_tissue(slide)
    footprint = tile_px if mpp is None else tile_px * mpp / slide.mpp
    width, height = slide.dimensions
    xs = np.arange(0, max(width - footprint, 0) + 1, footprint)
    ys = np.arange(0, max(height - footprint, 0) + 1, footprint)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    boxes = np.column_stack([grid, np.full((len(grid), 2), footprint)])
    candidates = grid[tissue.coverage(boxes) >= _FIT_MIN_COVERAGE]
    if len(candidates) == 0:
        raise ValueError(
            f"{slide.slide_id}: no {tile_px}-px tile is at least {_FIT_MIN_COVERAGE:.0%} tissue; "
            "cannot fit a stain normaliser on it"
        )
    rng = np.random.default_rng(seed)
    chosen = candidates[rng.choice(len(candidates), min(n_tiles, len(candidates)), replace=False)]
    tiles = [
        slide.read_region((int(x), int(y)), 0, (tile_px, tile_px))
        if mpp is None
        else slide.read_at((int(x), int(y)), mpp=mpp, tile_px=tile_px)
        for x, y in chosen
    ]
    sample = np.stack(tiles)
    return normalizer.fit_source(sample) if as_source else normalizer.fit(sample)
