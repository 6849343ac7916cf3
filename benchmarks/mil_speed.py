"""MIL training speed and memory: our trainer vs a per-bag loop vs the floors vs torchmil.

    python benchmarks/mil_speed.py [--bags 1000] [--instances 5000] [--dim 1024]
                                   [--heads abmil,transmil] [--work DIR] [--quick]
                                   [--small-data musk1.csv.gz] [--small-batch 16]
                                   [--no-big] [--no-small] [--no-huge]

Bags live where a real cohort's do: one slide store per bag with a float16
``features/<model>`` part (``--bags × --instances × --dim``; 1,000 × 5,000 ×
1,024 is 10 GB on disk and 20 GB as float32, more than this machine's spare
memory, so every method must stream). ``--work`` keeps the stores between runs.

One epoch per row, fresh model each time, one bag per step (CLAM's setting):

- ``ours``: :func:`mil.fit` (reads the next bag on a loader thread while the
  model trains on the current one; bfloat16 autocast on CPUs with AMX tiles), and
  ``ours, float32``: the same with ``amp=False``;
- ``naive per-bag loop``: read a bag, then forward/backward/step, in one
  thread, as CLAM's reference trainer does;
- ``floor: read only``: every bag read and converted, no model;
- ``floor: compute only``: forward/backward/step on one bag already in
  memory, repeated, no reading;
- ``torchmil`` (when installed): its ABMIL/TransMIL with the same encoder in the
  per-bag loop.

Small bags (``--no-small`` skips): a Musk2-sized set held in memory (102 bags,
6,598 instances, 166-d, heavy-tailed sizes like Musk2's 1-1,044; or the bags of
``--small-data``, any ``bag_id,label,f…`` table), one torch thread, hidden size
128, the best of three interleaved rounds of five epochs:

- ``torchmil, per-bag loop`` and ``torchmil, batched`` (its ``collate_fn``:
  padded bags and mask, ``--small-batch`` bags per step);
- ``ours (mil.fit), batch 1`` and ``ours (mil.fit), batch N`` (padded, masked,
  size-bucketed batches of ``--small-batch`` bags).

Every row gives wall seconds and CPU seconds (every thread of the process):
on a machine shared with other work, wall time depends on what else runs and
CPU time much less, so compare ratios within one run and read both.

The bag count can be scaled down (``--bags 100``) keeping the per-bag size: an
epoch's cost is linear in the bag count.

Then peak RSS of one epoch (and of inference) on a single 200,000 × ``--dim``
bag, each in a fresh process: the whole bag, and capped with ``max_instances``.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import peak_rss_mb, print_table, write_json
from mil.data import BagTable, StoreBags, read_mil_csv
from mil.models import create_head
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, fit, predict_bags
from slideflow_core.features import feature_info, write_features
from slideflow_core.store import StoreError, commit_store, start_store

MODEL_ID = "bench"
HUGE_BAG = 200_000
MUSK2 = {"bags": 102, "instances": 6598, "dim": 166}
SMALL_HIDDEN = 128


def write_bag_store(path: Path, n: int, dim: int, seed: int) -> None:
    """A committed store holding one ``n × dim`` float16 bag (skipped when complete)."""
    try:
        if feature_info(path, MODEL_ID)["n"] == n:
            return
    except StoreError:
        pass
    commit_store(start_store(path, {"slide_id": path.stem}), path)
    side = int(np.ceil(np.sqrt(n)))
    coords = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1) * 256
    rng = np.random.default_rng(seed)
    with write_features(
        path, MODEL_ID, tile_index=np.arange(n), coords=coords, dim=dim, info={}
    ) as writer:
        step = max(1, 2**24 // dim)  # 16 M values per block keeps the writer's memory flat
        for start in range(0, n, step):
            rows = min(step, n - start)
            writer.put(start, rng.standard_normal((rows, dim), dtype=np.float32).astype(np.float16))


def bag_source(work: Path, bags: int, instances: int, dim: int) -> StoreBags:
    """``bags`` stores under ``work`` (written on first use), labels alternating."""
    stores = []
    for i in range(bags):
        path = work / f"bag-{i:05d}.zarr"
        write_bag_store(path, instances, dim, seed=i)
        stores.append(str(path))
    ids = tuple(Path(s).stem for s in stores)
    return StoreBags(
        stores=tuple(stores), model_id=MODEL_ID, labels=tuple(i % 2 for i in range(bags)),
        ids=ids, patients=ids, sizes=(instances,) * bags, feature_dim=dim,
    )  # fmt: skip


def _head(name: str, dim: int) -> MILModel:
    torch.manual_seed(0)
    return MILModel(create_head(name, in_dim=dim, n_out=2))


def _step_fn(model: torch.nn.Module, loss_of: Callable) -> Callable[[torch.Tensor, int], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-4)

    def step(x: torch.Tensor, y: int) -> None:
        loss = loss_of(model, x, torch.tensor([y]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _ours_loss(model: MILModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x[None]).logits, y)


def _per_bag_loop(source: StoreBags, step: Callable[[torch.Tensor, int], None]) -> None:
    for i in range(len(source)):
        step(torch.from_numpy(source.features(i)), source.labels[i])


def _torchmil(name: str, dim: int) -> tuple[torch.nn.Module, Callable] | None:
    """torchmil's model with our default encoder (Linear(dim, 256) + ReLU), or None."""
    try:
        from torchmil.models import ABMIL, TransMIL
    except ImportError:
        return None
    encoder = torch.nn.Sequential(torch.nn.Linear(dim, 256), torch.nn.ReLU())
    torch.manual_seed(0)
    if name == "abmil":
        model = ABMIL(in_shape=(dim,), feat_ext=encoder)
    elif name == "transmil":
        model = TransMIL(in_shape=(dim,), feat_ext=encoder)
    else:
        return None

    def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, losses = model.compute_loss(y.float(), x[None])
        return sum(losses.values())

    return model, loss_of


def epoch_rows(source: StoreBags, heads: list[str], rounds: int = 1) -> list[dict]:
    """Seconds per epoch of every method (best of ``rounds`` interleaved rounds), with
    ratios to the naive loop, the floor and torchmil."""
    n = len(source)
    task = create_task("classification", source.labels)

    def read_all() -> None:
        for i in range(n):
            source.features(i)

    methods: dict[tuple[str, str], Callable[[], None]] = {("-", "floor: read only"): read_all}
    for head in heads:
        in_memory = torch.from_numpy(source.features(0))

        def compute_only(head: str = head, x: torch.Tensor = in_memory) -> None:
            step = _step_fn(_head(head, source.dim), _ours_loss)
            for i in range(n):
                step(x, i % 2)

        def naive(head: str = head) -> None:
            _per_bag_loop(source, _step_fn(_head(head, source.dim), _ours_loss))

        def ours(head: str = head, amp: bool = True) -> None:
            config = TrainConfig(epochs=1, patience=None, lr=2e-4, schedule="constant", amp=amp)
            fit(_head(head, source.dim), task, source, None, config)

        methods[head, "floor: compute only"] = compute_only
        methods[head, "naive per-bag loop"] = naive
        methods[head, "ours (mil.fit)"] = ours
        methods[head, "ours, float32 (amp=False)"] = functools.partial(ours, head, False)
        if _torchmil(head, source.dim) is not None:

            def peer(head: str = head) -> None:
                model = _torchmil(head, source.dim)
                assert model is not None
                _per_bag_loop(source, _step_fn(*model))

            methods[head, "torchmil, same encoder, per-bag loop"] = peer
    best = dict.fromkeys(methods, float("inf"))
    cpu = dict.fromkeys(methods, float("inf"))
    for _ in range(rounds):
        for key, run in methods.items():
            seconds, cpu_seconds = _timed(run)
            best[key], cpu[key] = min(best[key], seconds), min(cpu[key], cpu_seconds)
            print(
                f"{key[0]:9s} {key[1]:38s} {seconds:8.1f} s/epoch {cpu_seconds:8.1f} CPU s",
                flush=True,
            )
    rows = [
        {"head": head, "method": method, "s/epoch": seconds, "CPU s/epoch": cpu[head, method],
         "bags/s": n / seconds}
        for (head, method), seconds in best.items()
    ]  # fmt: skip
    read = best["-", "floor: read only"]
    for row in rows:
        head = row["head"]
        if (head, "naive per-bag loop") in best:
            row["× naive"] = best[head, "naive per-bag loop"] / row["s/epoch"]
            row["floor / this"] = max(best[head, "floor: compute only"], read) / row["s/epoch"]
        peer = (head, "torchmil, same encoder, per-bag loop")
        if peer in best:
            row["× torchmil"] = best[peer] / row["s/epoch"]
            row["× torchmil CPU"] = cpu[peer] / row["CPU s/epoch"]
    return rows


def _timed(run: Callable[[], None]) -> tuple[float, float]:
    """Wall and CPU seconds (every thread of this process) of ``run()``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, time.process_time() - start_cpu


def musk2_sized(seed: int = 0) -> BagTable:
    """102 bags, 6,598 instances, 166-d: Musk2's shape with heavy-tailed bag sizes."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.2, MUSK2["bags"])
    sizes = 1 + np.floor(weights / weights.sum() * (MUSK2["instances"] - MUSK2["bags"]))
    sizes[np.argmax(sizes)] += MUSK2["instances"] - sizes.sum()
    labels = rng.permutation(np.arange(MUSK2["bags"]) < 39).astype(int)  # 39 positive
    bags = [
        rng.standard_normal((int(n), MUSK2["dim"]), dtype=np.float32) + label
        for n, label in zip(sizes, labels, strict=True)
    ]
    return BagTable.from_arrays(bags, labels.tolist())


def _torchmil_small(dim: int, batch: int, table: BagTable) -> Callable[[], None] | None:
    """One epoch of torchmil's ABMIL (our encoder width) over ``table``, ``batch`` bags a step."""
    try:
        from torchmil.data import collate_fn
        from torchmil.models import ABMIL
    except ImportError:
        return None
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(dim, SMALL_HIDDEN), torch.nn.ReLU())
    model = ABMIL(in_shape=(dim,), feat_ext=encoder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-4)
    bags = [
        {"X": torch.from_numpy(b), "Y": torch.tensor(float(y))}
        for b, y in zip(table.bags, table.labels, strict=True)
    ]
    order = np.random.default_rng(0)

    def epoch() -> None:
        index = order.permutation(len(bags))
        for start in range(0, len(bags), batch):
            chunk = [bags[i] for i in index[start : start + batch]]
            if batch == 1:
                x, y, mask = chunk[0]["X"][None], chunk[0]["Y"][None], None
            else:
                collated = collate_fn(chunk)
                x, y, mask = collated["X"], collated["Y"], collated["mask"]
            _, losses = model.compute_loss(y, x, mask)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

    return epoch


def small_bag_rows(table: BagTable, name: str, batch: int, rounds: int = 3) -> list[dict]:
    """Seconds per epoch on small in-memory bags, best of ``rounds`` interleaved rounds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    task = create_task("classification", table.labels)

    def ours(batch_size: int) -> Callable[[], None]:
        config = TrainConfig(
            epochs=5, lr=5e-4, batch_size=batch_size, patience=None, standardize=True,
            schedule="constant",
        )  # fmt: skip

        def run() -> None:
            head = create_head("abmil", in_dim=table.dim, n_out=2, hidden_dim=SMALL_HIDDEN)
            fit(MILModel(head), task, table, None, config)

        return run

    methods: dict[str, tuple[Callable[[], None], int]] = {
        "ours (mil.fit), batch 1": (ours(1), 5),
        f"ours (mil.fit), batch {batch}": (ours(batch), 5),
    }
    for size, label in ((1, "per-bag loop"), (batch, f"batched {batch} (collate_fn)")):
        peer = _torchmil_small(table.dim, size, table)
        if peer is not None:
            methods[f"torchmil, {label}"] = (peer, 1)
    best = dict.fromkeys(methods, float("inf"))
    cpu = dict.fromkeys(methods, float("inf"))
    for _ in range(rounds):
        for method, (run, epochs) in methods.items():

            def five_epochs(run: Callable[[], None] = run, times: int = 5 // epochs) -> None:
                for _ in range(times):
                    run()

            seconds, cpu_seconds = _timed(five_epochs)
            best[method] = min(best[method], seconds / 5)
            cpu[method] = min(cpu[method], cpu_seconds / 5)
    torch.set_num_threads(threads)
    peer = "torchmil, per-bag loop"
    rows = []
    for method, seconds in best.items():
        rows.append({
            "bags": name, "method": method, "s/epoch": seconds, "CPU s/epoch": cpu[method],
            "× torchmil per-bag": best[peer] / seconds if peer in best else "",
            "× torchmil per-bag CPU": cpu[peer] / cpu[method] if peer in cpu else "",
        })  # fmt: skip
        print(f"{name:14s} {method:40s} {seconds:8.4f} s/epoch {cpu[method]:8.4f} CPU s")
    return rows


def _huge_child(store: str, dim: int, mode: str) -> None:
    """One epoch (or one prediction) on the 200k bag; prints seconds and peak RSS as JSON."""
    source = StoreBags(
        stores=(store,) * 2, model_id=MODEL_ID, labels=(0, 1), ids=("a", "b"),
        patients=("a", "b"), sizes=(HUGE_BAG,) * 2, feature_dim=dim,
    )  # fmt: skip
    task = create_task("classification", source.labels)
    model = _head("abmil", dim)
    start = time.perf_counter()
    if mode == "predict":
        predict_bags(model, task, source.subset([0]))
    else:
        cap = None if mode == "train" else int(mode.split(":")[1])
        fit(model, task, source, None, TrainConfig(epochs=1, max_instances=cap, patience=None))
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}))


def huge_bag_rows(work: Path, dim: int) -> list[dict]:
    """Peak RSS on a 200,000-instance bag, each mode in a fresh process."""
    store = work / "huge-bag.zarr"
    write_bag_store(store, HUGE_BAG, dim, seed=7)
    rows = []
    for mode, what in (
        ("train", "train, whole bag"),
        ("train:8192", "train, max_instances=8192"),
        ("predict", "predict, whole bag"),
    ):
        command = [sys.executable, __file__, "--huge-child", str(store), "--dim", str(dim)]
        out = subprocess.run([*command, "--mode", mode], capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
        rows.append({
            "bag": f"{HUGE_BAG:,} × {dim:,} (float16 store)", "ABMIL": what,
            "seconds (2 bags)": result.get("seconds", "failed"),
            "peak RSS MiB": result.get("peak_rss_mb", out.stderr[-300:]),
            "one bag as float32 MiB": HUGE_BAG * dim * 4 / 2**20,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--heads", default="abmil,transmil")
    parser.add_argument("--work", type=Path, help="folder for the bag stores (kept)")
    parser.add_argument("--quick", action="store_true", help="100 bags × 2,000 instances")
    parser.add_argument("--no-huge", action="store_true", help="skip the 200k-instance bag")
    parser.add_argument("--no-big", action="store_true", help="skip the big-bag epochs")
    parser.add_argument("--no-small", action="store_true", help="skip the small-bag epochs")
    parser.add_argument("--small-data", type=Path, help="a bag_id,label,f… table (small bags)")
    parser.add_argument("--rounds", type=int, default=1, help="big-bag rounds (best kept)")
    parser.add_argument("--small-batch", type=int, default=16, help="bags per batched step")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--huge-child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.huge_child:
        _huge_child(args.huge_child, args.dim, args.mode)
        return
    if args.quick:
        args.bags, args.instances = 100, 2000
    small: list[dict] = []
    if not args.no_small:
        table = read_mil_csv(args.small_data) if args.small_data else musk2_sized()
        name = args.small_data.name.split(".")[0] if args.small_data else "Musk2-sized"
        small = small_bag_rows(table, name, args.small_batch)
    rows: list[dict] = []
    memory: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sfc-mil-speed-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.no_big:
            start = time.perf_counter()
            source = bag_source(work, args.bags, args.instances, args.dim)
            seconds = time.perf_counter() - start
            print(f"{args.bags} bag stores ready in {seconds:.0f} s", flush=True)
            rows = epoch_rows(source, args.heads.split(","), args.rounds)
        memory = [] if args.no_huge else huge_bag_rows(work, args.dim)
    if small:
        print("\nSmall bags in memory, ABMIL (hidden 128), 1 torch thread, best of 3 rounds")
        print_table(small, list(small[0]))
    if rows:
        print(
            f"\nOne epoch, {args.bags:,} bags × {args.instances:,} instances × {args.dim:,}-d "
            f"(float16 stores), batch 1, CPU ({torch.get_num_threads()} torch threads), "
            f"best of {args.rounds} round(s)"
        )
        columns = [
            "head", "method", "s/epoch", "CPU s/epoch", "bags/s", "× naive", "floor / this",
            "× torchmil", "× torchmil CPU",
        ]  # fmt: skip
        print_table(rows, columns)
    if memory:
        print(f"\nPeak RSS on one {HUGE_BAG:,}-instance bag (fresh process each)")
        print_table(memory, list(memory[0]))
    payload = {
        "bags": args.bags, "instances": args.instances, "dim": args.dim,
        "threads": torch.get_num_threads(), "epoch": rows, "small_bags": small,
        "huge_bag": memory,
    }  # fmt: skip
    print(f"\nwrote {write_json('mil_speed', payload, args.out)}")


if __name__ == "__main__":
    main()
