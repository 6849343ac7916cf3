"""Embedding stage: a registry of tile embedders (foundation models, baselines, handcrafted).

``embedders.create("uni", weights=...)`` builds an embedder that knows its architecture,
input size, normalisation, pooling, output dimension and precision;
``embedders.list_models()`` shows every entry, its licence and where its weights come
from. Any timm model works as ``"timm:<name>"``. ``embedders.embed_cohort(project,
"uni", weights=...)`` embeds a tiled project on Ray actors (:class:`EmbedStage`
through :func:`slideflow_core.stages.run_cohort`). Stands on :mod:`slideflow_core`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slideflow_core.lazy import lazy_exports

if TYPE_CHECKING:
    from embedders.base import Embedder
    from embedders.card import ModelCard
    from embedders.config import EmbedConfig, EmbedConfigError
    from embedders.device import DeviceError, resolve_device, resolve_precision
    from embedders.h5 import export_features, import_features
    from embedders.registry import create, get_card, list_models, model_names, register_model
    from embedders.run import FeatureValueError
    from embedders.stage import EmbedStage, embed_cohort, embed_slide
    from embedders.weights import WeightsError

# Public name -> module. Loaded on first use, so `sfc` and `import embedders.cli` do not
# pay for torch and timm (seconds) until an embedder is really needed.
_EXPORTS = {
    "Embedder": "embedders.base",
    "ModelCard": "embedders.card",
    "EmbedConfig": "embedders.config",
    "EmbedConfigError": "embedders.config",
    "DeviceError": "embedders.device",
    "resolve_device": "embedders.device",
    "resolve_precision": "embedders.device",
    "export_features": "embedders.h5",
    "import_features": "embedders.h5",
    "create": "embedders.registry",
    "get_card": "embedders.registry",
    "list_models": "embedders.registry",
    "model_names": "embedders.registry",
    "register_model": "embedders.registry",
    "FeatureValueError": "embedders.run",
    "EmbedStage": "embedders.stage",
    "embed_cohort": "embedders.stage",
    "embed_slide": "embedders.stage",
    "WeightsError": "embedders.weights",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DeviceError",
    "EmbedConfig",
    "EmbedConfigError",
    "EmbedStage",
    "Embedder",
    "FeatureValueError",
    "ModelCard",
    "WeightsError",
    "create",
    "embed_cohort",
    "embed_slide",
    "export_features",
    "get_card",
    "import_features",
    "list_models",
    "model_names",
    "register_model",
    "resolve_device",
    "resolve_precision",
]
