"""slideflow-core: the ground floor of the platform.

Slide reading with physical resolution, cohorts, synthetic slides and the
``sfc`` dispatcher. This package imports no stage (``tiling``, ``embedders``,
``mil``, ``cluster``); stages build on it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from slideflow_core.codecs import register_codecs
from slideflow_core.errors import (
    ManifestError,
    MissingResolutionError,
    ResolutionError,
    SlideflowError,
    SlideReadError,
)
from slideflow_core.slides import Slide, list_readers, open_slide

# Stores written with the JPEG tile codec open with plain zarr once this package is imported.
register_codecs()

try:
    __version__ = version("slideflow-core")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ManifestError",
    "MissingResolutionError",
    "ResolutionError",
    "Slide",
    "SlideReadError",
    "SlideflowError",
    "__version__",
    "list_readers",
    "open_slide",
]
