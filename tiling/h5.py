"""CLAM / TRIDENT ``.h5`` coordinate files: export from and import into slide stores.

Both tools read a dataset ``coords`` (N × 2, level-0 top-left x, y) but give
``patch_size`` different meanings, so each layout carries only its own tool's
attributes (a file with both would be misread by one of them):

- **CLAM** (``<out>/patches/<slide_id>.h5``): ``patch_size`` is the side read at
  ``patch_level`` (``read_region(coord, patch_level, (patch_size, patch_size))``);
  our tiles are that region resized to ``tile_px`` (CLAM's ``--target_patch_size``).
- **TRIDENT** (``<out>/<mag>x_<px>px_<overlap>px_overlap/patches/<slide_id>_patches.h5``):
  ``patch_size`` is the side at ``target_magnification``; TRIDENT reads
  ``round(patch_size · level0_magnification / target_magnification)`` level-0
  pixels. ``level0_magnification`` is the slide's objective power when the file
  records it (an integer), else ``10 / mpp``; ``target_magnification`` is an
  integer when that reproduces our level-0 footprint exactly, else the exact
  ratio ``level0_magnification · tile_px / patch_size_level0`` as a float. The
  folder is named by the nominal magnification (``10x`` for 9.96), what one
  passes TRIDENT as ``--mag``.

Both layouts also carry ours (``tile_px``, ``mpp``, ``coordinate_space``), which
:func:`import_h5` prefers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from slideflow_core.errors import SlideflowError
from slideflow_core.provenance import file_fingerprint, package_versions, run_context
from slideflow_core.slides import open_slide
from tiling.config import TilingConfig
from tiling.qc import QC_COLUMNS
from tiling.store import create_tile_store, finish_tile_store
from tiling.view import TileStore, open_store

H5Layout = Literal["clam", "trident"]
H5_LAYOUTS: tuple[str, ...] = ("clam", "trident")
# A target magnification this close to an integer names its TRIDENT folder by the integer.
_NOMINAL_TOLERANCE = 0.05


class H5FormatError(SlideflowError):
    """An ``.h5`` file lacks what a CLAM/TRIDENT coordinate file must have."""


def export_h5(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    layout: H5Layout = "trident",
    all_tiles: bool = False,
) -> Path:
    """Write a store's coordinates where CLAM or TRIDENT looks for them.

    Parameters
    ----------
    store
        A committed slide store.
    out
        Root folder: CLAM's ``--data_h5_dir`` or TRIDENT's ``--job_dir``.
    layout
        ``"clam"`` (``<out>/patches/<slide_id>.h5``) or ``"trident"``
        (``<out>/<mag>x_<px>px_<overlap>px_overlap/patches/<slide_id>_patches.h5``).
    all_tiles
        Also export tiles that failed QC. By default only QC-kept tiles are
        written: the tiles ``sfc embed`` embeds, so coordinates and features agree.

    Returns
    -------
    Path
        The file written.
    """
    _check_layout(layout)
    tiles = open_store(store)
    coords = tiles.coords
    if not all_tiles:
        coords = coords[np.asarray(tiles.group["qc"]["keep"][:], bool)]
    path = h5_coords_path(tiles, out, layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as handle:
        dataset = handle.create_dataset("coords", data=coords.astype(np.int64))
        for key, value in coords_attrs(tiles, path.parent, layout).items():
            dataset.attrs[key] = value
    os.replace(tmp, path)
    return path


def _check_layout(layout: str) -> None:
    if layout not in H5_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(H5_LAYOUTS)}, got {layout!r}")


def h5_job_dir(tiles: TileStore, out: str | os.PathLike[str], layout: H5Layout) -> Path:
    """The folder a layout's ``patches/`` (and TRIDENT's ``features_<model>/``) live in."""
    _check_layout(layout)
    if layout == "clam":
        return Path(out)
    # Named by the nominal magnification (TRIDENT's --mag); the attributes hold the exact one.
    target = float(trident_magnifications(tiles)["target_magnification"])
    nominal = (
        round(target) if abs(target - round(target)) <= _NOMINAL_TOLERANCE * target else target
    )
    overlap = int(tiles.info["config"]["overlap_px"])
    return Path(out) / f"{nominal:g}x_{int(tiles.info['tile_px'])}px_{overlap}px_overlap"


def h5_coords_path(tiles: TileStore, out: str | os.PathLike[str], layout: H5Layout) -> Path:
    """Where ``layout`` expects the coordinates file of ``tiles``' slide under ``out``."""
    name = f"{tiles.slide_id}.h5" if layout == "clam" else f"{tiles.slide_id}_patches.h5"
    return h5_job_dir(tiles, out, layout) / "patches" / name


def level0_footprint_px(tiles: TileStore) -> float:
    """Side of one tile in level-0 pixels: ``read_px`` at the read level times its downsample."""
    level = int(tiles.info["level"])
    downsample = float(tiles.attrs["slide"]["level_downsamples"][level])
    return int(tiles.info["read_px"]) * downsample


def trident_magnifications(tiles: TileStore) -> dict[str, Any]:
    """TRIDENT's ``level0_magnification``, ``target_magnification`` and ``patch_size_level0``.

    TRIDENT reads ``round(patch_size · level0 / target)`` level-0 pixels per tile,
    so the ratio must reproduce our level-0 footprint. Magnifications are integers
    when the slide records its objective power and the integer target reproduces
    the footprint; otherwise the exact values are written as floats.
    """
    slide = tiles.attrs["slide"]
    tile_px = int(tiles.info["tile_px"])
    footprint = level0_footprint_px(tiles)
    power = slide.get("objective_power")
    # A store's slide record holds the mpp it was tiled with (file or override).
    level0: float = int(power) if power and float(power).is_integer() else 10.0 / slide["mpp"]
    target: float = level0 * tile_px / footprint
    if isinstance(level0, int) and round(target) > 0:
        whole = round(target)
        if round(tile_px * level0 / whole) == round(footprint):
            target = whole
    return {
        "level0_magnification": level0,
        "target_magnification": target,
        "patch_size_level0": round(footprint),
    }


def coords_attrs(
    tiles: TileStore, save_dir: str | os.PathLike[str], layout: H5Layout
) -> dict[str, Any]:
    """The attributes ``layout``'s reader expects on the ``coords`` dataset of ``tiles``.

    Parameters
    ----------
    tiles
        An opened slide store.
    save_dir
        Folder recorded as CLAM's ``save_path`` / TRIDENT's ``savetodir``.
    layout
        ``"clam"`` or ``"trident"``; see the module docstring for their meanings.
    """
    _check_layout(layout)
    info = tiles.info
    ours = {
        "tile_px": int(info["tile_px"]),
        "mpp": float(info["mpp_actual"]),
        "coordinate_space": "level0_px",
    }
    if layout == "trident":
        return {
            "patch_size": int(info["tile_px"]),
            **trident_magnifications(tiles),
            "overlap": int(info["config"]["overlap_px"]),
            "name": tiles.slide_id,
            "savetodir": str(save_dir),
            **ours,
        }
    slide = tiles.attrs["slide"]
    level = int(info["level"])
    downsample = float(slide["level_downsamples"][level])
    return {
        "patch_size": int(info["read_px"]),
        "patch_level": level,
        "downsample": np.array([downsample, downsample]),
        "downsampled_level_dim": np.array(slide["level_dimensions"][level], dtype=np.int64),
        "level_dim": np.array(slide["dimensions"], dtype=np.int64),
        "name": tiles.slide_id,
        "save_path": str(save_dir),
        **ours,
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
            tile_mpp=choice.actual_mpp,
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
