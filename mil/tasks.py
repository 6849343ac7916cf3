"""Task types sharing the trainer: what a label means, the loss, predictions, metrics.

Every task turns raw labels into targets (:meth:`Task.encode`), scores the
head's (B, n_out) logits against them (:meth:`Task.loss`), turns logits into
the prediction columns of the results table and computes its metrics.

- ``classification``: binary or multi-class, cross-entropy; columns ``prob_<class>``.
- ``regression``: mean squared error; column ``prediction``.
- ``survival_cox``: Cox partial likelihood (Breslow ties) over the batch; column ``risk``.
- ``survival_discrete``: discrete-time hazard negative log-likelihood over time bins
  (Zadeh & Schmid 2020); column ``risk`` (minus the expected survival over the bins).

Survival labels are ``(time, event)`` pairs with event 1 for an observed event,
0 for censoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from mil.errors import MILError
from mil.metrics import classification_metrics, concordance_index, regression_metrics
from slideflow_core.registry import Registry


class Task:
    """Base of the task types; subclasses are frozen dataclasses fitted with :meth:`fit`."""

    name: ClassVar[str]
    monitor: ClassVar[tuple[str, str]] = ("loss", "min")  # default early-stopping metric

    @classmethod
    def fit(cls, labels: Sequence[Any], **options: Any) -> Task:
        """The task for these raw labels (classes, time bins...)."""
        return cls(**options)

    @property
    def n_out(self) -> int:
        """Number of logits the head must produce."""
        raise NotImplementedError

    @property
    def columns(self) -> list[str]:
        """Names of the prediction columns."""
        raise NotImplementedError

    def encode(self, labels: Sequence[Any]) -> np.ndarray:
        """Raw labels → targets (int64 class indices or float32 values)."""
        raise NotImplementedError

    def classes_of(self, target: torch.Tensor) -> torch.Tensor | None:
        """Class indices heads may use for auxiliary losses (``None`` unless classifying)."""
        return None

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean loss of (B, n_out) logits against (B, …) targets."""
        raise NotImplementedError

    def predict(self, logits: torch.Tensor) -> np.ndarray:
        """(B, n_out) logits → (B, len(columns)) predictions."""
        raise NotImplementedError

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
        """Metrics of predictions against encoded targets."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The task as plain data (for the YAML config)."""
        return {"name": self.name, **{k: list(v) for k, v in vars(self).items()}}


tasks: Registry[type[Task]] = Registry("MIL task")


def create_task(name: str, labels: Sequence[Any], **options: Any) -> Task:
    """The task ``name`` fitted to ``labels`` (e.g. the classes found in them)."""
    return tasks.get(name).fit(labels, **options)


def task_from_dict(record: dict[str, Any]) -> Task:
    """Rebuild a task from :meth:`Task.describe`."""
    record = dict(record)
    cls = tasks.get(record.pop("name"))
    return cls(**{k: tuple(v) for k, v in record.items()})


def _present(labels: Sequence[Any]) -> list[Any]:
    return [v for v in labels if v is not None and not (isinstance(v, float) and np.isnan(v))]


@tasks.register("classification", description="binary or multi-class, cross-entropy")
@dataclass(frozen=True, kw_only=True)
class Classification(Task):
    """Binary or multi-class classification over ``classes`` (sorted label values)."""

    name: ClassVar[str] = "classification"
    classes: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise MILError(
                f"classification needs at least two classes, the labels have {list(self.classes)}",
                hint="check the label column, or use task='regression'",
            )

    @classmethod
    def fit(cls, labels: Sequence[Any], **options: Any) -> Classification:
        classes = options.pop("classes", None) or _sorted_values(set(_present(labels)))
        return cls(classes=tuple(_plain(c) for c in classes), **options)

    @property
    def n_out(self) -> int:
        return len(self.classes)

    @property
    def columns(self) -> list[str]:
        return [f"prob_{c}" for c in self.classes]

    def encode(self, labels: Sequence[Any]) -> np.ndarray:
        index = {str(c): i for i, c in enumerate(self.classes)}
        unknown = sorted({str(v) for v in labels} - index.keys())
        if unknown:
            raise MILError(
                f"labels {unknown} are not among the classes {list(self.classes)}",
                hint="drop unlabelled slides or pass classes= covering every value",
            )
        return np.array([index[str(v)] for v in labels], dtype=np.int64)

    def classes_of(self, target: torch.Tensor) -> torch.Tensor:
        return target

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=weight)

    def predict(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
        return classification_metrics(targets, predictions)


def _sorted_values(values: set[Any]) -> list[Any]:
    """Numbers in numeric order, anything else by its text."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _plain(value: Any) -> Any:
    """NumPy scalars as Python ones, so classes survive YAML."""
    return value.item() if isinstance(value, np.generic) else value


@tasks.register("regression", description="one continuous value, mean squared error")
@dataclass(frozen=True, kw_only=True)
class Regression(Task):
    """Regression of one continuous label."""

    name: ClassVar[str] = "regression"

    @property
    def n_out(self) -> int:
        return 1

    @property
    def columns(self) -> list[str]:
        return ["prediction"]

    def encode(self, labels: Sequence[Any]) -> np.ndarray:
        return np.asarray(labels, dtype=np.float32)

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.mse_loss(logits.float()[:, 0], target)

    def predict(self, logits: torch.Tensor) -> np.ndarray:
        return logits.float().cpu().numpy()[:, :1]

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
        return regression_metrics(targets, predictions[:, 0])


def _survival_targets(labels: Sequence[Any]) -> np.ndarray:
    pairs = np.asarray([tuple(v) for v in labels], dtype=np.float32).reshape(-1, 2)
    if (pairs[:, 0] < 0).any() or not np.isin(pairs[:, 1], (0, 1)).all():
        raise MILError(
            "survival labels must be (time >= 0, event 0/1) pairs",
            hint="check the time and event columns",
        )
    return pairs


def cox_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Breslow ties), averaged over events.

    −(1/E) Σ_{i: event} [ r_i − log Σ_{j: t_j ≥ t_i} exp(r_j) ]; zero when the
    batch holds no event.
    """
    at_risk = time[None, :] >= time[:, None]  # row i: who is still at risk at t_i
    log_denominator = torch.logsumexp(risk[None, :].masked_fill(~at_risk, -torch.inf), dim=1)
    events = event > 0
    if not events.any():
        return risk.sum() * 0.0
    return -(risk - log_denominator)[events].mean()


@tasks.register("survival_cox", description="Cox partial likelihood; (time, event) labels")
@dataclass(frozen=True, kw_only=True)
class CoxSurvival(Task):
    """Survival with a Cox proportional-hazards loss; the head outputs one risk."""

    name: ClassVar[str] = "survival_cox"

    @property
    def n_out(self) -> int:
        return 1

    @property
    def columns(self) -> list[str]:
        return ["risk"]

    def encode(self, labels: Sequence[Any]) -> np.ndarray:
        return _survival_targets(labels)

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return cox_loss(logits.float()[:, 0], target[:, 0], target[:, 1])

    def predict(self, logits: torch.Tensor) -> np.ndarray:
        return logits.float().cpu().numpy()[:, :1]

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
        return {"c_index": concordance_index(targets[:, 0], targets[:, 1], predictions[:, 0])}


def discrete_survival_nll(
    logits: torch.Tensor, bin_index: torch.Tensor, event: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood of discrete-time hazards, averaged over the batch.

    With hazards h = sigmoid(logits) and S_k = Π_{j≤k} (1 − h_j): an event in
    bin y contributes −log S_{y−1} − log h_y; a censoring in bin y, −log S_y.
    """
    log_h = F.logsigmoid(logits)
    log_1mh = F.logsigmoid(-logits)
    log_s = torch.cumsum(log_1mh, dim=1)  # log S_k
    log_s_prev = torch.cat([torch.zeros_like(log_s[:, :1]), log_s[:, :-1]], dim=1)
    rows = torch.arange(len(logits))
    observed = -(log_s_prev[rows, bin_index] + log_h[rows, bin_index])
    censored = -log_s[rows, bin_index]
    return torch.where(event > 0, observed, censored).mean()


@tasks.register("survival_discrete", description="discrete-time hazards NLL over time bins")
@dataclass(frozen=True, kw_only=True)
class DiscreteSurvival(Task):
    """Survival as hazards over time bins cut at ``cuts`` (quantiles of event times)."""

    name: ClassVar[str] = "survival_discrete"
    cuts: tuple[float, ...]

    @classmethod
    def fit(cls, labels: Sequence[Any], **options: Any) -> DiscreteSurvival:
        n_bins = int(options.pop("n_bins", 4))
        if "cuts" not in options:
            pairs = _survival_targets(_present(labels))
            times = pairs[pairs[:, 1] > 0, 0] if (pairs[:, 1] > 0).any() else pairs[:, 0]
            quantiles = np.quantile(times, np.linspace(0, 1, n_bins + 1)[1:-1])
            options["cuts"] = tuple(float(q) for q in np.unique(quantiles))
        return cls(cuts=tuple(options.pop("cuts")), **options)

    @property
    def n_out(self) -> int:
        return len(self.cuts) + 1

    @property
    def columns(self) -> list[str]:
        return ["risk"]

    def encode(self, labels: Sequence[Any]) -> np.ndarray:
        pairs = _survival_targets(labels)
        bins = np.searchsorted(np.asarray(self.cuts), pairs[:, 0], side="right")
        return np.column_stack([pairs, bins]).astype(np.float32)

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return discrete_survival_nll(logits.float(), target[:, 2].long(), target[:, 1])

    def predict(self, logits: torch.Tensor) -> np.ndarray:
        survival = torch.cumprod(torch.sigmoid(-logits.float()), dim=1)
        return (-survival.sum(dim=1, keepdim=True)).cpu().numpy()

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
        return {"c_index": concordance_index(targets[:, 0], targets[:, 1], predictions[:, 0])}
