"""The learned nucleus segmenter: a trained :class:`NucleusUNet` and watershed post-processing.

Weights are one safetensors file whose metadata holds the model card (JSON): the
architecture, the µm/px it works at, the classes, and how it was trained (data and
licences, steps, time, validation scores). The same card is written beside it as
``NAME.card.json`` for people to read. Train one with :func:`train_segmenter` or
``sfc cells train``.
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

from embedders.dense.base import Segmenter, TileSegmentation, segment_resampled
from embedders.dense.gate import GateConfig, gate_instances
from embedders.dense.hovernet_post import distance_instances, hovernet_instances, instance_types
from embedders.dense.registry import register_segmenter
from embedders.dense.unet import NucleusUNet
from embedders.dense.windows import window_maps
from embedders.weights import read_tagged_safetensors, sha256_file
from slideflow_core.errors import SlideflowError

FORMAT = "slideflow-core nucleus unet"
#: Largest window the network sees at once, and the context dropped at inner window edges.
WINDOW_PX = 1024
_MARGIN_PX = 32


class NucleusWeightsError(SlideflowError):
    """Learned-segmenter weights are missing, corrupt or of another format."""


def card_path(weights: str | os.PathLike[str]) -> Path:
    """Where the readable card of ``weights`` lives (``NAME.card.json`` beside it)."""
    path = Path(weights)
    return path.with_name(path.name.removesuffix(".safetensors") + ".card.json")


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The card and the tensors of a learned-segmenter weights file.

    Raises
    ------
    NucleusWeightsError
        If the file is missing, not safetensors, or not written by :meth:`LearnedSegmenter.save`.
    """
    raw, state = read_tagged_safetensors(
        Path(path),
        FORMAT,
        NucleusWeightsError,
        what="learned-segmenter",
        missing_hint="train them with: sfc cells train ANNOTATED_FOLDER --out WEIGHTS",
        format_hint="pass weights written by sfc cells train (hovernet-head weights load "
        "with --segmenter hovernet-head)",
    )
    return json.loads(raw["card"]), state


@register_segmenter(
    "learned",
    kind="learned",
    needs_weights=True,
    classes="from the weights",
    description="U-Net with nucleus-pixel / HV (/ type) branches trained end to end "
    "(sfc cells train); nuclei split at distance peaks (or by HoVer-Net's HV energy)",
)
class LearnedSegmenter(Segmenter):
    """Nuclei from a trained :class:`NucleusUNet`: its NP foreground split into nuclei.

    Parameters
    ----------
    weights
        A ``.safetensors`` file written by :meth:`save` (``sfc cells train``). Without
        it an untrained network is built from the other arguments (for training).
    classes
        Nucleus types of the type branch (none: nuclei only).
    mpp
        µm per pixel of the images given to :meth:`segment` (whole-slide runs read the
        slide there: ``--target-mpp``). Default: the network's own (its card's, or
        0.25 for a new one); at another, each image is resampled to the network's
        µm/px and the nuclei back.
    width, depth
        Channels of the first stage and number of stages of the network.
    device
        Where it runs (``"cpu"``, ``"cuda"``).
    min_area_um2
        Smallest nucleus kept by the post-processing.
    gate
        Tests every nucleus must pass (:mod:`.gate`; None: keep all).
    post
        How maps become nuclei: ``"distance"`` (NP foreground split at distance peaks,
        :func:`.hovernet_post.distance_instances`) or ``"hovernet"`` (markers from the
        HV maps' Sobel energy, :func:`.hovernet_post.hovernet_instances`). On the
        shipped tiles, a 20-minute CPU model's HV maps leave many blobs without a marker,
        which ``"hovernet"`` drops; ``"distance"`` scored higher on its training tiles.
    """

    name = "learned"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        classes: tuple[str, ...] = (),
        mpp: float | None = None,
        width: int = 16,
        depth: int = 4,
        device: str = "cpu",
        min_area_um2: float = 8.0,
        gate: GateConfig | None = GateConfig(),  # noqa: B008 - frozen, shared safely
        post: str = "distance",
    ) -> None:
        if post not in ("distance", "hovernet"):
            raise ValueError(f"post must be 'distance' or 'hovernet', got {post!r}")
        self.gate, self.post = gate, post
        self.card: dict[str, Any] = {}
        self.weights_sha256: str | None = None
        state = None
        if weights is not None:
            self.card, state = read_weights(weights)
            model = self.card["model"]
            classes, network_mpp = tuple(model["classes"]), float(model["mpp"])
            width, depth = int(model["width"]), int(model["depth"])
            self.weights_sha256 = sha256_file(Path(weights))
        else:
            network_mpp = 0.25 if mpp is None else float(mpp)
        self._classes, self.network_mpp = tuple(classes), network_mpp
        self._mpp = network_mpp if mpp is None else float(mpp)
        self.min_area_um2 = float(min_area_um2)
        self.model = NucleusUNet(width=width, depth=depth, n_types=len(self._classes))
        if state is not None:
            try:
                self.model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise NucleusWeightsError(
                    f"{weights} does not fit the network its card describes ({exc})"
                ) from exc
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    @property
    def mpp(self) -> float:
        """µm per pixel of the images it expects."""
        return self._mpp

    @property
    def classes(self) -> tuple[str, ...]:
        """Nucleus types of the type branch."""
        return self._classes

    def identity(self) -> dict[str, Any]:
        """Architecture, classes, resolution and the weights' checksum."""
        return {
            "name": self.name,
            "width": self.model.width,
            "depth": self.model.depth,
            "classes": list(self._classes),
            "mpp": self._mpp,
            "network_mpp": self.network_mpp,
            "weights_sha256": self.weights_sha256,
            "min_area_um2": self.min_area_um2,
            "gate": None if self.gate is None else self.gate.to_dict(),
            "post": self.post,
        }

    @staticmethod
    def normalise(images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, S, S, 3)`` → float ``(N, 3, S, S)`` centred on mid-grey."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        return (x - 127.5) / 64.0

    def predict_maps(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Maps ``np`` (nucleus probability ``(H, W)``), ``hv`` and ``type`` of an image."""
        multiple = self.model.multiple_px
        fits = -(-max(image.shape[:2]) // multiple) * multiple
        side = min(WINDOW_PX, fits)

        def predict(crops: np.ndarray) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                maps = self.model(self.normalise(crops).to(self.device))
            return {
                "np": functional.softmax(maps["np"], dim=1)[:, 1:].cpu().numpy(),
                "hv": maps["hv"].cpu().numpy(),
                "type": functional.softmax(maps["type"], dim=1).cpu().numpy(),
            }

        maps = window_maps(image, predict, side=side, margin=min(_MARGIN_PX, side // 4), batch=1)
        return {"np": maps["np"][0], "hv": maps["hv"], "type": maps["type"]}

    def segment(self, image: np.ndarray) -> TileSegmentation:
        """Nuclei of one uint8 RGB image at :attr:`mpp`."""
        return segment_resampled(self._segment, image, self._mpp / self.network_mpp)

    def _segment(self, image: np.ndarray) -> TileSegmentation:
        """Nuclei of an image at the network's own µm/px."""
        mpp = self.network_mpp
        maps = self.predict_maps(image)
        if self.post == "distance":
            labels = distance_instances(maps["np"], mpp=mpp, min_area_um2=self.min_area_um2)
        else:
            labels = hovernet_instances(
                maps["np"], maps["hv"], min_area_px=self.min_area_um2 / mpp**2
            )
        if self.gate is not None:
            labels = gate_instances(labels, image, mpp=mpp, config=self.gate)
        if not self._classes:
            return TileSegmentation(labels)
        probabilities, _ = instance_types(labels, maps["type"])
        return TileSegmentation(labels, self._classes, probabilities)

    def save(self, path: str | os.PathLike[str], *, card: dict[str, Any] | None = None) -> str:
        """Write the network and its card (safetensors + ``NAME.card.json``); returns SHA-256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        full = {
            **(card or {}),
            "model": {
                "architecture": "NucleusUNet (NP + HV branches, HoVer-Net post-processing)",
                "width": self.model.width,
                "depth": self.model.depth,
                "classes": list(self._classes),
                "mpp": self.network_mpp,
                "parameters": sum(p.numel() for p in self.model.parameters()),
            },
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tmp = path.with_name(path.name + ".partial")
        save_file(state, str(tmp), metadata={"format": FORMAT, "card": json.dumps(full)})
        os.replace(tmp, path)
        self.card = full
        self.weights_sha256 = sha256_file(path)
        card_path(path).write_text(
            json.dumps({**full, "weights_sha256": self.weights_sha256}, indent=1) + "\n"
        )
        return self.weights_sha256


def load_segmenter_weights(
    path: str | os.PathLike[str], *, device: str = "cpu"
) -> LearnedSegmenter:
    """The learned segmenter saved at ``path``: ``create_segmenter("learned", weights=path)``."""
    return LearnedSegmenter(path, device=device)
