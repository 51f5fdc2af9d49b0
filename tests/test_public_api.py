"""Public-API hygiene: every stage pickles, compares by value, has an evaluable repr and
checks its arguments; ``__all__`` is sorted and documented; the package is ``datapipes``."""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import pickle
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import datapipes as dp
from datapipes.testing import assert_equal_outputs
from datapipes.testing.functions import (
    Replay,
    add_noise,
    double,
    is_even,
    negate,
    range_of,
    repeat_twice,
    sum_batch,
)

ROOT = Path(__file__).resolve().parents[1]


def _files() -> Path:
    """Small files for the file sources, made once for this module."""
    import atexit
    import io
    import json
    import shutil
    import tarfile
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    where = Path(tempfile.mkdtemp(prefix="datapipes-api-"))
    atexit.register(shutil.rmtree, where, True)
    for n in (1, 2):
        np.save(where / f"a{n}.npy", np.arange(6 * n).reshape(-1, 2))
        (where / f"r{n}.jsonl").write_text("".join(json.dumps({"i": i}) + "\n"
                                                   for i in range(3 * n)))
        with tarfile.open(where / f"s{n}.tar", "w") as tar:
            for i in range(2 * n):
                data = str(i).encode()
                info = tarfile.TarInfo(f"sample{i}.cls")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        pq.write_table(pa.table({"x": list(range(4 * n)), "y": list(range(4 * n))}),
                       where / f"t{n}.parquet")
    return where


FILES = _files()

# Every public stage and source, each with variants that differ in one parameter. The first
# variant uses the defaults. Builders are called afresh each time, so equality is by value.
STAGES = {
    "from_sequence": [
        lambda: dp.from_sequence(range(10)),
        lambda: dp.from_sequence(range(11)),
        lambda: dp.from_sequence([1, 2, 3]),
        lambda: dp.from_sequence([1, 2, 4]),
    ],
    "from_arrays": [
        lambda: dp.from_arrays(x=np.arange(4)),
        lambda: dp.from_arrays(x=np.arange(4) + 1),
        lambda: dp.from_arrays(y=np.arange(4)),
        lambda: dp.from_arrays(x=np.arange(4), y=torch.arange(4)),
    ],
    "augment": [
        lambda: dp.augment(add_noise),
        lambda: dp.augment(add_noise, name="noise"),
        lambda: dp.augment(add_noise, name="other"),
    ],
    "cache": [
        lambda: dp.cache(str(FILES / "cache-a")),
        lambda: dp.cache(str(FILES / "cache-b")),
    ],
    "mix": [
        lambda: dp.mix(dp.from_sequence(range(3)), dp.from_sequence(range(5))),
        lambda: dp.mix(dp.from_sequence(range(3)), dp.from_sequence(range(5)), weights=[1, 3]),
        lambda: dp.mix(dp.from_sequence(range(3)), dp.from_sequence(range(5)), stop="all"),
        lambda: dp.mix(dp.from_sequence(range(3)), stop="never", length=10),
    ],
    "concat": [
        lambda: dp.concat(dp.from_sequence(range(3)), dp.from_sequence(range(5))),
        lambda: dp.concat(dp.from_sequence(range(5)), dp.from_sequence(range(3))),
    ],
    "zip": [
        lambda: dp.zip(dp.from_sequence(range(3)), dp.from_sequence(range(5))),
        lambda: dp.zip(dp.from_sequence(range(3))),
    ],
    "from_files": [
        lambda: dp.from_files(str(FILES / "*.npy")),
        lambda: dp.from_files(str(FILES / "*.tar")),
        lambda: dp.from_files([str(FILES / "a1.npy")]),
    ],
    "from_npy": [
        lambda: dp.from_npy(str(FILES / "a1.npy")),
        lambda: dp.from_npy(str(FILES / "a2.npy")),
    ],
    "from_jsonl": [
        lambda: dp.from_jsonl(str(FILES / "*.jsonl")),
        lambda: dp.from_jsonl(str(FILES / "r1.jsonl")),
    ],
    "from_tar": [
        lambda: dp.from_tar(str(FILES / "*.tar")),
        lambda: dp.from_tar(str(FILES / "s2.tar")),
    ],
    "from_parquet": [
        lambda: dp.from_parquet(str(FILES / "*.parquet")),
        lambda: dp.from_parquet(str(FILES / "*.parquet"), columns=["x"]),
        lambda: dp.from_parquet(str(FILES / "t1.parquet")),
    ],
    "from_iterable": [
        lambda: dp.from_iterable([1, 2, 3]),
        lambda: dp.from_iterable([1, 2]),
        lambda: dp.from_iterable(Replay((1, 2, 3))),
        lambda: dp.from_iterable(Replay((1, 2))),
    ],
    "map": [
        lambda: dp.map(double),
        lambda: dp.map(negate),
        lambda: dp.map(add_noise, rng=True),
        lambda: dp.map(add_noise, rng=True, name="noise"),
        lambda: dp.map(double, name="twice"),
    ],
    "parallel_map": [
        lambda: dp.parallel_map(double, workers=2),
        lambda: dp.parallel_map(double, workers=3),
        lambda: dp.parallel_map(add_noise, workers=2, rng=True),
        lambda: dp.parallel_map(double, workers=2, backend="process"),
        lambda: dp.parallel_map(double, workers=2, name="twice"),
    ],
    "flat_map": [lambda: dp.flat_map(repeat_twice), lambda: dp.flat_map(range_of)],
    "filter": [lambda: dp.filter(is_even), lambda: dp.filter(bool)],
    "shuffle": [
        lambda: dp.shuffle(),
        lambda: dp.shuffle(buffer=10),
        lambda: dp.shuffle(buffer=11),
        lambda: dp.shuffle(name="order"),
    ],
    "batch": [lambda: dp.batch(4), lambda: dp.batch(5), lambda: dp.batch(4, drop_last=True),
              lambda: dp.batch(max_tokens=20, length=abs),
              lambda: dp.batch(2, max_tokens=8, length=abs, oversize="alone")],
    "bucket_by_length": [lambda: dp.bucket_by_length([2], [2, 2], length=abs),
                         lambda: dp.bucket_by_length([3], [2, 2], length=abs),
                         lambda: dp.bucket_by_length([2], [2, 3], length=abs),
                         lambda: dp.bucket_by_length([2], [2, 2], length=abs, drop_last=True)],
    "pack": [lambda: dp.pack(4), lambda: dp.pack(5), lambda: dp.pack(4, field="tokens"),
             lambda: dp.pack(4, drop_remainder=True)],
    "unbatch": [lambda: dp.unbatch()],
    "collate": [
        lambda: dp.collate(),
        lambda: dp.collate(to="numpy"),
        lambda: dp.collate(sum_batch),
    ],
    "sample": [
        lambda: dp.sample(),
        lambda: dp.sample(3),
        lambda: dp.sample(30, replace=True),
        lambda: dp.sample(weights=[1.0] * 10, replace=True),
        lambda: dp.sample(name="draws"),
    ],
    "split": [
        lambda: dp.split([0.5, 0.5], 0),
        lambda: dp.split([0.5, 0.5], 1),
        lambda: dp.split([4, 6], 0),
        lambda: dp.split([0.5, 0.5], 0, seed=1),
        lambda: dp.split([0.5, 0.5], 0, shuffle=False),
    ],
    "interleave": [
        lambda: dp.interleave(repeat_twice, cycle_length=2),
        lambda: dp.interleave(range_of, cycle_length=2),
        lambda: dp.interleave(repeat_twice, cycle_length=3),
        lambda: dp.interleave(repeat_twice, cycle_length=2, block_length=2),
    ],
    "take": [lambda: dp.take(3), lambda: dp.take(4)],
    "skip": [lambda: dp.skip(3), lambda: dp.skip(0)],
    "enumerate": [lambda: dp.enumerate()],
    "prefetch": [lambda: dp.prefetch(2), lambda: dp.prefetch(3)],
    "shard_by_rank": [
        lambda: dp.shard_by_rank(rank=0, world_size=2),
        lambda: dp.shard_by_rank(rank=1, world_size=2, even="pad"),
        lambda: dp.shard_by_rank(),
    ],
}

VARIANTS = [
    pytest.param(name, i, id=f"{name}-{i}")
    for name, builders in STAGES.items()
    for i in range(len(builders))
]

# Sources whose repr shows all their data (lists, ranges, Replay), so that it evaluates.
EVALUABLE_SOURCES = [
    lambda: dp.from_sequence(range(10)),
    lambda: dp.from_sequence([3, 1, 2, 5, 4, 0, 7, 6, 9, 8]),
    lambda: dp.from_iterable([1, 2, 3]),
    lambda: dp.from_iterable(Replay((1, 2, 3))),
]


def build(name, i):
    return STAGES[name][i]()


def is_source(name):
    return build(name, 0).is_runnable


def star_namespace():
    namespace: dict[str, object] = {}
    exec("from datapipes import *", namespace)
    exec("from datapipes.testing.functions import *", namespace)
    return namespace


#: public functions that are not stages (they return no pipe)
NOT_STAGES = {"by_source_index", "class_weights", "decode", "decode_field", "jsonl_records",
              "output_array", "tar_samples"}


def public_stage_names():
    return sorted(name for name in dp.__all__
                  if name[0].islower() and callable(getattr(dp, name)) and name not in NOT_STAGES)


def test_the_table_covers_every_public_stage():
    assert sorted(STAGES) == public_stage_names()


# -- pickling, equality, hashing -------------------------------------------------------------


@pytest.mark.parametrize(("name", "i"), VARIANTS)
def test_stage_pickles(name, i):
    pipe = build(name, i)
    assert isinstance(pipe, dp.Pipe)
    copy = pickle.loads(pickle.dumps(pipe))
    assert copy == pipe
    assert hash(copy) == hash(pipe)
    assert repr(copy) == repr(pipe)


@pytest.mark.parametrize(("name", "i"), VARIANTS)
def test_runnable_pipe_pickles_and_runs_the_same(name, i):
    pipe = build(name, i)
    if not is_source(name):
        pipe = dp.from_sequence(range(10)) | pipe
    copy = pickle.loads(pickle.dumps(pipe))
    assert copy == pipe
    if name not in ("unbatch", "collate", "pack"):  # these need batches
        assert_equal_outputs(list(copy), list(pipe))


@pytest.mark.parametrize(("name", "i"), VARIANTS)
def test_stage_equality_and_hash_by_value(name, i):
    a, b = build(name, i), build(name, i)
    assert a is not b
    assert a == b
    assert not a != b  # noqa: SIM202
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


@pytest.mark.parametrize("name", [n for n, b in STAGES.items() if len(b) > 1])
def test_differing_params_are_unequal(name):
    pipes = [builder() for builder in STAGES[name]]
    for a, b in itertools.combinations(pipes, 2):
        assert a != b, (a, b)
        assert not a == b  # noqa: SIM201


def test_different_stages_are_unequal():
    pipes = [builders[0]() for builders in STAGES.values()]
    for a, b in itertools.combinations(pipes, 2):
        assert a != b, (a, b)


def test_composed_pipes_compare_by_value():
    def make():
        return dp.from_sequence([1, 2, 3]) | dp.map(double) | dp.batch(2)

    assert make() == make()
    assert hash(make()) == hash(make())
    assert make() != dp.from_sequence([1, 2, 3]) | dp.map(double) | dp.batch(3)
    assert make() != dp.from_sequence([1, 2, 3]) | dp.batch(2) | dp.map(double)


def test_sources_compare_data_by_value():
    assert dp.from_sequence(np.arange(5)) == dp.from_sequence(np.arange(5))
    assert dp.from_sequence(np.arange(5)) != dp.from_sequence(np.arange(5) + 1)
    assert dp.from_sequence(np.arange(5)) != dp.from_sequence(np.arange(5, dtype=np.int32))
    assert dp.from_arrays(x=torch.arange(3)) == dp.from_arrays(x=torch.arange(3))
    assert dp.from_sequence([1, 2]) != dp.from_sequence((1, 2))


def test_pipes_are_immutable():
    pipe = dp.from_sequence([1]) | dp.batch(2)
    with pytest.raises(AttributeError):
        pipe.stages = ()  # type: ignore[misc]
    stage = pipe.stages[1]
    with pytest.raises(AttributeError):
        stage.size = 3  # type: ignore[misc]


def test_identity_pipe():
    assert dp.Pipe() | dp.batch(2) == dp.batch(2) == dp.batch(2) | dp.Pipe()
    assert repr(dp.Pipe()) == "Pipe()"
    with pytest.raises(TypeError, match=r"^Pipe: "):
        dp.Pipe(3)  # type: ignore[arg-type]


# -- repr ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "i"), VARIANTS)
def test_repr_evaluates_to_an_equal_pipe(name, i):
    namespace = star_namespace()
    pipes = []
    if is_source(name):
        if name != "from_arrays":  # arrays show as a summary, e.g. <ndarray int64 (4,)>
            pipes.append(build(name, i))
    else:
        stage = build(name, i)
        pipes.append(stage)
        needs_random_access = stage.stages[0].needs_random_access()
        for source in EVALUABLE_SOURCES:
            if needs_random_access and not source().stages[0].keeps_random_access:
                continue  # refused at `|`: tested in tests/stages/test_sources.py
            pipes.append(source() | stage)
            pipes.append(source() | dp.map(double) | stage | dp.take(5))
    for pipe in pipes:
        assert eval(repr(pipe), namespace) == pipe, repr(pipe)


@pytest.mark.parametrize(
    ("pipe", "text"),
    [
        (lambda: dp.batch(4), "batch(4)"),
        (lambda: dp.batch(4, drop_last=False), "batch(4)"),
        (lambda: dp.batch(size=4), "batch(4)"),
        (lambda: dp.batch(4, drop_last=True), "batch(4, drop_last=True)"),
        (lambda: dp.shuffle(), "shuffle()"),
        (lambda: dp.shuffle(buffer=None), "shuffle()"),
        (lambda: dp.shuffle(buffer=10), "shuffle(buffer=10)"),
        (lambda: dp.shuffle(name="order"), "shuffle(name='order')"),
        (lambda: dp.map(double), "map(double)"),
        (lambda: dp.map(double, rng=False), "map(double)"),
        (lambda: dp.map(double, rng=True), "map(double, rng=True)"),
        (lambda: dp.map(double, name="d"), "map(double, name='d')"),
        (lambda: dp.map(int), "map(int)"),
        (lambda: dp.filter(is_even), "filter(is_even)"),
        (lambda: dp.filter(bool), "filter(bool)"),
        (lambda: dp.flat_map(repeat_twice), "flat_map(repeat_twice)"),
        (lambda: dp.collate(), "collate()"),
        (lambda: dp.collate(to="torch"), "collate()"),
        (lambda: dp.collate(to="numpy"), "collate(to='numpy')"),
        (lambda: dp.collate(sum_batch), "collate(sum_batch)"),
        (lambda: dp.take(3), "take(3)"),
        (lambda: dp.skip(0), "skip(0)"),
        (lambda: dp.enumerate(), "enumerate()"),
        (lambda: dp.prefetch(2), "prefetch(2)"),
        (lambda: dp.shard_by_rank(), "shard_by_rank()"),
        (lambda: dp.shard_by_rank(rank=1, world_size=4, even=None),
         "shard_by_rank(rank=1, world_size=4, even=None)"),
        (lambda: dp.parallel_map(double, workers=2), "parallel_map(double, workers=2)"),
        (
            lambda: dp.parallel_map(double, workers=2, backend="thread"),
            "parallel_map(double, workers=2)",
        ),
        (
            lambda: dp.parallel_map(add_noise, workers=4, rng=True),
            "parallel_map(add_noise, rng=True, workers=4)",
        ),
        (lambda: dp.unbatch(), "unbatch()"),
        (lambda: dp.from_sequence(range(3)), "from_sequence(range(0, 3))"),
        (lambda: dp.from_sequence([1, 2]), "from_sequence([1, 2])"),
        (lambda: dp.from_iterable(Replay([1])), "from_iterable(Replay(items=(1,)))"),
        (
            lambda: dp.from_arrays(x=np.zeros((3, 2), np.float32)),
            "from_arrays(x=<ndarray float32 (3, 2)>)",
        ),
        (
            lambda: dp.from_sequence(range(4)) | dp.map(double) | dp.batch(2),
            "from_sequence(range(0, 4)) | map(double) | batch(2)",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_repr_shows_only_non_default_args(pipe, text):
    assert repr(pipe()) == text


def test_repr_of_large_data_is_short():
    assert len(repr(dp.from_sequence(list(range(10_000))))) < 100
    assert len(repr(dp.from_sequence(np.zeros((10_000, 3))))) < 100


# -- bad arguments ---------------------------------------------------------------------------


def f(x):
    return x


BAD_ARGUMENTS = [
    ("batch: size must be ", ValueError, lambda: dp.batch(0)),
    ("batch: size must be ", ValueError, lambda: dp.batch(-1)),
    ("batch: size must be ", TypeError, lambda: dp.batch(2.5)),
    ("batch: size must be ", TypeError, lambda: dp.batch(True)),
    ("batch: size must be ", TypeError, lambda: dp.batch("4")),
    ("batch: drop_last", TypeError, lambda: dp.batch(4, drop_last="yes")),
    ("take: n", ValueError, lambda: dp.take(-1)),
    ("take: n", TypeError, lambda: dp.take(1.5)),
    ("skip: n", TypeError, lambda: dp.skip("3")),
    ("skip: n", ValueError, lambda: dp.skip(-3)),
    ("shuffle: buffer", ValueError, lambda: dp.shuffle(buffer=0)),
    ("shuffle: buffer", TypeError, lambda: dp.shuffle(buffer=2.0)),
    ("shuffle: name", (TypeError, ValueError), lambda: dp.shuffle(name="")),
    ("map: fn", TypeError, lambda: dp.map(3)),
    ("map: rng", TypeError, lambda: dp.map(f, rng="yes")),
    ("map: rng", TypeError, lambda: dp.map(f, rng=1)),
    ("map: name", (TypeError, ValueError), lambda: dp.map(f, name="")),
    ("map: name", TypeError, lambda: dp.map(f, name=3)),
    ("parallel_map: fn", TypeError, lambda: dp.parallel_map(3, workers=2)),
    ("parallel_map: workers", ValueError, lambda: dp.parallel_map(f, workers=0)),
    ("parallel_map: workers", TypeError, lambda: dp.parallel_map(f, workers=1.5)),
    ("parallel_map: backend", ValueError, lambda: dp.parallel_map(f, workers=2, backend="gpu")),
    ("parallel_map: rng", TypeError, lambda: dp.parallel_map(f, workers=2, rng="yes")),
    ("parallel_map: name", (TypeError, ValueError), lambda: dp.parallel_map(f, workers=2, name="")),
    ("prefetch: n", ValueError, lambda: dp.prefetch(0)),
    ("interleave: fn", TypeError, lambda: dp.interleave(3, cycle_length=2)),
    ("interleave: cycle_length", ValueError, lambda: dp.interleave(f, cycle_length=0)),
    ("interleave: cycle_length", TypeError, lambda: dp.interleave(f, cycle_length=2.0)),
    ("interleave: block_length", ValueError,
     lambda: dp.interleave(f, cycle_length=2, block_length=0)),
    ("sample: n", ValueError, lambda: dp.sample(-1)),
    ("sample: n", TypeError, lambda: dp.sample(2.0)),
    ("sample: replace", TypeError, lambda: dp.sample(2, replace=1)),
    ("sample: weights", ValueError, lambda: dp.sample(weights=[1, -1])),
    ("sample: weights", ValueError, lambda: dp.sample(weights=[0, 0])),
    ("sample: weights", ValueError, lambda: dp.sample(weights=[1, float("nan")])),
    ("sample: weights", ValueError, lambda: dp.sample(weights=[[1, 2]])),
    ("sample: weights", TypeError, lambda: dp.sample(weights=3)),
    ("sample: weights", TypeError, lambda: dp.sample(weights=["a"])),
    ("sample: name", TypeError, lambda: dp.sample(name="")),
    ("split: sizes", TypeError, lambda: dp.split([], 0)),
    ("split: sizes", TypeError, lambda: dp.split(0.5, 0)),
    ("split: sizes", TypeError, lambda: dp.split([True, False], 0)),
    ("split: fractions", ValueError, lambda: dp.split([0.5, 0.4], 0)),
    ("split: fractions", ValueError, lambda: dp.split([1.5, -0.5], 0)),
    ("split: counts", ValueError, lambda: dp.split([3, -1], 0)),
    ("split: part", ValueError, lambda: dp.split([0.5, 0.5], 2)),
    ("split: part", TypeError, lambda: dp.split([0.5, 0.5], "0")),
    ("split: seed", TypeError, lambda: dp.split([0.5, 0.5], 0, seed=None)),
    ("split: seed", ValueError, lambda: dp.split([0.5, 0.5], 0, seed=-1)),
    ("split: shuffle", TypeError, lambda: dp.split([0.5, 0.5], 0, shuffle="yes")),
    ("shard_by_rank: rank", ValueError, lambda: dp.shard_by_rank(rank=2, world_size=2)),
    ("shard_by_rank: world_size", ValueError, lambda: dp.shard_by_rank(world_size=0)),
    ("shard_by_rank: even", ValueError, lambda: dp.shard_by_rank(even="some")),
    ("shard_by_rank: rank", TypeError, lambda: dp.shard_by_rank(rank=True)),
    ("prefetch: n", TypeError, lambda: dp.prefetch(None)),
    ("filter: pred", TypeError, lambda: dp.filter(None)),
    ("flat_map: fn", TypeError, lambda: dp.flat_map("abc")),
    ("collate: to", ValueError, lambda: dp.collate(to="jax")),
    ("collate: fn", TypeError, lambda: dp.collate(fn=3)),
    ("from_sequence: ", TypeError, lambda: dp.from_sequence({"a": 1})),
    ("from_sequence: ", TypeError, lambda: dp.from_sequence(x for x in [1])),
    ("from_sequence: ", TypeError, lambda: dp.from_sequence(3)),
    ("from_arrays: ", ValueError, lambda: dp.from_arrays()),
    ("from_arrays: ", ValueError, lambda: dp.from_arrays(a=np.zeros(2), b=np.zeros(3))),
    ("from_arrays: ", TypeError, lambda: dp.from_arrays(a=[1, 2])),
    ("from_iterable: ", TypeError, lambda: dp.from_iterable(x for x in [1])),
    ("from_iterable: ", TypeError, lambda: dp.from_iterable(3)),
    ("batch: max_tokens", ValueError, lambda: dp.batch(max_tokens=0)),
    ("batch: oversize", ValueError, lambda: dp.batch(max_tokens=8, oversize="drop")),
    ("bucket_by_length: boundaries", ValueError, lambda: dp.bucket_by_length([3, 2], [1, 1, 1])),
    ("bucket_by_length: batch_sizes", ValueError, lambda: dp.bucket_by_length([2], [1])),
    ("pack: length", ValueError, lambda: dp.pack(0)),
    ("pack: field", TypeError, lambda: dp.pack(4, field="")),
    ("from_files: ", FileNotFoundError, lambda: dp.from_files("/no/such/dir/*.x")),
    ("from_npy: ", FileNotFoundError, lambda: dp.from_npy("/no/such/file.npy")),
    ("from_jsonl: ", FileNotFoundError, lambda: dp.from_jsonl("/no/such/file.jsonl")),
    ("from_tar: ", FileNotFoundError, lambda: dp.from_tar("/no/such/file.tar")),
    ("from_parquet: ", FileNotFoundError, lambda: dp.from_parquet("/no/such/file.parquet")),
    ("cache: path", TypeError, lambda: dp.cache(3)),
    ("augment: fn", TypeError, lambda: dp.augment(3)),
    ("augment: name", TypeError, lambda: dp.augment(f, name="")),
    ("mix: give at least one input", ValueError, lambda: dp.mix()),
    ("mix: weights must not all be 0", ValueError,
     lambda: dp.mix(dp.from_sequence([1]), dp.from_sequence([2]), weights=[0, 0])),
    ("concat: input 0 must be a pipe", TypeError, lambda: dp.concat([1, 2])),
    ("zip: input 1 is a fragment", TypeError,
     lambda: dp.zip(dp.from_sequence([1]), dp.map(f))),
]


@pytest.mark.parametrize(
    ("prefix", "exc", "make"),
    BAD_ARGUMENTS,
    ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD_ARGUMENTS)],
)
def test_bad_arguments_raise_at_construction(prefix, exc, make):
    with pytest.raises(exc) as info:
        make()
    assert str(info.value).startswith(prefix), str(info.value)


def test_every_stage_has_a_bad_argument_case():
    covered = {prefix.split(":")[0] for prefix, _, _ in BAD_ARGUMENTS}
    takes_arguments = {
        name for name in public_stage_names() if inspect.signature(getattr(dp, name)).parameters
    }
    assert takes_arguments <= covered


# -- __all__ and docstrings ------------------------------------------------------------------


def test_all_is_sorted_and_unique():
    assert list(dp.__all__) == sorted(dp.__all__)
    assert len(set(dp.__all__)) == len(dp.__all__)


def test_every_name_in_all_exists():
    for name in dp.__all__:
        assert hasattr(dp, name), name


def test_star_import_gives_all():
    namespace: dict[str, object] = {}
    exec("from datapipes import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(dp.__all__)


def test_every_public_module_attribute_is_in_all():
    public = {
        name
        for name, value in vars(dp).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public <= set(dp.__all__)


@pytest.mark.parametrize("name", dp.__all__)
def test_public_names_have_a_docstring_with_an_example(name):
    obj = getattr(dp, name)
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    assert doc.splitlines()[0].strip(), f"{name}'s docstring needs a one-line summary"
    assert ">>>" in doc, f"{name}'s docstring has no >>> example"


# -- the package name --------------------------------------------------------------------------


def test_package_name_is_datapipes():
    assert dp.__name__ == "datapipes"
    assert Path(dp.__file__).parent.name == "datapipes"
    with open(ROOT / "pyproject.toml", "rb") as fh:
        assert tomllib.load(fh)["project"]["name"] == "datapipes"


def _python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


def test_import_datapipes_does_not_import_pipes():
    code = "import sys, datapipes; print('pipes' in sys.modules)"
    assert _python(code) == "False"


def test_stdlib_pipes_is_not_shadowed():
    spec = importlib.util.find_spec("pipes")
    if sys.version_info >= (3, 13):
        assert spec is None, "nothing may install a top-level module called pipes"
        return
    assert spec is not None and spec.origin is not None
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(spec.origin).resolve().parent == stdlib
    # from the repository root too, where a ./pipes package would come first
    code = (
        "import warnings; warnings.simplefilter('ignore'); import pipes, datapipes; "
        "print(hasattr(pipes, 'Template'), hasattr(pipes, 'batch'))"
    )
    assert _python(code) == "True False"
    assert not (ROOT / "pipes").exists() and not (ROOT / "pipes.py").exists()
