"""Training the learned segmenter end to end on annotated nuclei, on a CPU if need be.

Every tile is resampled to one working µm/px (0.25 by default), so tiles from any
scanner or magnification mix; each step draws ``batch_size`` crops (tiles weighted by
area) through :func:`.augment.augment_crop`, and minimises HoVer-Net's losses (NP
cross-entropy + Dice, HV MSE + MSGE, type cross-entropy when tiles have classes) with
AdamW under a warm-up and cosine schedule. The schedule follows whichever budget is
nearer its end, steps or ``max_minutes``, so a time-capped run still anneals.

A run is resumable: every ``checkpoint_every`` steps the network, the optimiser, the
random generator's state and the history go to ``OUT.checkpoint.safetensors``; a run
with the same config and tiles picks up there. ``init=`` starts from earlier weights
(fine-tuning) instead of from scratch.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from embedders.dense.augment import AugmentConfig, augment_crop
from embedders.dense.base import segment_resampled
from embedders.dense.data import AnnotatedTile, AnnotationError
from embedders.dense.hovernet_post import hv_targets
from embedders.dense.metrics import score_tile
from embedders.dense.morphology import drop_small
from embedders.dense.nucleus_net import LearnedSegmenter, NucleusWeightsError
from embedders.dense.train import _at_mpp, hovernet_losses

#: Detection matches within this distance count (as in ``benchmarks/cells.py``).
DETECTION_UM = 3.0
_WARMUP_STEPS = 50


@dataclass(frozen=True, kw_only=True)
class SegmenterTrainConfig:
    """How to train the learned segmenter.

    Parameters
    ----------
    steps
        Optimiser steps.
    batch_size, crop_px
        Crops per step and their side (a multiple of 16).
    mpp
        Working µm/px every tile is resampled to.
    lr, weight_decay
        AdamW peak learning rate and weight decay.
    hv_weight, gradient_weight, type_weight
        Weights of the HV MSE, HV gradient (MSGE) and type losses next to the NP loss.
    width, depth
        Network size (see :class:`.unet.NucleusUNet`).
    augment
        Augmentation settings.
    max_minutes
        Stop after this much training time (None: run every step).
    checkpoint_every
        Steps between resumable checkpoints.
    threads
        Torch threads (default: every core of this machine).
    seed
        Seed of initialisation, crops and augmentation.
    progress
        Show a progress bar.
    """

    steps: int = 2000
    batch_size: int = 8
    crop_px: int = 256
    mpp: float = 0.25
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hv_weight: float = 1.0
    gradient_weight: float = 1.0
    type_weight: float = 1.0
    width: int = 16
    depth: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_minutes: float | None = None
    checkpoint_every: int = 100
    threads: int | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        ints = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "crop_px": self.crop_px,
            "checkpoint_every": self.checkpoint_every,
        }
        bad = [f"{k}={v!r}" for k, v in ints.items() if not (isinstance(v, int) and v >= 1)]
        if self.crop_px % 2**self.depth:
            bad.append(f"crop_px={self.crop_px} (not a multiple of {2**self.depth})")
        if not (self.mpp > 0 and self.lr > 0 and self.weight_decay >= 0):
            bad.append(f"mpp={self.mpp}, lr={self.lr}, weight_decay={self.weight_decay}")
        if min(self.hv_weight, self.gradient_weight, self.type_weight) < 0:
            bad.append("loss weights must be >= 0")
        if self.max_minutes is not None and not self.max_minutes > 0:
            bad.append(f"max_minutes={self.max_minutes!r}")
        if self.threads is not None and self.threads < 1:
            bad.append(f"threads={self.threads!r}")
        if bad:
            raise ValueError(f"invalid SegmenterTrainConfig: {', '.join(bad)}")

    def resume_key(self) -> dict[str, Any]:
        """The fields a resumed run must share (not budgets, threads or display)."""
        record = asdict(self)
        for volatile in ("max_minutes", "threads", "progress", "checkpoint_every"):
            record.pop(volatile)
        return record


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_segmenter` did.

    Attributes
    ----------
    segmenter
        The trained segmenter, in eval mode.
    history
        Per step: step, loss and its parts.
    seconds
        Training time (over every resumed part).
    validation
        Mean Dice, AJI, PQ, F1, precision, recall over the validation tiles (empty without).
    """

    segmenter: LearnedSegmenter
    history: list[dict[str, float]]
    seconds: float
    validation: dict[str, float]


def checkpoint_path(out: str | os.PathLike[str]) -> Path:
    """The resumable checkpoint of a run writing ``out``."""
    path = Path(out)
    return path.with_name(path.name.removesuffix(".safetensors") + ".checkpoint.safetensors")


def validate(segmenter: LearnedSegmenter, tiles: Sequence[AnnotatedTile]) -> dict[str, float]:
    """Mean Dice, AJI, PQ, F1, precision, recall, false detections / mm² on annotated tiles."""
    rows = [
        score_tile(
            t.instances, segment_at(segmenter, t), max_distance_px=DETECTION_UM / t.mpp, mpp=t.mpp
        )
        for t in tiles
    ]
    names = ("dice", "aji", "pq", "f1", "precision", "recall", "false_per_mm2")
    return {n: round(float(np.mean([getattr(r, n) for r in rows])), 4) for n in names}


def segment_at(segmenter: Any, tile: AnnotatedTile) -> np.ndarray:
    """Instance map of a tile at its own µm/px by a segmenter working at another."""
    return segment_resampled(segmenter.segment, tile.image, tile.mpp / segmenter.mpp).labels


def _lr_factor(progress: float, step: int) -> float:
    warm = min(1.0, (step + 1) / _WARMUP_STEPS)
    return warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _batch(
    rng: np.random.Generator,
    prepared: list[Any],
    weights: np.ndarray,
    config: SegmenterTrainConfig,
    typed: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    images, nuclear, hv, types = [], [], [], []
    for index in rng.choice(len(prepared), size=config.batch_size, p=weights):
        tile = prepared[index]
        crop, (instances, kinds) = augment_crop(
            tile.image,
            (tile.instances, tile.types.astype(np.int32)),
            rng,
            side=config.crop_px,
            config=config.augment,
        )
        instances = drop_small(instances, 1)  # renumber 1..n so HV sees each nucleus once
        images.append(crop)
        nuclear.append(instances > 0)
        hv.append(hv_targets(instances))
        types.append(kinds)
    return (
        LearnedSegmenter.normalise(np.stack(images)),
        torch.from_numpy(np.stack(nuclear).astype(np.int64)),
        torch.from_numpy(np.stack(hv)),
        torch.from_numpy(np.stack(types).astype(np.int64)) if typed else None,
    )


def _save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for index, slots in optimiser.state_dict()["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
    os.replace(tmp, path)


def _load_checkpoint(
    path: Path, model: torch.nn.Module, optimiser: torch.optim.Optimizer, key: dict[str, Any]
) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        state = json.loads((handle.metadata() or {})["state"])
    if state["key"] != key:
        raise NucleusWeightsError(
            f"{path} is a checkpoint of a different training run (config or tiles differ)",
            hint="delete it to start afresh, or train with the same settings to resume",
        )
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optim_state = optimiser.state_dict()
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, slot = name.split(".", 2)
            slots.setdefault(int(index), {})[slot] = value
    optim_state["state"] = slots
    optimiser.load_state_dict(optim_state)
    return state


def train_segmenter(
    tiles: Sequence[AnnotatedTile],
    *,
    out: str | os.PathLike[str],
    config: SegmenterTrainConfig | None = None,
    validation: Sequence[AnnotatedTile] = (),
    init: str | os.PathLike[str] | None = None,
    data: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the learned segmenter on annotated tiles and save it with its card.

    Parameters
    ----------
    tiles
        Training tiles (:func:`read_annotated_folder`, :func:`pannuke_tiles`); classes
        come from their type maps when they have them.
    out
        Weights file to write (``.safetensors``; the card goes to ``NAME.card.json``).
    config
        Training settings.
    validation
        Tiles scored after training (their scores go into the card).
    init
        Earlier weights to fine-tune from (same classes), instead of a fresh network.
    data
        What the card says about the data (folder, licences...), besides the tile ids.

    Raises
    ------
    AnnotationError
        If no tile is given, tiles disagree on classes, or ``init`` has other classes.
    """
    config = config or SegmenterTrainConfig()
    if not tiles:
        raise AnnotationError("no annotated tiles to train on")
    class_sets = {t.classes for t in tiles if t.types is not None}
    if len(class_sets) > 1:
        raise AnnotationError(f"tiles disagree on their classes: {sorted(class_sets)}")
    classes = next(iter(class_sets)) if class_sets else ()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    torch.manual_seed(config.seed)
    if init is not None:
        segmenter = LearnedSegmenter(init)
        if segmenter.classes != classes or segmenter.network_mpp != config.mpp:
            raise AnnotationError(
                f"{init} has classes {segmenter.classes} at {segmenter.network_mpp} µm/px; the "
                f"tiles have {classes} and the run works at {config.mpp} µm/px",
                hint="fine-tune on tiles with the same classes and the same mpp",
            )
    else:
        segmenter = LearnedSegmenter(
            classes=classes, mpp=config.mpp, width=config.width, depth=config.depth
        )
    # NHWC: oneDNN's convolutions run about 10 % faster per step on a CPU in this layout
    model = segmenter.model.to(memory_format=torch.channels_last)
    typed = bool(classes)
    prepared = [_at_mpp(t, config.mpp, config.crop_px) for t in tiles]
    weights = np.array([t.instances.size for t in prepared], np.float64)
    weights /= weights.sum()
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    key = {
        "config": json.loads(json.dumps(config.resume_key(), default=str)),
        "tiles": sorted(t.id for t in tiles),
        "init": str(init) if init else None,
    }
    checkpoint = checkpoint_path(out)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    state = _load_checkpoint(checkpoint, model, optimiser, key)
    rng = np.random.default_rng(config.seed)
    start, spent, history = 0, 0.0, []
    if state is not None:
        rng.bit_generator.state = state["rng"]
        start, spent, history = state["step"], state["seconds"], state["history"]
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    model.train()
    began = time.perf_counter() - spent
    bar = tqdm(
        total=config.steps, initial=start, disable=not config.progress, unit="step", desc="train"
    )
    for step in range(start, config.steps):
        elapsed = time.perf_counter() - began
        if budget is not None and elapsed >= budget:
            break
        progress = max(step / config.steps, elapsed / budget if budget else 0.0)
        for group in optimiser.param_groups:
            group["lr"] = config.lr * _lr_factor(progress, step)
        images, nuclear, hv, types = _batch(rng, prepared, weights, config, typed)
        images = images.to(segmenter.device, memory_format=torch.channels_last)
        losses = hovernet_losses(
            model(images),
            nuclear.to(segmenter.device),
            hv.to(segmenter.device),
            None if types is None else types.to(segmenter.device),
            hv_weight=config.hv_weight,
            gradient_weight=config.gradient_weight,
            type_weight=config.type_weight,
        )
        total = sum(losses.values())
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        history.append(
            {"step": step, "loss": round(total.item(), 5)}
            | {k: round(v.item(), 5) for k, v in losses.items()}
        )
        bar.update(1)
        bar.set_postfix(loss=f"{total.item():.3f}")
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            _save_checkpoint(
                checkpoint,
                model,
                optimiser,
                {
                    "key": key,
                    "step": step + 1,
                    "seconds": time.perf_counter() - began,
                    "rng": rng.bit_generator.state,
                    "history": history,
                },
            )
    bar.close()
    seconds = time.perf_counter() - began
    model.to(memory_format=torch.contiguous_format).eval()
    scores = validate(segmenter, validation) if validation else {}
    card = {
        "data": {
            **(data or {}),
            "train_tiles": [{"id": t.id, "mpp": t.mpp, "nuclei": t.n_nuclei} for t in tiles],
            "validation_tiles": [t.id for t in validation],
        },
        "training": {
            "config": json.loads(json.dumps(asdict(config), default=str)),
            "steps_done": len(history),
            "stopped_by": "max_minutes" if len(history) < config.steps else "steps",
            "seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "init": str(init) if init else "scratch",
            "final_loss": history[-1]["loss"] if history else None,
        },
        "validation": scores,
    }
    segmenter.save(out, card=card)
    checkpoint.unlink(missing_ok=True)
    return TrainResult(segmenter, history, seconds, scores)
