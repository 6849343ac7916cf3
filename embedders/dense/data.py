"""Annotated nucleus data: folders of ``ID.png`` + ``ID.inst.png`` pairs and PanNuke arrays.

A folder is the unit segmenters are tuned, trained and evaluated on: ``ID.png`` is
8-bit RGB, ``ID.inst.png`` a uint16 instance map (0 background, 1..N nuclei), and an
optional ``manifest.json`` beside them gives each tile's µm/px
(``{"tiles": [{"id": ..., "mpp": ...}]}``; 0.25 is assumed otherwise). PanNuke-style
arrays (images ``(N, H, W, 3)``, masks ``(N, H, W, C)`` with one instance channel per
nucleus type and a background channel last) convert to the same records.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from slideflow_core.errors import SlideflowError

DEFAULT_MPP = 0.25
PANNUKE_CLASSES = ("neoplastic", "inflammatory", "connective", "dead", "epithelial")
_INSTANCE_SUFFIX = ".inst.png"
_TCGA_PATIENT = re.compile(r"TCGA-[0-9A-Z]{2}-[0-9A-Z]{4}")


class AnnotationError(SlideflowError):
    """Annotated nucleus data is missing or malformed."""


@dataclass(frozen=True, eq=False)
class AnnotatedTile:
    """One image with its nucleus instances.

    Attributes
    ----------
    id
        Tile identity (file stem).
    image
        ``(H, W, 3)`` uint8 RGB.
    instances
        ``(H, W)`` int32, 0 background, 1..N nuclei.
    mpp
        µm per pixel.
    types
        ``(H, W)`` int32 nucleus type per pixel (0 background, k for ``classes[k-1]``), or None.
    classes
        Names of the types.
    """

    id: str
    image: np.ndarray = field(repr=False)
    instances: np.ndarray = field(repr=False)
    mpp: float = DEFAULT_MPP
    types: np.ndarray | None = field(default=None, repr=False)
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[-1] != 3:
            raise AnnotationError(
                f"tile {self.id}: image must be uint8 RGB (H, W, 3), "
                f"got {self.image.dtype} {self.image.shape}"
            )
        if self.instances.shape != self.image.shape[:2]:
            raise AnnotationError(
                f"tile {self.id}: instance map {self.instances.shape} does not match "
                f"image {self.image.shape[:2]}"
            )
        if self.types is not None and self.types.shape != self.instances.shape:
            raise AnnotationError(f"tile {self.id}: type map shape differs from instances")

    @property
    def n_nuclei(self) -> int:
        """Number of annotated nuclei."""
        return len(np.unique(self.instances)) - int((self.instances == 0).any())


def _manifest_mpp(folder: Path) -> dict[str, float]:
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        tiles = json.loads(path.read_text()).get("tiles", [])
        return {str(t["id"]): float(t["mpp"]) for t in tiles if "mpp" in t}
    except (ValueError, KeyError, TypeError) as exc:
        raise AnnotationError(
            f"{path} is not a tile manifest ({exc})",
            hint='expected {"tiles": [{"id": ..., "mpp": ...}]}',
        ) from exc


def read_annotated_folder(
    folder: str | os.PathLike[str], *, ids: Sequence[str] | None = None
) -> list[AnnotatedTile]:
    """Read every ``ID.png`` + ``ID.inst.png`` pair of ``folder`` (or only ``ids``), by id.

    Raises
    ------
    AnnotationError
        If the folder has no pairs, an id has no pair, or a map is not single-channel.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationError(f"no such folder: {folder}")
    found = sorted(p.name[: -len(_INSTANCE_SUFFIX)] for p in folder.glob(f"*{_INSTANCE_SUFFIX}"))
    wanted = list(ids) if ids is not None else found
    missing = [i for i in wanted if i not in found or not (folder / f"{i}.png").is_file()]
    if missing or not wanted:
        raise AnnotationError(
            f"{folder}: no image + instance pair for {', '.join(missing) or 'any tile'}",
            hint="each tile needs ID.png (RGB) and ID.inst.png (uint16 instance map)",
        )
    mpps = _manifest_mpp(folder)
    tiles = []
    for tile_id in wanted:
        image = np.asarray(Image.open(folder / f"{tile_id}.png").convert("RGB"))
        instances = np.asarray(Image.open(folder / f"{tile_id}{_INSTANCE_SUFFIX}"))
        if instances.ndim != 2:
            raise AnnotationError(f"{folder / tile_id}{_INSTANCE_SUFFIX} is not single-channel")
        tiles.append(
            AnnotatedTile(
                id=tile_id,
                image=image,
                instances=instances.astype(np.int32),
                mpp=mpps.get(tile_id, DEFAULT_MPP),
            )
        )
    return tiles


def pannuke_tiles(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    mpp: float = DEFAULT_MPP,
    classes: Sequence[str] = PANNUKE_CLASSES,
    prefix: str = "pannuke",
) -> list[AnnotatedTile]:
    """PanNuke-style arrays as :class:`AnnotatedTile` records with type maps.

    Parameters
    ----------
    images
        ``(N, H, W, 3)`` RGB, uint8 or float in 0..255.
    masks
        ``(N, H, W, C)``: channel ``k < C - 1`` holds instance ids of nuclei of type
        ``classes[k]``; the last channel is background.
    mpp
        µm per pixel of the images (PanNuke: 0.25).
    classes
        Type names of the instance channels.
    prefix
        Tile ids are ``<prefix>-<index>``.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    n_types = len(classes)
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[:3] != images.shape[:3]:
        raise AnnotationError(
            f"PanNuke arrays must be images (N, H, W, 3) and masks (N, H, W, C) of equal "
            f"N, H, W; got {images.shape} and {masks.shape}"
        )
    if masks.shape[-1] != n_types + 1:
        raise AnnotationError(
            f"PanNuke masks have {masks.shape[-1]} channels; expected {n_types} types + background",
            hint="pass classes= naming one type per instance channel",
        )
    tiles = []
    for index in range(len(images)):
        instances = np.zeros(masks.shape[1:3], np.int32)
        types = np.zeros(masks.shape[1:3], np.int32)
        for channel in range(n_types):
            layer = masks[index, :, :, channel].astype(np.int64)
            ids = np.unique(layer[layer > 0])
            lookup = np.zeros(int(layer.max(initial=0)) + 1, np.int32)
            lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.int32) + int(instances.max())
            inside = layer > 0
            instances[inside] = lookup[layer[inside]]
            types[inside] = channel + 1
        tiles.append(
            AnnotatedTile(
                id=f"{prefix}-{index}",
                image=np.clip(images[index], 0, 255).astype(np.uint8),
                instances=instances,
                mpp=mpp,
                types=types,
                classes=tuple(classes),
            )
        )
    return tiles


def tile_source(tile_id: str) -> str:
    """The source a tile comes from, so folds never split one source's tiles needlessly.

    The id up to its first ``_`` (``cpm15_image01`` → ``cpm15``); without one, the
    patient of a TCGA barcode (``TCGA-69-7764-01A-01-TS1`` → ``TCGA-69-7764``); else the
    id itself (every tile its own source).
    """
    if "_" in tile_id:
        return tile_id.split("_", 1)[0]
    match = _TCGA_PATIENT.match(tile_id)
    return match.group(0) if match else tile_id


def tile_folds(ids: Sequence[str], k: int = 2) -> list[list[str]]:
    """``ids`` dealt into ``k`` folds: sources in sorted order, each source's tiles in turn.

    One deal runs through every source's sorted tiles without restarting, so each fold
    mixes sources, organs and magnifications, and a folder where every tile is its own
    source (MoNuSeg's ``TCGA-...`` names) is simply k-fold by tile.

    Raises
    ------
    AnnotationError
        If there are fewer tiles than folds.
    """
    if not isinstance(k, int) or k < 2:
        raise AnnotationError(f"k-fold needs k >= 2, got {k!r}")
    unique = sorted(set(ids))
    if len(unique) < k:
        raise AnnotationError(
            f"{len(unique)} annotated tile(s) cannot be split into {k} folds",
            hint="annotate more tiles, or give a separate training folder (--train)",
        )
    folds: list[list[str]] = [[] for _ in range(k)]
    dealt = 0
    for source in sorted({tile_source(i) for i in unique}):
        for tile_id in sorted(i for i in unique if tile_source(i) == source):
            folds[dealt % k].append(tile_id)
            dealt += 1
    return folds


def tuning_split(ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """The tiles the classical defaults were tuned on, and the held-out rest.

    The two folds of :func:`tile_folds`: on the shipped tiles, alternate tiles of each
    source (``cpm15``, ``monuseg``) in sorted order.
    """
    tuning, held_out = tile_folds(ids, 2)
    return tuning, held_out


def read_training_data(folder: str | os.PathLike[str]) -> list[AnnotatedTile]:
    """Annotated tiles of a folder in either documented format.

    ``ID.png`` + ``ID.inst.png`` pairs (:func:`read_annotated_folder`), or PanNuke
    arrays ``images.npy`` + ``masks.npy`` (:func:`pannuke_tiles`, 0.25 µm/px).

    Raises
    ------
    AnnotationError
        If the folder holds neither.
    """
    folder = Path(folder)
    if (folder / "images.npy").is_file() and (folder / "masks.npy").is_file():
        images = np.load(folder / "images.npy", mmap_mode="r")
        masks = np.load(folder / "masks.npy", mmap_mode="r")
        return pannuke_tiles(images, masks, prefix=folder.name or "pannuke")
    return read_annotated_folder(folder)


def folder_licences(folder: str | os.PathLike[str]) -> list[str]:
    """The distinct ``license`` values of a folder's ``manifest.json`` tiles (none without)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return []
    try:
        tiles = json.loads(path.read_text()).get("tiles", [])
    except (ValueError, AttributeError):
        return []
    return sorted({str(t["license"]) for t in tiles if isinstance(t, dict) and "license" in t})
