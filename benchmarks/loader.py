"""The Loader with 2 worker processes, side by side with its peers, on four workloads.

Systems: ``datapipes`` (``pipe.compile(workers=2)``), PyTorch's ``DataLoader`` (a map-style
Dataset, ``batch_size``, ``num_workers=2``, ``persistent_workers=False``), ``torchdata.nodes``
0.11 (``SamplerWrapper`` [+ ``Batcher``] + ``ParallelMapper(num_workers=2, method="process")``
+ ``Loader``: for batches, each worker fetches and collates a whole batch, as torchdata's
migration guide does) and Grain 0.2.18 (``MapDataset...map(...)[.batch(...)]
.to_iter_dataset().mp_prefetch(MultiprocessingOptions(num_workers=2))``, default read
options; Grain's worker processes are always spawned). A peer whose import fails is reported
as not installed and skipped. Worker functions live in ``_work.py`` so spawned workers can
import them. Every run starts its workers, runs one epoch and stops them (what a
``DataLoader`` with ``persistent_workers=False`` does each epoch): startup is in every time.

1. **CPU-bound map**: ``_work.spin``, a pure-Python loop calibrated once at start to take
   about 2 ms, over ``range(400)``, no batching (DataLoader ``batch_size=None``), fork.
   Parallel efficiency = throughput / (2 × serial throughput), serial = the same function
   in a plain loop in this process (timed in the same rounds). Two bare forked processes
   (``multiprocessing.Pool(2).imap``, ``chunksize`` 25, pool start and stop included) are
   the ceiling.
2. **Large arrays**: 1,024 elements ``np.full((3, 224, 224), i, float32)`` (``_work.image``),
   batch 32 (collated in the workers: ``dp.collate()``, ``default_collate``, Grain's
   ``batch``), fork: MB/s delivered to this process, each batch touched by reading one
   number (its last element's first value, summed to check the order). References: the
   same bytes copied by one thread (``np.copyto`` a batch at a time, between two buffers as
   large as the epoch, written once before timing; and between two one-batch buffers, which
   stay in the cache), and this process making the same batches itself (``np.stack`` of 32
   images). "after 1st" counts the bytes after the first batch, from its arrival to the
   last batch's: no startup.
3. **Time to first batch** of workload 2, from building the loader to holding its first
   batch, with ``fork`` and ``spawn`` (shutdown after it is not timed).
4. **Memory**: a list of 1,000,000 dicts ``{"id": i, "name": "x" * 16, "tags": [i, i + 1]}``,
   map picking ``"id"``, batch 256 (collated), 2 workers, fork (Grain: spawn): each worker's
   USS (``psutil``, memory only that process holds) after the first batch and at the end of
   the epoch (the last of 10 readings through the epoch: a worker may have exited before the
   very last batch). One round (memory does not swing with the machine's speed); the list
   is built once, before any system runs.

Workloads 1 and 2 also time ``datapipes`` and ``DataLoader`` with workers kept across epochs
(``datapipes, warm``: one Loader, its first epoch run before timing; ``DataLoader,
persistent``: ``persistent_workers=True``, likewise): each run is one more epoch.

Forked workers inherit glibc's malloc thresholds from this process, and they grow once a
process frees a large block: a main process that has freed one 19 MB batch makes
``datapipes``' workers several times faster on workload 2. So everything that builds large
arrays in this process (the reference check, workload 2's serial baseline) runs in a forked
child instead, and every loader forks from a main process that has not. ``--mallopt`` sets
those thresholds high before anything runs: a what-if for all systems at once.

Before timing, ``datapipes``' output is compared with the in-process reference
(``pipe.iter()``) on small instances of each workload (fork and spawn); after timing, every
system must have delivered the same number of elements or bytes, and the same checksum.

    python benchmarks/loader.py               # 7 rounds, about 3 minutes on 2 cores
    python benchmarks/loader.py --rounds 9
    python benchmarks/loader.py --quick       # smaller workloads, 2 rounds: a smoke run
    python benchmarks/loader.py --only 2 --mallopt
"""

from __future__ import annotations

import argparse
import functools
import gc
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import _work
from _rounds import alternate, import_peers, machine, print_table, timed_row

WORKERS = 2
SPIN_SECONDS = 0.002


class Run(NamedTuple):
    """What one run delivered, and when (seconds from its start)."""

    amount: int  # elements, or bytes
    checksum: float
    first: float  # first element or batch in hand
    last: float  # last one in hand (before shutdown)
    extra: Any = None


def drain(items: Iterable[Any], start: float, touch: Callable[[Any], tuple[int, float]]) -> Run:
    count, checksum, first = 0, 0.0, None
    for x in items:
        n, c = touch(x)
        count += n
        checksum += c
        if first is None:
            first = time.perf_counter() - start
    return Run(count, checksum, first or 0.0, time.perf_counter() - start)


def touch_item(x: Any) -> tuple[int, float]:
    return 1, float(x)


def touch_batch(b: Any) -> tuple[int, float]:
    """Read one number of a batch of images: lazy transports cannot skip the delivery."""
    return int(b.nbytes), float(b[-1, 0, 0, 0])


def touch_ids(b: Any) -> tuple[int, float]:
    return len(b), float(b.sum())


def in_child(fn: Callable[[], Any]) -> Any:
    """``fn()`` run in a forked child process, its result sent back.

    Work in this process that allocates and frees large arrays changes glibc's malloc
    thresholds (``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` grow to the largest block
    freed), and forked workers inherit them: a main process that has freed one 19 MB batch
    makes ``datapipes``' workers up to several times faster (see ``--mallopt``). So what
    allocates large arrays here (the serial baseline of workload 2, the reference check)
    runs in a child, and every loader forks from the same, untouched main process."""
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def target() -> None:
        try:
            send.send(("ok", fn()))
        except BaseException as exc:
            send.send(("error", repr(exc)))

    proc = ctx.Process(target=target)
    proc.start()
    kind, value = receive.recv()
    proc.join()
    if kind != "ok":
        raise SystemExit(f"in a child process: {value}")
    return value


class Copier:
    """A forked child holding two epoch-sized buffers, written once, that times copies on
    request: so that this process (and every worker forked from it) does not carry 1.2 GB."""

    def __init__(self, n: int, batch: int) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=self._serve, args=(child, n, batch), daemon=True)
        self.proc.start()
        child.close()

    @staticmethod
    def _serve(conn: Any, n: int, batch: int) -> None:
        import numpy as np

        src = np.ones((n, *_work.IMAGE_SHAPE), np.float32)
        dst = np.zeros_like(src)  # both written once: pre-faulted
        while (what := conn.recv()) is not None:
            start = time.perf_counter()
            for s in range(0, n, batch):
                if what == "epoch":  # every batch to its own place: memory, not cache
                    np.copyto(dst[s : s + batch], src[s : s + batch])
                else:  # the same one-batch buffers each time: they stay in the cache
                    k = min(batch, n - s)
                    np.copyto(dst[:k], src[:k])
            conn.send(time.perf_counter() - start)

    def run(self, what: str) -> float:
        self.conn.send(what)
        return float(self.conn.recv())

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join()


def raise_malloc_thresholds() -> None:
    """``--mallopt``: fix glibc's thresholds at what a main process that has freed a large
    array ends up with, before any worker starts, so that forked workers neither ``mmap``
    each image nor give the heap back to the kernel after each batch."""
    import ctypes

    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 256 << 20)
    state = "set" if ok else "refused"
    print(f"--mallopt: M_MMAP_THRESHOLD = 32 MiB, M_TRIM_THRESHOLD = 256 MiB: {state}")


# -- the peers ------------------------------------------------------------------------------


def peers() -> dict[str, Any]:
    """The peer libraries that import, by system name; those that do not are announced."""
    return import_peers(
        {"DataLoader": "torch.utils.data", "torchdata.nodes": "torchdata.nodes", "Grain": "grain"}
    )


def nodes_loader(
    tn: Any, source: Any, fn: Callable[[Any], Any], method: str, batch: int | None
) -> tuple[Any, Any]:
    """A torchdata.nodes Loader over indices ``source``; with ``batch``, each worker maps a
    list of indices to a collated batch. Returns ``(loader, mapper)``."""
    from torch.utils.data import SequentialSampler

    node = tn.SamplerWrapper(SequentialSampler(source))
    if batch is not None:
        node = tn.Batcher(node, batch_size=batch, drop_last=False)
    mapper = tn.ParallelMapper(
        node, fn, num_workers=WORKERS, method="process", multiprocessing_context=method
    )
    return tn.Loader(mapper), mapper


def nodes_shutdown(mapper: Any) -> None:
    """Stop a ParallelMapper's workers (torchdata.nodes 0.11 has no public close)."""
    it = getattr(getattr(mapper, "_it", None), "_it", None)
    if it is not None and hasattr(it, "_shutdown"):
        it._shutdown()


def warm_systems(
    pipe: Any,
    dataset: Any,
    batch: int | None,
    touch: Callable[[Any], tuple[int, float]],
    found: dict[str, Any],
    closers: list[Callable[[], None]],
) -> dict[str, Any]:
    """datapipes and DataLoader with workers kept across epochs (started, and one epoch run,
    before timing): each run is one more epoch, without startup."""
    loader = pipe.compile(workers=WORKERS, start_method="fork")
    for _ in loader:
        pass
    closers.append(loader.close)

    def datapipes() -> Run:
        return drain(loader, time.perf_counter(), touch)

    systems = {"datapipes, warm": datapipes}
    if "DataLoader" in found:
        dl = found["DataLoader"].DataLoader(
            dataset,
            batch_size=batch,
            num_workers=WORKERS,
            multiprocessing_context="fork",
            persistent_workers=True,
        )
        for _ in dl:
            pass

        def dataloader() -> Run:
            return drain(dl, time.perf_counter(), touch)

        def stop() -> None:
            it = getattr(dl, "_iterator", None)
            if it is not None:
                it._shutdown_workers()

        closers.append(stop)
        systems["DataLoader, persistent"] = dataloader
    return systems


_NODES_NOISE = [0]


def quiet_nodes_shutdown() -> None:
    """torchdata.nodes' order-keeping thread, when its mapper is shut down with results still
    queued, fails to fetch their shared memory from workers already gone and prints the
    traceback; count those instead of printing them (the run they belong to is over)."""
    default = threading.excepthook

    def hook(args: Any) -> None:
        name = args.thread.name if args.thread is not None else ""
        if "_sort_worker" in name and issubclass(args.exc_type, (OSError, EOFError)):
            _NODES_NOISE[0] += 1
            return
        default(args)

    threading.excepthook = hook


def grain_iter(grain: Any, ds: Any) -> Any:
    options = grain.MultiprocessingOptions(num_workers=WORKERS)
    return iter(ds.to_iter_dataset().mp_prefetch(options))


def close(it: Any) -> None:
    closer = getattr(it, "close", None)
    if closer is not None:
        closer()


def alternate_then_close(
    systems: dict[str, Any], rounds: int, closers: list[Callable[[], None]]
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """``alternate`` the systems (their times and runs), then stop what ``closers`` stop
    (warm loaders, helper processes), also when a run fails."""
    results: dict[str, list[Any]] = {}
    try:
        return alternate(systems, rounds, results=results), results
    finally:
        for stop in closers:
            stop()


# -- workload 1: CPU-bound map ---------------------------------------------------------------


def cpu_systems(
    n: int, fn: Callable[[int], int], found: dict[str, Any], closers: list[Callable[[], None]]
) -> dict[str, Any]:
    import datapipes as dp

    def serial() -> Run:
        start = time.perf_counter()
        return drain((fn(i) for i in range(n)), start, touch_item)

    def pool() -> Run:
        start = time.perf_counter()
        with mp.get_context("fork").Pool(WORKERS) as p:
            run = drain(p.imap(fn, range(n), chunksize=25), start, touch_item)
        return run

    pipe = dp.from_sequence(range(n)) | dp.map(fn)
    dataset = _work.Mapped(range(n), fn)
    systems: dict[str, Any] = {"serial (this process)": serial, "Pool(2).imap": pool}
    systems |= loader_systems(
        pipe, dataset, fn, lambda grain: grain.MapDataset.range(n).map(fn), None, touch_item,
        found, "fork",
    )
    systems |= warm_systems(pipe, dataset, None, touch_item, found, closers)
    return systems


def cpu_workload(n: int, rounds: int, loops: int, found: dict[str, Any]) -> list[tuple[Any, ...]]:
    fn = functools.partial(_work.spin, loops=loops)
    closers: list[Callable[[], None]] = []
    systems = cpu_systems(n, fn, found, closers)
    times, results = alternate_then_close(systems, rounds, closers)
    expected = sum(fn(i) for i in range(n))
    check(results, lambda r: (r.amount, r.checksum), (n, expected), "CPU-bound map")
    serial = n / min(times["serial (this process)"])
    dl_best = min(times["DataLoader"]) if "DataLoader" in times else None
    rows = []
    for name, ts in times.items():
        rate = n / min(ts)
        workers = 1 if name.startswith("serial") else WORKERS
        rows.append(
            timed_row(name, ts, dl_best, f"{rate:,.0f}", f"{rate / (workers * serial):.1%}")
        )
    print(
        f"\n### 1. CPU-bound map: {n} elements × {SPIN_SECONDS * 1e3:.0f} ms (spin loops = "
        f"{loops:,}), no batching, {WORKERS} workers, fork, best of {rounds} rounds\n"
    )
    print_table(
        rows, ["system", "best s", "median s", "items/s", "efficiency", "speed vs DataLoader"]
    )
    return rows


# -- workload 2: large arrays -----------------------------------------------------------------


def array_pipe(n: int, batch: int) -> Any:
    import datapipes as dp

    return dp.from_sequence(range(n)) | dp.map(_work.image) | dp.batch(batch) | dp.collate()


def array_systems(
    n: int, batch: int, found: dict[str, Any], method: str, *, first_only: bool = False
) -> dict[str, Any]:
    """The loaders of workload 2 (each run returns a :class:`Run`); with ``first_only``, each
    stops after the first batch (time to first batch), shutdown left out of ``Run.first``."""
    from torch.utils.data import default_collate

    dataset = _work.Mapped(range(n), _work.image)
    return loader_systems(
        array_pipe(n, batch), dataset, _work.FetchAndCollate(dataset, default_collate),
        lambda grain: grain.MapDataset.range(n).map(_work.image).batch(batch), batch,
        touch_batch, found, method, first_only=first_only,
    )


def measure(
    it: Iterator[Any], start: float, touch: Callable[[Any], tuple[int, float]], first_only: bool
) -> Run:
    """Time ``it`` from ``start``: to its end, or (``first_only``) to its first item."""
    if not first_only:
        return drain(it, start, touch)
    b = next(it)
    first = time.perf_counter() - start
    return Run(*touch(b), first, first)


def loader_systems(
    pipe: Any,
    dataset: Any,
    nodes_fn: Callable[[Any], Any],
    grain_ds: Callable[[Any], Any],
    batch: int | None,
    touch: Callable[[Any], tuple[int, float]],
    found: dict[str, Any],
    method: str,
    *,
    first_only: bool = False,
) -> dict[str, Any]:
    """datapipes (``pipe``) and the peers on the same work, started with ``method``, each run
    a fresh loader stopped at its end: DataLoader over ``dataset``, torchdata.nodes mapping
    ``nodes_fn`` over indices (lists of indices with ``batch``), Grain over ``grain_ds(grain)``
    (it always spawns: not among the first batches with fork)."""

    def datapipes() -> Run:
        start = time.perf_counter()
        with pipe.compile(workers=WORKERS, start_method=method) as loader:
            it = iter(loader)
            run = measure(it, start, touch, first_only)
            close(it)
            return run

    systems: dict[str, Any] = {"datapipes": datapipes}
    if "DataLoader" in found:
        tud = found["DataLoader"]

        def dataloader() -> Run:
            start = time.perf_counter()
            dl = tud.DataLoader(
                dataset, batch_size=batch, num_workers=WORKERS, multiprocessing_context=method
            )
            it = iter(dl)
            run = measure(it, start, touch, first_only)
            it._shutdown_workers()
            return run

        systems["DataLoader"] = dataloader
    if "torchdata.nodes" in found:
        tn = found["torchdata.nodes"]

        def nodes() -> Run:
            start = time.perf_counter()
            loader, mapper = nodes_loader(tn, range(len(dataset)), nodes_fn, method, batch)
            run = measure(iter(loader), start, touch, first_only)
            nodes_shutdown(mapper)
            return run

        systems["torchdata.nodes"] = nodes
    if "Grain" in found and (method == "spawn" or not first_only):
        grain = found["Grain"]

        def grain_run() -> Run:
            start = time.perf_counter()
            it = grain_iter(grain, grain_ds(grain))
            run = measure(it, start, touch, first_only)
            close(it)
            return run

        systems["Grain" if first_only else "Grain (spawn)"] = grain_run
    return systems


def array_workload(n: int, batch: int, rounds: int, found: dict[str, Any]) -> list[tuple[Any, ...]]:
    import numpy as np

    total = n * _work.IMAGE_BYTES
    expected = float(sum(min(s + batch, n) - 1 for s in range(0, n, batch)))
    copier = Copier(n, batch)

    def memcpy() -> Run:
        t = copier.run("epoch")
        return Run(total, expected, t, t)

    def memcpy_hot() -> Run:
        t = copier.run("batch")
        return Run(total, expected, t, t)

    def serial_batches() -> Run:
        start = time.perf_counter()
        batches = (
            np.stack([_work.image(i) for i in range(s, min(s + batch, n))])
            for s in range(0, n, batch)
        )
        return drain(batches, start, touch_batch)

    def serial() -> Run:
        return in_child(serial_batches)

    systems: dict[str, Any] = {
        "memcpy (1 thread)": memcpy,
        "memcpy (1 thread, one batch's buffers)": memcpy_hot,
        "serial (this process)": serial,
    }
    systems |= array_systems(n, batch, found, "fork")
    closers: list[Callable[[], None]] = []
    systems |= warm_systems(
        array_pipe(n, batch),
        _work.Mapped(range(n), _work.image),
        batch,
        touch_batch,
        found,
        closers,
    )
    closers.append(copier.close)
    times, results = alternate_then_close(systems, rounds, closers)
    check(results, lambda r: (r.amount, r.checksum), (total, expected), "large arrays")
    # these run in child processes (see in_child, Copier): their own clocks, not the calls'
    for name in (
        "memcpy (1 thread)",
        "memcpy (1 thread, one batch's buffers)",
        "serial (this process)",
    ):
        times[name] = [r.last for r in results[name]]
    dl_best = min(times["DataLoader"]) if "DataLoader" in times else None
    rows = []
    for name, ts in times.items():
        best = min(ts)
        after = (
            max(
                (total - batch * _work.IMAGE_BYTES) / (r.last - r.first)
                for r in results[name]
                if r.last > r.first
            )
            if not name.startswith("memcpy")
            else total / best
        )
        mb_s = f"{total / best / 1e6:,.0f}"
        rows.append(timed_row(name, ts, dl_best, mb_s, f"{after / 1e6:,.0f}"))
    print(
        f"\n### 2. Large arrays: {n} × float32 3×224×224 ({total / 1e6:,.0f} MB), batch "
        f"{batch}, {WORKERS} workers, fork, best of {rounds} rounds\n"
    )
    print_table(
        rows, ["system", "best s", "median s", "MB/s", "MB/s after 1st", "speed vs DataLoader"]
    )
    return rows


# -- workload 3: time to first batch ----------------------------------------------------------


def first_batch_workload(
    n: int, batch: int, rounds: int, spawn_rounds: int, found: dict[str, Any]
) -> list[tuple[Any, ...]]:
    best: dict[tuple[str, str], float] = {}
    for method, r in (("fork", rounds), ("spawn", spawn_rounds)):
        systems = array_systems(n, batch, found, method, first_only=True)
        results: dict[str, list[Any]] = {}
        alternate(systems, r, results=results)
        check(results, lambda run: run.amount, batch * _work.IMAGE_BYTES, f"first batch, {method}")
        for name, runs in results.items():
            best[name, method] = min(run.first for run in runs)
    names = list(dict.fromkeys(name for name, _ in best))
    rows = []
    for name in names:
        cells = []
        for method in ("fork", "spawn"):
            t = best.get((name, method))
            dl = best.get(("DataLoader", method))
            cells += [
                "-" if t is None else f"{t:.3f}",
                "-" if t is None or dl is None else f"{t / dl:.2f}×",
            ]
        rows.append((name, *cells))
    print(
        f"\n### 3. Time to first batch (workload 2's loader, batch {batch}, {WORKERS} workers), "
        f"best of {rounds} (fork) and {spawn_rounds} (spawn) rounds\n"
    )
    print_table(rows, ["system", "fork s", "vs DataLoader", "spawn s", "vs DataLoader"])
    return rows


# -- workload 4: memory -----------------------------------------------------------------------


def uss_mb(pids: list[int]) -> list[float | None]:
    import psutil

    out: list[float | None] = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid).memory_full_info().uss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            out.append(None)
    return out


def new_workers(before: set[int]) -> list[int]:
    """Child processes started since ``before``, less multiprocessing's helper processes."""
    import psutil

    pids = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in before:
            continue
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" in cmd or "forkserver" in cmd:
            continue
        pids.append(child.pid)
    return sorted(pids)


def watched(
    items: Iterable[Any], start: float, n_batches: int, pids: Callable[[], list[int]]
) -> Run:
    """Drain ``items`` (batches of ids), reading the workers' USS after the first batch and
    at 10 points through the epoch."""
    marks = {max(1, round(n_batches * k / 10)) - 1 for k in range(1, 11)}
    readings: list[list[float | None]] = []
    workers: list[int] = []
    count, checksum, first = 0, 0.0, 0.0
    for i, b in enumerate(items):
        n, c = touch_ids(b)
        count += n
        checksum += c
        if i == 0:
            first = time.perf_counter() - start
            workers = pids()
            readings.append(uss_mb(workers))
        elif i in marks:
            readings.append(uss_mb(workers))
    last = time.perf_counter() - start
    firsts = readings[0] if readings else []
    ends = [
        next((r[w] for r in reversed(readings) if r[w] is not None), None)
        for w in range(len(workers))
    ]
    return Run(count, checksum, first, last, (workers, firsts, ends))


def memory_workload(n: int, batch: int, found: dict[str, Any]) -> list[tuple[Any, ...]]:
    import psutil

    import datapipes as dp

    t = time.perf_counter()
    items = [_work.record(i) for i in range(n)]
    built = time.perf_counter() - t
    n_batches = -(-n // batch)
    systems: dict[str, Any] = {}

    def datapipes() -> Run:
        start = time.perf_counter()
        pipe = dp.from_sequence(items) | dp.map(_work.pick_id) | dp.batch(batch) | dp.collate()
        with pipe.compile(workers=WORKERS, start_method="fork") as loader:
            return watched(loader, start, n_batches, lambda: loader.worker_pids)

    systems["datapipes"] = datapipes
    if "DataLoader" in found:
        tud = found["DataLoader"]

        def dataloader() -> Run:
            start = time.perf_counter()
            dl = tud.DataLoader(
                _work.Mapped(items, _work.pick_id),
                batch_size=batch,
                num_workers=WORKERS,
                multiprocessing_context="fork",
            )
            it = iter(dl)
            return watched(it, start, n_batches, lambda: [w.pid for w in it._workers])

        systems["DataLoader"] = dataloader
    if "torchdata.nodes" in found:
        tn = found["torchdata.nodes"]
        from torch.utils.data import default_collate

        fetch = _work.FetchAndCollate(_work.Mapped(items, _work.pick_id), default_collate)

        def nodes() -> Run:
            before = {c.pid for c in psutil.Process().children(recursive=True)}
            start = time.perf_counter()
            loader, mapper = nodes_loader(tn, range(n), fetch, "fork", batch)
            run = watched(loader, start, n_batches, lambda: new_workers(before))
            nodes_shutdown(mapper)
            return run

        systems["torchdata.nodes"] = nodes
    if "Grain" in found:
        grain = found["Grain"]

        def grain_run() -> Run:
            before = {c.pid for c in psutil.Process().children(recursive=True)}
            start = time.perf_counter()
            ds = grain.MapDataset.source(items).map(_work.pick_id).batch(batch)
            it = grain_iter(grain, ds)
            run = watched(it, start, n_batches, lambda: new_workers(before))
            close(it)
            return run

        systems["Grain (spawn)"] = grain_run
    results: dict[str, list[Any]] = {}
    times = alternate(systems, 1, results=results)
    check(results, lambda r: (r.amount, r.checksum), (n, float(n * (n - 1) // 2)), "memory")
    rows = []
    for name, ts in times.items():
        pids, firsts, ends = results[name][0].extra
        if len(pids) != WORKERS:
            print(f"note: {name}: found {len(pids)} worker processes, expected {WORKERS}")
        pairs = list(zip(firsts, ends, strict=True))
        rows.append(
            (
                name,
                " / ".join(f"{f:,.0f}" if f else "-" for f in firsts),
                " / ".join(f"{e:,.0f}" if e else "-" for e in ends),
                " / ".join(f"{e - f:+,.0f}" if f and e else "-" for f, e in pairs),
                " / ".join(f"{(e - f) / f:+.0%}" if f and e else "-" for f, e in pairs),
                f"{ts[0]:.2f}",
            )
        )
    print(
        f"\n### 4. Memory: from_sequence over a list of {n:,} dicts (built in {built:.1f} s), "
        f"map picking a field, batch {batch}, {WORKERS} workers, fork, one round\n"
    )
    print_table(
        rows,
        [
            "system",
            "USS after 1st batch (MB, per worker)",
            "USS at end (MB)",
            "growth (MB)",
            "growth (%)",
            "epoch s",
        ],
    )
    return rows


# -- checks -----------------------------------------------------------------------------------


def check(
    results: dict[str, list[Any]], key: Callable[[Any], Any], expected: Any, what: str
) -> None:
    """Every run of every system delivered ``expected`` (count, checksum)."""
    for name, runs in results.items():
        for run in runs:
            if key(run) != expected:
                raise SystemExit(f"{what}: {name} delivered {key(run)}, expected {expected}")


def check_reference(loops: int) -> None:
    """datapipes' Loader yields what ``pipe.iter()`` yields, on small instances."""
    import numpy as np
    import torch

    import datapipes as dp

    fn = functools.partial(_work.spin, loops=max(1, loops // 100))
    pipe = dp.from_sequence(range(40)) | dp.map(fn)
    with pipe.compile(workers=WORKERS, start_method="fork") as loader:
        assert list(loader) == list(pipe.iter()), "CPU-bound map differs from pipe.iter()"

    pipe = array_pipe(70, 32)
    for method in ("fork", "spawn"):
        with pipe.compile(workers=WORKERS, start_method=method) as loader:
            got = list(loader)
        want = list(pipe.iter())
        assert len(got) == len(want) == 3, f"large arrays ({method}): {len(got)} batches"
        for g, w in zip(got, want, strict=True):
            assert isinstance(g, torch.Tensor) and torch.equal(g, w), f"large arrays ({method})"
        del got

    items = [_work.record(i) for i in range(20_000)]
    pipe = dp.from_sequence(items) | dp.map(_work.pick_id) | dp.batch(256) | dp.collate()
    with pipe.compile(workers=WORKERS, start_method="fork") as loader:
        assert "pickled once" in loader.explain(), "the shared list is not in use"
        got = [b.numpy() for b in loader]
    want = [b.numpy() for b in pipe.iter()]
    assert len(got) == len(want) and all(
        np.array_equal(g, w) for g, w in zip(got, want, strict=True)
    )
    print("datapipes' Loader output equals pipe.iter() on small instances: ok")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds of each timed workload")
    ap.add_argument("--quick", action="store_true", help="small workloads, 2 rounds: a smoke run")
    ap.add_argument("--only", default="1234", help="which workloads to run, e.g. 12")
    ap.add_argument(
        "--mallopt",
        action="store_true",
        help="what-if: raise glibc's malloc thresholds in this process before any worker "
        "starts (forked workers inherit them)",
    )
    args = ap.parse_args(argv)
    rounds = 2 if args.quick and "--rounds" not in " ".join(argv or sys.argv) else args.rounds
    quick = args.quick
    cpu_n, arr_n, mem_n = (100, 256, 100_000) if quick else (400, 1024, 1_000_000)
    spawn_rounds = 1 if quick else rounds

    found = peers()
    quiet_nodes_shutdown()
    if args.mallopt:
        raise_malloc_thresholds()
    print(f"machine: {machine()}")
    versions = [f"numpy {__import__('numpy').__version__}"]
    if "torchdata.nodes" in found:
        versions.append(f"torchdata {sys.modules['torchdata'].__version__}")
    if "Grain" in found:
        versions.append(f"grain {found['Grain'].__version__}")
    print("versions: " + ", ".join(versions))
    given = sys.argv[1:] if argv is None else argv
    print(f"command: python benchmarks/loader.py {' '.join(given)}")
    print(f"load average before: {load()} (other work on the machine lowers every figure)")
    loops = _work.calibrate_spin(SPIN_SECONDS)
    in_child(functools.partial(check_reference, loops))
    t = time.perf_counter()
    if "1" in args.only:
        cpu_workload(cpu_n, rounds, loops, found)
    if "2" in args.only:
        array_workload(arr_n, 32, rounds, found)
    if "3" in args.only:
        first_batch_workload(arr_n, 32, rounds, spawn_rounds, found)
    if "4" in args.only:
        gc.collect()
        memory_workload(mem_n, 256, found)
    if _NODES_NOISE[0]:
        print(
            f"\n(torchdata.nodes: {_NODES_NOISE[0]} tracebacks of its order-keeping thread "
            "after shutdown were not printed)"
        )
    print(f"\n(timed workloads took {time.perf_counter() - t:.0f} s; load average after: {load()})")


if __name__ == "__main__":
    main()
