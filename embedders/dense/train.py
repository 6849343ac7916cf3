"""Training the dense head on annotated nuclei (folders of instance maps, PanNuke arrays).

Same conventions as the MIL trainer: a frozen keyword-only config, a seed for every
random choice, AdamW, weights written as safetensors. Tiles are resampled to the head's
µm/px, then random crops of the backbone's input size are drawn with flips and
quarter turns; the loss is HoVer-Net's: cross-entropy + Dice on NP, mean squared error
on HV, cross-entropy on types when there are classes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.nn import functional
from tqdm.auto import tqdm

from embedders.dense.data import AnnotatedTile, AnnotationError
from embedders.dense.hovernet_post import hv_targets
from embedders.dense.learned import DenseHeadSegmenter


@dataclass(frozen=True, kw_only=True)
class DenseTrainConfig:
    """How to train a dense head.

    Parameters
    ----------
    steps
        Optimiser steps.
    batch_size
        Crops per step.
    lr, weight_decay
        AdamW learning rate and weight decay.
    hv_weight, type_weight
        Weights of the HV and type losses relative to the NP loss.
    seed
        Seed of initialisation, crops and augmentation.
    progress
        Show a progress bar over steps.
    """

    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hv_weight: float = 1.0
    type_weight: float = 1.0
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        bad = [
            f"{k}={v!r}"
            for k, v in {"steps": self.steps, "batch_size": self.batch_size}.items()
            if not (isinstance(v, int) and v >= 1)
        ]
        if not self.lr > 0 or self.weight_decay < 0:
            bad.append(f"lr={self.lr}, weight_decay={self.weight_decay}")
        if self.hv_weight < 0 or self.type_weight < 0:
            bad.append(f"hv_weight={self.hv_weight}, type_weight={self.type_weight}")
        if bad:
            raise ValueError(f"invalid DenseTrainConfig: {', '.join(bad)}")


@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray
    instances: np.ndarray
    types: np.ndarray


def _at_mpp(tile: AnnotatedTile, mpp: float, side: int) -> _Prepared:
    """A tile resampled to ``mpp`` (area for pixels, nearest for labels), padded to ``side``."""
    factor = tile.mpp / mpp
    height, width = tile.instances.shape
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image, instances = tile.image, tile.instances
    types = tile.types if tile.types is not None else (tile.instances > 0).astype(np.int32)
    if size != (width, height):
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, size, interpolation=interpolation)
        instances = cv2.resize(instances, size, interpolation=cv2.INTER_NEAREST)
        types = cv2.resize(types, size, interpolation=cv2.INTER_NEAREST)
    pad_y, pad_x = max(0, side - size[1]), max(0, side - size[0])
    if pad_y or pad_x:
        image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), constant_values=255)
        instances = np.pad(instances, ((0, pad_y), (0, pad_x)))
        types = np.pad(types, ((0, pad_y), (0, pad_x)))
    return _Prepared(image, instances.astype(np.int32), types.astype(np.int64))


def _crop(
    rng: np.random.Generator, tile: _Prepared, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    height, width = tile.instances.shape
    y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    window = (slice(y, y + side), slice(x, x + side))
    image, instances, types = tile.image[window], tile.instances[window], tile.types[window]
    turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    arrays = [np.rot90(a, turns) for a in (image, instances, types)]
    if flip:
        arrays = [a[:, ::-1] for a in arrays]
    image, instances, types = (np.ascontiguousarray(a) for a in arrays)
    # Renumber the cropped nuclei 1..n so HV targets see each once.
    _, dense = np.unique(instances, return_inverse=True)
    dense = dense.reshape(instances.shape).astype(np.int32)
    if instances.min() > 0:
        dense += 1
    return image, dense, types


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def _hv_gradients(hv: torch.Tensor) -> torch.Tensor:
    """Horizontal derivative of the H map and vertical derivative of the V map (Sobel)."""
    kernels = torch.stack([_SOBEL, _SOBEL.T]).unsqueeze(1).to(hv)
    return functional.conv2d(hv, kernels, padding=1, groups=2)


def hovernet_losses(
    maps: dict[str, torch.Tensor],
    nuclear: torch.Tensor,
    hv: torch.Tensor,
    types: torch.Tensor | None,
    *,
    hv_weight: float = 1.0,
    gradient_weight: float = 0.0,
    type_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """HoVer-Net's losses: cross-entropy + Dice on NP, MSE (+ MSGE) on HV, CE on types.

    MSGE is the mean squared error of the HV maps' Sobel derivatives over nucleus
    pixels, which sharpens the boundaries the post-processing splits nuclei at.
    ``types`` None leaves the type loss out.
    """
    np_logits = maps["np"]
    ce = functional.cross_entropy(np_logits, nuclear)
    prob = functional.softmax(np_logits, dim=1)[:, 1]
    target = nuclear.float()
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    losses = {"np": ce + dice, "hv": hv_weight * functional.mse_loss(maps["hv"], hv)}
    if gradient_weight:
        inside = target.unsqueeze(1)
        error = (_hv_gradients(maps["hv"]) - _hv_gradients(hv)) ** 2 * inside
        losses["hv_gradient"] = gradient_weight * error.sum() / (2 * inside.sum() + 1e-6)
    if types is not None:
        losses["type"] = type_weight * functional.cross_entropy(maps["type"], types)
    return losses


def train_dense_head(
    tiles: Sequence[AnnotatedTile],
    *,
    segmenter: DenseHeadSegmenter | None = None,
    config: DenseTrainConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    **head_options: Any,
) -> tuple[DenseHeadSegmenter, list[dict[str, float]]]:
    """Train a dense head on annotated tiles; returns it (in eval mode) and the loss history.

    Parameters
    ----------
    tiles
        From :func:`read_annotated_folder` or :func:`pannuke_tiles`. Classes are taken
        from the tiles' ``classes`` when they have type maps.
    segmenter
        A head to go on training; default: a new one from ``head_options``
        (``backbone=``, ``backbone_weights=``, ``mpp=``, ``freeze_backbone=``...).
    config
        Training settings.
    out
        Where to save the trained weights (safetensors).

    Raises
    ------
    AnnotationError
        If no tile is given, or tiles disagree on their classes.
    """
    config = config or DenseTrainConfig()
    if not tiles:
        raise AnnotationError("no annotated tiles to train on")
    class_sets = {t.classes for t in tiles if t.types is not None}
    if len(class_sets) > 1:
        raise AnnotationError(f"tiles disagree on their classes: {sorted(class_sets)}")
    torch.manual_seed(config.seed)
    if segmenter is None:
        classes = next(iter(class_sets)) if class_sets else ()
        segmenter = DenseHeadSegmenter(classes=classes, **head_options)
    typed = bool(segmenter.classes)
    side = segmenter.input_px
    prepared = [_at_mpp(t, segmenter.mpp, side) for t in tiles]
    weights = np.array([t.instances.size for t in prepared], np.float64)
    rng = np.random.default_rng(config.seed)
    model = segmenter.model
    model.train()
    if model.freeze_backbone:
        model.backbone.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.steps)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for step in tqdm(range(config.steps), disable=not config.progress, unit="step"):
        picks = rng.choice(len(prepared), size=config.batch_size, p=weights / weights.sum())
        crops = [_crop(rng, prepared[i], side) for i in picks]
        images = segmenter.normalise(np.stack([c[0] for c in crops])).to(segmenter.device)
        instances = np.stack([c[1] for c in crops])
        nuclear = torch.from_numpy((instances > 0).astype(np.int64)).to(segmenter.device)
        hv = torch.from_numpy(np.stack([hv_targets(i) for i in instances])).to(segmenter.device)
        types = torch.from_numpy(np.stack([c[2] for c in crops])).to(segmenter.device)
        losses = hovernet_losses(
            model(images),
            nuclear,
            hv,
            types if typed else None,
            hv_weight=config.hv_weight,
            type_weight=config.type_weight,
        )
        total = sum(losses.values())
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        schedule.step()
        history.append(
            {"step": step, "loss": total.item(), **{k: v.item() for k, v in losses.items()}}
        )
    model.eval()
    if out is not None:
        segmenter.save(
            out,
            extra={
                "train": asdict(config),
                "tiles": [t.id for t in tiles],
                "seconds": round(time.perf_counter() - started, 1),
                "final_loss": history[-1]["loss"],
            },
        )
    return segmenter, history
