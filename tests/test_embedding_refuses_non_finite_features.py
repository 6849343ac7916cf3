"""Non-finite features fail the slide, naming the model and its weights; nothing is committed."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch
from embedding_project import CONFIG, TinyEmbedder

from embedders import EmbedConfig, FeatureValueError, embed_cohort, embed_slide
from slideflow_core.features import list_parts, read_features
from tiling import TilingConfig, tile_slide


class NaNEmbedder(TinyEmbedder):
    """A model whose second batch holds one NaN (a corrupt weight, an fp16 overflow...)."""

    weights: ClassVar[dict] = {"source": "hf:ex/broken", "file": "/models/broken.safetensors"}

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = super().forward(batch).clone()
        if self.calls == 2:
            out[3, 1] = float("nan")
        return out


class HugeEmbedder(TinyEmbedder):
    """Finite features beyond float16's range (±65504)."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return super().forward(batch) * 1e7


@pytest.fixture
def project(tmp_path, cmu_svs):
    store = tmp_path / "project" / "stores" / "cmu.zarr"
    tile_slide(cmu_svs, store, TilingConfig(**CONFIG), slide_id="cmu")
    return tmp_path / "project"


def test_a_nan_feature_raises_naming_model_and_weights_and_commits_nothing(project):
    store = project / "stores" / "cmu.zarr"
    with pytest.raises(FeatureValueError) as info:
        embed_slide(store, NaNEmbedder(), batch_size=8)
    message = str(info.value)
    assert "tiny" in message and "/models/broken.safetensors" in message
    assert "NaN or infinite" in message and "1 of 8 tiles" in message
    assert "weights" in info.value.hint
    assert "tiny" not in list_parts(store)
    assert not list((store / "features").glob("*.partial"))


def test_values_beyond_float16_ask_for_float32(project):
    store = project / "stores" / "cmu.zarr"
    with pytest.raises(FeatureValueError, match="beyond the float16 range") as info:
        embed_slide(store, HugeEmbedder(), batch_size=8)
    assert "float32" in info.value.hint
    assert "tiny" not in list_parts(store)
    assert embed_slide(store, HugeEmbedder(), batch_size=8, dtype="float32").status == "done"
    assert abs(read_features(store, "tiny").features).max() > 65504


def test_in_a_cohort_the_slide_fails_with_the_reason_in_its_status(project):
    config = EmbedConfig(model=NaNEmbedder, name="tiny", batch_size=8)
    report = embed_cohort(project, config, executor="local", progress=False)
    (failed,) = report.failed
    assert failed.slide_id == "cmu" and "NaN or infinite" in failed.error
    status = json.loads((project / "status" / "embed" / "cmu.json").read_text())
    assert status["status"] == "failed" and "tiny" in status["error"]
    assert "tiny" not in list_parts(project / "stores" / "cmu.zarr")
