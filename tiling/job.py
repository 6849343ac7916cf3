"""Tiling one slide: plan (tissue + grid + empty store), bands of tiles, commit.

These are plain functions on small frozen records, so the same code runs in
one process (:func:`tiling.stage.tile_slide`) or as Ray tasks (:mod:`tiling.stage`),
where the bands of a cohort's last slides run on different workers.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, mapping

from slideflow_core.geojson import GeoJSONError, read_roi
from slideflow_core.provenance import file_fingerprint, package_versions, run_context
from slideflow_core.slides import Slide, open_slide
from slideflow_core.stages import SlideOutcome
from slideflow_core.store import (
    StoreError,
    part_state,
    partial_path,
    read_store_attrs,
    use_fast_codecs,
)
from tiling.config import TilingConfig
from tiling.grid import plan_grid
from tiling.pixels import PixelPlan, plan_pixels, read_batches
from tiling.qc import QC_COLUMNS, qc_keep
from tiling.stain import create_normalizer, fit_to_slide
from tiling.store import PART, BandWriter, create_tile_store, finish_tile_store, write_qc
from tiling.tissue import detect_tissue

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}  # anything else is read as a slide
#: Simplification tolerance for stored tissue outlines, in detection-mask pixels.
_OUTLINE_TOLERANCE_MASK_PX = 1.0


@dataclass(frozen=True)
class SlideTask:
    """What to tile: one slide, where its store goes, and how.

    Attributes
    ----------
    slide_id, path
        Identity and location of the slide.
    store
        Final path of the slide's store (``<project>/stores/<slide_id>.zarr``).
    config
        The tiling configuration.
    mpp
        Level-0 µm/px override for uncalibrated slides.
    backend
        Slide reader (``"auto"`` by default).
    """

    slide_id: str
    path: str
    store: str
    config: TilingConfig
    mpp: float | None = None
    backend: str = "auto"

    def open(self) -> Slide:
        """Open the slide with this task's override and backend."""
        return open_slide(self.path, backend=self.backend, mpp=self.mpp, slide_id=self.slide_id)


@dataclass(frozen=True)
class RunInputs:
    """What every slide of a run shares, read once per run: the region of interest.

    A ROI that can't be read is kept as its error and raised for each slide, so
    every slide fails with the same one-line message.
    """

    roi: MultiPolygon | None = None
    roi_error: tuple[str, str | None] | None = None

    @classmethod
    def load(cls, config: TilingConfig) -> RunInputs:
        """Parse ``config.roi`` (if any) once."""
        if not config.roi:
            return cls()
        try:
            return cls(roi=read_roi(config.roi))
        except GeoJSONError as exc:
            return cls(roi_error=(exc.message, exc.hint))

    def roi_within(self, bounds: tuple[int, int, int, int]) -> MultiPolygon | None:
        """The ROI clipped to a slide's level-0 box ``x, y, width, height``.

        Raises
        ------
        GeoJSONError
            If the ROI file could not be read.
        """
        if self.roi_error is not None:
            raise GeoJSONError(self.roi_error[0], hint=self.roi_error[1])
        if self.roi is None:
            return None
        x, y, width, height = bounds
        return shapely.clip_by_rect(self.roi, x, y, x + width, y + height)


@dataclass(frozen=True)
class SlidePlan:
    """A planned slide: its partial store exists, its bands and pixel codec are known."""

    task: SlideTask
    partial: str
    n_tiles: int
    bands: tuple[tuple[int, int], ...]
    level: int
    read_px: int
    stain: dict[str, Any] | None
    started: float
    pixels: PixelPlan
    #: Requested, actual and level µm/px, whether tiles are resized, and the backend.
    resolution: dict[str, Any]


def check_existing(task: SlideTask, *, overwrite: bool) -> SlideOutcome | None:
    """A ``skipped`` result when a compatible complete store exists, else ``None``.

    Raises
    ------
    StoreError
        When a complete store made with another config exists and ``overwrite``
        is False.
    """
    state = part_state(task.store, PART, task.config.identity())
    if state == "complete" and not overwrite:
        info = read_store_attrs(task.store).get("parts", {}).get(PART, {})
        return SlideOutcome(
            task.slide_id,
            "skipped",
            task.store,
            n_tiles=int(info.get("n_tiles", 0)),
            details={"n_kept": int(info.get("n_kept", 0))},
        )
    if state == "incompatible" and not overwrite:
        raise StoreError(
            f"{task.store} was tiled with a different configuration",
            hint="pass overwrite=True (--overwrite) to re-tile, or choose another output folder",
        )
    return None


def plan_slide(task: SlideTask, inputs: RunInputs | None = None) -> SlidePlan:
    """Detect tissue, lay the grid, choose the codec and create the partial store with coordinates.

    ``inputs`` are the run's shared inputs (parsed here when not given).
    """
    started = time.time()
    config = task.config
    inputs = inputs if inputs is not None else RunInputs.load(config)
    with task.open() as slide:
        roi = inputs.roi_within(slide.bounds or (0, 0, *slide.dimensions))
        tissue = detect_tissue(slide, method=config.tissue_method, **config.tissue_params)
        grid = plan_grid(slide, config, tissue=tissue, roi=roi)
        pixels = plan_pixels(
            slide, config, level=grid.level, read_px=grid.read_px, coords=grid.coords
        )
        stain = _fit_stain(slide, tissue, config)
        choice = grid.choice
        resolution = {
            "mpp_requested": config.target_mpp,
            "mpp_actual": choice.actual_mpp,
            "mpp_level": choice.level_mpp,
            "resized": choice.needs_resize,
            "backend": slide.backend_choice.as_dict(),
        }
        attrs = {
            "slide_id": task.slide_id,
            "slide": {
                **file_fingerprint(slide.path),
                **slide.describe(),
                "mpp_override": task.mpp,
            },
        }
        outline = shapely.simplify(
            tissue.polygons, _OUTLINE_TOLERANCE_MASK_PX * max(tissue.downsample)
        )
        partial = create_tile_store(
            task.store,
            coords=grid.coords,
            mask_tissue_fraction=grid.tissue_fraction,
            tile_px=config.tile_px,
            qc_columns=QC_COLUMNS,
            store_pixels=config.store_pixels,
            codec=pixels.codec,
            jpeg_quality=config.jpeg_quality,
            shard_tiles=config.shard_tiles,
            tissue_mask=tissue.mask,
            tile_mpp=choice.actual_mpp,
            attrs={
                **attrs,
                "tissue": {
                    "detector": tissue.detector,
                    "params": tissue.params,
                    "mask_downsample": list(tissue.downsample),
                    "outline": mapping(outline),
                    "coordinate_space": "level0_px",
                },
            },
        )
    n = len(grid)
    bands = split_bands(n, config.shard_tiles, config.band_tiles, os.cpu_count() or 1)
    return SlidePlan(
        task=task,
        partial=str(partial),
        n_tiles=n,
        bands=bands,
        level=grid.level,
        read_px=grid.read_px,
        stain=stain,
        started=started,
        pixels=pixels,
        resolution=resolution,
    )


def split_bands(
    n: int, shard_tiles: int, band_tiles: int, workers: int
) -> tuple[tuple[int, int], ...]:
    """Cut ``n`` tiles into shard-aligned bands of at most ``band_tiles`` that keep
    ``workers`` busy to the end.

    Bands are whole shards (one writer per shard), as equal as shards allow, and
    their number is a multiple of ``workers`` (at least two rounds when there are
    shards enough), so the last round does not leave cores idle: 1,236 tiles in
    bands of 1,024 are one band of 1,024 and one of 212, which two cores finish
    in the time of the first alone; here they are 512, 256, 256 and 212.

    Returns
    -------
    tuple of (start, stop)
        Ascending, covering ``0..n``; starts are multiples of ``shard_tiles``.
    """
    if n <= 0:
        return ()
    shards = -(-n // shard_tiles)
    per_band = max(1, band_tiles // shard_tiles)
    count = max(-(-shards // per_band), 2 * workers)
    count = min(shards, -(-count // workers) * workers)
    sizes = [shards // count + (i < shards % count) for i in range(count)]
    bounds = (np.cumsum([0, *sizes]) * shard_tiles).tolist()
    return tuple((a, min(b, n)) for a, b in itertools.pairwise(bounds))


def _fit_stain(slide: Slide, tissue: Any, config: TilingConfig) -> dict[str, Any] | None:
    """Fit the reference stain (an image or a slide) and this slide's own stain once.

    Estimating the source stain once per slide, rather than per tile, keeps the
    colour differences between tiles that come from their content.
    """
    if config.stain is None:
        return None
    normalizer = create_normalizer(config.stain)
    reference = str(config.stain_reference)
    if Path(reference).suffix.lower() in _IMAGE_SUFFIXES:
        from PIL import Image

        normalizer.fit(np.asarray(Image.open(reference).convert("RGB")))
    else:
        with open_slide(reference) as ref_slide:
            fit_to_slide(normalizer, ref_slide, mpp=_sampling_mpp(ref_slide, config))
    fit_to_slide(normalizer, slide, tissue, mpp=config.target_mpp, as_source=True)
    return {"name": config.stain, "reference": reference, "params": normalizer.to_dict()}


def _sampling_mpp(slide: Slide, config: TilingConfig) -> float | None:
    """Sample a reference slide at the tiling resolution when it is calibrated."""
    return config.target_mpp if slide.has_mpp else None


def tile_band(plan: SlidePlan, start: int, stop: int, *, threads: int = 1) -> dict[str, Any]:
    """Read, QC and write tiles ``start:stop`` of a planned slide (idempotent).

    ``threads`` read, check and encode the band's tiles together (``1``: in the
    calling thread, as a Ray task with one CPU does). Returns the band's summary
    and its QC columns, which :func:`commit_slide` writes.
    """
    config = plan.task.config
    import zarr

    coords = zarr.open_array(store=plan.partial, path="coords", mode="r")[start:stop]
    writer = BandWriter(
        plan.partial,
        start,
        stop,
        config.shard_tiles,
        columns=(*QC_COLUMNS, "keep"),
        pixels=config.store_pixels,
    )
    normalize = None
    if plan.stain is not None:
        normalize = create_normalizer(plan.stain["name"]).from_dict(plan.stain["params"]).transform
    method, dct_scale = "", 1
    with plan.task.open() as slide:
        batches = read_batches(
            slide,
            coords,
            plan.pixels,
            jpeg_quality=config.jpeg_quality,
            threads=threads,
            normalize=normalize,
        )
        for batch, reader in batches:
            keep = qc_keep(batch.metrics, config.qc)
            writer.add(
                batch.indices + start,
                batch.tiles,
                {**batch.metrics, "keep": keep},
                encoded=batch.encoded,
            )
            method, dct_scale = reader.method, reader.dct_scale
        qc = writer.flush()
    return {
        "start": start,
        "tiles": stop - start,
        "method": method,
        "dct_scale": dct_scale,
        "qc": qc,
        "files": writer.written,
    }


def commit_slide(plan: SlidePlan, bands: list[dict[str, Any]]) -> SlideOutcome:
    """Record provenance, mark the tiling part complete and commit the store."""
    config = plan.task.config
    n_kept = sum(int(b["qc"]["keep"].sum()) for b in bands)
    methods = sorted({b["method"] for b in bands if b["method"]})
    if not Path(plan.partial).exists() and (
        part_state(plan.task.store, PART, config.identity()) == "complete"
    ):
        # A retried commit whose first attempt renamed the store before its worker died.
        return SlideOutcome(
            plan.task.slide_id,
            "done",
            plan.task.store,
            n_tiles=plan.n_tiles,
            seconds=time.time() - plan.started,
            details={"n_kept": n_kept, "read_method": ",".join(methods)},
        )
    info = {
        "identity": config.identity(),
        "config": config.to_dict(),
        "n_tiles": plan.n_tiles,
        "n_kept": n_kept,
        "level": plan.level,
        "read_px": plan.read_px,
        "tile_px": config.tile_px,
        "read_method": methods,
        "codec": plan.pixels.codec,
        "codec_reason": plan.pixels.codec_reason,
        "dct_scale": max((b.get("dct_scale", 1) for b in bands), default=1),
        "qc_scale": plan.pixels.qc_scale,
        "qc_level": plan.pixels.qc_level,
        "stain": plan.stain,
        "qc_thresholds": config.qc.to_dict(),
        "coordinate_space": "level0_px",
        "tile_order": "row-major",
        "versions": package_versions(("opencv-python-headless", "ray", "zarrs")),
        "zarr_pipeline": use_fast_codecs(),
        **run_context(),
        **plan.resolution,
    }
    write_qc(plan.partial, plan.n_tiles, [(band["start"], band["qc"]) for band in bands])
    known = {key: file for band in bands for key, file in band.get("files", {}).items()}
    finish_tile_store(plan.partial, plan.task.store, info, known=known)
    return SlideOutcome(
        plan.task.slide_id,
        "done",
        plan.task.store,
        n_tiles=plan.n_tiles,
        seconds=time.time() - plan.started,
        details={
            "n_kept": n_kept,
            "read_method": ",".join(methods),
            "mpp_actual": plan.resolution["mpp_actual"],
            "codec": plan.pixels.codec,
        },
    )


__all__ = [
    "RunInputs",
    "SlidePlan",
    "SlideTask",
    "check_existing",
    "commit_slide",
    "partial_path",
    "plan_slide",
    "split_bands",
    "tile_band",
]
