"""CLAM / TRIDENT feature files: export a slide's features, import theirs as a bag for MIL.

TRIDENT writes ``<job>/<mag>x_<px>px_<overlap>px_overlap/features_<encoder>/<slide>.h5``
with the datasets ``features`` (N × D) and ``coords`` (N × 2, level-0 top-left
x, y); ``coords`` carries the attributes of the patches file it came from
(``patch_size``, ``target_magnification``, ``patch_size_level0``, …) and
``features`` carries ``name`` and ``savetodir``. CLAM writes
``<feat_dir>/h5_files/<slide>.h5`` with the same two datasets and
``pt_files/<slide>.pt``, the features alone as a torch tensor. Exports carry the
chosen tool's coordinate attributes (``tiling.h5.coords_attrs``), so a file is
read by that tool's rule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from slideflow_core.errors import SlideflowError
from slideflow_core.features import FeatureBag, read_features
from tiling.h5 import H5Layout, coords_attrs, h5_job_dir, plain_attrs, read_h5_coords
from tiling.view import open_store


class FeatureFileError(SlideflowError):
    """A feature file lacks what a CLAM/TRIDENT feature file must have."""


def export_features(
    store: str | os.PathLike[str],
    model_id: str,
    out_dir: str | os.PathLike[str],
    *,
    layout: H5Layout = "trident",
) -> list[Path]:
    """Write one slide's ``features/<model_id>`` as TRIDENT or CLAM feature files.

    Parameters
    ----------
    store
        A slide store with a complete feature part.
    model_id
        The feature part's name.
    out_dir
        Root folder. TRIDENT files go to its job layout,
        ``<mag>x_<px>px_<overlap>px_overlap/features_<model_id>/<slide_id>.h5``
        (beside the ``patches/`` that ``tiling.export_h5`` writes to the same root);
        CLAM files to ``h5_files/<slide_id>.h5`` and ``pt_files/<slide_id>.pt``.
    layout
        ``"trident"`` or ``"clam"``.

    Returns
    -------
    list of Path
        The files written (float32 features, int64 coordinates).
    """
    tiles = open_store(store)
    folder = h5_job_dir(tiles, out_dir, layout) / (
        f"features_{model_id}" if layout == "trident" else "h5_files"
    )
    bag = read_features(store, model_id)
    h5_path = folder / f"{bag.slide_id}.h5"
    _write_h5(h5_path, bag, coords_attrs(tiles, folder, layout))
    if layout == "trident":
        return [h5_path]
    import torch

    pt_path = Path(out_dir) / "pt_files" / f"{bag.slide_id}.pt"
    pt_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pt_path.with_name(pt_path.name + ".tmp")
    torch.save(torch.from_numpy(bag.features), tmp)  # a plain tensor: loads with weights_only
    os.replace(tmp, pt_path)
    return [h5_path, pt_path]


def _write_h5(path: Path, bag: FeatureBag, attrs: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as handle:
        features = handle.create_dataset("features", data=bag.features.astype(np.float32))
        coords = handle.create_dataset("coords", data=bag.coords.astype(np.int64))
        for key, value in attrs.items():
            coords.attrs[key] = value
        features.attrs.update(
            {
                "name": bag.slide_id,
                "savetodir": str(path.parent),
                "encoder": bag.model_id,
                "tile_index": bag.tile_index,
                "provenance": json.dumps(bag.info.get("identity", {}), default=str),
            }
        )
    os.replace(tmp, path)


def import_features(
    path: str | os.PathLike[str], *, slide_id: str | None = None, model_id: str | None = None
) -> FeatureBag:
    """Load a TRIDENT/CLAM feature ``.h5`` (or a CLAM ``.pt``) as a bag, without a store.

    Parameters
    ----------
    path
        ``features_<encoder>/<slide>.h5``, ``h5_files/<slide>.h5``, or
        ``pt_files/<slide>.pt`` (its coordinates are read from the CLAM
        ``h5_files/<slide>.h5`` beside ``pt_files/``).
    slide_id
        Identity (default: the file's ``name`` attribute, else its stem).
    model_id
        Feature name (default: the ``encoder`` attribute, else the TRIDENT folder's
        ``features_<encoder>`` suffix, else ``"imported"``).

    Returns
    -------
    FeatureBag
        float32 features, int64 coordinates; ``tile_index`` numbers the rows and
        ``info`` holds the file's attributes.

    Raises
    ------
    FeatureFileError
        If the file lacks ``features`` (or coordinates), or their lengths differ.
    """
    path = Path(path)
    if path.suffix == ".pt":
        features, f_attrs = _read_pt(path), {}
        h5_path = path.parent.parent / "h5_files" / f"{path.stem}.h5"
        if not h5_path.is_file():
            raise FeatureFileError(
                f"{path} holds features only; their coordinates were expected in {h5_path}",
                hint="import the CLAM h5_files/<slide>.h5 instead, or put it beside pt_files/",
            )
    else:
        features, f_attrs = _read_h5_features(path)
        h5_path = path
    coords, c_attrs = read_h5_coords(h5_path)
    if len(coords) != len(features):
        raise FeatureFileError(f"{path}: {len(features)} feature rows but {len(coords)} coords")
    folder = path.parent.name
    default_model = folder.removeprefix("features_") if folder.startswith("features_") else None
    return FeatureBag(
        slide_id=str(slide_id or f_attrs.get("name") or c_attrs.get("name") or path.stem),
        model_id=str(model_id or f_attrs.get("encoder") or default_model or "imported"),
        features=features,
        coords=coords,
        tile_index=np.arange(len(features), dtype=np.int64),
        info={"source": str(path.resolve()), "features_attrs": f_attrs, "coords_attrs": c_attrs},
    )


def _read_h5_features(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        with h5py.File(path, "r") as handle:
            if "features" not in handle:
                found = ", ".join(handle.keys()) or "none"
                raise FeatureFileError(
                    f"{path} has no 'features' dataset (found: {found})",
                    hint="a patches .h5 holds coordinates only: embed the slide first",
                )
            features = np.asarray(handle["features"][:], dtype=np.float32)
            attrs = plain_attrs(handle["features"].attrs)
    except OSError as exc:
        raise FeatureFileError(f"{path} is not a readable HDF5 file ({exc})") from exc
    return _check_2d(features, path), attrs


def _read_pt(path: Path) -> np.ndarray:
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as exc:
        raise FeatureFileError(
            f"{path} is not a plain tensor file ({type(exc).__name__})",
            hint="CLAM .pt bags are torch.save(tensor); other pickles are refused",
        ) from exc
    if not isinstance(value, torch.Tensor):
        raise FeatureFileError(f"{path} holds a {type(value).__name__}, not a feature tensor")
    return _check_2d(value.float().numpy(), path)


def _check_2d(features: np.ndarray, path: Path) -> np.ndarray:
    if features.ndim == 3 and features.shape[0] == 1:  # a saved batch of one bag
        features = features[0]
    if features.ndim != 2:
        raise FeatureFileError(f"{path}: features must be N x D, got shape {features.shape}")
    return features
