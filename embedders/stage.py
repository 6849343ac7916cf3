"""The embedding stage: tile stores into ``features/<name>`` parts, on long-lived Ray actors.

Each actor builds the model once (loading weights is the slow part) and embeds
whole slides, one at a time: a slide is one unit whose features stream to its
store and are committed atomically, so a retried slide starts over and never
leaves half a part. With GPUs there is one actor per GPU; without, CPU actors
split the cores between them, torch using that many threads each (see
:meth:`EmbedStage.actors`). A cohort of a few slides that would start a single
CPU actor on a new local Ray instance runs that actor's work in the driver
instead (:func:`slideflow_core.stages.runner.choose_executor`): no Ray start
before its first tile. Slides whose part was made from the same request are
skipped in the driver before any model is built (:meth:`EmbedStage.settled`).
:func:`embed_cohort` is the stage through the core runner; :func:`embed_slide`
is one store in this process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from embedders.config import EmbedConfig
from embedders.run import (
    embed_request,
    feature_identity,
    feature_name,
    select_tiles,
    tiles_identity,
    write_slide_features,
)
from slideflow_core.cohort import ProjectLayout
from slideflow_core.errors import SlideflowError
from slideflow_core.features import features_part
from slideflow_core.stages import (
    ActorPlan,
    CohortReport,
    Placement,
    Plan,
    SlideOutcome,
    SlideRef,
    StageDefaults,
    Unit,
    config_from,
    run_cohort,
    run_slide,
)
from slideflow_core.stages.runner import CohortLike
from slideflow_core.store import StoreError, part_complete, part_state, read_store_attrs
from tiling.view import open_store

#: CPU actors when no GPU is used and ``num_actors`` is not given. Measured with
#: ``benchmarks/embedding.py`` (2 shared cores, two runs): one actor whose torch
#: uses both cores against two single-threaded actors was faster for the
#: handcrafted embedder (40.6 vs 37.3 and 19.8 vs 14.3 tiles/s), even for
#: ViT-S/14 (1.53 vs 1.61 and 1.53 vs 1.48), started in about half the time and
#: held one copy of the model instead of two.
DEFAULT_CPU_ACTORS = 1


class EmbedStage(StageDefaults):
    """Tile embeddings into ``features/<name>`` (one Ray actor per GPU, or CPU actors)."""

    name: ClassVar[str] = "embed"
    executor: ClassVar[str] = "actors"
    order: ClassVar[int] = 20
    #: A few slides that one CPU actor would embed are embedded here, without Ray.
    local_slides: ClassVar[int] = 4
    Config = EmbedConfig

    def __init__(self, config: EmbedConfig, *, record_request: bool = True) -> None:
        self.config = config
        #: What this run asks for (:func:`~embedders.run.embed_request`), computed once in the
        #: driver and shipped to the workers with the stage; ``None`` when not recorded (an
        #: embedder object given directly: its name alone does not say how it was built).
        self.request = embed_request(config) if record_request else None

    @property
    def feature_name(self) -> str:
        """The part's name: ``config.name``, or the model name (with a pooling override) made safe.

        Known from the config alone, so the driver knows which part a slide needs
        before any model is built (``uni``, ``virchow2.cls``, ``timm_vit_small_patch16_224``).
        """
        if self.config.name:
            return self.config.name
        model = self.config.model
        assert isinstance(model, str)  # EmbedConfig requires a name with a factory
        pooling = self.config.model_options.get("pooling")
        return feature_name(f"{model}.{pooling.replace('+', '-')}" if pooling else model)

    def part(self) -> str:
        """``features/<name>``."""
        return features_part(self.feature_name)

    def prepare(self, layout: ProjectLayout) -> None:
        """Check the model name against the registry before any actor starts."""
        if isinstance(self.config.model, str):
            from embedders.registry import get_card

            get_card(self.config.model)  # an unknown name fails here, with close names

    def done(self, store: str) -> bool:
        """A complete feature part of this name (its identity is checked when re-embedding)."""
        return part_complete(store, self.part())

    def settled(self, slide: SlideRef, *, overwrite: bool) -> SlideOutcome | None:
        """``skipped`` when the slide's part was made from this same request on the same tiles.

        Checked in the driver without building the model: the part is complete and
        intact, its recorded request (model name, weights and their file's checksum,
        model options, tile selection, dtype) equals this run's, and the tiling and
        tile selection it was made from are the store's current ones. Anything else
        (no part, an older part without a request, a factory model) is left to
        :meth:`plan`, which compares the built model's full identity.
        """
        if overwrite or self.request is None:
            return None
        try:
            info = read_store_attrs(slide.store).get("parts", {}).get(self.part()) or {}
            if not info.get("complete") or info.get("request") != self.request:
                return None
            store, tiles = open_store(slide.store), self.config.tiles
            tile_index = select_tiles(store, tiles)
        except (StoreError, OSError, KeyError):
            return None  # planning says what is wrong
        made = {k: v for k, v in (info.get("identity") or {}).items() if k != "embedder"}
        if made != tiles_identity(store, tiles, tile_index, self.config.dtype):
            return None
        if not part_complete(slide.store, self.part()):
            return None
        return SlideOutcome(slide.slide_id, "skipped", slide.store, n_tiles=len(tile_index))

    def setup(self, placement: Placement | None) -> Any:
        """Build the embedder on the placement's device with its torch threads.

        ``None`` (this process): ``config.device`` and torch's default threads.
        """
        if placement is not None and placement.threads is not None:
            import cv2  # the handcrafted embedder's filters have their own thread pool
            import torch

            torch.set_num_threads(placement.threads)
            cv2.setNumThreads(placement.threads)
        model = self.config.model
        if not isinstance(model, str):
            return model()
        from embedders.registry import create

        device = placement.device if placement is not None else self.config.device
        return create(
            model, weights=self.config.weights, device=device, **self.config.model_options
        )

    def actors(self, resources: Mapping[str, float], n_slides: int) -> ActorPlan:
        """The actors to start: one per GPU, else CPU actors sharing the cores.

        GPUs are used when present and ``device`` is ``"auto"`` or ``"cuda"``.
        Otherwise ``num_actors`` (default :data:`DEFAULT_CPU_ACTORS`) CPU actors
        split the cores, torch in each using its share as threads. The number of
        slides caps the count: an idle actor would only hold memory.

        Raises
        ------
        SlideflowError
            If ``device`` asks for CUDA on a cluster without GPUs.
        """
        device, wanted = self.config.device, self.config.num_actors
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        cap = max(1, n_slides)
        if device.startswith("cuda") and not gpus:
            raise SlideflowError(
                f"device={device!r} but the Ray cluster has no GPU",
                hint="use device='auto' or 'cpu', or connect to a cluster with GPUs (--address)",
            )
        if gpus and (device == "auto" or device.startswith("cuda")):
            # An actor sees only its own GPU: "cuda" is always that one.
            count = min(wanted or gpus, gpus, cap)
            return ActorPlan(count, num_cpus=1, num_gpus=1, placement=Placement("cuda"))
        count = min(wanted or DEFAULT_CPU_ACTORS, cpus, cap)
        share = max(1, cpus // count)
        return ActorPlan(count, num_cpus=share, placement=Placement("cpu", share))

    def describe(self, resource: Any) -> dict[str, Any]:
        """The embedder held: id, dimension, device and identity."""
        return {
            "model": resource.id,
            "dim": int(resource.dim),
            "device": str(resource.device),
            "identity": resource.identity(),
        }

    def plan(self, slide: SlideRef, resource: Any, *, overwrite: bool) -> Plan | SlideOutcome:
        """Skip a part made the same way; else the whole slide is one unit of its tiles.

        Raises
        ------
        StoreError
            If the store has no tiling part, or its part was made differently and
            ``overwrite`` is False.
        """
        store, config = open_store(slide.store), self.config
        tile_index = select_tiles(store, config.tiles)
        identity = feature_identity(resource, store, config.tiles, tile_index, config.dtype)
        state = part_state(store.path, self.part(), identity)
        if state == "complete" and not overwrite:
            return SlideOutcome(slide.slide_id, "skipped", slide.store, n_tiles=len(tile_index))
        if state == "incompatible" and not overwrite:
            raise StoreError(
                f"{store.path} already has {self.part()} made differently "
                "(another model, weights, tiling, tile selection or dtype)",
                hint="pass overwrite=True (--overwrite) to replace them, or name= (--name) "
                "to keep both",
            )
        unit = Unit(0, len(tile_index), tile_index)
        return Plan(slide, (unit,), state=identity)

    def run(self, plan: Plan, unit: Unit, resource: Any, progress: Callable[[int], None]) -> Any:
        """Stream the slide's features into its part; ``progress(tiles)`` after every batch."""
        return write_slide_features(
            open_store(plan.slide.store),
            resource,
            self.config,
            part=self.feature_name,
            tile_index=unit.data,
            identity=plan.state,
            progress=progress,
            request=self.request,
        )

    def commit(self, plan: Plan, results: Sequence[Any], resource: Any) -> SlideOutcome:
        """The part is committed by ``run``; the outcome carries its numbers."""
        return replace(super().commit(plan, results, resource), details=results[0])


def embed_cohort(
    project: str | os.PathLike[str],
    model_or_config: str | Callable[[], Any] | EmbedConfig,
    *,
    cohort: CohortLike = None,
    overwrite: bool = False,
    executor: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    **options: Any,
) -> CohortReport:
    """Embed every tile store of a project into ``features/<name>`` with Ray actors.

    Parameters
    ----------
    project
        Project directory holding ``stores/<slide_id>.zarr`` (from ``tiling.tile_cohort``).
    model_or_config
        An :class:`EmbedConfig`, or its ``model`` (a registered name such as
        ``"handcrafted"``, ``"uni"``, ``"timm:<name>"``, or a factory) with the
        other fields as keyword arguments (``weights=``, ``batch_size=``, ``name=``...).
    cohort
        Only these slides: a :class:`~slideflow_core.cohort.Cohort`, a manifest
        path, or slide ids (default: every store of the project).
    overwrite
        Re-embed slides that already have a complete part (or one made differently).
    executor
        ``"actors"`` (Ray) or ``"local"`` (this process); default: actors, except
        that a cohort of up to four slides with work, on one machine without GPUs
        and with no Ray running, runs here with one actor's threads (no Ray start).
    address, num_cpus
        Ray cluster address (``None``: a local instance) and cores of a local instance.
    progress
        Show a progress bar (tiles, tiles/s, slides).

    Returns
    -------
    CohortReport
        Per-slide outcomes (``details``: tiles/s, loader wait, batch size, device);
        also written to ``<project>/status/embed.json`` and per slide to
        ``<project>/status/embed/<slide_id>.json``.

    Raises
    ------
    SlideflowError
        If the project has no stores, the model is unknown, or it cannot be built.
    """
    return run_cohort(
        EmbedStage(config_from(EmbedConfig, model_or_config, options, field="model")),
        project,
        cohort,
        overwrite=overwrite,
        executor=executor,
        address=address,
        num_cpus=num_cpus,
        progress=progress,
    )


def embed_slide(
    store: str | os.PathLike[str],
    embedder: Any,
    *,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> SlideOutcome:
    """Embed one slide store's tiles into its ``features/<name>`` part, in this process.

    Parameters
    ----------
    store
        A committed slide store with a tiling part (pixels or coordinates only).
    embedder
        An embedder (``embedders.create(...)``, or any object with its interface).
    overwrite
        Re-embed even when a complete part exists (compatible or not).
    progress
        Called with the number of tiles embedded so far after every batch.
    **options
        :class:`EmbedConfig` fields: ``tiles``, ``batch_size``, ``name`` (default:
        the embedder's id made safe), ``dtype``, ``loader_threads``, ``prefetch``.

    Returns
    -------
    SlideOutcome
        ``done`` or ``skipped``; errors raise (:func:`embed_cohort` collects them).

    Raises
    ------
    StoreError
        If the store has no tiling part, or a complete part made with another
        identity exists and ``overwrite`` is False.
    FeatureValueError
        If the model gives non-finite features (nothing is committed).
    """
    config = EmbedConfig(model=embedder.id, **{"name": feature_name(embedder.id), **options})
    stage = EmbedStage(config, record_request=False)
    slide = SlideRef(open_store(store).slide_id, os.fspath(store))
    return run_slide(stage, slide, embedder, overwrite=overwrite, progress=progress)
