"""Slides to slide labels and back to the tumour: synthesise, tile, embed, ABMIL, localise.

A small synthetic cohort (half the slides carry tumour foci) goes through the
real stages on a local Ray instance: the slide-level AUROC must be high, and the
attention written back into the stores must rank tumour tiles above the rest.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from mil_fixtures import one_torch_thread  # noqa: F401 (autouse)

import mil
from embedders import embed_cohort
from mil.localisation import localise, regions_from_geojson, tile_overlap
from slideflow_core.cohort import Cohort
from slideflow_core.synthetic import SyntheticSlideSpec, SyntheticTruth
from slideflow_core.synthetic.cohort import TUMOUR_CLASS, write_tumour_cohort
from tiling import TilingConfig, tile_cohort

pytestmark = pytest.mark.integration

SPEC = SyntheticSlideSpec(
    width_px=4096, height_px=4096, mpp=0.5, n_pen_marks=0, n_blur_regions=0,
    associated_images=False, tumour_radius_um=(200.0, 350.0),
)  # fmt: skip


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory):
    return write_tumour_cohort(tmp_path_factory.mktemp("cohort"), 14, spec=SPEC, seed=3)


@pytest.fixture(scope="module")
def trained(cohort_files, tmp_path_factory, ray_session):
    project = tmp_path_factory.mktemp("project")
    cohort = Cohort.from_manifest(cohort_files.manifest)
    assert tile_cohort(cohort, project, TilingConfig(mpp=1.0, tile_px=128), progress=False).ok
    assert embed_cohort(project, "handcrafted", progress=False).ok
    experiment = mil.Experiment(
        cohort, project=project, features="handcrafted", label="label", model="abmil",
        splits=mil.KFold(k=3, seed=0),
        train=mil.TrainConfig(epochs=30, lr=1e-3, batch_size=2, patience=None, standardize=True),
        name="tumour-abmil", heatmaps=1,
    )  # fmt: skip
    return project, experiment, experiment.run()


def test_cohort_has_both_classes_tumour_inside_tissue_and_denser_nuclei(cohort_files):
    cohort = Cohort.from_manifest(cohort_files.manifest)
    assert {r.labels["label"] for r in cohort} == {"tumour", "normal"}
    for record in cohort:
        truth = SyntheticTruth.load(cohort_files.slides_dir / f"{record.slide_id}.truth.json")
        if record.labels["label"] == "normal":
            assert truth.tumour.is_empty
            continue
        assert truth.tumour.area > 0
        assert truth.tumour.difference(truth.tissue.buffer(1e-6)).area < 1e-6 * truth.tumour.area
        inside = shapely.contains_xy(truth.tumour, truth.nuclei[:, 0], truth.nuclei[:, 1])
        normal = truth.tissue.difference(truth.tumour)
        density_in = inside.sum() / truth.tumour.area
        density_out = (~inside).sum() / normal.area
        assert density_in > 1.5 * density_out
        assert truth.nuclei_radius_px[inside].mean() > truth.nuclei_radius_px[~inside].mean()


def test_annotations_are_qupath_tumour_polygons_matching_the_truth(cohort_files):
    regions = regions_from_geojson(cohort_files.annotations(), classes=[TUMOUR_CLASS])
    assert regions and set(regions) <= set(Cohort.from_manifest(cohort_files.manifest).slide_ids)
    for slide_id, region in regions.items():
        truth = SyntheticTruth.load(cohort_files.slides_dir / f"{slide_id}.truth.json")
        # exported with 2-decimal coordinates: the areas agree to far better than a pixel row
        assert region.symmetric_difference(truth.tumour).area < 1e-3 * truth.tumour.area


def test_rerun_keeps_complete_slides(cohort_files):
    slide = next(cohort_files.slides_dir.glob("*.svs"))
    stamp = slide.stat().st_mtime_ns
    write_tumour_cohort(cohort_files.manifest.parent, 14, spec=SPEC, seed=3)
    assert slide.stat().st_mtime_ns == stamp


def test_abmil_separates_slides_and_its_attention_finds_the_tumour(trained, cohort_files):
    project, experiment, results = trained
    assert results.pooled["auroc"] >= 0.9
    regions = regions_from_geojson(cohort_files.annotations(), classes=[TUMOUR_CLASS])
    where = localise(project, experiment.name, regions)
    assert len(where.per_slide) == len(regions)
    assert where.mean_auroc >= 0.8, where.per_slide
    assert where.top_hit_rate >= 0.6, where.per_slide


def test_tile_overlap_is_the_area_share_inside_the_region():
    region = shapely.MultiPolygon([shapely.box(0, 0, 100, 50)])
    coords = np.array([[0, 0], [0, 50], [50, 25], [200, 200]])
    np.testing.assert_allclose(tile_overlap(coords, 50, region), [1.0, 0.0, 0.5, 0.0])


def test_localise_names_slides_without_scores(trained):
    project, _, _ = trained
    region = shapely.MultiPolygon([shapely.box(0, 0, 10, 10)])
    with pytest.raises(mil.MILError, match="no scores of run 'missing-run'"):
        localise(project, "missing-run", {"synth-000": region})
    with pytest.raises(mil.MILError, match="negative_share < positive_share"):
        localise(project, "tumour-abmil", {}, positive_share=0.2, negative_share=0.3)
