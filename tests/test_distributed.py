"""Sharding for real: ``torchrun`` starts two ranks that train a DDP model (gloo on loopback,
CPU) on a datapipes loader (``tests/distributed_job.py``).

The uninterrupted run must give the ranks disjoint shares of equal size that cover each
epoch but for at most ``world_size - 1`` elements; a run stopped after a few batches and
resumed from the per-rank checkpoints must train each rank on exactly the same elements, in
the same order, with the same draws, ending at the same weights. Every run leaves no process
behind; a failing torchrun fails the test with its stderr, within a timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
JOB = Path(__file__).resolve().parent / "distributed_job.py"
WORLD_SIZE = 2
EPOCHS = 2
STOP_AFTER = 5  # batches of epoch 0 before the interrupted run saves its checkpoint
RUN_TIMEOUT = 150  # seconds for one torchrun; a run takes about 10 s on 2 cores
MARK = "DATAPIPES_TEST_TORCHRUN"  # in the environment of every process a run starts


def _load_job() -> Any:
    spec = importlib.util.spec_from_file_location("distributed_job", JOB)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


job = _load_job()


# -- running torchrun ------------------------------------------------------------------------
def _marked(marker: str) -> list[psutil.Process]:
    """The live processes started by the run with ``marker`` (torchrun, ranks, workers)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _leftovers(marker: str, grace: float) -> list[str]:
    """Wait up to ``grace`` seconds for the run's processes to exit; kill and name the rest."""
    deadline = time.monotonic() + grace
    while (alive := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    names = []
    for proc in alive:
        try:
            names.append(f"{proc.pid} {' '.join(proc.cmdline())}")
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)
    return names


def torchrun(*args: object, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run the job under ``torchrun --standalone`` (a free port, on loopback); fail the test,
    showing stderr, if it does not exit in time or leaves a process behind."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={WORLD_SIZE}", str(JOB), *map(str, args)]
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update({MARK: marker, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # torchrun stops its ranks
        try:
            stdout, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        _leftovers(marker, grace=5)
        pytest.fail(f"torchrun did not finish in {timeout} s: {cmd}\n--- stderr:\n{stderr}",
                    pytrace=False)
    finally:
        if proc.poll() is None:  # an exception here (e.g. KeyboardInterrupt): stop it all
            proc.kill()
            proc.wait()
            _leftovers(marker, grace=0)
    left = _leftovers(marker, grace=10)
    assert not left, f"processes left behind by {cmd}:\n" + "\n".join(left)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def torchrun_ok(*args: object) -> None:
    result = torchrun(*args)
    if result.returncode != 0:
        pytest.fail(f"torchrun exited with {result.returncode}: {result.args}\n"
                    f"--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}", pytrace=False)


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


def ids(record: dict[str, Any], epoch: int) -> list[int]:
    return [i for i, _ in record["epochs"].get(str(epoch), [])]


# -- the runs (once for the module) -------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """An uninterrupted run (compile(rank=, world_size=), 2 workers per rank); a run stopped
    after a few batches (shard_by_rank() by hand, 1 worker); its resumption (2 workers)."""
    whole, stopped, resumed = (tmp_path_factory.mktemp(name)
                               for name in ("whole", "stopped", "resumed"))
    torchrun_ok("--out", whole, "--epochs", EPOCHS, "--workers", 2, "--shard", "compile")
    torchrun_ok("--out", stopped, "--epochs", EPOCHS, "--workers", 1, "--shard", "stage",
                "--stop-after", STOP_AFTER)
    for rank in range(WORLD_SIZE):
        state = json.loads((stopped / f"loader-rank{rank}.json").read_text())
        assert state["epoch"] == 0 and state["delivered"] == STOP_AFTER
    torchrun_ok("--out", resumed, "--epochs", EPOCHS, "--workers", 2, "--shard", "stage",
                "--resume", stopped)
    return {"whole": records(whole), "stopped": records(stopped), "resumed": records(resumed)}


@pytest.mark.timeout(240)
def test_ranks_get_disjoint_equal_shares_covering_each_epoch(runs):
    whole = runs["whole"]
    assert [r["rank"] for r in whole] == list(range(WORLD_SIZE))
    assert all(r["world_size"] == WORLD_SIZE for r in whole)
    assert "shard_by_rank(rank=1, world_size=2)" in whole[1]["pipe"]
    for epoch in range(EPOCHS):
        shares = [ids(r, epoch) for r in whole]
        assert len({len(s) for s in shares}) == 1, [len(s) for s in shares]
        union = [i for share in shares for i in share]
        assert len(set(union)) == len(union), "an element went to two ranks, or twice to one"
        assert set(union) <= set(range(job.N))
        missing = set(range(job.N)) - set(union)
        assert len(missing) <= WORLD_SIZE - 1
    assert ids(whole[0], 0) != ids(whole[0], 1), "two epochs in the same order"


@pytest.mark.timeout(240)
def test_stopped_and_resumed_runs_train_on_exactly_the_same_elements(runs):
    for rank in range(WORLD_SIZE):
        whole, stopped, resumed = (runs[name][rank] for name in ("whole", "stopped", "resumed"))
        assert len(stopped["epochs"]["0"]) == STOP_AFTER * job.BATCH
        assert set(stopped["epochs"]) == {"0"}
        assert set(resumed["epochs"]) == {str(e) for e in range(EPOCHS)}
        for epoch in range(EPOCHS):
            together = stopped["epochs"].get(str(epoch), []) + resumed["epochs"][str(epoch)]
            assert [i for i, _ in together] == ids(whole, epoch), (rank, epoch)
            assert together == whole["epochs"][str(epoch)], (rank, epoch)


@pytest.mark.timeout(240)
def test_resumed_training_ends_at_the_same_weights(runs):
    # the same batches in the same order on every rank: the same gradient steps
    final = [r["weights"] for r in runs["whole"]]
    assert final[0] == final[1]  # DDP keeps the replicas equal
    assert [r["weights"] for r in runs["resumed"]] == final


@pytest.mark.timeout(240)
def test_sharding_keeps_each_elements_draws(runs):
    # every rank's x for element i is the one the unsharded pipe draws in this process
    for epoch in range(EPOCHS):
        unsharded = job.build_pipe().iter(epoch=epoch)
        expected = {int(i): x.tolist() for batch in unsharded
                    for i, x in zip(batch["id"], batch["x"], strict=True)}
        for record in runs["whole"]:
            for i, x in record["epochs"][str(epoch)]:
                assert x == expected[i], (record["rank"], epoch, i)


@pytest.mark.timeout(240)
def test_a_failing_torchrun_fails_the_test_with_its_stderr(tmp_path):
    # both ranks raise FileNotFoundError; torchrun exits non-zero, nothing is left running
    with pytest.raises(pytest.fail.Exception,
                       match=r"(?s)torchrun exited with [1-9].*stderr.*no-such-checkpoint"):
        torchrun_ok("--out", tmp_path, "--resume", tmp_path / "no-such-checkpoint")
