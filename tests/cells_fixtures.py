"""Shared helpers of the cells tests: a small synthetic slide with sparse nuclei, tiled."""

from __future__ import annotations

from pathlib import Path

from slideflow_core.synthetic import SyntheticSlideSpec, SyntheticTruth, write_synthetic_slide

#: Sparse enough that few synthetic nuclei overlap (at 3000/mm², 40 % touch a neighbour
#: heavily and merge into one blob that no segmenter could split).
SPARSE_SPEC = SyntheticSlideSpec(
    width_px=4096,
    height_px=3072,
    mpp=0.25,
    seed=3,
    nuclei_per_mm2=1500.0,
    n_pen_marks=0,
    n_blur_regions=0,
)


def sparse_slide(folder: Path, **overrides: int) -> tuple[Path, SyntheticTruth]:
    """Write the sparse synthetic slide (or a variant) into ``folder``, with its truth."""
    path = folder / "sparse.svs"
    return path, write_synthetic_slide(path, SPARSE_SPEC.with_overrides(**overrides))


def tiled_store(folder: Path, slide: Path) -> Path:
    """A coordinates-only tile store of ``slide`` at 0.5 µm/px."""
    from tiling import TilingConfig, tile_slide

    store = folder / "stores" / "sparse.zarr"
    tile_slide(slide, store, TilingConfig(mpp=0.5, tile_px=256, store_pixels=False))
    return store
