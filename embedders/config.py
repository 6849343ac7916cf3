"""The embedding configuration: which model, which tiles, how stored, how run.

An :class:`EmbedConfig` is frozen and validated on construction. It is the one
declaration of the embed stage's options: :func:`embedders.embed_cohort`, ``sfc
embed`` and a pipeline's ``embed:`` YAML section all build one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from slideflow_core.stages import StageConfigError
from slideflow_core.store import StoreError, part_key

TileSelection = Literal["keep", "all"]
TILE_SELECTIONS = ("keep", "all")
DTYPES = ("float16", "float32")


class EmbedConfigError(StageConfigError, ValueError):
    """An embedding setting is invalid (an empty model, an unknown dtype, a bad count)."""


@dataclass(frozen=True, kw_only=True)
class EmbedConfig:
    """How tiles are embedded into ``features/<name>``.

    Parameters
    ----------
    model
        A registered embedder name (``"handcrafted"``, ``"uni"``, ``"timm:<name>"``),
        or a picklable zero-argument factory returning an embedder (then ``name``
        is required).
    weights
        Local weights file or Hugging Face id, for a registered name; a path must
        be readable on every worker.
    name
        Feature part name (``features/<name>``); default: the model name made safe.
    tiles
        ``"keep"`` (tiles passing QC) or ``"all"``.
    batch_size
        Tiles per forward pass (default: chosen per worker, see
        :func:`embedders.run.auto_batch_size`).
    device
        ``"auto"`` (GPUs when the cluster has them), ``"cpu"`` or ``"cuda"``.
    num_actors
        Embedder actors (default: one per GPU, or
        :data:`embedders.stage.DEFAULT_CPU_ACTORS` CPU actors sharing the cores).
    dtype
        Stored precision, ``"float16"`` or ``"float32"``.
    loader_threads
        Threads per worker reading and preprocessing tiles ahead of the model
        (``0``: load in the model's thread).
    prefetch
        Batches loaded ahead of the model (default ``2 * loader_threads``).
    model_options
        Extra keyword arguments for :func:`embedders.create` (``pooling``,
        ``precision``, ``compile``).
    """

    model: str | Callable[[], Any]
    weights: str | None = None
    name: str | None = None
    tiles: TileSelection = "keep"
    batch_size: int | None = None
    device: str = "auto"
    num_actors: int | None = None
    dtype: str = "float16"
    loader_threads: int = 2
    prefetch: int | None = None
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.model, str):
            if not self.model.strip():
                raise EmbedConfigError(
                    "embed: model is empty", hint="name an embedder, e.g. 'handcrafted' or 'uni'"
                )
        elif not callable(self.model):
            raise EmbedConfigError(
                f"embed: model must be a name or a factory, got {type(self.model).__name__}",
                hint="pass a registered name such as 'uni' (see embedders.list_models())",
            )
        elif self.name is None:
            raise EmbedConfigError(
                "embed: a factory model needs name= (the feature part name)",
                hint="pass name='my-model'; registered names name their part themselves",
            )
        if self.name is not None:
            try:
                part_key(self.name)
            except StoreError as exc:
                raise EmbedConfigError(f"embed: name {exc.message}", hint=exc.hint) from exc
        if self.tiles not in TILE_SELECTIONS:
            raise EmbedConfigError(
                f"embed: tiles must be 'keep' or 'all', got {self.tiles!r}",
                hint="'keep': tiles passing QC; 'all': every tile of the grid",
            )
        if self.dtype not in DTYPES:
            raise EmbedConfigError(
                f"embed: dtype must be float16 or float32, got {self.dtype!r}",
                hint="float16 halves the disk; float32 for features beyond ±65504",
            )
        for key in ("batch_size", "num_actors", "prefetch"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise EmbedConfigError(
                    f"embed: {key} must be a positive integer, got {value!r}",
                    hint=f"leave {key} unset for the default",
                )
        if not (isinstance(self.loader_threads, int) and self.loader_threads >= 0):
            raise EmbedConfigError(
                f"embed: loader_threads must be 0 or more, got {self.loader_threads!r}",
                hint="0 loads tiles in the model's thread; 2 (the default) overlaps them",
            )
        if not isinstance(self.model_options, dict):
            raise EmbedConfigError(
                f"embed: model_options must be a mapping, got {type(self.model_options).__name__}",
                hint="e.g. {'pooling': 'cls'}",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a YAML section); ``model`` stays the factory when it is one."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedConfig:
        """Build from plain data (:meth:`to_dict` output or a YAML section).

        Raises
        ------
        EmbedConfigError
            For unknown keys or invalid values.
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise EmbedConfigError(
                f"embed: unknown settings {unknown}", hint=f"known settings: {sorted(known)}"
            )
        if "model" not in data:
            raise EmbedConfigError("embed: model is missing", hint="name an embedder, e.g. 'uni'")
        return cls(**data)
