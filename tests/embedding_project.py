"""Helpers for the embedding tests: tile a small real project, and a tiny conforming embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from tiling import TilingConfig, tile_cohort

#: Small tiles at 2 µm/px: about a hundred per slide, several batches of 16; stored
#: losslessly so features from stored pixels equal those from the slide.
CONFIG = {"mpp": 2.0, "tile_px": 64, "shard_tiles": 32, "band_tiles": 64, "codec": "zstd"}


def tile_project(root: Path, rows: list[dict], *, store_pixels: bool = True) -> Path:
    """Tile ``rows`` (slide_id, path) into the project ``root`` on the running Ray."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = TilingConfig(**CONFIG, store_pixels=store_pixels)
    report = tile_cohort(manifest, root, config, progress=False)
    assert report.ok, str(report)
    return root


class TinyEmbedder:
    """The embedder interface on a 2-layer CNN with seeded weights (same seed, same model)."""

    dim = 8
    input_px = 32

    def __init__(self, seed: int = 0, *, fail_after: int | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(6, self.dim)
        for param in [*self.net.parameters(), *self.head.parameters()]:
            param.data = torch.randn(param.shape, generator=generator) * 0.5
        self.seed = seed
        self.id = "tiny"
        self.device = torch.device("cpu")
        self.fail_after = fail_after
        self.calls = 0

    def identity(self) -> dict:
        return {"name": "tiny", "seed": self.seed}

    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255
        return F.interpolate(batch, size=(self.input_px,) * 2, mode="bilinear", antialias=True)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash in the middle of a slide")
        return self.head(self.net(batch)).float()

    def embed(self, tiles: np.ndarray) -> np.ndarray:
        return self.forward(self.preprocess(tiles)).numpy()
