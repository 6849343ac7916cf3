"""The tiling configuration: what a tile is, physically, and what is kept.

A :class:`TilingConfig` is frozen and validated on construction; it is what
crosses into Ray tasks and what every store records as provenance. A resumed
run reuses a store only when the stored config is identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from slideflow_core.slides import DEFAULT_TOLERANCE, parse_magnification
from tiling.qc import QCThresholds

EdgePolicy = Literal["drop", "pad"]
#: Ways to store tile pixels (see ``TilingConfig.codec``).
CODECS = ("auto", "jpeg-passthrough", "jpeg", "zstd", "lz4", "none")
#: Reductions QC can be computed at (libjpeg's DCT scales).
QC_SCALES = (1, 2, 4, 8)


@dataclass(frozen=True, kw_only=True)
class TilingConfig:
    """How slides are cut into tiles.

    Exactly one of ``mpp``, ``magnification`` and ``tile_um`` sets the resolution.

    Parameters
    ----------
    mpp
        Requested µm per pixel of the stored tiles (0.5 ≈ 20x).
    magnification
        Alternative to ``mpp``: ``"20x"`` → 0.5 µm/px (``mpp = 10 / power``).
    tile_um
        Alternative to ``mpp``: physical tile side in µm (``mpp = tile_um / tile_px``).
    tile_px
        Tile side in pixels at the requested resolution.
    overlap_px
        Overlap between neighbouring tiles, in output pixels (stride = tile - overlap).
    tolerance
        Relative tolerance for serving ``mpp`` from a pyramid level without resizing.
    edge
        Tiles crossing the slide's edge: ``"drop"`` them, or ``"pad"`` with white.
    tissue_method
        Tissue detector name (see ``tiling.tissue_detectors``).
    tissue_params
        Extra keyword arguments for the detector.
    min_tissue_fraction
        A grid position is tiled when at least this fraction of it is tissue in the
        detection mask. The default 0.05 covers all tissue (≥ 99.9 % of the true
        tissue area of synthetic slides) with no pure-background tile; 0 keeps any
        tile touching the mask.
    roi
        Optional GeoJSON (QuPath export) whose polygons restrict tiling; a tile is
        kept when its centre lies inside.
    qc
        Thresholds deciding each tile's ``keep`` flag; the QC values themselves
        are always stored so tiles can be re-filtered without re-tiling.
    stain
        Stain normaliser applied to stored tiles (``"macenko"``, ``"reinhard"``), or None.
    stain_reference
        Reference the normaliser maps every slide onto: an image file (PNG, JPEG,
        TIFF tile) or a whole slide (its tissue is sampled). Required with ``stain``.
    store_pixels
        Store tile pixels (``tiles`` array); when False only coordinates and QC
        are stored and pixels are read from the slide later, as CLAM/TRIDENT do.
    read_method
        Tile reading strategy (``"auto"``, ``"native"``, ``"region"``, ``"per_tile"``).
    codec
        How tile pixels are stored. ``"jpeg-passthrough"``: the slide's own JPEG
        tiles are copied into the store undecoded; only possible when the grid is
        the level's native tile grid (same tile size, no resize, no overlap, no
        stain normalisation). ``"jpeg"``: decoded pixels re-encoded at
        ``jpeg_quality`` (lossy; a resize by 2, 4 or 8 is then done by libjpeg's
        DCT scaling instead of a full decode and an area resize). ``"zstd"``,
        ``"lz4"``, ``"none"``: lossless, pixels equal to ``Slide.read_at``.
        ``"auto"`` (default): pass-through where the grid allows it, else ``"jpeg"``.
        The codec used is recorded per slide in the store.
    jpeg_quality
        libjpeg quality (1-100) of re-encoded tiles.
    qc_scale
        QC metrics are computed on tiles reduced this many times (1, 2, 4 or 8;
        fewer when a tile would fall under 16 px). 8 (default) lets JPEG-tiled
        slides be checked from a DCT-scaled decode, without decoding tiles in
        full; 1 is full-resolution QC. ``blur`` depends on it.
    shard_tiles
        Tiles per Zarr shard (one file holds this many tiles).
    band_tiles
        Most tiles per parallel task when a slide is split across workers (bands
        are cut evenly, in whole shards, and at least two per core; see
        :func:`tiling.job.split_bands`); a multiple of ``shard_tiles`` so tasks
        never write the same shard.
    """

    mpp: float | None = None
    magnification: str | None = None
    tile_um: float | None = None
    tile_px: int = 256
    overlap_px: int = 0
    tolerance: float = DEFAULT_TOLERANCE
    edge: EdgePolicy = "drop"
    tissue_method: str = "clam"
    tissue_params: dict[str, Any] = field(default_factory=dict)
    min_tissue_fraction: float = 0.05
    roi: str | None = None
    qc: QCThresholds = field(default_factory=QCThresholds)
    stain: str | None = None
    stain_reference: str | None = None
    store_pixels: bool = True
    read_method: str = "auto"
    codec: str = "auto"
    jpeg_quality: int = 90
    qc_scale: int = 8
    shard_tiles: int = 256
    band_tiles: int = 1024

    def __post_init__(self) -> None:
        given = [n for n in ("mpp", "magnification", "tile_um") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of mpp, magnification, tile_um (got {given})")
        if self.tile_px < 8:
            raise ValueError(f"tile_px must be at least 8, got {self.tile_px}")
        if not 0 <= self.overlap_px < self.tile_px:
            raise ValueError(f"overlap_px must be in [0, tile_px), got {self.overlap_px}")
        if self.edge not in ("drop", "pad"):
            raise ValueError(f"edge must be 'drop' or 'pad', got {self.edge!r}")
        if not 0 <= self.min_tissue_fraction <= 1:
            raise ValueError("min_tissue_fraction must be within [0, 1]")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}; got {self.codec!r}")
        if not (isinstance(self.jpeg_quality, int) and 1 <= self.jpeg_quality <= 100):
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        if self.qc_scale not in QC_SCALES:
            raise ValueError(f"qc_scale must be one of {QC_SCALES}, got {self.qc_scale!r}")
        if self.stain is not None and not self.stain_reference:
            raise ValueError("stain normalisation needs stain_reference (an image or a slide)")
        if self.shard_tiles < 1 or self.band_tiles < self.shard_tiles:
            raise ValueError("need shard_tiles >= 1 and band_tiles >= shard_tiles")
        if self.band_tiles % self.shard_tiles:
            raise ValueError("band_tiles must be a multiple of shard_tiles")
        mpp = self.target_mpp  # validates magnification / tile_um
        if mpp <= 0:
            raise ValueError(f"resolution must be positive, got {mpp} µm/px")

    @property
    def target_mpp(self) -> float:
        """The requested µm per pixel, whichever way it was given (default 0.5)."""
        if self.magnification is not None:
            return parse_magnification(self.magnification)
        if self.tile_um is not None:
            return self.tile_um / self.tile_px
        return 0.5 if self.mpp is None else float(self.mpp)

    @property
    def stride_px(self) -> int:
        """Distance between neighbouring tiles in output pixels."""
        return self.tile_px - self.overlap_px

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the resolved ``target_mpp``."""
        return {**asdict(self), "qc": self.qc.to_dict(), "target_mpp": self.target_mpp}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TilingConfig:
        """Rebuild from :meth:`to_dict` output (derived keys are ignored)."""
        names = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in names}
        if isinstance(kwargs.get("qc"), dict):
            kwargs["qc"] = QCThresholds(**kwargs["qc"])
        return cls(**kwargs)

    def identity(self) -> dict[str, Any]:
        """The fields that change what a store contains (for resume checks)."""
        data = self.to_dict()
        for key in ("read_method", "band_tiles"):  # how tiles are made, not what they are
            data.pop(key)
        return data
