"""Synthetic H&E-like whole-slide images with exact ground truth.

:func:`write_synthetic_slide` streams a pyramidal, JPEG-tiled, Aperio-style TIFF that both
OpenSlide and TiffSlide open, in bounded memory, and returns a :class:`SyntheticTruth`:
tissue, pen-mark and out-of-focus polygons plus nucleus centroids, in level-0 pixels.

Modules: :mod:`~.spec` (parameters), :mod:`~.scene` (geometry and nuclei), :mod:`~.textures`
(precomputed stain textures), :mod:`~.render` (tile pixels), :mod:`~.rows` (render and
encode a tile row; the unit of parallel work), :mod:`~.pyramid` (streamed reduced levels),
:mod:`~.aperio` (SVS conventions), :mod:`~.writer` (the TIFF), and :mod:`~.truth` (ground
truth I/O and rasterisation).
"""

from __future__ import annotations

from slideflow_core.synthetic.spec import SyntheticSlideSpec
from slideflow_core.synthetic.truth import SyntheticTruth, rasterize
from slideflow_core.synthetic.writer import write_synthetic_slide

__all__ = ["SyntheticSlideSpec", "SyntheticTruth", "rasterize", "write_synthetic_slide"]
