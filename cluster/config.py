"""The pipeline configuration: which stages run, how, and where their outputs go.

A :class:`PipelineConfig` is frozen and validated on construction, loads from and
saves to YAML, and is written into every run directory as the resolved config
the run used. Tiling fields are those of :class:`tiling.TilingConfig`; the
embedding fields are the options of :func:`embedders.embed_cohort`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from slideflow_core.cohort.records import is_uri
from slideflow_core.errors import SlideflowError
from tiling.config import TilingConfig

#: Stages in the order they run; a config lists a subset.
STAGE_ORDER = ("tile", "embed")


class PipelineConfigError(SlideflowError):
    """A pipeline configuration (or its YAML file) is invalid."""


@dataclass(frozen=True, kw_only=True)
class EmbedStageConfig:
    """How the embed stage runs (the options of :func:`embedders.embed_cohort`).

    Parameters
    ----------
    model
        A registered embedder name (``"uni"``, ``"handcrafted"``, ``"timm:<name>"``).
    weights
        Weights file or Hugging Face id, when the model needs them; a path must be
        readable on every worker node.
    name
        Feature part name (``features/<name>``); default: the model name made safe.
    tiles
        ``"keep"`` (tiles passing QC) or ``"all"``.
    batch_size
        Tiles per forward pass (default: chosen per actor).
    device
        ``"auto"`` (GPUs when the cluster has them), ``"cpu"`` or ``"cuda"``.
    num_actors
        Embedder actors (default: one per GPU, or one CPU actor).
    dtype
        Stored precision, ``"float16"`` or ``"float32"``.
    """

    model: str
    weights: str | None = None
    name: str | None = None
    tiles: str = "keep"
    batch_size: int | None = None
    device: str = "auto"
    num_actors: int | None = None
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if not self.model:
            raise PipelineConfigError("embed.model is empty", hint="name an embedder, e.g. 'uni'")
        if self.tiles not in ("keep", "all"):
            raise PipelineConfigError(f"embed.tiles must be 'keep' or 'all', got {self.tiles!r}")
        if self.dtype not in ("float16", "float32"):
            raise PipelineConfigError(f"embed.dtype must be float16 or float32, not {self.dtype}")
        for key in ("batch_size", "num_actors"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise PipelineConfigError(f"embed.{key} must be positive, got {value}")


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """The per-cohort pipeline: stages, their settings and the run directory.

    Parameters
    ----------
    run_dir
        Where everything goes: a local (or shared) folder, or ``s3://bucket/prefix``
        (then stores are built under ``work_dir`` and uploaded, commit marker last).
    stages
        Stages to run, a subset of :data:`STAGE_ORDER` (run in that order).
    tiling
        The tiling configuration.
    embed
        The embed stage's settings; required when ``"embed"`` is a stage.
    work_dir
        Local folder for building stores of an object-storage ``run_dir``
        (default: ``$SFC_WORK_DIR`` or ``~/.cache/slideflow-core/runs/<name>``).
        It must be visible to every Ray worker (one node, or a shared filesystem).
    batch_slides
        Slides per wave: each wave passes every stage (and is uploaded) before the
        next starts, which bounds local scratch space and what a killed run loses.
        ``None``: one wave for local run directories, 64 slides for object storage.
    keep_local
        Keep the local copy of stores after uploading them (object storage only).
    overwrite
        Recompute slides whose outputs were made with another configuration.
    """

    run_dir: str
    stages: tuple[str, ...] = ("tile",)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    embed: EmbedStageConfig | None = None
    work_dir: str | None = None
    batch_slides: int | None = None
    keep_local: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not str(self.run_dir).strip():
            raise PipelineConfigError("run_dir is empty", hint="give a folder or s3://bucket/path")
        object.__setattr__(self, "run_dir", os.fspath(self.run_dir))
        object.__setattr__(self, "stages", tuple(self.stages))
        unknown = [s for s in self.stages if s not in STAGE_ORDER]
        if unknown or not self.stages or len(set(self.stages)) != len(self.stages):
            raise PipelineConfigError(
                f"stages must be distinct names from {list(STAGE_ORDER)}, got {list(self.stages)}"
            )
        object.__setattr__(
            self, "stages", tuple(s for s in STAGE_ORDER if s in self.stages)
        )  # run order is fixed
        if "embed" in self.stages and self.embed is None:
            raise PipelineConfigError(
                "the embed stage needs an embed section",
                hint="add `embed: {model: <name>}` to the pipeline config",
            )
        if self.batch_slides is not None and self.batch_slides < 1:
            raise PipelineConfigError(f"batch_slides must be positive, got {self.batch_slides}")

    @property
    def remote(self) -> bool:
        """Whether the run directory is on object storage (a URI)."""
        return is_uri(self.run_dir)

    def with_run_dir(self, run_dir: str | os.PathLike[str]) -> PipelineConfig:
        """This config writing to another run directory."""
        return replace(self, run_dir=os.fspath(run_dir))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON ready); :meth:`from_dict` reads it back."""
        data = asdict(self)
        data["stages"] = list(self.stages)
        data["tiling"] = {
            k: v for k, v in self.tiling.to_dict().items() if k in TilingConfig.__dataclass_fields__
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> PipelineConfig:
        """Build from plain data, naming ``source`` in errors.

        Raises
        ------
        PipelineConfigError
            For unknown keys or invalid values.
        """
        if not isinstance(data, dict):
            raise PipelineConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineConfigError(
                f"{source}: unknown keys {unknown}", hint=f"known keys: {sorted(known)}"
            )
        kwargs = dict(data)
        try:
            if kwargs.get("tiling") is not None:
                tiling = dict(kwargs["tiling"])
                extra = sorted(set(tiling) - set(TilingConfig.__dataclass_fields__))
                if extra:
                    raise PipelineConfigError(f"{source}: unknown tiling keys {extra}")
                kwargs["tiling"] = TilingConfig.from_dict(tiling)
            else:
                kwargs.pop("tiling", None)
            if kwargs.get("embed") is not None:
                kwargs["embed"] = EmbedStageConfig(**kwargs["embed"])
            return cls(**kwargs)
        except PipelineConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise PipelineConfigError(f"{source}: {exc}", hint="fix the value and retry") from exc

    def to_yaml(self) -> str:
        """The config as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> PipelineConfig:
        """Load a config from a YAML file.

        Raises
        ------
        PipelineConfigError
            If the file is missing, is not YAML, or holds an invalid config.
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise PipelineConfigError(f"pipeline config not found: {path}") from None
        except yaml.YAMLError as exc:
            raise PipelineConfigError(f"{path}: not valid YAML ({exc})") from exc
        return cls.from_dict(data or {}, source=str(path))


def load_config(
    config: PipelineConfig | dict[str, Any] | str | os.PathLike[str],
) -> PipelineConfig:
    """A :class:`PipelineConfig` from itself, a mapping or a YAML path."""
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, dict):
        return PipelineConfig.from_dict(config)
    return PipelineConfig.from_yaml(config)
