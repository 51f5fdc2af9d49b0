"""Before and after: issue 11's three performance figures for two source trees of datapipes.

Both trees are the package ``datapipes``, so each is imported in a process of its own: this
script starts one child process per tree (``PYTHONPATH=<tree>``, checked against the
imported ``datapipes.__file__``) and one for the yardsticks (hand-written generators and
PyTorch's DataLoader, with no ``datapipes`` imported), and asks them in turn, one request at
a time, to run one measurement; each child times its own run (``_rounds.alternate``, one
round) and sends the result back as a line of JSON. The systems alternate in rounds
(before, after, DataLoader, before, after, DataLoader, ...), and each system's best round is
reported. The workloads and loaders are those of ``overhead.py`` and ``loader.py``,
imported from this folder (the "after" tree's, whatever ``--before`` and ``--after`` are):

a. **Per-element overhead** (``overhead.py``): 1,000,000 ints, 5 maps, ``batch(64)``, in
   one process: ns per item, and datapipes' best time ÷ the hand-written generators' best
   time (``best ÷ hand``; target <= 1.00, as fast as the generators or faster).
   DataLoader (``num_workers=0``, the same Dataset as in ``overhead.py``) for reference.
b. **Large arrays** (``loader.py`` workload 2): 1,024 float32 3×224×224 elements, batch 32
   collated in 2 forked workers, a fresh loader each run (start, one epoch, stop): MB/s,
   and datapipes' MB/s ÷ DataLoader's (target >= 3.00).
c. **Time to first batch with spawn** (``loader.py`` workload 3): the same loader started
   with ``start_method="spawn"`` (DataLoader: ``multiprocessing_context="spawn"``), from
   building it to holding its first batch: seconds, and datapipes' ÷ DataLoader's (target
   <= 0.30).

Before timing, each tree's output is checked: ``overhead.check_outputs`` (the pipe equals
the hand-written generators on 10,037 items) and ``loader.check_reference`` (the Loader
equals ``pipe.iter()`` on small instances, fork and spawn); DataLoader's overhead output is
checked too. After timing, every run of every system must have delivered the same item
count, byte count and checksum, or the script stops.

``--before`` defaults to a git worktree of commit 9dab1a3 (the last commit before the stage
redesign) at ``/tmp/datapipes-9dab1a3``, which the script adds (``git worktree add
--detach``) if it is missing; ``--after`` defaults to this repository's root, that is its
working tree as it is, uncommitted changes included.

    python benchmarks/versions.py                  # about 2 minutes on 2 cores
    python benchmarks/versions.py --quick          # smaller workloads, 2 rounds: a smoke run
    python benchmarks/versions.py --before /tmp/old --after . --rounds 9 --only ac
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import io
import json
import os
import select
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _work
import loader
import overhead
from _rounds import alternate, machine, print_table, timed_row

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEFORE_COMMIT = "9dab1a3"
BATCH = 32
TIMEOUT_S = 300  # one request to a child (its setup included)

#: workload -> (the figure, its target as text, whether a ratio meets it)
TARGETS: dict[str, tuple[str, str, Callable[[float], bool]]] = {
    "a": ("overhead: datapipes ÷ hand, best time per item", "<= 1.00", lambda r: r <= 1.0),
    "b": ("large arrays: datapipes MB/s ÷ DataLoader's", ">= 3.00", lambda r: r >= 3.0),
    "c": ("first batch, spawn: datapipes s ÷ DataLoader's", "<= 0.30", lambda r: r <= 0.3),
}


# -- the child processes ------------------------------------------------------------------------


class Runner:
    """In a child: builds the systems it is asked for and runs one of them per request."""

    def __init__(self, role: str, tree: str | None) -> None:
        self.role = role
        self.tree = tree
        self.systems: dict[tuple[str, str], Callable[[], Any]] = {}

    def setup(self, workloads: str, items: int, images: int) -> dict[str, Any]:
        log: list[str] = []
        errors: dict[str, str] = {}
        where = None
        if self.role == "tree":
            import datapipes

            where = str(Path(datapipes.__file__).resolve())
            if not where.startswith(str(Path(self.tree or "").resolve()) + os.sep):
                raise RuntimeError(f"datapipes imported from {where}, not from {self.tree}")
        small = min(items, 10_000) + 37  # + 37: a short last batch
        for w in workloads:
            try:
                log += self._build(w, items, images, small)
            except (Exception, SystemExit) as exc:
                errors[w] = f"{type(exc).__name__}: {exc}"
                log.append(f"workload {w}: setup failed: {traceback.format_exc()}")
        if self.role == "tree" and ("b" in workloads or "c" in workloads):
            try:  # its own "ok" line is printed in a forked child: not shown, logged here
                with contextlib.redirect_stdout(io.StringIO()):
                    loader.in_child(functools.partial(loader.check_reference, 100))
                log.append("Loader output equals pipe.iter() on small instances: ok")
            except BaseException as exc:
                for w in "bc":
                    errors.setdefault(w, f"loader.check_reference: {exc}")
                log.append(f"loader.check_reference failed: {exc}")
        return {"datapipes": where, "log": log, "errors": errors}

    def _build(self, w: str, items: int, images: int, small: int) -> list[str]:
        """The systems of workload ``w`` for this child's role; returns what was checked."""
        if w == "a":
            batches: dict[str, Callable[[int], Iterator[list[int]]]]
            if self.role == "tree":
                batches = {"datapipes": overhead.datapipes_batches}
            else:
                batches = {"hand": overhead.hand_batches, "DataLoader": overhead.dataloader_batches}
            for name, fn in batches.items():
                self.systems[w, name] = functools.partial(overhead.consume_batches, fn, items)
            with contextlib.redirect_stdout(io.StringIO()) as said:
                overhead.check_outputs(batches, small)  # SystemExit if one differs
            return said.getvalue().splitlines()
        method, first_only = ("fork", False) if w == "b" else ("spawn", True)
        if self.role == "tree":
            systems = loader.array_systems(images, BATCH, {}, method, first_only=first_only)
            self.systems[w, "datapipes"] = systems["datapipes"]
        else:
            import torch.utils.data as tud

            dataset = _work.Mapped(range(images), _work.image)
            # only DataLoader is built: no pipe, torchdata.nodes or Grain
            systems = loader.loader_systems(
                None,
                dataset,
                _not_built,
                _not_built,
                BATCH,
                loader.touch_batch,
                {"DataLoader": tud},
                method,
                first_only=first_only,
            )
            self.systems[w, "DataLoader"] = systems["DataLoader"]
        return []

    def run(self, workload: str, system: str) -> dict[str, Any]:
        results: dict[str, list[Any]] = {}
        times = alternate({system: self.systems[workload, system]}, 1, results=results)
        value = results[system][0]
        if isinstance(value, loader.Run):
            value = [value.amount, value.checksum, value.first, value.last]
        imported = "datapipes" in sys.modules
        return {"seconds": times[system][0], "value": value, "imported": imported}


def _not_built(_: Any) -> Any:
    raise AssertionError("only DataLoader is built in the yardsticks' process")


def child_main(role: str, tree: str | None) -> None:
    """Answer requests (JSON lines on stdin) with JSON lines on the original stdout; anything
    else printed (by this process or its workers) goes to stderr."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    runner = Runner(role, tree)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "setup":
                answer = runner.setup(request["workloads"], request["items"], request["images"])
            else:
                answer = runner.run(request["workload"], request["system"])
        except (Exception, SystemExit) as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        reply.write(json.dumps(answer) + "\n")


class Child:
    """The parent's handle on one child process."""

    def __init__(self, label: str, role: str, tree: Path | None) -> None:
        self.label = label
        self.role = role
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", role]
        if tree is not None:
            cmd += ["--tree", str(tree)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tree or ROOT,
        )
        # what the child and its workers print, each line marked with the child's name
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            sys.stderr.write(f"[{self.label}] {line}")

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            state = "timed out" if not ready else f"exited ({self.proc.poll()})"
            raise RuntimeError(f"{self.label}: the child process {state}")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(request)
        return self.receive()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the trees ----------------------------------------------------------------------------------


def git(tree: Path, *args: str) -> str:
    """A read-only git command in ``tree`` (no optional index writes)."""
    out = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(tree), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def before_worktree(path: Path) -> Path:
    """``path``, a worktree of BEFORE_COMMIT with ``datapipes/`` unmodified; added if missing."""
    commit = git(ROOT, "rev-parse", f"{BEFORE_COMMIT}^{{commit}}")
    if not path.exists():
        print(f"adding a worktree of {BEFORE_COMMIT} at {path}")
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    head = git(path, "rev-parse", "HEAD")
    if head != commit or git(path, "status", "--porcelain", "--", "datapipes"):
        raise SystemExit(
            f"{path} is not an unmodified checkout of {BEFORE_COMMIT} (HEAD {head[:7]}): "
            "remove it or pass --before"
        )
    return path


def describe(tree: Path) -> str:
    """The tree's commit, and how many files under ``datapipes/`` differ from it."""
    try:
        head = git(tree, "rev-parse", "--short", "HEAD")
        changed = git(tree, "status", "--porcelain", "--", "datapipes").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"{tree} (not a git checkout)"
    state = f"{len(changed)} files under datapipes/ changed" if changed else "unmodified"
    return f"{tree} at {head}, {state}"


# -- the parent ---------------------------------------------------------------------------------


def run_rounds(
    workload: str, systems: dict[str, tuple[Child, str]], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` rounds of the systems (label -> (child, system)), in order; each answer
    ({"seconds", "value"}) per label, in round order. A system that fails is reported and
    left out of later rounds."""
    failed: dict[str, str] = {}

    def one(label: str, child: Child, system: str) -> dict[str, Any] | None:
        if label in failed:
            return None
        answer = child.ask({"op": "run", "workload": workload, "system": system})
        if "error" in answer:
            failed[label] = answer["error"]
            print(f"{label}: workload {workload} failed:\n{answer['traceback']}", file=sys.stderr)
            return None
        if answer["imported"] != (child.role == "tree"):  # the yardsticks never import it
            raise SystemExit(f"{label}: datapipes imported: {answer['imported']}")
        return answer

    runs: dict[str, Callable[[], object]] = {
        label: functools.partial(one, label, child, system)
        for label, (child, system) in systems.items()
    }
    results: dict[str, list[Any]] = {}
    alternate(runs, rounds, results=results)
    for label, error in failed.items():
        print(f"note: {label} dropped from workload {workload}: {error}")
    return {label: answers for label, answers in results.items() if label not in failed and answers}


def overhead_table(answers: dict[str, list[dict[str, Any]]], n: int, rounds: int) -> dict:
    loader.check(
        {k: [a["value"] for a in v] for k, v in answers.items()}, lambda c: c, n, "overhead"
    )
    times = {label: [a["seconds"] for a in v] for label, v in answers.items()}
    base = min(times["hand"]) if "hand" in times else None
    rows = []
    for label, ts in times.items():
        best = min(ts)
        rows.append(
            (
                label,
                f"{best / n * 1e9:.0f}",
                f"{n / best:,.0f}",
                f"{statistics.median(ts) / n * 1e9:.0f}",
                "-" if base is None else f"{best / base:.2f}",
            )
        )
    print(
        f"\n### a. Per-element overhead: {n:,} ints, {overhead.MAPS} maps, "
        f"batch({overhead.BATCH}), one process; best of {rounds} rounds\n"
    )
    print_table(rows, ["system", "best ns/item", "best items/s", "median ns/item", "best ÷ hand"])
    return {
        label: min(times[label]) / base
        for label in times
        if base is not None and label.startswith("datapipes")
    }


def arrays_table(answers: dict[str, list[dict[str, Any]]], n: int, rounds: int) -> dict:
    total = n * _work.IMAGE_BYTES
    expected = float(sum(min(s + BATCH, n) - 1 for s in range(0, n, BATCH)))
    runs = {label: [loader.Run(*a["value"]) for a in v] for label, v in answers.items()}
    loader.check(runs, lambda r: (r.amount, r.checksum), (total, expected), "large arrays")
    times = {label: [a["seconds"] for a in v] for label, v in answers.items()}
    dl_best = min(times["DataLoader"]) if "DataLoader" in times else None
    rows = []
    for label, ts in times.items():
        after = max(
            (
                (total - BATCH * _work.IMAGE_BYTES) / (r.last - r.first)
                for r in runs[label]
                if r.last > r.first
            ),
            default=0.0,
        )
        rows.append(
            timed_row(label, ts, dl_best, f"{total / min(ts) / 1e6:,.0f}", f"{after / 1e6:,.0f}")
        )
    print(
        f"\n### b. Large arrays: {n:,} × float32 3×224×224 ({total / 1e6:,.0f} MB), batch "
        f"{BATCH}, {loader.WORKERS} workers, fork; best of {rounds} rounds\n"
    )
    print_table(
        rows, ["system", "best s", "median s", "MB/s", "MB/s after 1st", "speed vs DataLoader"]
    )
    return {
        label: dl_best / min(times[label])
        for label in times
        if dl_best is not None and label.startswith("datapipes")
    }


def first_batch_table(answers: dict[str, list[dict[str, Any]]], rounds: int) -> dict:
    runs = {label: [loader.Run(*a["value"]) for a in v] for label, v in answers.items()}
    loader.check(runs, lambda r: r.amount, BATCH * _work.IMAGE_BYTES, "first batch, spawn")
    firsts = {label: [r.first for r in v] for label, v in runs.items()}
    dl = min(firsts["DataLoader"]) if "DataLoader" in firsts else None
    rows = [
        (
            label,
            f"{min(ts):.3f}",
            f"{statistics.median(ts):.3f}",
            "-" if dl is None else f"{min(ts) / dl:.2f}",
        )
        for label, ts in firsts.items()
    ]
    print(
        f"\n### c. Time to first batch, spawn (workload b's loader, {loader.WORKERS} workers); "
        f"best of {rounds} rounds\n"
    )
    print_table(rows, ["system", "best s", "median s", "best ÷ DataLoader"])
    return {
        label: min(firsts[label]) / dl
        for label in firsts
        if dl is not None and label.startswith("datapipes")
    }


def summary(ratios: dict[str, dict[str, float]], labels: tuple[str, str]) -> None:
    print("\n### Against issue 11's targets\n")
    rows = []
    for w, (title, target, met) in TARGETS.items():
        if w not in ratios:
            continue
        cells = []
        for label in labels:
            r = ratios[w].get(label)
            cells.append("n/a" if r is None else f"{r:.2f} ({'met' if met(r) else 'missed'})")
        rows.append((f"{w}. {title}", target, *cells))
    print_table(rows, ["figure", "target", "before", "after"])
    if "a" in ratios:
        speeds = " and ".join(f"{1 / ratios['a'][k]:.2f}×" for k in labels if k in ratios["a"])
        print(f"\n(a. as a speed, hand's best time ÷ datapipes': {speeds}, before and after)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument(
        "--before",
        type=Path,
        help=f"old tree (default: a worktree of {BEFORE_COMMIT} at /tmp/datapipes-"
        f"{BEFORE_COMMIT}, added if missing)",
    )
    ap.add_argument("--after", type=Path, default=ROOT, help="new tree (default: this checkout)")
    ap.add_argument(
        "--rounds",
        type=int,
        help="rounds of each workload (default 15 for a, 11 for b, 9 for c; 2 with --quick)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smaller workloads (200,000 ints, 256 images), 2 rounds: a smoke run",
    )
    ap.add_argument("--only", default="abc", help="which workloads to run, e.g. ac")
    ap.add_argument("--child", choices=["tree", "yardstick"], help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child, args.tree)
        return
    if isinstance(sys.stdout, io.TextIOWrapper):  # in order with the children's stderr
        sys.stdout.reconfigure(line_buffering=True)
    workloads = "".join(w for w in "abc" if w in args.only)
    default = {"a": 15, "b": 11, "c": 9}
    rounds = {w: args.rounds or (2 if args.quick else default[w]) for w in "abc"}
    items, images = (200_000, 256) if args.quick else (1_000_000, 1024)
    before = (args.before or before_worktree(Path(f"/tmp/datapipes-{BEFORE_COMMIT}"))).resolve()
    after = args.after.resolve()

    given = sys.argv[1:] if argv is None else argv
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"command: python benchmarks/versions.py {shlex.join(given)}".rstrip())
    print(f"machine: {machine()}, nproc {os.cpu_count()}")
    print(f"before: {describe(before)}")
    print(f"after:  {describe(after)}")
    print(f"load average before: {loader.load()} (other work on the machine lowers every figure)")
    start = time.perf_counter()
    children = {
        "before": Child("before", "tree", before),
        "after": Child("after", "tree", after),
        "yardsticks": Child("yardsticks", "yardstick", None),
    }
    try:
        setup = {"op": "setup", "workloads": workloads, "items": items, "images": images}
        for child in children.values():
            child.send(setup)
        broken: dict[str, set[str]] = {}
        for name, child in children.items():
            answer = child.receive()
            if "error" in answer:
                raise SystemExit(f"{name}: setup failed: {answer['traceback']}")
            if answer["datapipes"]:
                print(f"{name}: imports {answer['datapipes']}")
            for line in answer["log"]:
                print(f"{name}: {line}")
            broken[name] = set(answer["errors"])
        print(f"(children started and checked in {time.perf_counter() - start:.0f} s)")
        labels = ("datapipes, before", "datapipes, after")
        ratios: dict[str, dict[str, float]] = {}
        timed = time.perf_counter()
        for w in workloads:
            systems: dict[str, tuple[Child, str]] = {}
            if w == "a":
                systems["hand"] = (children["yardsticks"], "hand")
            for label, name in zip(labels, ("before", "after"), strict=True):
                if w in broken[name]:
                    print(f"note: {label} could not be set up for workload {w}; left out")
                else:
                    systems[label] = (children[name], "datapipes")
            if w not in broken["yardsticks"]:
                systems["DataLoader"] = (children["yardsticks"], "DataLoader")
            answers = run_rounds(w, systems, rounds[w])
            if w == "a":
                ratios[w] = overhead_table(answers, items, rounds[w])
            elif w == "b":
                ratios[w] = arrays_table(answers, images, rounds[w])
            else:
                ratios[w] = first_batch_table(answers, rounds[w])
        summary(ratios, labels)
        ran = ", ".join(f"{w}: {rounds[w]}" for w in workloads)
        print(
            f"\nrounds run: {ran}; every run of every system delivered the expected count and "
            f"checksum. Timed workloads took {time.perf_counter() - timed:.0f} s, "
            f"{time.perf_counter() - start:.0f} s in all; load average after: {loader.load()}"
        )
    finally:
        for child in children.values():
            child.close()


if __name__ == "__main__":
    main()
