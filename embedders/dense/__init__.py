"""Cell-level segmentation: nucleus segmenters and whole-slide cell tables.

``create_segmenter("classical")`` builds a segmenter by name (``list_segmenters()``
shows them all, and why one is unavailable); ``segment_slide(store_or_slide, ...)``
writes every nucleus of a slide as a polygon with measurements to a cell table, and
``segment_cohort(project, ...)`` does it for a project on Ray, one task per band of
tiles (:class:`SegmentStage` through :func:`slideflow_core.stages.run_cohort`).
:mod:`.metrics` scores instance maps (Dice, AJI, PQ, detection F1);
:func:`train_segmenter` (``sfc cells train``) trains the learned segmenter
(``"learned"``: a U-Net trained end to end) on annotated tiles, and
:func:`train_dense_head` a decoder on a foundation model's patch tokens
(``"hovernet-head"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slideflow_core.lazy import lazy_exports

if TYPE_CHECKING:
    from embedders.dense.augment import AugmentConfig
    from embedders.dense.base import Segmenter, TileSegmentation
    from embedders.dense.classical import ClassicalConfig, ClassicalSegmenter
    from embedders.dense.data import (
        AnnotatedTile,
        AnnotationError,
        pannuke_tiles,
        read_annotated_folder,
        read_training_data,
        tile_folds,
        tile_source,
        tuning_split,
    )
    from embedders.dense.fit import SegmenterTrainConfig, TrainResult, train_segmenter
    from embedders.dense.geojson_data import geojson_tiles
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
    from embedders.dense.nucleus_net import LearnedSegmenter, load_segmenter_weights
    from embedders.dense.plan import SegmentationError, SegmentConfig, SegmentConfigError
    from embedders.dense.registry import (
        create_segmenter,
        list_segmenters,
        register_segmenter,
        segmenter_names,
    )
    from embedders.dense.stage import SegmentStage, segment_cohort, segment_slide
    from embedders.dense.train import DenseTrainConfig, train_dense_head

# Public name -> module, loaded on first use (the learned head imports torch and timm).
_EXPORTS = {
    "Segmenter": "embedders.dense.base",
    "TileSegmentation": "embedders.dense.base",
    "ClassicalConfig": "embedders.dense.classical",
    "ClassicalSegmenter": "embedders.dense.classical",
    "AnnotatedTile": "embedders.dense.data",
    "AnnotationError": "embedders.dense.data",
    "pannuke_tiles": "embedders.dense.data",
    "read_annotated_folder": "embedders.dense.data",
    "read_training_data": "embedders.dense.data",
    "tile_folds": "embedders.dense.data",
    "tile_source": "embedders.dense.data",
    "tuning_split": "embedders.dense.data",
    "AugmentConfig": "embedders.dense.augment",
    "SegmenterTrainConfig": "embedders.dense.fit",
    "geojson_tiles": "embedders.dense.geojson_data",
    "TrainResult": "embedders.dense.fit",
    "train_segmenter": "embedders.dense.fit",
    "LearnedSegmenter": "embedders.dense.nucleus_net",
    "load_segmenter_weights": "embedders.dense.nucleus_net",
    "DenseHeadSegmenter": "embedders.dense.learned",
    "load_dense_head": "embedders.dense.learned",
    "TileScores": "embedders.dense.metrics",
    "aji": "embedders.dense.metrics",
    "detection_f1": "embedders.dense.metrics",
    "dice": "embedders.dense.metrics",
    "match_points": "embedders.dense.metrics",
    "panoptic_quality": "embedders.dense.metrics",
    "score_tile": "embedders.dense.metrics",
    "SegmentationError": "embedders.dense.plan",
    "SegmentConfig": "embedders.dense.plan",
    "SegmentConfigError": "embedders.dense.plan",
    "create_segmenter": "embedders.dense.registry",
    "list_segmenters": "embedders.dense.registry",
    "register_segmenter": "embedders.dense.registry",
    "segmenter_names": "embedders.dense.registry",
    "SegmentStage": "embedders.dense.stage",
    "segment_cohort": "embedders.dense.stage",
    "segment_slide": "embedders.dense.stage",
    "DenseTrainConfig": "embedders.dense.train",
    "train_dense_head": "embedders.dense.train",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "AnnotatedTile",
    "AnnotationError",
    "AugmentConfig",
    "ClassicalConfig",
    "ClassicalSegmenter",
    "DenseHeadSegmenter",
    "DenseTrainConfig",
    "LearnedSegmenter",
    "SegmentConfig",
    "SegmentConfigError",
    "SegmentStage",
    "SegmentationError",
    "Segmenter",
    "SegmenterTrainConfig",
    "TileScores",
    "TileSegmentation",
    "TrainResult",
    "aji",
    "create_segmenter",
    "detection_f1",
    "dice",
    "geojson_tiles",
    "list_segmenters",
    "load_dense_head",
    "load_segmenter_weights",
    "match_points",
    "pannuke_tiles",
    "panoptic_quality",
    "read_annotated_folder",
    "read_training_data",
    "register_segmenter",
    "score_tile",
    "segment_cohort",
    "segment_slide",
    "segmenter_names",
    "tile_folds",
    "tile_source",
    "train_dense_head",
    "train_segmenter",
    "tuning_split",
]
