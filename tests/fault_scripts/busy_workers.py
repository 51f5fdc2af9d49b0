"""Run a loader whose workers are busy, for tests that kill the main process under them.

Usage: ``python busy_workers.py MODE START_METHOD [main|thread]``. The loader has 2 worker
processes and ``prefetch=4``; every element after the first takes 30 s, so once the first
output is in, each worker is in the middle of a long task with more tasks queued behind
it. With ``thread``, the first output is taken on a thread that then ends (the workers
start there, and must outlive it). The script prints one JSON line ``{"pid": ...,
"workers": [...]}``, then, by MODE:

* ``hold``: sleeps until it is killed;
* ``close``: prints ``closing`` and calls ``loader.close()`` (which gives the busy workers
  5 s before it kills them): the test kills the script during that wait.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import datapipes as dp


def sleepy(x: int) -> int:
    if x > 0:
        time.sleep(30)
    return x


def main(mode: str, start_method: str, start_from: str = "main") -> None:
    pipe = dp.from_sequence(range(100)) | dp.map(sleepy) | dp.batch(1)
    loader = pipe.compile(workers=2, prefetch=4, start_method=start_method)
    it = iter(loader)
    if start_from == "thread":
        starter = threading.Thread(target=next, args=(it,))
        starter.start()
        starter.join()
    else:
        next(it)  # batch 0 is quick; batches 1, 2, ... keep both workers busy
    time.sleep(0.5)  # both are now inside time.sleep(30)
    print(json.dumps({"pid": os.getpid(), "workers": loader.worker_pids}), flush=True)
    if mode == "close":
        print("closing", flush=True)
        loader.close()
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(*sys.argv[1:4])
