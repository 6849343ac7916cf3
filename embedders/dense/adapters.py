"""Adapters for established nucleus segmenters, behind the :class:`Segmenter` interface.

Each is registered with a check, so ``list_segmenters()`` shows it as unavailable (with
the reason and the install command) until its package is importable. Their weights come
from the tools' own model stores, which the user installs; nothing is fetched by us.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from embedders.dense.base import Segmenter, TileSegmentation
from embedders.dense.morphology import drop_small
from embedders.dense.registry import register_segmenter


def _needs(module: str, install: str) -> Any:
    def check() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install {install})"
        return None

    return check


def _sequential(labels: np.ndarray) -> np.ndarray:
    """Any instance map as int32 numbered 1..n without gaps."""
    return drop_small(np.asarray(labels).astype(np.int32, copy=False), 1)


@register_segmenter(
    "stardist",
    check=_needs("stardist", "stardist tensorflow"),
    kind="adapter",
    needs_weights=True,
    classes=(),
    description="StarDist 2D star-convex polygons (default model 2D_versatile_he)",
)
class StarDistSegmenter(Segmenter):
    """StarDist (Schmidt et al. 2018) through its own Python API.

    Parameters
    ----------
    model
        A pretrained model name of ``StarDist2D.from_pretrained`` (installed by the user).
    mpp
        µm/px the model was trained at (``2D_versatile_he``: about 0.5).
    """

    name = "stardist"

    def __init__(self, model: str = "2D_versatile_he", mpp: float = 0.5) -> None:
        from stardist.models import StarDist2D

        self.model_name = model
        self._mpp = float(mpp)
        self._model = StarDist2D.from_pretrained(model)

    @property
    def mpp(self) -> float:
        """µm per pixel the model expects."""
        return self._mpp

    def identity(self) -> dict[str, Any]:
        """Adapter, model name and resolution."""
        return {"name": self.name, "model": self.model_name, "mpp": self._mpp}

    def segment(self, image: np.ndarray) -> TileSegmentation:
        """Normalised per image (1st-99.8th percentile), then ``predict_instances``."""
        from csbdeep.utils import normalize

        labels, _ = self._model.predict_instances(normalize(image, 1, 99.8, axis=(0, 1)))
        return TileSegmentation(_sequential(labels))


@register_segmenter(
    "cellpose",
    check=_needs("cellpose", "cellpose"),
    kind="adapter",
    needs_weights=True,
    classes=(),
    description="Cellpose generalist model (nuclei)",
)
class CellposeSegmenter(Segmenter):
    """Cellpose (Stringer et al. 2021) through its own Python API.

    Parameters
    ----------
    model
        ``pretrained_model`` of ``cellpose.models.CellposeModel`` (installed by the user).
    mpp
        µm/px the images are read at.
    diameter_um
        Typical nucleus diameter, passed to Cellpose in pixels.
    """

    name = "cellpose"

    def __init__(self, model: str = "nuclei", mpp: float = 0.5, diameter_um: float = 8.0) -> None:
        from cellpose import models

        self.model_name = model
        self._mpp = float(mpp)
        self.diameter_um = float(diameter_um)
        self._model = models.CellposeModel(pretrained_model=model)

    @property
    def mpp(self) -> float:
        """µm per pixel the images are read at."""
        return self._mpp

    def identity(self) -> dict[str, Any]:
        """Adapter, model, resolution and diameter."""
        return {
            "name": self.name,
            "model": self.model_name,
            "mpp": self._mpp,
            "diameter_um": self.diameter_um,
        }

    def segment(self, image: np.ndarray) -> TileSegmentation:
        """``CellposeModel.eval`` on the RGB image at the configured diameter."""
        result = self._model.eval(image, diameter=self.diameter_um / self._mpp)
        return TileSegmentation(_sequential(result[0]))
