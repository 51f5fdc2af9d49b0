"""Run a loader in a process of its own, for tests that kill, interrupt or abandon it.

Usage: ``python hold_loader.py MODE BACKEND [START_METHOD]``. The script builds a loader over
arrays large enough to travel through shared memory, takes a few batches (so work is in
flight), prints one JSON line ``{"pid": ..., "workers": [...], "threads": [...]}`` and then, by
MODE:

* ``hold``: sleeps, in the middle of an epoch, until it is killed;
* ``exit``: returns from the script without closing the loader (the end of the program);
* ``loop``: keeps iterating epochs until it is interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import numpy as np

import datapipes as dp


def slow_image(i: int) -> np.ndarray:
    """A 64 KiB array (shared memory), made slowly enough that work is always in flight."""
    time.sleep(0.005)
    return np.full((128, 128), i, dtype=np.float32)


def main(mode: str, backend: str, start_method: str | None = None) -> None:
    pipe = dp.from_sequence(range(10_000)) | dp.map(slow_image) | dp.batch(4) | dp.collate()
    loader = pipe.compile(workers=2, backend=backend, prefetch=2, start_method=start_method)
    it = iter(loader)
    for _ in range(3):
        next(it)
    threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("datapipes"))
    report = {"pid": os.getpid(), "workers": loader.worker_pids, "threads": threads}
    print(json.dumps(report), flush=True)
    if mode == "hold":
        while True:
            time.sleep(60)
    elif mode == "loop":
        while True:
            for _ in it:
                pass
            it = iter(loader)
    # mode "exit": the loader and its iterator are still alive when the program ends


if __name__ == "__main__":
    main(*sys.argv[1:4])
