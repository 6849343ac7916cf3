"""Metadata that lets other tools read a slide store without our code.

xarray needs every array's ``dimension_names``, and the names must agree along
each path of the hierarchy: a dimension means one length from the root down to
any group. Hence one name per row space:

- ``tile``: rows of the tiling part (``tiles``, ``coords``, ``qc/*``);
- ``embedded_tile``: rows of a ``features/<model>`` part (a subset of tiles);
- ``scored_tile``: rows of an ``attention/<run>`` part;
- ``y``, ``x``: the tissue mask's pixels; ``tile_y``, ``tile_x``, ``rgb`` a tile's.

Every array also carries its own attributes (what it holds, units, the µm/px of
the pixels its coordinates count, tile size), the root group holds OME-Zarr
``multiscales`` metadata for the tissue mask (so napari and other OME-Zarr readers
show it at its physical scale), and :func:`consolidate` writes the whole
hierarchy's metadata into the root ``zarr.json`` when a part commits, so
``xarray.open_datatree(store, engine="zarr")`` and ``zarr.open_consolidated``
read a store in one request.
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import zarr
from zarr.errors import ZarrUserWarning

#: Dimension names of the arrays of each part (see the module docstring).
TILE_DIMS = {
    "tiles": ("tile", "tile_y", "tile_x", "rgb"),
    "coords": ("tile", "xy"),
    "qc": ("tile",),
    "tissue_mask": ("y", "x"),
}
FEATURE_DIMS = {
    "features": ("embedded_tile", "feature"),
    "coords": ("embedded_tile", "xy"),
    "tile_index": ("embedded_tile",),
}
ATTENTION_DIMS = {
    "scores": ("scored_tile", "score"),
    "coords": ("scored_tile", "xy"),
    "tile_index": ("scored_tile",),
}
#: How every coordinate in a store is measured: level-0 pixels of the slide.
COORDINATE_SPACE = "level0_px"
OME_VERSION = "0.5"

_ROLES: dict[str, dict[str, str]] = {
    "tiles": {"long_name": "tile pixels (RGB)", "units": "uint8 intensity"},
    "coords": {"long_name": "top-left x, y of each tile", "units": "level-0 pixel"},
    "tile_index": {"long_name": "row of the tile in the tiling part", "units": "index"},
    "features": {"long_name": "tile embedding", "units": "1"},
    "scores": {"long_name": "per-tile score of the MIL run", "units": "1"},
    "tissue_mask": {"long_name": "tissue mask (1 tissue, 0 background)", "units": "1"},
    "keep": {"long_name": "tile passes QC", "units": "1"},
    "blur": {"long_name": "variance of the Laplacian", "units": "1"},
}
_FRACTION = {"units": "fraction of the tile"}


def scores_dims(ndim: int) -> tuple[str, ...]:
    """Dimension names of an ``attention/<run>/scores`` array of ``ndim`` dimensions."""
    return ATTENTION_DIMS["scores"][:ndim]


def grid_attrs(
    *, level0_mpp: float | None, tile_mpp: float | None, tile_px: int | None
) -> dict[str, Any]:
    """The physical description every per-tile array carries (``None``: not known)."""
    known = tile_mpp is not None and tile_px is not None
    return {
        "coordinate_space": COORDINATE_SPACE,
        "level0_mpp": level0_mpp,
        "tile_mpp": None if tile_mpp is None else float(tile_mpp),
        "tile_px": None if tile_px is None else int(tile_px),
        "tile_um": float(tile_mpp) * int(tile_px) if known else None,  # type: ignore[arg-type]
    }


def store_grid_attrs(root_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`grid_attrs` of a store, from its root attributes (its tiling part's record)."""
    tiling = root_attrs.get("parts", {}).get("tiling") or {}
    return grid_attrs(
        level0_mpp=root_attrs.get("slide", {}).get("mpp"),
        tile_mpp=tiling.get("mpp_actual"),
        tile_px=tiling.get("tile_px"),
    )


def write_attributes(updates: Sequence[tuple[zarr.Array, Mapping[str, Any]]]) -> None:
    """Merge attributes into several arrays at once: one ``zarr.json`` rewrite each, concurrently.

    (``array.attrs.update(d)`` rewrites the array's metadata once per key of ``d``,
    each a round trip through Zarr's event loop.)
    """
    if not updates:
        return
    from zarr.core.sync import sync

    async def write_all() -> None:
        await asyncio.gather(
            *(array.async_array.update_attributes(dict(attrs)) for array, attrs in updates)
        )

    sync(write_all())


def describe_arrays(group: zarr.Group, grid: Mapping[str, Any]) -> None:
    """Give every array under ``group`` its attributes: what it holds, units, ``grid``."""
    write_attributes(_array_attributes(group, grid))


def _array_attributes(
    group: zarr.Group, grid: Mapping[str, Any]
) -> list[tuple[zarr.Array, dict[str, Any]]]:
    updates = [(array, {**_role(name), **grid}) for name, array in group.arrays()]
    for _, child in group.groups():
        updates += _array_attributes(child, grid)
    return updates


def _role(name: str) -> dict[str, str]:
    """What an array named ``name`` holds, and its units."""
    return _ROLES.get(name) or (_FRACTION if name.endswith("_fraction") else {})


def tile_store_attributes(
    root_attrs: Mapping[str, Any],
    arrays: Sequence[str],
    *,
    tile_mpp: float | None,
    tile_px: int | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Attributes of a tiling part's arrays, and what its root adds, given when they are created.

    Parameters
    ----------
    root_attrs
        The store's root attributes (``slide.mpp``, ``tissue.mask_downsample``).
    arrays
        Paths of the part's arrays (``"coords"``, ``"qc/blur"``, ``"tissue_mask"``, ...).
    tile_mpp, tile_px
        The tiles' µm/px and side.

    Returns
    -------
    tuple of (dict, dict)
        Attributes by array path, and the root's OME-Zarr ``ome`` entry when there
        is a tissue mask (else empty).
    """
    grid = grid_attrs(
        level0_mpp=root_attrs.get("slide", {}).get("mpp"), tile_mpp=tile_mpp, tile_px=tile_px
    )
    attributes = {path: {**_role(path.rpartition("/")[2]), **grid} for path in arrays}
    if "tissue_mask" not in attributes:
        return attributes, {}
    attributes["tissue_mask"], ome = tissue_mask_metadata(root_attrs)
    return attributes, {"ome": ome}


def tissue_mask_metadata(root_attrs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Attributes of the tissue mask, and the root's OME-Zarr ``ome`` (``multiscales``) for it.

    The mask's pixel size is the slide's level-0 µm/px times the mask downsample
    recorded under ``tissue.mask_downsample`` (x, y).
    """
    level0 = root_attrs.get("slide", {}).get("mpp")
    down_x, down_y = root_attrs.get("tissue", {}).get("mask_downsample") or (1.0, 1.0)
    unit, (scale_y, scale_x) = (
        ("micrometer", (level0 * down_y, level0 * down_x))
        if level0
        else ("pixel", (float(down_y), float(down_x)))
    )
    mask_attrs = {
        **_ROLES["tissue_mask"],
        "coordinate_space": "tissue_mask_px",
        "level0_px_per_px": [float(down_x), float(down_y)],
        "mpp": scale_x if unit == "micrometer" else None,
    }
    axes = [{"name": name, "type": "space", "unit": unit} for name in TILE_DIMS["tissue_mask"]]
    if unit == "pixel":  # OME units are physical: no unit rather than a false one
        axes = [{"name": a["name"], "type": "space"} for a in axes]
    ome = {
        "version": OME_VERSION,
        "multiscales": [
            {
                "name": "tissue_mask",
                "axes": axes,
                "datasets": [
                    {
                        "path": "tissue_mask",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [scale_y, scale_x]}
                        ],
                    }
                ],
            }
        ],
    }
    return mask_attrs, ome


def consolidate(store: str | os.PathLike[str]) -> None:
    """Write the metadata of every committed node into the root ``zarr.json``.

    Parts being written (``*.partial``) and files that are not Zarr nodes are
    left out. Only the root ``zarr.json`` changes, which no part's manifest lists.
    """
    with warnings.catch_warnings():
        # v3 consolidation is outside the written spec (zarr says so on every call), and
        # a listing meets non-Zarr files (a cell table, a segmenter's band folder).
        warnings.simplefilter("ignore", ZarrUserWarning)
        group = zarr.consolidate_metadata(os.fspath(store))
    metadata = group.metadata.consolidated_metadata
    if metadata is None:
        return
    unfinished = [k for k in metadata.metadata if _unfinished(k)]
    if unfinished:
        _drop_from_consolidated(Path(store), unfinished)


def _unfinished(key: str) -> bool:
    return any(name.endswith(".partial") or name.startswith(".") for name in key.split("/"))


def _drop_from_consolidated(store: Path, keys: list[str]) -> None:
    path = store / "zarr.json"
    document = json.loads(path.read_text())
    nodes = document["consolidated_metadata"]["metadata"]  # flat: "features/uni/coords", ...
    for key in keys:
        nodes.pop(key, None)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


def drop_consolidated(store: str | os.PathLike[str]) -> None:
    """Remove the root's consolidated metadata (readers then list the folders)."""
    path = Path(store) / "zarr.json"
    document = json.loads(path.read_text())
    if document.pop("consolidated_metadata", None) is not None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(document))
        os.replace(tmp, path)
