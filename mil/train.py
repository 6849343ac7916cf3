"""The trainer shared by every head and task.

AdamW with a cosine or plateau schedule, early stopping on a validation metric
(restoring the best weights), gradient accumulation, mixed precision on CUDA
only, class weighting or balanced sampling, instance dropout and a size cap
for huge bags, and seeded, repeatable runs. Bags are streamed from their
source one padded batch at a time, so memory is bounded by
``batch_size × max_instances × D`` whatever the cohort size.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mil.data import BagSource, BagTable, bag_tensor, sample_rows
from mil.errors import MILError
from mil.models.base import HeadOutput, MILHead
from mil.tasks import Classification, Task
from slideflow_core.parallel import ordered_map

SCHEDULES = ("cosine", "plateau", "constant")
BALANCING = ("none", "weights", "sampler", "batches")
LOWER_IS_BETTER = {"loss", "mae", "rmse", "ece"}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train a head.

    Parameters
    ----------
    epochs
        Epochs per training phase.
    lr, weight_decay
        AdamW learning rate and weight decay.
    batch_size
        Bags per forward pass (padded to the longest; masked).
    accumulate
        Batches whose gradients are summed before each optimiser step.
    schedule
        ``"cosine"`` (to 0 over the epochs), ``"plateau"`` (halve when the
        monitored metric stalls for ``patience // 2`` epochs) or ``"constant"``.
    patience
        Early stopping: epochs without improvement of ``monitor`` on the
        validation bags before stopping; ``None`` trains every epoch. The best
        epoch's weights are restored either way when there is a validation set.
    monitor
        Validation metric for early stopping (``"loss"``, ``"auroc"``, ``"c_index"``…);
        default: the validation loss.
    balance
        ``"weights"``: class-weighted loss; ``"sampler"``: draw bags with
        probability inverse to their class frequency; ``"batches"``: class-balanced
        batches (every batch holds ``batch_size // classes`` bags of each class,
        the rarer classes cycled through again as often as needed; what a
        contrastive loss needs: partners of every class in each batch); ``"none"``.
    max_instances
        Train on at most this many randomly chosen instances per bag (huge bags).
    instance_dropout
        Share of instances dropped at random from each training bag.
    standardize
        Standardise features with the training bags' mean and std (kept in the model).
    amp
        Mixed precision: float16 on CUDA; on CPUs with AMX tiles, bfloat16 for
        the steps whose input holds at least ``CPU_AMP_VALUES`` values (bags ×
        instances × features), where AMX runs the products about eight times
        faster than float32 (an epoch of 5,000 × 1,024 bags about 1.5× faster;
        smaller steps gain nothing and stay float32, so classical MIL sets train
        exactly as without it); ignored on other CPUs. Master weights, the loss and
        the optimiser stay float32; inference is float32.
    grad_clip
        Clip the gradient norm to this value.
    seed
        Seed of initialisation, sampling and dropout.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
    loader_threads
        Threads reading the next batches from disk while the model trains on the
        current one (0: read inline). In-memory bags are always read inline.
    progress
        Show a progress bar over epochs.
    """

    epochs: int = 40
    lr: float = 2e-4
    weight_decay: float = 1e-4
    batch_size: int = 1
    accumulate: int = 1
    schedule: str = "cosine"
    patience: int | None = 10
    min_epochs: int = 0
    monitor: str | None = None
    balance: str = "none"
    max_instances: int | None = None
    instance_dropout: float = 0.0
    standardize: bool = False
    amp: bool = True
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    loader_threads: int = 1
    progress: bool = False

    def __post_init__(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "accumulate": self.accumulate,
        }
        bad = [f"{k}={v}" for k, v in positive.items() if v < 1]
        if self.loader_threads < 0:
            bad.append(f"loader_threads={self.loader_threads}")
        if self.lr <= 0 or self.weight_decay < 0:
            bad.append(f"lr={self.lr}, weight_decay={self.weight_decay}")
        if self.schedule not in SCHEDULES:
            bad.append(f"schedule={self.schedule!r} (one of {SCHEDULES})")
        if self.balance not in BALANCING:
            bad.append(f"balance={self.balance!r} (one of {BALANCING})")
        if self.min_epochs < 0 or self.min_epochs > self.epochs:
            bad.append(f"min_epochs={self.min_epochs} (0 to epochs)")
        if self.patience is not None and self.patience < 1:
            bad.append(f"patience={self.patience}")
        if self.max_instances is not None and self.max_instances < 1:
            bad.append(f"max_instances={self.max_instances}")
        if not 0 <= self.instance_dropout < 1:
            bad.append(f"instance_dropout={self.instance_dropout}")
        if bad:
            raise ValueError(f"invalid TrainConfig: {', '.join(bad)}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data."""
        return asdict(self)


class MILModel(nn.Module):
    """A head together with the feature standardisation it was trained with.

    The standardisation lives in the head's first layer (:class:`~mil.models.base.InputLinear`,
    folded into its weights); :attr:`mean` and :attr:`std` are its buffers.
    """

    def __init__(self, head: MILHead):
        super().__init__()
        self.head = head
        self._register_load_state_dict_pre_hook(_move_standardisation)

    @property
    def mean(self) -> torch.Tensor:
        """Per-feature mean subtracted from the input (zeros: none)."""
        return self.head.encoder[0].mean

    @property
    def std(self) -> torch.Tensor:
        """Per-feature std the input is divided by (ones: none)."""
        return self.head.encoder[0].std

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        """Run the head on raw features ``x`` (B, N, D)."""
        return self.head(x, mask, classes)


def _move_standardisation(state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Checkpoints written before the standardisation moved into the first layer."""
    for name in ("mean", "std"):
        if prefix + name in state:
            state[f"{prefix}head.encoder.0.{name}"] = state.pop(prefix + name)


def fit_standardizer(
    source: BagSource, *, rows_per_bag: int = 4096, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over the bags (at most ``rows_per_bag`` rows of each)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(source.dim)
    squares = np.zeros(source.dim)
    count = 0
    for i in range(len(source)):
        rows = sample_rows(source.size(i), max_instances=rows_per_bag, dropout=0.0, rng=rng)
        x = source.features(i, rows).astype(np.float64)
        total += x.sum(axis=0)
        squares += (x**2).sum(axis=0)
        count += len(x)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def standardize_for(model: MILModel, train: BagSource, *, seed: int) -> None:
    """Set ``model``'s feature standardisation to the mean and std of ``train``'s bags."""
    mean, std = fit_standardizer(train, seed=seed)
    with torch.no_grad():
        model.mean.copy_(torch.from_numpy(mean))
        model.std.copy_(torch.from_numpy(std))


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, *, lower_is_better: bool
) -> Any:
    """The learning-rate schedule of ``config.schedule`` (``None`` for ``"constant"``).

    Stepped once per epoch; ``"plateau"`` takes the monitored validation value.
    """
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min" if lower_is_better else "max", factor=0.5,
            patience=max(1, (config.patience or 10) // 2),
        )  # fmt: skip
    return None


class _TrainingBags:
    """Bag ``i`` of a source with its training rows sampled, seeded per (epoch, bag)."""

    def __init__(self, source: BagSource, config: TrainConfig) -> None:
        self.source, self.config, self.epoch = source, config, 0

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rows = None
        if self.config.max_instances is not None or self.config.instance_dropout > 0:
            rows = sample_rows(
                self.source.size(i),
                max_instances=self.config.max_instances,
                dropout=self.config.instance_dropout,
                rng=np.random.default_rng([self.config.seed, self.epoch, i]),
            )
        return bag_tensor(self.source, i, rows), i

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
        """Bags ``indices`` read and padded into one batch (see :func:`pad_batch`)."""
        return pad_batch([self[i] for i in indices])


def pad_batch(
    items: Sequence[tuple[torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """Stack bags (N_i, D) into (B, max N, D) with a (B, max N) mask of real rows.

    The mask is ``None`` when every bag has the same size (nothing is padded).
    """
    bags, index = [x for x, _ in items], [i for _, i in items]
    lengths = [len(x) for x in bags]
    if len(set(lengths)) == 1:
        return torch.stack(bags), None, index
    x = nn.utils.rnn.pad_sequence(bags, batch_first=True)
    mask = torch.arange(x.shape[1])[None] < torch.tensor(lengths)[:, None]
    return x, mask, index


@dataclass
class FitResult:
    """What training produced besides the weights (restored to the best epoch)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_value: float = float("nan")
    monitor: str = "loss"


@dataclass(frozen=True)
class Evaluation:
    """Predictions of a model on a set of bags."""

    predictions: np.ndarray  # (n, len(task.columns))
    targets: np.ndarray | None
    loss: float
    metrics: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def compose_loss(
    task: Task, head: MILHead, out: HeadOutput, target: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Task loss, mixed with the head's auxiliary loss: (1 − w) · task + w · aux."""
    loss = task.loss(out.logits, target, weight)
    w = head.aux_weight
    if out.aux_logits is not None:
        loss = (1 - w) * loss + w * task.loss(out.aux_logits, target, weight)
    if out.aux_loss is not None:
        loss = (1 - w) * loss + w * out.aux_loss
    return loss


#: Batches whose bags are drawn together and sorted by size before being cut (see below).
BUCKET_BATCHES = 8


def _epoch_batches(
    targets: np.ndarray,
    sizes: np.ndarray,
    task: Task,
    config: TrainConfig,
    rng: np.random.Generator,
) -> list[list[int]]:
    """One epoch's batches of bag indices, in random order.

    With ``batch_size`` > 1, each run of ``BUCKET_BATCHES`` batches' worth of
    shuffled bags is sorted by size before it is cut into batches, so a batch
    holds bags of similar size and padding stays small (MIL bag sizes are
    often heavy-tailed: one big bag pads its whole batch); the batches are
    then shuffled.
    """
    n = len(targets)
    if config.balance == "batches" and isinstance(task, Classification):
        return _balanced_batches(targets, task.n_out, config.batch_size, rng)
    if config.balance == "sampler" and isinstance(task, Classification):
        counts = np.bincount(targets, minlength=task.n_out).astype(np.float64)
        p = 1.0 / counts[targets]
        order = rng.choice(n, size=n, replace=True, p=p / p.sum())
    else:
        order = rng.permutation(n)
    size = config.batch_size
    if size > 1:
        pool = size * BUCKET_BATCHES
        order = np.concatenate([
            chunk[np.argsort(sizes[chunk], kind="stable")]
            for chunk in np.split(order, range(pool, n, pool))
        ])  # fmt: skip
    batches = [order[i : i + size].tolist() for i in range(0, n, size)]
    return [batches[i] for i in rng.permutation(len(batches))] if size > 1 else batches


def _balanced_batches(
    targets: np.ndarray, n_classes: int, batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """An epoch of ``ceil(n / batch_size)`` batches, each with an equal share of every class.

    Each present class contributes ``max(1, batch_size // classes)`` bags per
    batch, taken in turn from its own reshuffled cycle: the majority's bags are
    each seen about once per epoch, a minority's bags several times.
    """
    present = [np.flatnonzero(targets == c) for c in range(n_classes)]
    present = [members for members in present if len(members)]
    per_class = max(1, batch_size // len(present))
    n_batches = math.ceil(len(targets) / batch_size)
    draws = []
    for members in present:
        cycles = math.ceil(n_batches * per_class / len(members))
        stream = np.concatenate([rng.permutation(members) for _ in range(cycles)])
        draws.append(stream[: n_batches * per_class].reshape(n_batches, per_class))
    return np.concatenate(draws, axis=1).tolist()


def class_weights(targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Loss weight per class, inverse to its share of ``targets`` (``balance="weights"``)."""
    counts = np.bincount(targets, minlength=n_classes).astype(np.float32)
    return len(targets) / (n_classes * np.maximum(counts, 1))


def _optimizer_kernel(device: torch.device) -> dict[str, bool]:
    """AdamW's fused kernel (one call updates every parameter) where torch has one.

    On small MIL heads the optimiser step costs as much as forward and backward
    together when it runs as a loop of per-tensor (or even ``foreach``) ops.
    """
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


#: Input values (bags × instances × features) from which a CPU step runs in bfloat16 with
#: ``amp``: one 1,024 × 1,024 bag trains ~2× faster on AMX, a 256-row one ~1.2×, Musk-sized
#: batches no faster (the casts cost what the products save).
CPU_AMP_VALUES = 2**20


def _mixed_precision(device: torch.device) -> bool:
    """Whether autocast can pay on ``device``: CUDA, or a CPU with AMX tiles.

    Without AMX, CPU bfloat16 products are no faster than float32 ones (or slower).
    """
    if device.type == "cuda":
        return True
    # A private probe (torch >= 2.3); an older torch is taken as having no AMX.
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return device.type == "cpu" and bool(has_amx())


def _autocast_step(device: torch.device, x: torch.Tensor, amp: bool) -> bool:
    """Whether this step of input ``x`` runs under autocast (see ``TrainConfig.amp``)."""
    return amp and (device.type != "cpu" or x.numel() >= CPU_AMP_VALUES)


def _monitor(task: Task, config: TrainConfig) -> tuple[str, bool]:
    name = config.monitor or task.monitor[0]
    return name, name in LOWER_IS_BETTER


class _Stopper:
    def __init__(self, lower_is_better: bool, patience: int | None) -> None:
        self.sign = 1.0 if lower_is_better else -1.0
        self.best = math.inf
        self.patience, self.stale = patience, 0

    def improved(self, value: float) -> bool:
        if not math.isnan(value) and self.sign * value < self.best:
            self.best, self.stale = self.sign * value, 0
            return True
        self.stale += 1
        return False

    @property
    def done(self) -> bool:
        return self.patience is not None and self.stale >= self.patience


def fit(
    model: MILModel,
    task: Task,
    train: BagSource,
    val: BagSource | None,
    config: TrainConfig,
) -> FitResult:
    """Train ``model`` in place on ``train``, early-stopping on ``val``.

    Runs each of the head's phases (most heads: one) for ``config.epochs``
    epochs; early stopping and best-weight restoring apply to the last phase.

    Raises
    ------
    MILError
        If the head needs class labels (a contrastive phase) and the task has none.
    """
    head = model.head
    if "contrastive" in head.phases() and not isinstance(task, Classification):
        raise MILError(f"{type(head).__name__} phase 'contrastive' needs a classification task")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    if config.standardize:
        standardize_for(model, train, seed=config.seed)
    model.to(device)
    targets = task.encode(train.labels)
    weight = None
    if config.balance == "weights" and isinstance(task, Classification):
        weight = torch.from_numpy(class_weights(targets, task.n_out)).to(device)
    target_tensor = torch.from_numpy(targets)
    sizes = np.array([train.size(i) for i in range(len(train))])
    use_amp = config.amp and _mixed_precision(device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda")
    dataset = _TrainingBags(train, config)
    threads = 0 if isinstance(train, BagTable) else config.loader_threads
    monitor, lower = _monitor(task, config)
    result = FitResult(monitor=monitor)
    phases = head.phases()
    for phase_index, phase in enumerate(phases):
        head.set_phase(phase)
        last_phase = phase_index == len(phases) - 1
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay, **_optimizer_kernel(device)
        )
        scheduler = make_scheduler(optimizer, config, lower_is_better=lower)
        stopper = _Stopper(lower, config.patience)
        best_state = None
        epochs = tqdm(range(config.epochs), desc=phase, disable=not config.progress, leave=False)
        for epoch in epochs:
            dataset.epoch = epoch + phase_index * config.epochs
            head.set_progress(epoch, config.epochs)
            model.train()
            batches = _epoch_batches(targets, sizes, task, config, rng)
            loader = ordered_map(dataset.batch, batches, threads=threads, name="mil-loader")
            running, steps = 0.0, 0
            optimizer.zero_grad(set_to_none=True)
            for step, (x, mask, index) in enumerate(loader):
                target = target_tensor[index].to(device)
                if mask is not None:
                    mask = mask.to(device)
                x = x.to(device)
                with torch.autocast(device.type, enabled=_autocast_step(device, x, use_amp)):
                    out = model(x, mask, task.classes_of(target))
                    loss = compose_loss(task, head, out, target, weight)
                scaler.scale(loss / config.accumulate).backward()
                running, steps = running + float(loss.detach()), steps + 1
                if (step + 1) % config.accumulate == 0 or step + 1 == len(batches):
                    if config.grad_clip is not None:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(params, config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
            record: dict[str, Any] = {
                "phase": phase, "epoch": epoch, "train_loss": running / steps,
                "aux_weight": head.aux_weight,
            }  # fmt: skip
            value = math.nan
            if val is not None and len(val):
                evaluation = evaluate(model, task, val, device=device)
                value = (
                    evaluation.loss
                    if monitor == "loss"
                    else evaluation.metrics.get(monitor, math.nan)
                )
                record["val_loss"] = evaluation.loss
                record[f"val_{monitor}"] = value
            result.history.append(record)
            epochs.set_postfix(loss=f"{record['train_loss']:.4f}")
            if scheduler is not None:
                if config.schedule == "plateau":
                    if not math.isnan(value):
                        scheduler.step(value)
                else:
                    scheduler.step()
            ready = epoch + 1 >= config.min_epochs and head.selectable
            if last_phase and not math.isnan(value) and ready:
                if stopper.improved(value):
                    best_state = copy.deepcopy(model.state_dict())
                    result.best_epoch, result.best_value = epoch, float(value)
                if stopper.done:
                    break
        if last_phase:
            if best_state is not None:
                model.load_state_dict(best_state)
            else:
                result.best_epoch = epoch
    model.eval()
    return result


#: Padded rows (bags × longest bag) of one inference batch.
INFERENCE_ROWS = 2**16


def _inference_batches(source: BagSource, max_rows: int) -> list[list[int]]:
    """Consecutive bags grouped while (bags × longest) stays within ``max_rows``."""
    batches: list[list[int]] = []
    longest = 0
    for i in range(len(source)):
        size = source.size(i)
        if batches and (len(batches[-1]) + 1) * max(longest, size) <= max_rows:
            batches[-1].append(i)
            longest = max(longest, size)
        else:
            batches.append([i])
            longest = size
    return batches


@torch.no_grad()
def predict_bags(
    model: MILModel,
    task: Task,
    source: BagSource,
    *,
    device: torch.device | None = None,
    max_rows: int = INFERENCE_ROWS,
) -> tuple[np.ndarray, torch.Tensor, list[np.ndarray]]:
    """Run ``model`` on every bag of ``source`` in eval mode.

    Small bags are run together in padded, masked batches of at most
    ``max_rows`` padded rows; a bag bigger than that runs alone.

    Returns
    -------
    tuple
        (predictions (n, len(task.columns)), logits (n, n_out), per-bag instance
        scores (M_i,) or (M_i, K)).
    """
    device = device or next(model.parameters()).device
    model.eval()
    logits, scores = [], []
    for batch in _inference_batches(source, max_rows):
        bags = [(bag_tensor(source, i), i) for i in batch]
        x, mask, _ = pad_batch(bags)
        out = model(x.to(device), None if mask is None else mask.to(device))
        logits.append(out.logits.float().cpu())
        for row, (bag, _) in enumerate(bags):
            scores.append(out.scores[row, : len(bag)].float().cpu().numpy())
    stacked = torch.cat(logits) if logits else torch.zeros(0, task.n_out)
    return task.predict(stacked), stacked, scores


def evaluate(
    model: MILModel, task: Task, source: BagSource, *, device: torch.device | None = None
) -> Evaluation:
    """Predictions, loss and metrics of ``model`` on labelled bags."""
    predictions, logits, _ = predict_bags(model, task, source, device=device)
    targets = task.encode(source.labels)
    loss = float(task.loss(logits, torch.from_numpy(targets)))
    return Evaluation(
        predictions=predictions,
        targets=targets,
        loss=loss,
        metrics=task.metrics(targets, predictions),
    )
