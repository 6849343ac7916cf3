"""Checkpoint key mappings from official weight layouts to our timm modules.

Each mapping takes a flat state dict (container keys and common prefixes already
removed by :mod:`embedders.weights`) and returns one whose names match the module.
Keys that official checkpoints carry but inference never uses (DINOv2's
``mask_token``, the Hugging Face ``pooler``, the ResNet classifier and ``layer4``)
are dropped here, on purpose and by name, so that loading can stay strict.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

StateDict = dict[str, torch.Tensor]

# Hugging Face ``ViTModel`` (Phikon) and ``Dinov2Model`` (Phikon-v2) → timm ``VisionTransformer``.
_HF_RENAMES = (
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.(layernorm_before|norm1)\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.(layernorm_after|norm2)\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.mlp\.(fc\d)\.", r"blocks.\1.mlp.\2."),
    (r"^encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^layernorm\.", "norm."),
)
_HF_DROP = re.compile(r"^(pooler\.|embeddings\.mask_token$)")
_HF_QKV = re.compile(
    r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$"
)


def hf_vit_to_timm(state: StateDict) -> StateDict:
    """Hugging Face ViT / DINOv2 layout → timm: rename, fuse q/k/v into ``qkv``, drop pooler."""
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if _HF_DROP.match(key):
            continue
        match = _HF_QKV.match(key)
        if match:
            block, part, kind = match.groups()
            qkv.setdefault((block, kind), {})[part] = value
            continue
        new = key
        for pattern, repl in _HF_RENAMES:
            new, count = re.subn(pattern, repl, new)
            if count:
                break
        out[new] = value
    for (block, kind), parts in qkv.items():
        if set(parts) == {"query", "key", "value"}:
            fused = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
            out[f"blocks.{block}.attn.qkv.{kind}"] = fused
        else:  # leave the incomplete triple visible in the diff rather than guess
            for part, value in parts.items():
                out[f"encoder.layer.{block}.attention.attention.{part}.{kind}"] = value
    return out


def timm_vit(state: StateDict) -> StateDict:
    """timm or official DINOv2 layout: ``register_tokens`` → ``reg_token``, no ``mask_token``."""
    out = {}
    for key, value in state.items():
        if key == "mask_token":
            continue
        out["reg_token" if key == "register_tokens" else key] = value
    return out


def resnet_trunc(state: StateDict) -> StateDict:
    """torchvision / timm ResNet-50 → layers 1-3 only (``layer4`` and ``fc`` are not used)."""
    return {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}


def identity(state: StateDict) -> StateDict:
    """Keys already match the module."""
    return dict(state)


KEY_MAPS: dict[str, Callable[[StateDict], StateDict]] = {
    "timm": timm_vit,
    "hf_vit": hf_vit_to_timm,
    "resnet_trunc": resnet_trunc,
    "identity": identity,
}
