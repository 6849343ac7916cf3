"""Pools of real embedded tiles for MIL benchmarks, and slides (bags) drawn from them.

Tiling and embedding whole synthetic cohorts on two cores takes too long for a
sweep over seeds, heads and imbalance settings, so the sweep works at the
feature level, but on features of real pixels: tiles are rendered in memory by
the synthetic slide writer's own renderer (``slideflow_core.synthetic``, 256 px
at 0.5 µm/px) and embedded with the weight-free ``handcrafted`` embedder.

Pools (``TilePools``):

- ``normal``: tiles wholly inside tissue, away from any focus;
- ``tumour``: tiles at least half inside a tumour focus whose nuclei are only
  somewhat denser and larger than normal (close in texture to normal tissue);
- ``mimic``: tiles inside look-alike foci of dense small round nuclei
  (inflammation-like), the hard negatives;
- ``site2``: the same tiles as seen by a second site (other stain vectors, JPEG
  quality 50, Gaussian blur σ 0.8 px, a scanner at 0.85 of the resolution) and
  embedded again: the out-of-distribution test set.

Pools are cached as ``.npz`` (:func:`load_or_build_pools`).

:func:`draw_bags` then builds slides as bags of pool rows: 150–450 tiles each;
a positive slide has tumour on 0.5–3 % of its tiles, each tumour row blended
towards a normal row (``tumour_strength``: 1 is the rendered tumour, smaller is
closer to normal: the difficulty knob); half the slides of either class carry a
look-alike region on 1–4 % of their tiles.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
import torch
from PIL import Image, ImageFilter

import embedders
from mil.data import BagTable
from mil.metrics import auroc, balanced_accuracy, balanced_threshold, macro_f1
from mil.models import create_head
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, fit, predict_bags
from slideflow_core.synthetic import SyntheticSlideSpec
from slideflow_core.synthetic.render import TileRenderer
from slideflow_core.synthetic.scene import build_scene

TILE_PX = 256
BASE = SyntheticSlideSpec(
    width_px=4096, height_px=4096, mpp=0.5, n_pen_marks=0, n_blur_regions=0,
    associated_images=False, tissue_fraction=0.5,
)  # fmt: skip
# Tumour nuclei a little denser and larger than normal (3,000/mm², 6-10 µm).
TUMOUR = {"tumour_nuclei_per_mm2": 4200.0, "tumour_nucleus_diameter_um": (8.0, 12.0)}
# Inflammation-like look-alikes: dense, small, round nuclei.
MIMIC = {"tumour_nuclei_per_mm2": 9000.0, "tumour_nucleus_diameter_um": (5.0, 7.5)}
# Site 2: haematoxylin bluer and stronger, eosin paler (optical-density scaling per channel).
SITE2_OD_SCALE = np.array([1.15, 1.0, 0.85])
SITE2_JPEG_QUALITY = 50
SITE2_BLUR_PX = 0.8
SITE2_SCANNER_SCALE = 0.85


@dataclass(frozen=True)
class TilePools:
    """Embedded tiles per kind (rows of ``handcrafted`` features) at two sites."""

    normal: np.ndarray
    tumour: np.ndarray
    mimic: np.ndarray
    site2_normal: np.ndarray
    site2_tumour: np.ndarray
    site2_mimic: np.ndarray

    def site(self, site: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normal, tumour, mimic) pools of site 1 or 2."""
        if site == 1:
            return self.normal, self.tumour, self.mimic
        return self.site2_normal, self.site2_tumour, self.site2_mimic

    def summary(self) -> dict[str, int]:
        """Rows per pool."""
        return {k: len(v) for k, v in vars(self).items()}


def site2(tile: np.ndarray) -> np.ndarray:
    """A tile as the second site would scan it: stain, resolution, blur, JPEG."""
    od = -np.log(np.clip(tile.astype(np.float64), 1, 255) / 255.0)
    rgb = np.clip(255 * np.exp(-od * SITE2_OD_SCALE), 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    small = round(TILE_PX * SITE2_SCANNER_SCALE)
    image = image.resize((small, small), Image.BILINEAR).resize((TILE_PX, TILE_PX), Image.BICUBIC)
    image = image.filter(ImageFilter.GaussianBlur(SITE2_BLUR_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=SITE2_JPEG_QUALITY)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _tiles(spec: SyntheticSlideSpec, want: str, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` rendered tiles of one slide: ``normal`` or ``focus`` tiles."""
    scene = build_scene(spec)
    renderer = TileRenderer(scene)
    tissue, focus = scene.truth.tissue, scene.truth.tumour
    out = []
    for ty in range(spec.height_px // TILE_PX):
        for tx in range(spec.width_px // TILE_PX):
            box = shapely.box(tx * TILE_PX, ty * TILE_PX, (tx + 1) * TILE_PX, (ty + 1) * TILE_PX)
            if want == "normal":
                keep = box.intersection(tissue).area >= 0.9 * box.area
                keep = keep and not box.intersects(focus.buffer(TILE_PX))
            else:
                keep = box.intersection(focus).area >= 0.5 * box.area
            if keep:
                out.append(np.asarray(renderer.render_tile(tx, ty).convert("RGB")))
            if len(out) >= limit:
                return out
    return out


def build_pools(*, slides: int = 4, seed: int = 0, per_slide: int = 120) -> TilePools:
    """Render and embed the pools from ``slides`` synthetic slides per kind."""
    kinds: dict[str, list[np.ndarray]] = {"normal": [], "tumour": [], "mimic": []}
    for i in range(slides):
        base = BASE.with_overrides(seed=seed * 1000 + i)
        kinds["normal"] += _tiles(base, "normal", per_slide)
        for kind, look in (("tumour", TUMOUR), ("mimic", MIMIC)):
            spec = base.with_overrides(
                seed=seed * 1000 + 100 + i + (50 if kind == "mimic" else 0),
                n_tumour_regions=3, tumour_radius_um=(250.0, 400.0), **look,
            )  # fmt: skip
            kinds[kind] += _tiles(spec, "focus", per_slide)
    embedder = embedders.create("handcrafted")

    def embed(tiles: list[np.ndarray]) -> np.ndarray:
        return embedder.forward(embedder.preprocess(np.stack(tiles))).numpy().astype(np.float32)

    pools = {}
    for kind, tiles in kinds.items():
        pools[kind] = embed(tiles)
        pools[f"site2_{kind}"] = embed([site2(t) for t in tiles])
    return TilePools(**pools)


def load_or_build_pools(path: Path, **options: int) -> TilePools:
    """The pools cached at ``path`` (an ``.npz``), built and saved when missing."""
    if path.is_file():
        with np.load(path) as saved:
            return TilePools(**{k: saved[k] for k in saved.files})
    pools = build_pools(**options)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **vars(pools))
    return pools


@dataclass(frozen=True)
class SimulatedSlides:
    """Bags drawn from the pools, with per-instance truth."""

    bags: list[np.ndarray]
    labels: np.ndarray
    lesion: list[np.ndarray]  # boolean per instance: tumour


def draw_bags(
    pools: TilePools,
    n: int,
    *,
    positive_fraction: float,
    site: int = 1,
    tumour_share: tuple[float, float] = (0.005, 0.03),
    tumour_strength: float = 1.0,
    mimic_share: tuple[float, float] = (0.01, 0.04),
    mimic_probability: float = 0.5,
    tiles: tuple[int, int] = (150, 450),
    seed: int = 0,
) -> SimulatedSlides:
    """``n`` slides, ``positive_fraction`` of them positive, drawn from one site's pools.

    Parameters
    ----------
    pools
        The embedded tiles.
    n
        Number of slides.
    positive_fraction
        Share of positive slides (rounded, at least one of each class when n ≥ 2).
    site
        1 (training site) or 2 (the shifted site).
    tumour_share
        Range of the share of a positive slide's tiles that are tumour.
    tumour_strength
        Tumour rows are ``n + strength · (t − n)`` for a random normal row ``n``.
    mimic_share, mimic_probability
        Range of the look-alike share, and the chance that a slide has a look-alike region.
    tiles
        Range of tiles per slide.
    seed
        Seed of the draw.
    """
    rng = np.random.default_rng(seed)
    normal, tumour, mimic = pools.site(site)
    n_positive = int(np.clip(round(n * positive_fraction), 1 if n > 1 else 0, n - 1))
    labels = rng.permutation(np.arange(n) < n_positive).astype(int)
    bags, lesion = [], []
    for label in labels:
        m = int(rng.integers(*tiles, endpoint=True))
        rows = normal[rng.integers(0, len(normal), m)].copy()
        truth = np.zeros(m, dtype=bool)
        slots = rng.permutation(m)
        used = 0
        if label:
            k = max(1, round(m * rng.uniform(*tumour_share)))
            base = rows[slots[:k]]
            rows[slots[:k]] = base + tumour_strength * (
                tumour[rng.integers(0, len(tumour), k)] - base
            )
            truth[slots[:k]] = True
            used = k
        if rng.random() < mimic_probability:
            k = max(1, round(m * rng.uniform(*mimic_share)))
            rows[slots[used : used + k]] = mimic[rng.integers(0, len(mimic), k)]
        bags.append(rows)
        lesion.append(truth)
    return SimulatedSlides(bags=bags, labels=labels, lesion=lesion)


@dataclass(frozen=True, kw_only=True)
class Method:
    """A head with its options and trainer balancing, as one row of a comparison."""

    name: str
    head: str
    head_kwargs: dict = field(default_factory=dict)
    balance: str = "none"


def site_standardised(slides: SimulatedSlides, reference: SimulatedSlides) -> SimulatedSlides:
    """``slides`` with each feature moved to ``reference``'s mean and std over all tiles.

    Unsupervised site adaptation in feature space (labels unused): a site's
    stain, JPEG and scanner shift moves every tile's features, so a model
    trained on one site scores all bags of another on one side of its
    threshold; re-standardising the new site's features undoes the global part
    of that shift (what stain normalisation does in pixel space).
    """
    rows, ref = np.concatenate(slides.bags), np.concatenate(reference.bags)
    scale = ref.std(axis=0) / np.maximum(rows.std(axis=0), 1e-6)
    shift = ref.mean(axis=0) - rows.mean(axis=0) * scale
    bags = [(b * scale + shift).astype(b.dtype) for b in slides.bags]
    return SimulatedSlides(bags=bags, labels=slides.labels, lesion=slides.lesion)


def as_table(slides: SimulatedSlides) -> BagTable:
    """The slides as in-memory bags."""
    return BagTable.from_arrays(slides.bags, slides.labels.tolist())


def fit_and_score(
    method: Method,
    train: BagTable,
    tests: dict[str, tuple[BagTable, list[np.ndarray] | None]],
    *,
    epochs: int,
    seed: int,
    val: BagTable | None = None,
    batch_size: int = 8,
    lr: float = 5e-4,
) -> dict[str, dict[str, float]]:
    """Train ``method`` on ``train``; per test set: AUROC, balanced accuracy, macro-F1
    and, with instance truth, attention localisation (mean per-positive-bag AUROC of
    the scores against the truth, and how often the top-scored instance is a lesion).

    Balanced accuracy and macro-F1 call a bag positive at the operating point
    with the best balanced accuracy (:func:`mil.metrics.balanced_threshold`) on
    the scores of ``val``, bags held out of training (default: the training bags'
    own scores, which a model that fits its training set separates at any
    threshold): a model trained on imbalanced bags does not put its boundary at
    0.5. The same metrics at 0.5 (the argmax) are kept as ``*_at_half``."""
    task = create_task("classification", [0, 1])
    torch.manual_seed(seed)
    head = create_head(method.head, in_dim=train.dim, n_out=2, **method.head_kwargs)
    model = MILModel(head)
    config = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, patience=None, standardize=True,
        balance=method.balance, seed=seed,
    )  # fmt: skip
    fit(model, task, train, None, config)
    chooser = train if val is None else val
    threshold = balanced_threshold(
        np.asarray(chooser.labels), predict_bags(model, task, chooser)[0][:, 1]
    )
    scores: dict[str, dict[str, float]] = {}
    for name, (table, lesion) in tests.items():
        predictions, _, instance = predict_bags(model, task, table)
        y = np.asarray(table.labels)
        metrics = task.metrics(y, predictions)
        called = (predictions[:, 1] >= threshold).astype(int)
        row = {
            "auroc": float(metrics["auroc"]),
            "balanced_accuracy": balanced_accuracy(y, called, 2),
            "macro_f1": macro_f1(y, called, 2),
            "balanced_accuracy_at_half": float(metrics["balanced_accuracy"]),
            "macro_f1_at_half": float(metrics["macro_f1"]),
            "threshold": threshold,
        }
        if lesion is not None:
            columns = [s if s.ndim == 1 else s[:, -1] for s in instance]
            per_bag = [
                (auroc(t, s), bool(t[np.argmax(s)]))
                for t, s, label in zip(lesion, columns, y, strict=True)
                if label == 1 and t.any() and not t.all()
            ]
            row["attention_auroc"] = float(np.nanmean([a for a, _ in per_bag]))
            row["top_hit"] = float(np.mean([h for _, h in per_bag]))
        scores[name] = row
    return scores


def mean_ci(values: list[float], *, seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds with a 95 % percentile bootstrap interval of the mean."""
    data = np.asarray([v for v in values if not np.isnan(v)], dtype=np.float64)
    if not len(data):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), (2000, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(data.mean()), float(low), float(high)
