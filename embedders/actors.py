"""Embedder actors on Ray: each holds one model and embeds whole slides, one at a time.

A model is built once per actor (loading weights is the slow part), then the
actor takes slides from the driver. With GPUs there is one actor per GPU
(``num_gpus=1``); without, CPU actors split the cores between them, each
running torch with that many threads (see :func:`plan_actors` for the default).
A dead actor is restarted by Ray (``max_restarts``) and its slide retried
(``max_task_retries``); the slide's feature part is written atomically, so a
retry starts that slide over and never leaves a half-written part behind.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slideflow_core.errors import SlideflowError

#: CPU actors when no GPU is used and ``num_actors`` is not given. Measured with
#: ``benchmarks/embedding.py`` (2 shared cores, two runs): one actor whose torch
#: uses both cores against two single-threaded actors was faster for the
#: handcrafted embedder (40.6 vs 37.3 and 19.8 vs 14.3 tiles/s), even for
#: ViT-S/14 (1.53 vs 1.61 and 1.53 vs 1.48), started in about half the time and
#: held one copy of the model instead of two.
DEFAULT_CPU_ACTORS = 1


@dataclass(frozen=True, kw_only=True)
class EmbedderSpec:
    """Which embedder every actor builds, and where it runs.

    Parameters
    ----------
    model
        A registered name (``embedders.create(model, ...)``), or a picklable
        zero-argument callable returning an object with the embedder interface
        (``id``, ``dim``, ``device``, ``identity()``, ``preprocess``, ``forward``).
    weights
        Weights for a registered name (a file or a Hugging Face id).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    torch_threads
        Threads torch uses for CPU work in this actor (``None``: leave torch's default).
    options
        Extra keyword arguments for ``embedders.create``.
    """

    model: str | Callable[[], Any]
    weights: str | None = None
    device: str = "auto"
    torch_threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.model, str) or callable(self.model)):
            raise TypeError(f"model must be a name or a factory, got {type(self.model).__name__}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be positive, got {self.torch_threads}")

    def build(self) -> Any:
        """Set torch's threads and build the embedder in this process."""
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)
        if callable(self.model):
            return self.model()
        import embedders

        return embedders.create(
            self.model, weights=self.weights, device=self.device, **self.options
        )


@dataclass(frozen=True)
class ActorPlan:
    """How many embedder actors to start and what each reserves."""

    count: int
    num_cpus: float
    num_gpus: float
    torch_threads: int | None
    device: str

    def describe(self) -> str:
        """One line for reports: ``2 x GPU actor`` or ``1 x CPU actor (2 torch threads)``."""
        if self.num_gpus:
            return f"{self.count} x GPU actor"
        return f"{self.count} x CPU actor ({self.torch_threads} torch threads)"


def plan_actors(
    resources: dict[str, float],
    *,
    device: str = "auto",
    num_actors: int | None = None,
    max_actors: int | None = None,
) -> ActorPlan:
    """Decide the actors from the cluster's resources (``ray.cluster_resources()``).

    GPUs are used when present and ``device`` is ``"auto"`` or ``"cuda"``: one
    actor per GPU. Otherwise ``num_actors`` (default :data:`DEFAULT_CPU_ACTORS`)
    CPU actors share the CPUs equally, each with torch threads = its share.
    ``max_actors`` (the number of slides) caps the count: an idle actor would
    only hold memory.
    """
    if num_actors is not None and num_actors < 1:
        raise ValueError(f"num_actors must be positive, got {num_actors}")
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    cap = max(1, max_actors) if max_actors is not None else None
    if device.startswith("cuda") and not gpus:
        raise SlideflowError(
            f"device={device!r} but the Ray cluster has no GPU",
            hint="use device='auto' or 'cpu', or connect to a cluster with GPUs (--address)",
        )
    if gpus and (device == "auto" or device.startswith("cuda")):
        count = min(num_actors or gpus, gpus, cap or gpus)
        return ActorPlan(count, num_cpus=1, num_gpus=1, torch_threads=None, device="cuda")
    count = min(num_actors or DEFAULT_CPU_ACTORS, cpus, cap or cpus)
    share = max(1, cpus // count)
    return ActorPlan(count, num_cpus=share, num_gpus=0, torch_threads=share, device="cpu")


class EmbedderActor:
    """Holds one embedder and runs ``work(store, embedder, progress=..., **options)`` per slide.

    ``work`` is passed in (``embedders.run`` gives its per-slide function), so
    this module knows nothing of stores or features. ``progress`` runs in its own
    concurrency group: the driver can ask how far the current slide is while
    ``embed`` is busy.
    """

    def __init__(self, spec: EmbedderSpec, work: Callable[..., Any]) -> None:
        self._error: Exception | None = None
        try:
            self._embedder = spec.build()
        except Exception as exc:  # raised again by describe(): a task error keeps its cause
            self._error = exc
        self._work = work
        self._current: tuple[str, int] = ("", 0)

    def describe(self) -> dict[str, Any]:
        """The embedder this actor holds: id, dim, device, identity, process id.

        Raises the error that prevented building it, if any.
        """
        if self._error is not None:
            raise self._error
        emb = self._embedder
        return {
            "id": emb.id,
            "dim": int(emb.dim),
            "device": str(emb.device),
            "identity": emb.identity(),
            "pid": os.getpid(),
        }

    def embed(self, store: str, options: dict[str, Any]) -> Any:
        """Embed one slide store; returns whatever ``work`` returns."""
        self._current = (store, 0)

        def progress(done: int) -> None:
            self._current = (store, done)

        return self._work(store, self._embedder, progress=progress, **options)

    def progress(self) -> tuple[str, int]:
        """``(store, tiles done)`` of the slide being embedded."""
        return self._current


@functools.cache
def _remote_class(ray: Any) -> Any:
    """``EmbedderActor`` as a Ray actor class, ``progress`` in its own concurrency group."""

    class _Actor(EmbedderActor):
        @ray.method(concurrency_group="status", max_task_retries=0)
        def progress(self) -> tuple[str, int]:
            return super().progress()

    _Actor.__name__ = _Actor.__qualname__ = "EmbedderActor"
    return ray.remote(concurrency_groups={"status": 1})(_Actor)


class ActorPool:
    """Embedder actors, each given one slide at a time; an actor that dies for good is replaced.

    Parameters
    ----------
    ray
        The initialised ``ray`` module.
    spec
        What every actor builds (its device and threads come from ``plan``).
    plan
        How many actors and what each reserves (:func:`plan_actors`).
    work
        Per-slide function the actors run (see :class:`EmbedderActor`).
    max_restarts, max_task_retries
        Ray restarts of a dead actor, and retries of the slide it was running.
    """

    def __init__(
        self,
        ray: Any,
        spec: EmbedderSpec,
        plan: ActorPlan,
        work: Callable[..., Any],
        *,
        max_restarts: int = 3,
        max_task_retries: int = 2,
    ) -> None:
        self._ray = ray
        self._spec = EmbedderSpec(
            model=spec.model,
            weights=spec.weights,
            device=plan.device,  # an actor sees only its own GPU: "cuda" is always that one
            torch_threads=spec.torch_threads or plan.torch_threads,
            options=spec.options,
        )
        self._work = work
        self._class = _remote_class(ray).options(
            num_cpus=plan.num_cpus,
            num_gpus=plan.num_gpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
        )
        self.plan = plan
        self._actors = [self._start() for _ in range(plan.count)]
        self._polls: dict[int, Any] = {}
        self._running: dict[int, tuple[str, int]] = {}

    def _start(self) -> Any:
        return self._class.remote(self._spec, self._work)

    def describe(self) -> dict[str, Any]:
        """What the actors hold (waits for the first one to build its model).

        Raises
        ------
        Exception
            The error that prevented building the model (bad name, weights, device).
        """
        return self._ray.get(self._actors[0].describe.remote())

    def run(
        self,
        stores: list[str],
        options: dict[str, Any],
        on_result: Callable[[str, Any], None],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Embed ``stores``, one in flight per actor, calling ``on_result(store, result)``.

        ``result`` is what ``work`` returned, or the Ray error when the actor died
        beyond its restarts and retries (the actor is then replaced).
        ``on_progress(tiles)`` receives, every half second, the tiles embedded so
        far in the slides still running.
        """
        ray = self._ray
        todo = deque(stores)
        pending: dict[Any, tuple[int, str]] = {}

        def submit(index: int) -> None:
            if todo:
                store = todo.popleft()
                pending[self._actors[index].embed.remote(store, options)] = (index, store)

        for index in range(len(self._actors)):
            submit(index)
        while pending:
            timeout = 0.5 if on_progress is not None else None
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            for ref in ready:
                index, store = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    result = exc
                    ray.kill(self._actors[index])
                    self._actors[index] = self._start()
                    self._polls.pop(index, None)
                self._running.pop(index, None)
                on_result(store, result)
                submit(index)
            if on_progress is not None:
                running = {store for _, store in pending.values()}
                self._poll()
                on_progress(sum(n for s, n in self._running.values() if s in running))

    def _poll(self) -> None:
        """Collect answered ``progress()`` calls and ask again (never blocks)."""
        ray = self._ray
        if self._polls:
            ready, _ = ray.wait(list(self._polls.values()), num_returns=len(self._polls), timeout=0)
            answered = set(ready)
            for index, ref in list(self._polls.items()):
                if ref in answered:
                    del self._polls[index]
                    try:
                        self._running[index] = ray.get(ref)
                    except ray.exceptions.RayError:  # restarting: it will answer later
                        self._running.pop(index, None)
        for index, actor in enumerate(self._actors):
            if index not in self._polls:
                self._polls[index] = actor.progress.remote()

    def close(self) -> None:
        """Stop every actor (and free its memory and devices)."""
        for actor in self._actors:
            self._ray.kill(actor)
