"""The pipeline configuration: which stages run, with which settings, and where outputs go.

A :class:`PipelineConfig` is frozen and validated on construction, loads from and
saves to YAML, and is written into every run directory as the resolved config
the run used. It knows no stage by name: each section (``tile:``, ``embed:``,
``segment:``, ``predict:``, ``export:``, or any stage a package registers under
the ``sfc.stages`` entry points) is built into that stage's own frozen config
class, declared once by the stage and reused by its CLI::

    run_dir: /shared/projects/cohort-a          # or s3://bucket/prefix
    stages: [tile, embed, segment, predict, export]
    tile: {mpp: 0.5, tile_px: 224}
    embed: {model: uni, weights: /shared/models/uni.safetensors}
    predict: {run: /shared/projects/train/runs/abmil}
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from slideflow_core.cohort.records import is_uri
from slideflow_core.errors import SlideflowError
from slideflow_core.stages import stage_config, stages

#: Old section names still read (``tiling:`` was the tile stage's section).
SECTION_ALIASES = {"tiling": "tile"}


class PipelineConfigError(SlideflowError):
    """A pipeline configuration (or its YAML file) is invalid."""


def _plain(config: Any) -> dict[str, Any]:
    """A stage config as plain data holding only its constructor fields."""
    names = {f.name for f in dataclasses.fields(config)}
    data = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """The per-cohort pipeline: stages, their settings and the run directory.

    Parameters
    ----------
    run_dir
        Where everything goes: a local (or shared) folder, or ``s3://bucket/prefix``
        (then stores are built under ``work_dir`` and uploaded, commit marker last).
        May be left out of a YAML file and given at run time (``--run-dir``).
    stages
        Registered stage names (``sfc.stages`` entry points); they run in each
        stage's own order (tile, embed, segment, predict, export), whatever the list's.
    settings
        Stage name → its config (the stage's frozen config class, or plain data
        that builds it). A listed stage without settings gets its defaults.
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

    run_dir: str | None = None
    stages: tuple[str, ...] = ("tile",)
    settings: Mapping[str, Any] = field(default_factory=dict)
    work_dir: str | None = None
    batch_slides: int | None = None
    keep_local: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.run_dir is not None:
            if not str(self.run_dir).strip():
                raise PipelineConfigError(
                    "run_dir is empty", hint="give a folder or s3://bucket/path"
                )
            object.__setattr__(self, "run_dir", os.fspath(self.run_dir))
        registry = stages()
        names = tuple(self.stages)
        unknown = [s for s in names if s not in registry]
        if unknown or not names or len(set(names)) != len(names):
            raise PipelineConfigError(
                f"stages must be distinct names from {registry.names()}, got {list(names)}",
                hint="a stage is listed only when its package is installed",
            )
        order = {e.name: e.meta.get("order", 1000) for e in registry}
        object.__setattr__(self, "stages", tuple(sorted(names, key=lambda s: order[s])))
        settings = {SECTION_ALIASES.get(k, k): v for k, v in dict(self.settings).items()}
        for name in settings:
            if name not in registry:
                raise PipelineConfigError(
                    f"settings for an unknown stage {name!r}",
                    hint=f"stages: {registry.names()}",
                )
        built = {}
        for name in dict.fromkeys([*self.stages, *settings]):
            try:
                built[name] = stage_config(name, settings.get(name))
            except SlideflowError as exc:
                hint = exc.hint
                if name not in settings:
                    hint = f"add a `{name}:` section to the pipeline config" + (
                        f" ({exc.hint})" if exc.hint else ""
                    )
                raise PipelineConfigError(f"the {name} stage: {exc.message}", hint=hint) from exc
        object.__setattr__(self, "settings", built)
        if self.batch_slides is not None and self.batch_slides < 1:
            raise PipelineConfigError(f"batch_slides must be positive, got {self.batch_slides}")

    @property
    def remote(self) -> bool:
        """Whether the run directory is on object storage (a URI)."""
        return self.run_dir is not None and is_uri(self.run_dir)

    def stage_config(self, name: str) -> Any:
        """The config of stage ``name``."""
        return self.settings[name]

    def with_run_dir(self, run_dir: str | os.PathLike[str]) -> PipelineConfig:
        """This config writing to another run directory."""
        return replace(self, run_dir=os.fspath(run_dir))

    def require_run_dir(self) -> str:
        """The run directory, or a clear error when neither the file nor the command gave one."""
        if self.run_dir is None:
            raise PipelineConfigError(
                "no run directory", hint="set run_dir in the pipeline YAML, or pass --run-dir DIR"
            )
        return self.run_dir

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON ready); :meth:`from_dict` reads it back."""
        data: dict[str, Any] = {"run_dir": self.run_dir, "stages": list(self.stages)}
        data.update({name: _plain(config) for name, config in self.settings.items()})
        data.update(
            work_dir=self.work_dir,
            batch_slides=self.batch_slides,
            keep_local=self.keep_local,
            overwrite=self.overwrite,
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> PipelineConfig:
        """Build from plain data, naming ``source`` in errors.

        Raises
        ------
        PipelineConfigError
            For unknown keys or invalid values.
        """
        if not isinstance(data, Mapping):
            raise PipelineConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        own = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        sections = set(stages().names()) | set(SECTION_ALIASES)
        unknown = sorted(set(data) - own - sections)
        if unknown:
            raise PipelineConfigError(
                f"{source}: unknown keys {unknown}",
                hint=f"known keys: {sorted(own)} and one section per stage {sorted(sections)}",
            )
        kwargs = {k: v for k, v in data.items() if k in own}
        settings = {k: v for k, v in data.items() if k in sections and v is not None}
        try:
            return cls(**kwargs, settings=settings)
        except PipelineConfigError as exc:
            raise PipelineConfigError(f"{source}: {exc.message}", hint=exc.hint) from exc
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
            raise PipelineConfigError(
                f"pipeline config not found: {path}", hint="check the path of --config"
            ) from None
        except IsADirectoryError:
            raise PipelineConfigError(
                f"{path} is a folder", hint="give the pipeline YAML file"
            ) from None
        except yaml.YAMLError as exc:
            raise PipelineConfigError(
                f"{path}: not valid YAML ({exc})", hint="fix the YAML syntax"
            ) from exc
        return cls.from_dict(data or {}, source=str(path))


def load_config(
    config: PipelineConfig | Mapping[str, Any] | str | os.PathLike[str],
) -> PipelineConfig:
    """A :class:`PipelineConfig` from itself, a mapping or a YAML path."""
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, Mapping):
        return PipelineConfig.from_dict(config)
    return PipelineConfig.from_yaml(config)
