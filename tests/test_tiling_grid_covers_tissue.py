"""At the documented threshold the grid covers all tissue and no pure background."""

from __future__ import annotations

import pytest
import shapely

from slideflow_core.slides import open_slide
from tiling import TilingConfig, detect_tissue, plan_grid


@pytest.mark.parametrize("method", ["clam", "otsu"])
def test_grid_covers_tissue_without_pure_background_tiles(synthetic_slide, method):
    path, truth = synthetic_slide
    config = TilingConfig(mpp=0.5, tile_px=128)  # default min_tissue_fraction
    with open_slide(path) as slide:
        grid = plan_grid(slide, config, tissue=detect_tissue(slide, method=method))
    boxes = shapely.box(*grid.coords.T, *(grid.coords + round(grid.extent_px)).T)
    covered = truth.tissue.intersection(shapely.union_all(boxes)).area / truth.tissue.area
    assert covered >= (0.999 if method == "clam" else 0.985)
    tissue_in_tile = shapely.area(shapely.intersection(boxes, truth.tissue))
    assert (tissue_in_tile > 0).all(), "a tile holds no tissue at all"
