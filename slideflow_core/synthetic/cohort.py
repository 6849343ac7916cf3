"""A labelled synthetic cohort: tumour-bearing and tumour-free slides with exact ground truth.

The slide-level task behind MIL tests, benchmarks and the demo: positives carry
one or more tumour foci (denser, larger, more elongated nuclei), negatives carry
none. Every positive slide also gets its tumour outline as a QuPath GeoJSON
annotation (class ``Tumor``), the same form a pathologist's annotation of a real
slide takes, so localisation is scored the same way on synthetic and real data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from slideflow_core.geojson.objects import Classification, IdSource, annotation_features
from slideflow_core.geojson.write import GeoJSONWriter
from slideflow_core.synthetic.spec import SyntheticSlideSpec
from slideflow_core.synthetic.writer import write_synthetic_slide

TUMOUR_CLASS = "Tumor"  # QuPath's built-in class name
LABELS = ("normal", "tumour")


@dataclass(frozen=True)
class TumourCohort:
    """Where :func:`write_tumour_cohort` put things.

    Attributes
    ----------
    manifest
        CSV with ``slide_id, path, patient_id, label, n_tumour_regions, annotation``;
        ``label`` is ``"tumour"`` or ``"normal"``; ``annotation`` is the tumour
        GeoJSON of positive slides (empty for negatives). Paths are absolute.
    slides_dir
        Slides (``<slide_id>.svs``), their truth (``<slide_id>.truth.json``) and
        annotations (``<slide_id>.tumour.geojson``).
    """

    manifest: Path
    slides_dir: Path

    def annotations(self) -> dict[str, Path]:
        """Slide id → tumour annotation file, for the positive slides."""
        return manifest_annotations(self.manifest)


def manifest_annotations(manifest: str | os.PathLike[str]) -> dict[str, Path]:
    """Slide id → annotation file from a manifest's optional ``annotation`` column.

    Empty cells are left out; relative paths are taken from the manifest's folder.
    Any manifest works, not only a synthetic one (e.g. pathologists' QuPath exports).
    """
    manifest = Path(manifest)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    if "annotation" not in frame:
        return {}
    return {r.slide_id: manifest.parent / r.annotation for r in frame.itertuples() if r.annotation}


def write_tumour_cohort(
    folder: str | os.PathLike[str],
    n_slides: int = 40,
    *,
    positive_fraction: float = 0.5,
    tumour_regions: tuple[int, int] = (1, 3),
    spec: SyntheticSlideSpec | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TumourCohort:
    """Write ``n_slides`` synthetic slides, a share of them with tumour, and their manifest.

    Slides already complete in ``folder`` are kept (the slide file is renamed into
    place only after its truth and annotation are written), so an interrupted
    call resumes. Every slide is its own patient.

    Parameters
    ----------
    folder
        Output folder; gets ``manifest.csv`` and ``slides/``.
    n_slides
        Cohort size (at least 2).
    positive_fraction
        Share of slides with tumour (rounded; at least one of each class).
    tumour_regions
        Inclusive range of the number of tumour foci on a positive slide.
    spec
        Base slide spec (size, mpp, tumour appearance); the seed and the number of
        foci are set per slide. Defaults to 8192 x 8192 px at 0.5 µm/px, no pen marks.
    seed
        Cohort seed: which slides are positive and each slide's seed.
    progress
        Show a progress bar.

    Returns
    -------
    TumourCohort
        The manifest and slide folder.

    Raises
    ------
    ValueError
        For fewer than two slides, a fraction outside (0, 1) or a bad foci range.
    """
    if n_slides < 2:
        raise ValueError(f"a cohort needs at least 2 slides, got {n_slides}")
    if not 0 < positive_fraction < 1:
        raise ValueError(f"positive_fraction must be in (0, 1), got {positive_fraction}")
    low, high = tumour_regions
    if not 1 <= low <= high:
        raise ValueError(f"tumour_regions must be (min, max) with 1 <= min <= max, got {low, high}")
    spec = spec or SyntheticSlideSpec(
        width_px=8192, height_px=8192, mpp=0.5, n_pen_marks=0, associated_images=False
    )
    rng = np.random.default_rng(seed)
    n_positive = min(max(1, round(n_slides * positive_fraction)), n_slides - 1)
    positive = np.zeros(n_slides, dtype=bool)
    positive[rng.choice(n_slides, size=n_positive, replace=False)] = True
    foci = np.where(positive, rng.integers(low, high + 1, size=n_slides), 0)
    # Absolute, so the manifest's paths resolve wherever it is read from.
    folder = Path(folder).absolute()
    slides_dir = folder / "slides"
    slides_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(n_slides), desc="synthetic slides", disable=not progress):
        slide_id = f"synth-{i:03d}"
        slide_spec = spec.with_overrides(seed=seed * 10_000 + i, n_tumour_regions=int(foci[i]))
        path = slides_dir / f"{slide_id}.svs"
        annotation = slides_dir / f"{slide_id}.tumour.geojson" if foci[i] else None
        if not path.exists():
            _write_slide(path, slide_spec, annotation)
        rows.append({
            "slide_id": slide_id, "path": str(path), "patient_id": slide_id,
            "label": LABELS[int(positive[i])], "n_tumour_regions": int(foci[i]),
            "annotation": str(annotation) if annotation else "",
        })  # fmt: skip
    manifest = folder / "manifest.csv"
    partial = folder / ".manifest.csv.partial"
    pd.DataFrame(rows).to_csv(partial, index=False)
    os.replace(partial, manifest)
    return TumourCohort(manifest=manifest, slides_dir=slides_dir)


def _write_slide(path: Path, spec: SyntheticSlideSpec, annotation: Path | None) -> None:
    """Slide, truth and annotation; the slide is renamed into place last (its commit)."""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    truth = write_synthetic_slide(partial, spec)
    truth.save(path.with_suffix(".truth.json"))
    if annotation is not None:
        with GeoJSONWriter(annotation) as out:
            out.write_encoded(
                annotation_features(
                    [truth.tumour],
                    ids=IdSource(f"{path.stem}/tumour"),
                    classification=Classification.named(TUMOUR_CLASS),
                    name="tumour (synthetic ground truth)",
                    locked=True,
                )
            )
    os.replace(partial, path)
