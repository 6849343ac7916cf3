"""The pipeline's stages, chosen by name: each wraps one stage's cohort runner.

A stage runs a list of slides of the cohort through its package's own Ray
runner (``tiling.tile_cohort``, ``embedders.embed_cohort``), which already keeps
work in flight bounded, retries lost workers and commits each slide's part
atomically; the stage turns that runner's report into :class:`SlideOutcome`
rows. A stage also says which store part it writes, so a run over object
storage can tell from the remote markers alone that a slide is finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from cluster.config import PipelineConfig
from cluster.objectstore import store_parts
from cluster.state import SlideOutcome, StageOutcome
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.registry import Registry
from slideflow_core.store import part_state


@dataclass(frozen=True)
class StageContext:
    """What every stage gets: the config, the cohort and where stores are built."""

    config: PipelineConfig
    cohort: Cohort
    layout: ProjectLayout
    progress: bool = False


class Stage(Protocol):
    """One step of the per-slide pipeline."""

    name: str

    def prepare(self, config: PipelineConfig) -> None:
        """Import and check what the stage needs, before any stage runs (fail fast)."""
        ...

    def part(self, config: PipelineConfig) -> str:
        """The store part this stage writes (``tiling``, ``features/<name>``)."""
        ...

    def done_in(self, store: str, config: PipelineConfig) -> bool:
        """Whether the store at ``store`` (a path or URL) already has this stage's part."""
        ...

    def run(self, context: StageContext, slide_ids: list[str]) -> StageOutcome:
        """Run the stage on ``slide_ids``; every slide gets one outcome."""
        ...


STAGES: Registry[type[Stage]] = Registry("pipeline stage")


def _outcome(result: Any) -> SlideOutcome:
    return SlideOutcome(
        slide_id=result.slide_id,
        status=result.status,
        n_tiles=int(result.n_tiles),
        seconds=float(result.seconds),
        error=result.error,
    )


def _needs(module: str) -> Any:
    import importlib.util

    def check() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'slideflow-core[embed]')"
        return None

    return check


@STAGES.register(
    "tile",
    description="tissue detection, tiles and QC into per-slide stores (tiling.tile_cohort)",
    resources="CPU tasks, one per slide or band",
)
class TileStage:
    """Tile slides into ``stores/<slide_id>.zarr`` (part ``tiling``)."""

    name = "tile"

    def prepare(self, config: PipelineConfig) -> None:
        """Import the tiling runner."""
        import tiling.runner  # noqa: F401

    def part(self, config: PipelineConfig) -> str:
        """The tiling part."""
        from tiling.store import PART

        return PART

    def done_in(self, store: str, config: PipelineConfig) -> bool:
        """A complete tiling part made with this tiling configuration."""
        return part_state(store, self.part(config), config.tiling.identity()) == "complete"

    def run(self, context: StageContext, slide_ids: list[str]) -> StageOutcome:
        """:func:`tiling.tile_cohort` on these slides."""
        from tiling.runner import tile_cohort

        started = time.time()
        if not slide_ids:
            return StageOutcome(self.name, (), 0.0)
        report = tile_cohort(
            context.cohort.subset(slide_ids),
            context.layout.root,
            context.config.tiling,
            overwrite=context.config.overwrite,
            progress=context.progress,
        )
        results = tuple(_outcome(r) for r in report.results)
        return StageOutcome(self.name, results, time.time() - started)


@STAGES.register(
    "embed",
    check=_needs("torch"),
    description="tile embeddings into features/<name> (embedders.embed_cohort)",
    resources="actors: one per GPU, or CPU actors",
)
class EmbedStage:
    """Embed the tiles of each store into ``features/<name>``."""

    name = "embed"

    def prepare(self, config: PipelineConfig) -> None:
        """Import torch and the embedders, and check the model name.

        Importing torch first matters beyond failing fast: loaded after the
        slide and codec libraries, its shared library can fail to load for lack
        of static TLS space (seen as an "Intel oneMKL FATAL ERROR" in Ray jobs).
        """
        import embedders

        assert config.embed is not None
        embedders.get_card(config.embed.model)  # an unknown name fails here, with a hint

    def part(self, config: PipelineConfig) -> str:
        """``features/<name>``, the name being ``embed.name`` or the model's, made safe."""
        from embedders.run import feature_name
        from slideflow_core.features import features_part

        assert config.embed is not None  # guaranteed by PipelineConfig
        return features_part(config.embed.name or feature_name(config.embed.model))

    def done_in(self, store: str, config: PipelineConfig) -> bool:
        """A complete feature part of that name (its identity is checked when re-embedding)."""
        return bool(store_parts(store).get(self.part(config), {}).get("complete"))

    def run(self, context: StageContext, slide_ids: list[str]) -> StageOutcome:
        """:func:`embedders.embed_cohort` on these slides' stores."""
        from embedders.run import embed_cohort

        started = time.time()
        embed = context.config.embed
        assert embed is not None
        if not slide_ids:
            return StageOutcome(self.name, (), 0.0)
        report = embed_cohort(
            context.layout.root,
            embed.model,
            weights=embed.weights,
            cohort=slide_ids,
            tiles=embed.tiles,  # type: ignore[arg-type]
            batch_size=embed.batch_size,
            device=embed.device,
            num_actors=embed.num_actors,
            overwrite=context.config.overwrite,
            name=self.part(context.config).split("/", 1)[1],
            dtype=embed.dtype,
            progress=context.progress,
        )
        results = tuple(_outcome(r) for r in report.results)
        return StageOutcome(self.name, results, time.time() - started)


def create_stage(name: str) -> Stage:
    """The stage registered as ``name`` (``tile``, ``embed``)."""
    return STAGES.get(name)()


def list_stages() -> list[dict[str, Any]]:
    """Every stage: name, availability, why not, description, resources."""
    return STAGES.list_entries()
