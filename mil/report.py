"""Pictures a user looks at: ROC curves, a metrics table, attention heatmaps, an HTML page."""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from PIL import Image
from shapely.geometry import MultiPolygon

from mil.metrics import auroc, roc_curve
from mil.results import table_columns
from mil.tasks import Classification, Task
from slideflow_core.features import read_attention
from slideflow_core.store import read_store_attrs


def plot_roc(predictions: pd.DataFrame, task: Classification, out: str | os.PathLike[str]) -> Path:
    """ROC curves of every fold and of the pooled test predictions (one-vs-rest per class).

    ``predictions`` needs ``fold``, ``target`` (class index) and ``prob_<class>`` columns.
    """
    classes = list(task.classes)[1:] if task.n_out == 2 else list(task.classes)
    fig = Figure(figsize=(4.2 * len(classes), 4.2))
    axes = fig.subplots(1, len(classes), squeeze=False)
    for ax, cls in zip(axes[0], classes, strict=True):
        c = list(task.classes).index(cls)
        column = task.columns[c]
        for fold, part in predictions.groupby("fold", sort=False):
            fpr, tpr = roc_curve(part["target"] == c, part[column])
            ax.plot(
                fpr,
                tpr,
                lw=0.8,
                alpha=0.5,
                label=f"{fold} ({auroc(part['target'] == c, part[column]):.3f})",
            )
        fpr, tpr = roc_curve(predictions["target"] == c, predictions[column])
        pooled = auroc(predictions["target"] == c, predictions[column])
        ax.plot(fpr, tpr, lw=2.2, color="black", label=f"pooled ({pooled:.3f})")
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{cls} vs rest")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return Path(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def plot_metrics_table(metrics: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """The metrics table (folds and pooled) as a PNG."""
    columns = table_columns(metrics)
    cells = [[_cell(v) for v in row] for row in metrics[columns].itertuples(index=False)]
    fig = Figure(figsize=(1.25 * len(columns) + 0.5, 0.32 * len(cells) + 0.6))
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=columns, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return Path(out)


def _tile_extent(coords: np.ndarray) -> float:
    """Tile side in level-0 px, from the grid step of the coordinates."""
    steps = [np.diff(np.unique(coords[:, axis])) for axis in (0, 1)]
    steps = [s[s > 0] for s in steps]
    values = [float(s.min()) for s in steps if len(s)]
    return min(values) if values else 256.0


def plot_attention(
    store: str | os.PathLike[str],
    run: str,
    out: str | os.PathLike[str],
    *,
    thumbnail: np.ndarray | str | os.PathLike[str] | None = None,
    column: int = -1,
    title: str | None = None,
    outline: MultiPolygon | None = None,
) -> Path:
    """Draw a slide's ``attention/<run>`` scores over its thumbnail, with a colour bar.

    Parameters
    ----------
    store
        The slide store holding the attention.
    run
        Run name.
    out
        PNG to write.
    thumbnail
        An RGB array or image file of the whole slide; without one, tiles are drawn
        on a white canvas.
    column
        Score column for (M, K) scores (default: the last class).
    outline
        Annotated lesion polygons in level-0 px (e.g. from
        :func:`mil.localisation.regions_from_geojson`), drawn as a line over the scores.
    """
    attention = read_attention(store, run)
    scores = attention.scores if attention.scores.ndim == 1 else attention.scores[:, column]
    coords = attention.coords.astype(np.float64)
    extent = _tile_extent(coords)
    dims = read_store_attrs(store).get("slide", {}).get("dimensions")
    width, height = dims if dims else (coords[:, 0].max() + extent, coords[:, 1].max() + extent)
    if isinstance(thumbnail, (str, os.PathLike)):
        thumbnail = np.asarray(Image.open(thumbnail).convert("RGB"))
    if thumbnail is None:
        thumbnail = np.full((512, max(1, round(512 * width / height)), 3), 255, np.uint8)
    scale = thumbnail.shape[1] / width
    grid = np.full(thumbnail.shape[:2], np.nan)
    low, high = float(np.min(scores)), float(np.max(scores))
    normalised = (scores - low) / (high - low) if high > low else np.zeros_like(scores)
    for (x, y), value in zip(coords * scale, normalised, strict=True):
        # floor the start and ceil the end so neighbouring tiles leave no seam
        x1, y1 = math.ceil(x + extent * scale), math.ceil(y + extent * scale)
        grid[
            math.floor(y) : max(y1, math.floor(y) + 1), math.floor(x) : max(x1, math.floor(x) + 1)
        ] = value
    fig = Figure(figsize=(7, 7 * thumbnail.shape[0] / thumbnail.shape[1] + 0.4))
    ax = fig.subplots()
    ax.imshow(thumbnail)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    if outline is not None and not outline.is_empty:
        for polygon in outline.geoms:
            for ring in (polygon.exterior, *polygon.interiors):
                xy = np.asarray(ring.coords) * scale
                ax.plot(xy[:, 0], xy[:, 1], color="#00e676", lw=1.4)
        ax.plot([], [], color="#00e676", lw=1.4, label="annotated lesion")
        ax.legend(loc="lower right", fontsize=7, framealpha=0.7)
    bar = fig.colorbar(image, ax=ax, fraction=0.035)
    bar.set_label(f"attention (min {low:.2g} → max {high:.2g})")
    ax.set_axis_off()
    ax.set_title(title or f"{Path(store).stem}: attention/{run}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return Path(out)


def head_name(config: dict[str, Any]) -> str:
    """The head a run config record names (``experiment.model``; ``"?"`` if absent)."""
    experiment = config.get("experiment", config)
    return str(experiment.get("model", "?")) if isinstance(experiment, dict) else "?"


def write_report(
    run_dir: Path,
    *,
    name: str,
    task: Task,
    metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    config: dict[str, Any],
    heatmaps: Sequence[Path] = (),
) -> dict[str, str]:
    """Write ``roc.png`` (classification), ``metrics.png`` and ``report.html``; return paths."""
    files: dict[str, str] = {}
    if isinstance(task, Classification):
        files["roc"] = str(plot_roc(predictions, task, run_dir / "roc.png"))
    files["metrics_png"] = str(plot_metrics_table(metrics, run_dir / "metrics.png"))
    for path in heatmaps:
        files[f"heatmap:{path.stem}"] = str(path)
    columns = table_columns(metrics)
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in metrics[columns].itertuples(index=False)
    )
    images = "".join(
        f'<figure><img src="{html.escape(os.path.relpath(p, run_dir))}" style="max-width:48%">'
        f"<figcaption>{html.escape(Path(p).stem)}</figcaption></figure>"
        for k, p in files.items()
        if k == "roc" or k.startswith("heatmap:")
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
figure{{display:inline-block}}</style>
</head><body><h1>MIL run {html.escape(name)}</h1>
<p>task {html.escape(task.name)}, head {html.escape(head_name(config))},
{len(predictions)} test predictions</p>
<h2>Metrics</h2><table><tr>{header}</tr>{body}</table>{images}
<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=1, default=str))}</pre>
</body></html>"""
    (run_dir / "report.html").write_text(page)
    files["report"] = str(run_dir / "report.html")
    return files
