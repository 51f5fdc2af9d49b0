"""The examples run end to end: each script as a subprocess, checked by its exit status and a
line of its output, and examples/test_my_pipeline.py under pytest.

examples/ddp.py needs torchrun and is run by tests/test_distributed.py.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 180


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` from the repository root; fail the test, showing its output, if it
    does not exit with 0 within RUN_TIMEOUT seconds."""
    cmd = [sys.executable, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # A session of its own, so that a timeout stops the script's worker processes too.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(args)} did not finish in {RUN_TIMEOUT} s\n--- stdout:\n{stdout}"
                    f"\n--- stderr:\n{stderr}", pytrace=False)
    finally:
        if proc.poll() is None:  # interrupted while waiting: stop it all
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited with {proc.returncode}\n--- stdout:\n{stdout}"
                    f"\n--- stderr:\n{stderr}", pytrace=False)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_quickstart() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        pytest.fail("examples/quickstart.py needs scikit-learn: install the dev extra "
                    "(pip install -e '.[dev]')", pytrace=False)
    out = run("examples/quickstart.py").stdout
    assert "len(pipe) = 26 batches; validation: 179 images" in out, out
    assert "new ones each epoch: True" in out, out
    assert "same (seed, epoch) gives identical batches: True" in out, out
    assert "compile(workers=2) equals the reference: True" in out, out
    assert "augment(shift_and_noise)" in out.split("loader.stats()")[-1], out  # a metered stage
    assert "assert_disjoint(training, held_out): no image in both parts" in out, out
    assert "validation with train=False is not augmented: True" in out, out
    assert "compile(workers=2, train=False) equals the reference with train=False: True" in out, out


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_streaming_io() -> None:
    out = run("examples/streaming_io.py").stdout
    assert "in-process epoch 0: 13 batches, 200 images" in out, out
    assert "parallel_map(load, workers=4)" in out, out  # explain() was printed
    assert "compile(workers=2) equals the in-process epochs: True" in out, out


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_checkpoint() -> None:
    out = run("examples/checkpoint.py").stdout
    assert "resumed run, 3 workers:" in out, out
    assert "resumed run saw exactly the uninterrupted batches: True" in out, out
    assert "final weights equal: True" in out, out
    assert "on_error='skip': 26 of 30 elements" in out, out
    assert "message='corrupt record 3'" in out, out


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_shards() -> None:
    out = run("examples/shards.py").stdout
    assert "wrote 3000 JPEGs into 8 tar shards" in out, out
    # explain(): the shards are read and shuffled in the main process, decoded in the workers
    # (the columns' width depends on the temporary directory's path)
    placed = {line.split()[0]: line.split()[1] for line in out.splitlines()
              if line.startswith("  ") and len(line.split()) > 1}
    assert placed.get("shuffle(buffer=500)") == "main", out
    assert placed.get("map(decode)") == "workers", out
    for epoch in range(2):
        assert f"epoch {epoch}: 47 batches, mean loss " in out, out
    assert "training accuracy " in out, out
    assert "resumed epoch 0 after 20 batches: 27 batches left, uninterrupted: 27" in out, out
    assert "resumed exactly: True" in out, out


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_my_pipeline_example_passes_under_pytest() -> None:
    out = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/test_my_pipeline.py").stdout
    assert " passed" in out and "failed" not in out, out


def test_every_example_is_run() -> None:
    run_here = {
        "quickstart.py", "streaming_io.py", "checkpoint.py", "shards.py", "test_my_pipeline.py",
        "custom_stages.py",
    }
    elsewhere = {"ddp.py"}  # tests/test_distributed.py
    assert {p.name for p in EXAMPLES.glob("*.py")} == run_here | elsewhere


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_custom_stages() -> None:
    out = run("examples/custom_stages.py").stdout
    assert "clip_scale(low=2, high=9, scale=10)  workers  per element" in out, out
    assert "compile(workers=2) equals the reference: True" in out, out
