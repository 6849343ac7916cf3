"""Cell-level segmentation: nucleus segmenters and whole-slide cell tables.

``create_segmenter("classical")`` builds a segmenter by name (``list_segmenters()``
shows them all, and why one is unavailable); ``segment_slide(store_or_slide, ...)``
writes every nucleus of a slide as a polygon with measurements to a cell table, and
``segment_cohort(project, ...)`` does it for a project on Ray, one task per band of
tiles. :mod:`.metrics` scores instance maps (Dice, AJI, PQ, detection F1);
:func:`train_dense_head` trains the learned head on annotated tiles.
"""

from __future__ import annotations

from embedders.dense import adapters as _adapters  # noqa: F401  (registers the adapters)
from embedders.dense.base import Segmenter, TileSegmentation
from embedders.dense.classical import ClassicalConfig, ClassicalSegmenter
from embedders.dense.cohort import SegmentationReport, segment_cohort
from embedders.dense.data import (
    AnnotatedTile,
    AnnotationError,
    pannuke_tiles,
    read_annotated_folder,
    tuning_split,
)
from embedders.dense.learned import DenseHeadSegmenter, load_dense_head
from embedders.dense.metrics import (
    TileScores,
    aji,
    detection_f1,
    dice,
    match_points,
    panoptic_quality,
    score_tile,
)
from embedders.dense.plan import SegmentationError, SegmentConfig
from embedders.dense.registry import (
    SEGMENTERS,
    create_segmenter,
    list_segmenters,
    register_segmenter,
)
from embedders.dense.slide import SegmentResult, segment_slide
from embedders.dense.train import DenseTrainConfig, train_dense_head

__all__ = [
    "SEGMENTERS",
    "AnnotatedTile",
    "AnnotationError",
    "ClassicalConfig",
    "ClassicalSegmenter",
    "DenseHeadSegmenter",
    "DenseTrainConfig",
    "SegmentConfig",
    "SegmentResult",
    "SegmentationError",
    "SegmentationReport",
    "Segmenter",
    "TileScores",
    "TileSegmentation",
    "aji",
    "create_segmenter",
    "detection_f1",
    "dice",
    "list_segmenters",
    "load_dense_head",
    "match_points",
    "pannuke_tiles",
    "panoptic_quality",
    "read_annotated_folder",
    "register_segmenter",
    "score_tile",
    "segment_cohort",
    "segment_slide",
    "train_dense_head",
    "tuning_split",
]
