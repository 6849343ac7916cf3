"""The learned dense head as a segmenter: backbone + decoder + HoVer-Net post-processing.

Weights are one safetensors file holding the decoder (and the backbone too when it was
fine-tuned) with, as metadata, everything needed to rebuild it: the backbone's registry
name and weights source, the classes, the µm/px it was trained at and the decoder width.
A backbone kept frozen is rebuilt from its recorded source (``"random"`` is seeded, so
even a random-init backbone is reproduced exactly).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn import functional

from embedders.dense.base import Segmenter, TileSegmentation
from embedders.dense.decoder import DenseDecoder, DenseHeadModel
from embedders.dense.hovernet_post import hovernet_instances, instance_types
from embedders.dense.registry import register_segmenter
from embedders.dense.windows import window_maps
from embedders.weights import read_tagged_safetensors, sha256_file
from slideflow_core.errors import SlideflowError

FORMAT = "slideflow-core dense head"
#: Pixels of context dropped at each inner edge of a sliding-window prediction.
_WINDOW_MARGIN_PX = 16


class DenseHeadError(SlideflowError):
    """Dense-head weights are missing, corrupt or of another format."""


def build_model(
    backbone: str,
    *,
    backbone_weights: str = "random",
    n_types: int = 0,
    width: int = 128,
    freeze_backbone: bool = True,
) -> tuple[DenseHeadModel, Any]:
    """A backbone from :func:`embedders.create` with a fresh decoder; returns it and the card."""
    from embedders import create

    embedder = create(backbone, weights=backbone_weights, device="cpu")
    card = embedder.card
    if not card.patch_px or not hasattr(embedder.network, "forward_features"):
        raise DenseHeadError(
            f"backbone {backbone!r} has no patch tokens",
            hint="use a ViT such as dinov2_vits14, pluto_p16, uni or timm:vit_small_patch16_224",
        )
    decoder = DenseDecoder(int(card.width), n_types=n_types, width=width)
    model = DenseHeadModel(embedder.network, decoder, int(card.patch_px), freeze_backbone)
    return model, card


@register_segmenter(
    "hovernet-head",
    kind="learned",
    needs_weights=True,
    classes="from the weights",
    description="upsampling decoder on ViT patch tokens (NP/HV/type) + HoVer-Net "
    "post-processing; train with train_dense_head",
)
class DenseHeadSegmenter(Segmenter):
    """Nuclei from a ViT's patch tokens through a dense decoder and HoVer-Net post-processing.

    Parameters
    ----------
    weights
        A ``.safetensors`` file written by :meth:`save` (or :func:`train_dense_head`).
        Without it an untrained head is built from the other arguments (for training).
    backbone
        Registered ViT embedder (``"dinov2_vits14"``, ``"pluto_p16"``, ``"uni"``...).
    backbone_weights
        Where the backbone's weights come from (see :func:`embedders.create`).
    classes
        Nucleus types of the type head (none: nuclei only).
    mpp
        µm per pixel of the images it is trained and run at.
    width
        Decoder width.
    freeze_backbone
        Keep the backbone fixed when training.
    device
        Where it runs (``"cpu"``, ``"cuda"``).
    min_area_um2
        Smallest nucleus kept by the post-processing.
    """

    name = "hovernet-head"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        backbone: str = "dinov2_vits14",
        backbone_weights: str = "random",
        classes: tuple[str, ...] = (),
        mpp: float = 0.25,
        width: int = 128,
        freeze_backbone: bool = True,
        device: str = "cpu",
        min_area_um2: float = 8.0,
    ) -> None:
        self.weights_sha256: str | None = None
        state: dict[str, torch.Tensor] | None = None
        if weights is not None:
            meta, state = _read(Path(weights))
            backbone, backbone_weights = meta["backbone"], meta["backbone_weights"]
            classes, mpp = tuple(meta["classes"]), float(meta["mpp"])
            width, freeze_backbone = int(meta["width"]), bool(meta["freeze_backbone"])
            self.weights_sha256 = meta["sha256"]
        self.backbone_name, self.backbone_weights = backbone, backbone_weights
        self._classes, self._mpp, self.width = tuple(classes), float(mpp), width
        self.min_area_um2 = float(min_area_um2)
        self.model, card = build_model(
            backbone,
            backbone_weights=backbone_weights,
            n_types=len(self._classes),
            width=width,
            freeze_backbone=freeze_backbone,
        )
        if state is not None:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            wrong = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
            if wrong or (not freeze_backbone and missing):
                example = (wrong or missing)[0]
                raise DenseHeadError(
                    f"{weights} does not fit the dense head it describes "
                    f"({len(wrong) or len(missing)} mismatched tensors, e.g. {example})"
                )
        self.input_px = int(card.input_px)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self._mean = torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def mpp(self) -> float:
        """µm per pixel of the images it expects."""
        return self._mpp

    @property
    def classes(self) -> tuple[str, ...]:
        """Nucleus types of the type head."""
        return self._classes

    def identity(self) -> dict[str, Any]:
        """Backbone, its weights, classes, resolution and the head's weights checksum."""
        return {
            "name": self.name,
            "backbone": self.backbone_name,
            "backbone_weights": self.backbone_weights,
            "classes": list(self._classes),
            "mpp": self._mpp,
            "width": self.width,
            "weights_sha256": self.weights_sha256,
            "min_area_um2": self.min_area_um2,
        }

    def normalise(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, S, S, 3)`` → normalised float ``(N, 3, S, S)``."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        return (x - self._mean) / self._std

    def predict_maps(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Dense maps of an image of any size by overlapping ``input_px`` windows.

        Returns ``np`` (nucleus probability, ``(H, W)``), ``hv`` (``(2, H, W)``) and
        ``type`` (``(K + 1, H, W)`` probabilities); see :func:`.windows.window_maps`.
        """

        def predict(crops: np.ndarray) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                maps = self.model(self.normalise(crops).to(self.device))
            return {
                "np": functional.softmax(maps["np"], dim=1)[:, 1:].cpu().numpy(),
                "hv": maps["hv"].cpu().numpy(),
                "type": functional.softmax(maps["type"], dim=1).cpu().numpy(),
            }

        maps = window_maps(image, predict, side=self.input_px, margin=_WINDOW_MARGIN_PX)
        return {"np": maps["np"][0], "hv": maps["hv"], "type": maps["type"]}

    def segment(self, image: np.ndarray) -> TileSegmentation:
        """Nuclei of one uint8 RGB image at :attr:`mpp`."""
        maps = self.predict_maps(image)
        labels = hovernet_instances(
            maps["np"], maps["hv"], min_area_px=self.min_area_um2 / self._mpp**2
        )
        if not self._classes:
            return TileSegmentation(labels)
        probabilities, _ = instance_types(labels, maps["type"])
        return TileSegmentation(labels, self._classes, probabilities)

    def save(self, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> str:
        """Write the head (and a fine-tuned backbone) as safetensors; returns its SHA-256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frozen = self.model.freeze_backbone
        state = {
            k: v.detach().cpu().contiguous()
            for k, v in self.model.state_dict().items()
            if not (frozen and k.startswith("backbone."))
        }
        metadata = {
            "format": FORMAT,
            "backbone": self.backbone_name,
            "backbone_weights": str(self.backbone_weights),
            "classes": json.dumps(list(self._classes)),
            "mpp": str(self._mpp),
            "width": str(self.width),
            "freeze_backbone": json.dumps(frozen),
            "extra": json.dumps(extra or {}),
        }
        tmp = path.with_name(path.name + ".partial")
        save_file(state, str(tmp), metadata=metadata)
        os.replace(tmp, path)
        self.weights_sha256 = sha256_file(path)
        return self.weights_sha256


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    raw, state = read_tagged_safetensors(
        path,
        FORMAT,
        DenseHeadError,
        what="dense-head",
        missing_hint="train one with embedders.dense.train_dense_head(..., out=PATH)",
        format_hint="pass weights written by DenseHeadSegmenter.save or train_dense_head",
    )
    meta = {
        "backbone": raw["backbone"],
        "backbone_weights": raw["backbone_weights"],
        "classes": json.loads(raw["classes"]),
        "mpp": raw["mpp"],
        "width": raw["width"],
        "freeze_backbone": json.loads(raw["freeze_backbone"]),
        "sha256": sha256_file(path),
    }
    return meta, state


def load_dense_head(path: str | os.PathLike[str], *, device: str = "cpu") -> DenseHeadSegmenter:
    """The head saved at ``path``: ``create_segmenter("hovernet-head", weights=path)``."""
    return DenseHeadSegmenter(path, device=device)
