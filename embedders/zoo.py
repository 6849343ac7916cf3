"""The registered embedders: pathology foundation models, baselines and handcrafted features.

Architectures follow the published model cards and timm configs (quoted per entry);
``params`` is the exact parameter count of the built network and the contract tests
check it, together with the output dimension, for every entry. Weights are never
bundled: pass a local file or the Hugging Face id (see :mod:`embedders.weights`).

Sources
-------
* UNI: huggingface.co/MahmoodLab/UNI — ``timm.create_model("vit_large_patch16_224",
  img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True)``.
* UNI2-h: huggingface.co/MahmoodLab/UNI2-h — ``vit_giant_patch14_224`` with depth 24,
  24 heads, width 1536, ``mlp_ratio=2.66667*2``, ``SwiGLUPacked`` + SiLU,
  ``reg_tokens=8``, ``no_embed_class=True``, ``init_values=1e-5``.
* Virchow2: huggingface.co/paige-ai/Virchow2 — ``vit_huge_patch14_224`` with
  ``mlp_ratio=5.3375``, ``SwiGLUPacked`` + SiLU, ``reg_tokens=4``, ``init_values=1e-5``;
  embedding = CLS ⊕ mean of patch tokens (registers excluded), 2 x 1280.
* H-optimus-0/1: huggingface.co/bioptimus — ViT-g/14 (depth 40, width 1536, 24 heads,
  ``mlp_ratio=5.33334`` gated SiLU MLP), 4 registers, ``no_embed_class``; mean
  (0.707223, 0.578729, 0.703617), std (0.211883, 0.230117, 0.177517).
* Prov-GigaPath tile encoder: huggingface.co/prov-gigapath/prov-gigapath config —
  ``vit_giant_patch14_dinov2`` with ``patch_size=16`` (sic: the published config uses
  16-px patches), depth 40, width 1536, ``mlp_ratio=5.33334``, ``init_values=1e-5``.
* Phikon: huggingface.co/owkin/phikon — Hugging Face ``ViTModel`` ViT-B/16 (iBOT),
  LayerNorm eps 1e-12, CLS of ``last_hidden_state``; keys mapped to timm.
* Phikon-v2: huggingface.co/owkin/phikon-v2 — Hugging Face ``Dinov2Model`` ViT-L/16
  with layer scale; keys mapped to timm.
* Lunit DINO ViT-S/8: github.com/lunit-io/benchmark-ssl-pathology (timm port
  ``1aurent/vit_small_patch8_224.lunit_dino``); mean (0.70322989, 0.53606487,
  0.66096631), std (0.21716536, 0.26081574, 0.20723464).
* ResNet-50 truncated: CLAM (github.com/mahmoodlab/CLAM, ``resnet50_baseline``):
  ImageNet ResNet-50, layers 1-3, adaptive average pooling → 1024.
* DINOv2: timm ``vit_{small,base,large}_patch14[_reg4]_dinov2`` (``lvd142m`` weights),
  run at 224 px (position embeddings resampled from the 518-px checkpoints).
* PLUTO (PathAI): FlexiViT-S — 12 layers, width 384, 6 heads, MLP 1536; patch 8/16/32
  chosen at load by resampling the 16-px patch embedding. Weights are not public.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from embedders.builders import resnet50_trunc, timm_vit
from embedders.card import ModelCard
from embedders.handcrafted import HANDCRAFTED_DIM
from embedders.registry import register_model

_CC_BY_NC_ND = "CC-BY-NC-ND-4.0"
_HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
_HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
_SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": nn.SiLU}


@register_model(
    name="handcrafted",
    arch="colour/texture/nucleus statistics",
    width=HANDCRAFTED_DIM,
    pooling="stats",
    needs_weights=False,
    embedder="handcrafted",
    key_map="identity",
    license="Apache-2.0",
    reference="embedders.handcrafted",
)
def _handcrafted(card: ModelCard) -> None:
    """No network: the handcrafted embedder computes its features directly."""


register_model(
    name="resnet50-trunc",
    arch="ResNet-50 layers 1-3 + avg pool",
    width=1024,
    pooling="avg",
    params=8_543_296,
    hf_id="timm/resnet50.tv_in1k",
    license="BSD-3-Clause",
    key_map="resnet_trunc",
    reference="CLAM resnet50_baseline (torchvision ImageNet weights)",
)(resnet50_trunc)

_DINOV2 = (
    ("s", "small", 384, (21_628_800, 21_629_952)),
    ("b", "base", 768, (85_724_928, 85_727_232)),
    ("l", "large", 1024, (303_227_904, 303_230_976)),
)
for _short, _size, _width, _params in _DINOV2:
    for _reg, _count in zip((False, True), _params, strict=True):
        _timm_name = f"vit_{_size}_patch14{'_reg4' if _reg else ''}_dinov2"
        register_model(
            name=f"dinov2_vit{_short}14{'_reg' if _reg else ''}",
            arch=f"ViT-{_short.upper()}/14 DINOv2{' + 4 registers' if _reg else ''}",
            width=_width,
            pooling="cls",
            patch_px=14,
            params=_count,
            hf_id=f"timm/{_timm_name}.lvd142m",
            license="Apache-2.0",
            reference=f"timm {_timm_name}.lvd142m",
        )(timm_vit(_timm_name))

for _patch, _count in ((8, 21_669_888), (16, 21_665_280), (32, 22_493_568)):
    register_model(
        name=f"pluto_p{_patch}",
        arch=f"FlexiViT-S/{_patch} (PLUTO)",
        width=384,
        pooling="cls",
        patch_px=_patch,
        native_patch_px=16,
        params=_count,
        license="PathAI (weights not public)",
        reference="PLUTO (Juyal et al. 2024); timm flexivit_small",
    )(timm_vit("flexivit_small"))

register_model(
    name="uni",
    arch="ViT-L/16 (DINOv2)",
    width=1024,
    pooling="cls",
    patch_px=16,
    params=303_350_784,
    hf_id="MahmoodLab/UNI",
    hf_filename="pytorch_model.bin",
    license=_CC_BY_NC_ND,
    gated=True,
    reference="huggingface.co/MahmoodLab/UNI",
)(timm_vit("vit_large_patch16_224", init_values=1e-5, dynamic_img_size=True))

register_model(
    name="uni2-h",
    arch="ViT-H/14, 8 registers, SwiGLU",
    width=1536,
    pooling="cls",
    patch_px=14,
    params=681_394_176,
    hf_id="MahmoodLab/UNI2-h",
    hf_filename="pytorch_model.bin",
    license=_CC_BY_NC_ND,
    gated=True,
    reference="huggingface.co/MahmoodLab/UNI2-h",
)(
    timm_vit(
        "vit_giant_patch14_224",
        depth=24,
        num_heads=24,
        embed_dim=1536,
        init_values=1e-5,
        mlp_ratio=2.66667 * 2,
        no_embed_class=True,
        reg_tokens=8,
        dynamic_img_size=True,
        **_SWIGLU,
    )
)

register_model(
    name="virchow2",
    arch="ViT-H/14, 4 registers, SwiGLU",
    width=1280,
    pooling="cls+mean",
    patch_px=14,
    params=631_239_424,
    hf_id="paige-ai/Virchow2",
    hf_filename="pytorch_model.bin",
    license=_CC_BY_NC_ND,
    gated=True,
    reference="huggingface.co/paige-ai/Virchow2",
)(
    timm_vit(
        "vit_huge_patch14_224",
        init_values=1e-5,
        mlp_ratio=5.3375,
        reg_tokens=4,
        dynamic_img_size=True,
        **_SWIGLU,
    )
)

for _name, _repo, _license in (
    ("h-optimus-0", "bioptimus/H-optimus-0", "Apache-2.0"),
    ("h-optimus-1", "bioptimus/H-optimus-1", "H-optimus-1 licence (non-commercial)"),
):
    register_model(
        name=_name,
        arch="ViT-g/14, 4 registers, SwiGLU",
        width=1536,
        pooling="cls",
        patch_px=14,
        mean=_HOPTIMUS_MEAN,
        std=_HOPTIMUS_STD,
        params=1_134_774_272,
        hf_id=_repo,
        license=_license,
        gated=True,
        reference=f"huggingface.co/{_repo}",
    )(
        timm_vit(
            "vit_giant_patch14_reg4_dinov2",
            init_values=1e-5,
            mlp_ratio=5.33334,
            reg_tokens=4,
            no_embed_class=True,
            dynamic_img_size=True,
            **_SWIGLU,
        )
    )

register_model(
    name="gigapath",
    arch="ViT-g (Prov-GigaPath tile encoder, 16-px patches)",
    width=1536,
    pooling="cls",
    patch_px=16,
    params=1_134_953_984,
    hf_id="prov-gigapath/prov-gigapath",
    hf_filename="pytorch_model.bin",
    license="Apache-2.0",
    gated=True,
    reference="huggingface.co/prov-gigapath/prov-gigapath (config.json)",
)(timm_vit("vit_giant_patch14_dinov2", init_values=1e-5, mlp_ratio=5.33334))

register_model(
    name="phikon",
    arch="ViT-B/16 (iBOT)",
    width=768,
    pooling="cls",
    patch_px=16,
    params=85_798_656,
    hf_id="owkin/phikon",
    hf_filename="pytorch_model.bin",
    license="Owkin non-commercial",
    key_map="hf_vit",
    reference="huggingface.co/owkin/phikon (transformers ViTModel)",
)(timm_vit("vit_base_patch16_224", norm_layer=partial(nn.LayerNorm, eps=1e-12)))

register_model(
    name="phikon-v2",
    arch="ViT-L/16 (DINOv2)",
    width=1024,
    pooling="cls",
    patch_px=16,
    params=303_350_784,
    hf_id="owkin/phikon-v2",
    license="Owkin non-commercial",
    key_map="hf_vit",
    reference="huggingface.co/owkin/phikon-v2 (transformers Dinov2Model)",
)(timm_vit("vit_large_patch16_224", init_values=1e-5))

register_model(
    name="lunit-dino-s8",
    arch="ViT-S/8 (DINO)",
    width=384,
    pooling="cls",
    patch_px=8,
    mean=(0.70322989, 0.53606487, 0.66096631),
    std=(0.21716536, 0.26081574, 0.20723464),
    params=21_670_272,
    hf_id="1aurent/vit_small_patch8_224.lunit_dino",
    license="Lunit non-commercial",
    reference="github.com/lunit-io/benchmark-ssl-pathology",
)(timm_vit("vit_small_patch8_224"))
