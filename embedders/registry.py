"""The embedder registry: ``create`` one by name, ``list_models`` to see them all.

Entries are :class:`~embedders.card.ModelCard` objects registered with
:func:`register_model`; the foundation models live in :mod:`embedders.zoo`. Any timm
model also works as ``"timm:<timm name>"``.

Every look-up goes through :func:`_models`, which imports the zoo first: the
registry is complete whichever module was imported first (``sfc embed`` imports
this module without the package's lazy loader).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from embedders.base import Embedder
from embedders.builders import build_network, resample_patches
from embedders.card import ModelCard
from embedders.device import resolve_device, resolve_precision
from embedders.handcrafted import HandcraftedEmbedder
from embedders.network import NetworkEmbedder
from embedders.weights import (
    RANDOM,
    WeightsError,
    how_to_provide,
    hub_cache_dir,
    load_strict,
    locate,
    prepare_state_dict,
    read_state_dict,
)
from slideflow_core.errors import RegistryError
from slideflow_core.registry import Registry

_MODELS: Registry[ModelCard] = Registry("embedder")
#: Modules whose import registers the built-in entries.
_BUILT_IN = ("embedders.zoo",)
TIMM_PREFIX = "timm:"
RANDOM_SEED = 0
Builder = Callable[[ModelCard], Any]


def register_model(**fields: Any) -> Callable[[Builder], Builder]:
    """Decorator registering a network factory with its card fields (metadata as data).

    Example
    -------
    >>> @register_model(name="my-vit", arch="ViT-S/16", width=384, pooling="cls", patch_px=16)
    ... def _my_vit(card):
    ...     return timm.create_model("vit_small_patch16_224", num_classes=0)
    """

    def decorator(build: Builder) -> Builder:
        card = ModelCard(build=build, **fields)
        _MODELS.register(card.name, **card.row(), reference=card.reference)(card)
        return build

    return decorator


def _models() -> Registry[ModelCard]:
    """The registry with the built-in entries (importing a module twice is a dict look-up)."""
    for module in _BUILT_IN:
        importlib.import_module(module)
    return _MODELS


def model_names() -> list[str]:
    """Every registered embedder name, in registration order (``timm:<name>`` works too)."""
    return _models().names()


def get_card(name: str) -> ModelCard:
    """The card of a registered entry or of ``"timm:<name>"``."""
    if name.startswith(TIMM_PREFIX):
        return timm_card(name[len(TIMM_PREFIX) :])
    models = _models()
    try:
        return models.get(name)
    except RegistryError as exc:
        if name in models:  # registered, but unavailable here: the error says why
            raise
        timm = "any timm model works as timm:<name>"
        hint = f"{exc.hint} ({timm})" if exc.hint else timm
        raise RegistryError(exc.message, hint=hint) from None


def _timm_network(card: ModelCard, *, timm_name: str) -> nn.Module:
    import timm

    return timm.create_model(timm_name, pretrained=False, num_classes=0)


def timm_card(timm_name: str) -> ModelCard:
    """A card for any timm architecture, read from timm's pretrained config (built on meta)."""
    import timm

    if not timm.is_model(timm_name):
        raise RegistryError(
            f"unknown timm model {timm_name!r}",
            hint="see timm.list_models('*pattern*') for the available names",
        )
    build = partial(_timm_network, timm_name=timm_name)
    with torch.device("meta"):
        network = build(None)
    cfg = network.pretrained_cfg
    patch = getattr(getattr(network, "patch_embed", None), "patch_size", None)
    return ModelCard(
        name=f"timm.{timm_name}",
        arch=f"timm {type(network).__name__}",
        build=build,
        width=int(network.num_features),
        pooling="head",
        input_px=int(cfg.get("input_size", (3, 224, 224))[-1]),
        patch_px=int(patch[0]) if patch else None,
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        params=sum(p.numel() for p in network.parameters()),
        hf_id=cfg.get("hf_hub_id"),
        license=str(cfg.get("license", "see the timm model card")),
        reference=f"timm.create_model({timm_name!r})",
    )


def create(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    pretrained: bool = True,
    pooling: str | None = None,
    precision: str | None = None,
    compile: bool = False,
) -> Embedder:
    """Build the embedder ``name`` ready to embed tiles.

    Parameters
    ----------
    name
        A registered name (see :func:`list_models`) or ``"timm:<timm model name>"``.
    weights
        A local ``.safetensors``/``.bin``/``.pth``/``.pt`` file, a Hugging Face repository
        id (``"MahmoodLab/UNI"``), or ``"random"`` for a seeded random init. Required for
        every entry but ``handcrafted``.
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda[:N]"``.
    pretrained
        ``False`` is the same as ``weights="random"``.
    pooling
        Override the entry's token pooling (``"cls"``, ``"mean"``, ``"cls+mean"``); the
        embedder id then carries it (``virchow2.cls``).
    precision
        ``"bf16"``/``"fp16"`` autocast on CUDA; default bf16 where supported, fp32 on CPU.
    compile
        Run the network through :func:`torch.compile`.
    """
    card = get_card(name)
    model_id = card.name
    if pooling is not None and pooling != card.pooling:
        card = card.with_pooling(pooling)
        model_id = f"{card.name}.{pooling.replace('+', '-')}"
    if card.embedder == "handcrafted":
        if weights is not None and weights != RANDOM:
            raise WeightsError(f"model {card.name!r} has no weights to load (got {weights!r})")
        cpu = torch.device("cpu")
        return HandcraftedEmbedder(
            card, id=model_id, device=cpu, precision="fp32", weights={"source": "none"}
        )
    target = resolve_device(device)
    precision = resolve_precision(target, precision)
    if not pretrained or weights == RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            network = build_network(card)
        record: dict[str, Any] = {"source": "random-init", "seed": RANDOM_SEED}
    elif weights is None:
        raise WeightsError(f"model {card.name!r} needs weights", hint=how_to_provide(card))
    else:
        network, record = _load(card, weights)
    return NetworkEmbedder(
        card,
        network.to(target),
        compile=compile,
        id=model_id,
        device=target,
        precision=precision,
        weights=record,
    )


def _load(card: ModelCard, weights: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Build at the native patch size, load strictly, then resample patches if asked."""
    found = locate(card, weights)
    with torch.device("meta"):
        network = card.build(card)
    state = prepare_state_dict(read_state_dict(found.path), network, card)
    load_strict(network, state, origin=f"{found.source} (model {card.name!r})")
    if card.native_patch_px and card.native_patch_px != card.patch_px:
        network = resample_patches(network, card)
    return network, found.record()


def _weights_status(card: ModelCard) -> str:
    """Where weights would come from, checked without touching the network."""
    if not card.needs_weights:
        return "none needed"
    if not card.hf_id:
        return "local file only (not published)"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(card.hf_id, card.hf_filename, cache_dir=hub_cache_dir())
    if isinstance(cached, str):
        return "cached"
    return "hub, gated" if card.gated else "hub"


def list_models() -> list[dict[str, Any]]:
    """Every registered embedder as a row: metadata, availability and weights status."""
    models, rows = _models(), []
    for row, entry in zip(models.list_entries(), models, strict=True):
        rows.append({**row, "weights": _weights_status(entry.obj)})
    return rows
