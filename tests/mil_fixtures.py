"""Synthetic MIL data for the MIL tests: witness bags in memory and tiny slide stores.

Positive bags hide a few "witness" instances shifted along the first
``signal_dims`` features; negative bags are pure noise. Stores are built with
``slideflow_core`` only (no tiling or embedder), exactly as the embedders leave them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mil.data import BagTable
from slideflow_core.features import write_features
from slideflow_core.store import commit_store, start_store


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per test: tiny models on a shared two-core machine run faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def witness_bags(
    n_bags: int = 120,
    *,
    dim: int = 32,
    instances: tuple[int, int] = (20, 60),
    witnesses: tuple[int, int] = (2, 5),
    shift: float = 3.0,
    signal_dims: int = 8,
    seed: int = 0,
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Bags, their 0/1 labels, and per-bag boolean witness masks (ground truth)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_bags) % 2
    rng.shuffle(labels)
    bags, truth = [], []
    for label in labels:
        n = int(rng.integers(*instances))
        x = rng.normal(size=(n, dim)).astype(np.float32)
        is_witness = np.zeros(n, dtype=bool)
        if label:
            k = int(rng.integers(*witnesses))
            is_witness[rng.choice(n, size=k, replace=False)] = True
            x[is_witness, :signal_dims] += shift
        bags.append(x)
        truth.append(is_witness)
    return bags, labels, truth


def witness_table(n_bags: int = 120, **kwargs) -> BagTable:
    """:func:`witness_bags` as a :class:`BagTable` (one patient per bag)."""
    bags, labels, _ = witness_bags(n_bags, **kwargs)
    return BagTable.from_arrays(bags, labels.tolist())


def write_slide_store(
    store: Path, slide_id: str, features: np.ndarray, *, model_id: str = "synth", tile_px: int = 256
) -> Path:
    """A committed slide store with only ``features/<model_id>`` (tiles on a square grid)."""
    n = len(features)
    side = int(np.ceil(np.sqrt(n)))
    coords = np.stack([(np.arange(n) % side) * tile_px, (np.arange(n) // side) * tile_px], axis=1)
    partial = start_store(store, {"slide_id": slide_id})
    commit_store(partial, store)
    with write_features(
        store,
        model_id,
        tile_index=np.arange(n),
        coords=coords,
        dim=features.shape[1],
        info={"identity": {"model": model_id}},
        dtype="float32",
    ) as writer:
        writer.put(0, features)
    return store


def synthetic_project(
    root: Path, n_slides: int = 40, *, slides_per_patient: int = 2, seed: int = 0, **kwargs
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """A project with ``n_slides`` feature stores and its manifest frame (label ``tumour``).

    Returns the manifest (slide_id, path, patient_id, tumour, split) and the
    witness masks per slide.
    """
    bags, labels, truth = witness_bags(n_slides, seed=seed, **kwargs)
    rows = []
    for i, (x, label) in enumerate(zip(bags, labels, strict=True)):
        slide_id = f"slide-{i:03d}"
        write_slide_store(root / "stores" / f"{slide_id}.zarr", slide_id, x)
        rows.append(
            {
                "slide_id": slide_id,
                "path": str(root / f"{slide_id}.svs"),
                "patient_id": f"patient-{i // slides_per_patient:03d}",
                "tumour": int(label),
                "split": ("train", "train", "val", "test")[i % 4],
            }
        )
    return pd.DataFrame(rows), truth


def tumour_project(root: Path, n_slides: int = 8, *, seed: int = 3) -> tuple[Path, Path]:
    """A real tiny project: synthetic tumour slides tiled and embedded ("handcrafted") here.

    Tiling and embedding run in this process (no Ray): 2048² px slides at 0.5 µm/px,
    128 px tiles at 1 µm/px, about twenty feature rows per slide. Returns the
    project folder and its manifest (label ``tumour``/``normal``).
    """
    from embedders import embed_cohort
    from slideflow_core.synthetic import SyntheticSlideSpec
    from slideflow_core.synthetic.cohort import write_tumour_cohort
    from tiling import TilingConfig, tile_cohort

    spec = SyntheticSlideSpec(
        width_px=2048, height_px=2048, mpp=0.5, n_pen_marks=0, n_blur_regions=0,
        associated_images=False, tumour_radius_um=(150.0, 250.0),
    )  # fmt: skip
    cohort = write_tumour_cohort(root / "cohort", n_slides, spec=spec, seed=seed)
    project = root / "project"
    config = TilingConfig(mpp=1.0, tile_px=128)
    assert tile_cohort(cohort.manifest, project, config, progress=False, executor="local").ok
    assert embed_cohort(project, "handcrafted", progress=False, executor="local").ok
    return project, cohort.manifest
