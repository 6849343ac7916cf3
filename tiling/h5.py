"""CLAM / TRIDENT ``.h5`` coordinate files: export from and import into slide stores.

Both tools write a dataset ``coords`` (N × 2, level-0 top-left x, y). CLAM's
attributes say how the tiles were read (``patch_size`` pixels at
``patch_level``, with the level's ``downsample``); TRIDENT's say what they mean
physically (``patch_size`` at ``target_magnification``, ``patch_size_level0``).
We write both sets, so either tool (and its feature extractors) accepts the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from slideflow_core.errors import SlideflowError
from slideflow_core.provenance import file_fingerprint, package_versions, run_context
from slideflow_core.slides import open_slide
from tiling.config import TilingConfig
from tiling.qc import QC_COLUMNS
from tiling.store import create_tile_store, finish_tile_store
from tiling.view import TileStore, open_store


class H5FormatError(SlideflowError):
    """An ``.h5`` file lacks what a CLAM/TRIDENT coordinate file must have."""


def export_h5(
    store: str | os.PathLike[str], out: str | os.PathLike[str], *, keep_only: bool = False
) -> Path:
    """Write a store's coordinates as a CLAM/TRIDENT ``.h5`` file.

    Parameters
    ----------
    store
        A committed slide store.
    out
        Destination ``.h5`` (for example ``patches/<slide_id>_patches.h5``).
    keep_only
        Export only tiles whose QC ``keep`` flag is set.
    """
    tiles = open_store(store)
    coords = tiles.coords
    if keep_only:
        coords = coords[np.asarray(tiles.group["qc"]["keep"][:], bool)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as handle:
        dataset = handle.create_dataset("coords", data=coords.astype(np.int64))
        for key, value in coords_attrs(tiles, out.parent).items():
            dataset.attrs[key] = value
    os.replace(tmp, out)
    return out


def coords_attrs(tiles: TileStore, save_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The CLAM and TRIDENT attributes of a ``coords`` dataset describing ``tiles``' grid.

    Parameters
    ----------
    tiles
        An opened slide store.
    save_dir
        Folder recorded as ``save_path`` / ``savetodir`` (where the file goes).
    """
    info = tiles.info
    slide = tiles.attrs["slide"]
    level = int(info["level"])
    downsample = float(slide["level_downsamples"][level])
    return {
        # CLAM: how to read (patch_size px at patch_level).
        "patch_size": int(info["read_px"]),
        "patch_level": level,
        "downsample": np.array([downsample, downsample]),
        "downsampled_level_dim": np.array(slide["level_dimensions"][level], dtype=np.int64),
        "level_dim": np.array(slide["dimensions"], dtype=np.int64),
        "name": tiles.slide_id,
        "save_path": str(save_dir),
        # TRIDENT: what it means physically.
        "patch_size_level0": round(int(info["read_px"]) * downsample),
        "target_magnification": 10.0 / float(info["mpp_requested"]),
        "level0_magnification": 10.0 / float(slide["mpp"]) if slide.get("mpp") else -1.0,
        "overlap": int(info["config"]["overlap_px"]),
        "savetodir": str(save_dir),
        # Ours: the exact resolution and output size.
        "tile_px": int(info["tile_px"]),
        "mpp": float(info["mpp_actual"]),
        "coordinate_space": "level0_px",
    }


def read_h5_coords(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """``coords`` (N, 2) int64 and its attributes from a CLAM/TRIDENT ``.h5``."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            if "coords" not in handle:
                raise H5FormatError(
                    f"{path} has no 'coords' dataset (found: {', '.join(handle.keys()) or 'none'})",
                    hint="give a CLAM/TRIDENT patches .h5 (or a features .h5 with coords)",
                )
            coords = np.asarray(handle["coords"][:])
            attrs = plain_attrs(handle["coords"].attrs)
    except OSError as exc:
        raise H5FormatError(f"{path} is not a readable HDF5 file ({exc})") from exc
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise H5FormatError(f"{path}: 'coords' must be N x 2, got shape {coords.shape}")
    return coords.astype(np.int64), attrs


def plain_attrs(attrs: Any) -> dict[str, Any]:
    """HDF5 attributes as plain Python values (lists, numbers, ``str``)."""
    return {key: _plain(value) for key, value in attrs.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def import_h5(
    h5_path: str | os.PathLike[str],
    slide_path: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    slide_id: str | None = None,
) -> Path:
    """Create a coordinates-only store from a CLAM/TRIDENT ``.h5`` file.

    The tile geometry is taken from TRIDENT's ``target_magnification`` /
    ``patch_size`` when present, else from CLAM's ``patch_size`` at
    ``patch_level``. Pixels are read from the slide on demand.

    Parameters
    ----------
    h5_path
        Coordinates file.
    slide_path
        The slide the coordinates belong to.
    store
        Destination store path.
    mpp
        Level-0 µm/px override for uncalibrated slides.
    slide_id
        Identity (default: the ``name`` attribute, else the slide's file name).
    """
    coords, attrs = read_h5_coords(h5_path)
    with open_slide(slide_path, mpp=mpp) as slide:
        if "target_magnification" in attrs and "tile_px" not in attrs:
            target_mpp = 10.0 / float(attrs["target_magnification"])
            tile_px = int(attrs["patch_size"])
        elif "mpp" in attrs and "tile_px" in attrs:
            target_mpp, tile_px = float(attrs["mpp"]), int(attrs["tile_px"])
        elif "patch_size" in attrs:
            level = int(attrs.get("patch_level", 0))
            target_mpp, tile_px = slide.level_mpp[level], int(attrs["patch_size"])
        else:
            raise H5FormatError(f"{h5_path}: 'coords' has no patch_size attribute")
        config = TilingConfig(mpp=target_mpp, tile_px=tile_px, store_pixels=False)
        choice = slide.best_level_for(config.target_mpp, tolerance=config.tolerance)
        sid = slide_id or str(attrs.get("name") or slide.slide_id)
        n = len(coords)
        partial = create_tile_store(
            store,
            coords=coords,
            mask_tissue_fraction=np.full(n, np.nan, np.float32),
            tile_px=tile_px,
            qc_columns=QC_COLUMNS,
            store_pixels=False,
            shard_tiles=config.shard_tiles,
            tissue_mask=None,
            attrs={
                "slide_id": sid,
                "slide": {**file_fingerprint(slide.path), **slide.describe(), "mpp_override": mpp},
            },
        )
        import zarr

        zarr.open_group(str(partial), mode="r+")["qc"]["keep"][:] = True
        info = {
            "identity": config.identity(),
            "config": config.to_dict(),
            "n_tiles": n,
            "n_kept": n,
            "level": choice.level,
            "read_px": choice.read_px(tile_px),
            "tile_px": tile_px,
            "mpp_requested": target_mpp,
            "mpp_actual": choice.actual_mpp,
            "imported_from": {"path": str(Path(h5_path).resolve()), "attrs": attrs},
            "coordinate_space": "level0_px",
            "versions": package_versions(),
            **run_context(),
        }
    return finish_tile_store(partial, store, info)
