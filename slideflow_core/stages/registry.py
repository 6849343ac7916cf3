"""Stages by name: each package registers its stages through the ``sfc.stages`` entry points.

The core never imports a stage: ``create_stage("embed", {...})`` finds the class
through the entry point (``embed = "embedders.stage:EmbedStage"`` in
``pyproject.toml``) and builds its frozen config from plain data (a YAML section),
so a new stage plugs in without editing the core or the cluster layer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar

from slideflow_core.errors import SlideflowError
from slideflow_core.registry import Registry
from slideflow_core.stages.protocol import Stage

ENTRY_POINT_GROUP = "sfc.stages"
T = TypeVar("T")


class StageConfigError(SlideflowError):
    """A stage's settings are invalid (unknown keys, bad values)."""


@functools.cache
def stages() -> Registry[Any]:
    """Every installed stage class, by name, loaded once from the entry points."""
    registry: Registry[Any] = Registry("stage")
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    loaded, missing = [], []
    for ep in found:
        try:
            cls = ep.load()
        except ModuleNotFoundError as exc:  # a stage whose optional dependencies are missing
            missing.append((ep.name, f"{exc}; install the extra that provides it ({ep.value})"))
            continue
        loaded.append((cls.order, ep.name, cls))
    for order, name, cls in sorted(loaded, key=lambda t: t[:2]):
        doc = (cls.__doc__ or "").strip().splitlines()
        registry.register(
            name, order=order, executor=cls.executor, description=doc[0] if doc else ""
        )(cls)
    for name, reason in missing:
        registry.register(name, check=lambda r=reason: r)(None)
    return registry


def stage_config(name: str, values: Mapping[str, Any] | Any | None = None) -> Any:
    """The frozen config of stage ``name`` from plain data (or itself, if already one).

    Raises
    ------
    StageConfigError
        For unknown keys or invalid values, naming the stage.
    """
    cls = stages().get(name)
    config_cls = cls.Config
    if isinstance(values, config_cls):
        return values
    data = dict(values or {})
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise StageConfigError(
            f"{name}: unknown settings {unknown}", hint=f"known settings: {sorted(fields)}"
        )
    try:
        from_dict = getattr(config_cls, "from_dict", None)
        return from_dict(data) if from_dict is not None else config_cls(**data)
    except SlideflowError:
        raise
    except (TypeError, ValueError) as exc:
        raise StageConfigError(f"{name}: {exc}", hint="fix the setting and retry") from exc


def config_from(config_cls: type[T], given: Any, options: Mapping[str, Any], *, field: str) -> T:
    """A stage's config from a Python call: ``given`` itself when it is one, else
    ``config_cls(**{field: given}, **options)`` (``embed_cohort(project, "uni", batch_size=8)``).

    Raises
    ------
    TypeError
        If both a config and field keyword arguments are given.
    """
    if isinstance(given, config_cls):
        if options:
            raise TypeError(
                f"give either a {config_cls.__name__} or its fields as keyword arguments"
            )
        return given
    return config_cls(**{field: given, **options})


def create_stage(name: str, config: Mapping[str, Any] | Any | None = None) -> Stage:
    """The stage registered as ``name`` with its config (a config object or plain data)."""
    return stages().get(name)(stage_config(name, config))


def list_stages() -> list[dict[str, Any]]:
    """Every stage: name, availability, why not, order, executor, description."""
    return stages().list_entries()
