"""The run report names the head it trained, and heatmaps outline the annotated lesion.

A tiny real project (synthetic tumour slides tiled and embedded here, with the
writer's GeoJSON outlines in the manifest's ``annotation`` column) is trained
with ABMIL; the page must say ``head abmil`` and each heatmap of a slide with an
annotation must carry the outline's colour along the lesion's border, while a
heatmap drawn without the outline has none of it.
"""

from __future__ import annotations

import numpy as np
import pytest
from mil_fixtures import one_torch_thread, tumour_project  # noqa: F401 (autouse)
from PIL import Image

import mil
from mil.localisation import regions_from_geojson
from mil.report import plot_attention
from slideflow_core.cohort import Cohort
from slideflow_core.synthetic.cohort import manifest_annotations

OUTLINE_RGB = np.array([0x00, 0xE6, 0x76])


def _outline_pixels(path) -> int:
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(image - OUTLINE_RGB).sum(axis=-1) < 40).sum())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    project, manifest = tumour_project(tmp_path_factory.mktemp("report"), n_slides=6, seed=5)
    cohort = Cohort.from_manifest(manifest)
    annotated = [s for s in manifest_annotations(manifest) if s in cohort.slide_ids]
    experiment = mil.Experiment(
        cohort, project=project, features="handcrafted", label="label", model="abmil",
        splits=mil.KFold(k=2, seed=0), name="report-abmil", heatmaps=len(cohort),
        train=mil.TrainConfig(epochs=3, batch_size=2, patience=None, standardize=True),
    )  # fmt: skip
    return project, manifest, annotated, experiment.run()


def test_report_names_the_head(run):
    *_, results = run
    page = (results.run_dir / "report.html").read_text()
    assert "head abmil" in page and "head None" not in page


def test_heatmaps_of_annotated_slides_outline_the_lesion(run, tmp_path):
    project, manifest, annotated, results = run
    assert annotated, "the synthetic cohort should annotate its tumour slides"
    for slide_id in annotated:
        heatmap = results.run_dir / "heatmaps" / f"{slide_id}.png"
        assert _outline_pixels(heatmap) > 50, slide_id
    slide_id = annotated[0]
    store = project / "stores" / f"{slide_id}.zarr"
    bare = plot_attention(store, "report-abmil", tmp_path / "bare.png")
    region = regions_from_geojson({slide_id: manifest_annotations(manifest)[slide_id]})[slide_id]
    drawn = plot_attention(store, "report-abmil", tmp_path / "drawn.png", outline=region)
    assert _outline_pixels(bare) == 0 < _outline_pixels(drawn)
