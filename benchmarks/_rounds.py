"""Shared by the benchmarks: timing systems in alternating rounds, and printing tables.

The machines these benchmarks run on change speed by tens of per cent within seconds. Timing
system A for a while and then system B would put that swing into their ratio; running them in
rounds (A B C, A B C, ...) and keeping each system's best round lets a slow spell hit all of
them alike.
"""

from __future__ import annotations

import gc
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def alternate(
    systems: dict[str, Callable[[], object]],
    rounds: int,
    *,
    results: dict[str, list[object]] | None = None,
) -> dict[str, list[float]]:
    """Run every system once per round, in order, for ``rounds`` rounds; return the seconds
    each run took, per system in round order.

    Garbage is collected before each run (outside its time), so that one system's garbage is
    not paid for by the next. When ``results`` is given, each run's return value is appended
    to ``results[name]``, so a caller can check that every system did the same work.

    >>> times = alternate({"a": lambda: 1, "b": lambda: 2}, rounds=3, results=(out := {}))
    >>> [len(t) for t in times.values()], out
    ([3, 3], {'a': [1, 1, 1], 'b': [2, 2, 2]})
    """
    if rounds < 1:
        raise ValueError(f"alternate: rounds must be >= 1, got {rounds}")
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, run in systems.items():
            gc.collect()
            start = time.perf_counter()
            value = run()
            times[name].append(time.perf_counter() - start)
            if results is not None:
                results.setdefault(name, []).append(value)
    return times


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """Print rows as a Markdown table, columns padded; numbers and numeric text right-aligned.

    >>> print_table([("hand", "1.00"), ("datapipes", "0.91")], ["system", "ratio"])
    | system    | ratio |
    |-----------|------:|
    | hand      |  1.00 |
    | datapipes |  0.91 |
    """
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    right = [bool(cells) and all(_numeric(r[i]) for r in cells) for i in range(len(headers))]

    columns = list(zip(widths, right, strict=True))

    def line(values: Sequence[str]) -> str:
        pairs = zip(values, columns, strict=True)
        padded = (v.rjust(w) if r else v.ljust(w) for v, (w, r) in pairs)
        return "| " + " | ".join(padded) + " |"

    print(line(headers))
    print("|" + "|".join("-" * (w + 1) + (":" if r else "-") for w, r in columns) + "|")
    for row in cells:
        print(line(row))


def timed_row(
    name: str, times: Sequence[float], baseline: float | None, *cells: str
) -> tuple[str, ...]:
    """A table row: the system, its best and median seconds, ``cells``, and its speed
    against ``baseline``'s best time ("-" without one)."""
    best = min(times)
    ratio = "-" if baseline is None else f"{baseline / best:.2f}×"
    return (name, f"{best:.3f}", f"{statistics.median(times):.3f}", *cells, ratio)


def import_peers(modules: dict[str, str]) -> dict[str, Any]:
    """``{system: module}`` for each peer whose module imports (``modules`` maps a system's
    name to its module); the others are announced as not installed and skipped."""
    found: dict[str, Any] = {}
    for name, module in modules.items():
        try:
            found[name] = importlib.import_module(module)
        except ImportError as exc:
            print(f"{name}: not installed ({exc}); skipped")
    return found


def _numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("×", "").replace("%", "").strip()
    try:
        float(stripped)
    except ValueError:
        return text in ("-", "n/a")
    return True


def machine() -> str:
    """One line saying what the numbers were measured on: cores, CPU model, Python, torch."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model
            )
    except OSError:
        pass
    torch_version = "not installed"
    if "torch" in sys.modules or _importable("torch"):
        import torch

        torch_version = torch.__version__
    python = platform.python_version()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores ({model}), Python {python}, torch {torch_version}"


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
