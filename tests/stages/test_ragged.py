"""Ragged data: bucket_by_length, batch(max_tokens=...) and pack, each against a plain-Python
model, under every executor, and resumed from checkpoints."""

from __future__ import annotations

import bisect
import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes._graph import EpochContext
from datapipes.stages.ragged import (
    bucket_by_length,
    bucket_iter,
    pack,
    pack_iter,
    token_batch_iter,
)
from datapipes.testing import assert_matches_reference, assert_resumable, reference

# -- module-level functions, so that pipes pickle and their reprs evaluate ------------------


def tokens_of(i):
    """A token list whose length depends on ``i``: 0 .. 16."""
    return list(range(100 * i, 100 * i + (7 * i) % 17))


def random_tokens(i, rng):
    return rng.integers(1, 1000, size=int(rng.integers(0, 20))).astype(np.int64)


def count_up(n):
    return list(range(1, n + 1))


def record_of(i):
    return {"tokens": tokens_of(i), "label": i}


def is_long(x):
    return len(x) > 3


def count_words(text):
    return len(text.split())


def bad_length(x):
    return -1


def float_length(x):
    return 2.0


# -- the models: what each stage means, written the plain way ------------------------------


def model_buckets(items, boundaries, sizes, drop_last=False, length=len):
    buckets = {i: [] for i in range(len(sizes))}
    out = []
    for x in items:
        i = sum(1 for b in boundaries if length(x) >= b)
        buckets[i].append(x)
        if len(buckets[i]) == sizes[i]:
            out.append(buckets[i])
            buckets[i] = []
    if not drop_last:
        out.extend(buckets[i] for i in range(len(sizes)) if buckets[i])
    return out


def model_token_batches(items, max_tokens, size=None, oversize="error", drop_last=False):
    out, current = [], []
    for x in items:
        if len(x) > max_tokens:
            assert oversize == "alone"
            out += [current] if current else []
            out.append([x])
            current = []
            continue
        candidate = [*current, x]
        if len(candidate) * max(map(len, candidate)) > max_tokens:
            out.append(current)
            candidate = [x]
        current = candidate
        if size is not None and len(current) == size:
            out.append(current)
            current = []
    if current and not drop_last:
        out.append(current)
    return out


def model_pack(sequences, length, drop_remainder=False):
    """Flatten to (token, sequence number, position), chop into rows, number the segments."""
    flat = [(t, s, p) for s, seq in enumerate(sequences) for p, t in enumerate(seq)]
    rows = []
    for start in range(0, len(flat), length):
        chunk = flat[start : start + length]
        if len(chunk) < length and drop_remainder:
            break
        order = list(dict.fromkeys(s for _, s, _ in chunk))
        pad = length - len(chunk)
        rows.append({
            "tokens": [t for t, _, _ in chunk] + [0] * pad,
            "segment_ids": [order.index(s) + 1 for _, s, _ in chunk] + [0] * pad,
            "positions": [p for _, _, p in chunk] + [0] * pad,
        })
    return rows


def plain_rows(rows):
    return [{k: v.tolist() for k, v in row.items()} for row in rows]


def keyed(pipe, seed=0, epoch=0):
    """Stage by stage, as ``reference`` runs it, keeping the keys."""
    ctx = EpochContext(seed, epoch)
    items = iter(())
    for stage_key, stage in pipe.keyed_stages():
        items = stage.stream(items, ctx, stage_key)
    return list(items)


lengths = st.lists(st.integers(0, 40), max_size=60)


def words_of(lens):
    return [chr(97 + i % 26) * n for i, n in enumerate(lens)]


@st.composite
def bucketing(draw):
    bounds = sorted(set(draw(st.lists(st.integers(1, 40), max_size=4))))
    sizes = draw(st.lists(st.integers(1, 5), min_size=len(bounds) + 1,
                          max_size=len(bounds) + 1))
    return bounds, sizes


# -- bucket_by_length ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(lens=lengths, spec=bucketing(), drop_last=st.booleans())
def test_bucket_by_length_is_the_model(lens, spec, drop_last):
    bounds, sizes = spec
    words = words_of(lens)
    pipe = dp.from_sequence(words) | bucket_by_length(bounds, sizes, drop_last=drop_last)
    expected = model_buckets(words, bounds, sizes, drop_last)
    assert list(pipe) == expected
    assert reference(pipe) == expected
    assert list(bucket_iter(words, bounds, sizes, drop_last=drop_last)) == expected


@settings(max_examples=100, deadline=None)
@given(lens=lengths, spec=bucketing())
def test_bucket_batches_hold_one_bucket_and_lose_nothing(lens, spec):
    bounds, sizes = spec
    words = words_of(lens)
    batches = list(dp.from_iterable(words) | bucket_by_length(bounds, sizes))
    assert sorted(w for b in batches for w in b) == sorted(words)
    for b in batches:
        buckets = {bisect.bisect_right(bounds, len(w)) for w in b}
        assert len(buckets) == 1
        assert len(b) <= sizes[buckets.pop()]


def test_bucket_boundaries_are_half_open():
    words = ["", "a", "bb", "ccc", "dddd"]
    pipe = dp.from_sequence(words) | bucket_by_length([1, 3], [5, 5, 5])
    assert list(pipe) == [[""], ["a", "bb"], ["ccc", "dddd"]]


def test_bucket_partial_batches_come_in_bucket_order():
    words = ["dddd", "bb", "a"]  # seen in the order of buckets 2, 1, 0
    pipe = dp.from_sequence(words) | bucket_by_length([2, 4], [9, 9, 9])
    assert list(pipe) == [["a"], ["bb"], ["dddd"]]
    drop = dp.from_sequence(words) | bucket_by_length([2, 4], [9, 9, 9], drop_last=True)
    assert list(drop) == []


def test_bucket_keys_are_batch_numbers():
    words = words_of([1, 5, 1, 5, 1, 5, 2])
    out = keyed(dp.from_sequence(words) | bucket_by_length([3], [2, 2]))
    assert out == [(0, ["a", "c"]), (1, ["bbbbb", "ddddd"]), (2, ["e", "gg"]), (3, ["fffff"])]


def test_bucket_all_elements_in_one_bucket_is_batch():
    words = words_of([3] * 10)
    pipe = dp.from_sequence(words) | bucket_by_length([1, 100], [7, 4, 7])
    assert list(pipe) == list(dp.from_sequence(words) | dp.batch(4))
    no_bounds = dp.from_sequence(words) | bucket_by_length([], [4])
    assert list(no_bounds) == list(dp.from_sequence(words) | dp.batch(4))


def test_bucket_empty_epoch():
    assert list(dp.from_sequence([]) | bucket_by_length([2], [2, 2])) == []
    assert list(dp.from_iterable([]) | bucket_by_length([2], [2, 2], drop_last=True)) == []


def test_bucket_with_a_length_function():
    texts = ["a b", "c", "d e f g", "h i", "j"]
    pipe = dp.from_sequence(texts) | bucket_by_length([2], [2, 2], length=count_words)
    assert list(pipe) == [["a b", "d e f g"], ["c", "j"], ["h i"]]


def test_bucket_length_errors_name_the_stage_and_key():
    pipe = dp.from_sequence(["a", "b"]) | bucket_by_length([2], [2, 2], length=bad_length)
    with pytest.raises(ValueError, match=r"^bucket_by_length: length must return an int") as e:
        list(pipe)
    assert "key 0" in e.value.__notes__[0]
    pipe = dp.from_sequence(["a"]) | bucket_by_length([2], [2, 2], length=float_length)
    with pytest.raises(TypeError, match=r"^bucket_by_length: length must return an int"):
        list(pipe)
    with pytest.raises(TypeError) as e:
        list(dp.from_sequence([1, 2]) | bucket_by_length([2], [2, 2]))
    assert "bucket_by_length" in e.value.__notes__[0]


def test_bucket_has_no_length_and_runs_in_the_tail():
    pipe = dp.from_sequence(range(10)) | dp.map(tokens_of) | bucket_by_length([5], [2, 2])
    assert pipe.length() is None
    lines = pipe.explain().splitlines()
    assert "workers" in lines[2] and "tail" in lines[3]


# -- batch(max_tokens=...) -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(lens=lengths, max_tokens=st.integers(1, 60), size=st.none() | st.integers(1, 6),
       drop_last=st.booleans())
def test_token_batches_are_the_model(lens, max_tokens, size, drop_last):
    words = words_of(lens)
    pipe = dp.from_sequence(words) | dp.batch(size, max_tokens=max_tokens, oversize="alone",
                                              drop_last=drop_last)
    expected = model_token_batches(words, max_tokens, size, "alone", drop_last)
    assert list(pipe) == expected
    assert reference(pipe) == expected
    for b in expected:
        assert len(b) == 1 or len(b) * max(map(len, b)) <= max_tokens
    assert list(token_batch_iter(words, max_tokens, size=size, oversize="alone",
                                 drop_last=drop_last)) == expected


@settings(max_examples=100, deadline=None)
@given(lens=st.lists(st.integers(0, 10), max_size=40), max_tokens=st.integers(10, 40))
def test_token_batches_are_greedy(lens, max_tokens):
    """Each batch but the last would overflow with the next element."""
    words = words_of(lens)
    batches = list(dp.from_iterable(words) | dp.batch(max_tokens=max_tokens))
    assert [w for b in batches for w in b] == words
    for b, following in itertools.pairwise(batches):
        grown = [*b, following[0]]
        assert len(grown) * max(map(len, grown)) > max_tokens


def test_token_batch_oversize_is_a_clear_error():
    words = ["ab", "c", "defghijklm", "n"]
    pipe = dp.from_sequence(words) | dp.batch(max_tokens=8)
    with pytest.raises(ValueError, match=r"^batch: the element with key 2 has length 10, more "
                                         r"than max_tokens=8") as e:
        list(pipe)
    assert "batch(max_tokens=8)" in e.value.__notes__[0]
    with pytest.raises(ValueError, match="max_tokens=8"):
        list(token_batch_iter(words, 8))


def test_token_batch_oversize_alone():
    words = ["ab", "c", "defghijklm", "n", "opqrstuvwxyz"]
    pipe = dp.from_sequence(words) | dp.batch(max_tokens=8, oversize="alone")
    assert list(pipe) == [["ab", "c"], ["defghijklm"], ["n"], ["opqrstuvwxyz"]]
    drop = dp.from_sequence(words) | dp.batch(max_tokens=8, oversize="alone", drop_last=True)
    assert list(drop) == [["ab", "c"], ["defghijklm"], ["n"], ["opqrstuvwxyz"]]


def test_token_batch_oversize_is_skipped_with_on_error_skip():
    words = ["ab", "c", "defghijklm", "n"]
    pipe = dp.from_sequence(words) | dp.batch(max_tokens=8)
    loader = pipe.compile(workers=0, on_error="skip")
    try:
        assert list(loader) == [["ab", "c", "n"]]
        assert [s.key for s in loader.skipped] == [2]
    finally:
        loader.close()


def test_token_batch_with_size_and_drop_last():
    words = words_of([1] * 7)
    assert list(dp.from_sequence(words) | dp.batch(3, max_tokens=100)) == [
        words[0:3], words[3:6], words[6:]]
    assert list(dp.from_sequence(words) | dp.batch(3, max_tokens=100, drop_last=True)) == [
        words[0:3], words[3:6]]
    assert list(dp.from_sequence(words) | dp.batch(max_tokens=3, drop_last=True)) == [
        words[0:3], words[3:6]]


def test_token_batch_zero_lengths_and_empty_epoch():
    assert list(dp.from_sequence(["", "", ""]) | dp.batch(max_tokens=1)) == [["", "", ""]]
    assert list(dp.from_sequence([]) | dp.batch(max_tokens=5)) == []


def test_token_batch_with_a_length_function():
    texts = ["a b", "c", "d e f g", "h i", "j"]
    pipe = dp.from_sequence(texts) | dp.batch(max_tokens=4, length=count_words)
    assert list(pipe) == [["a b", "c"], ["d e f g"], ["h i", "j"]]


def test_token_batch_keys_are_batch_numbers():
    out = keyed(dp.from_sequence(words_of([2, 2, 5, 1, 1])) | dp.batch(max_tokens=5))
    assert [k for k, _ in out] == [0, 1, 2]


def test_token_batch_plans_in_the_tail_and_plain_batch_in_the_workers():
    head = dp.from_sequence(range(10)) | dp.map(tokens_of)
    tokens = (head | dp.batch(max_tokens=40)).explain().splitlines()[-1]
    assert "tail" in tokens and "lengths" in tokens
    plain = (head | dp.batch(4)).explain().splitlines()[-1]
    assert "workers" in plain and "membership follows from the head" in plain
    assert (head | dp.batch(max_tokens=40)).length() is None
    assert len(head | dp.batch(4)) == 3


def test_plain_batch_is_unchanged():
    assert repr(dp.batch(32)) == "batch(32)"
    assert repr(dp.batch(size=32, drop_last=True)) == "batch(32, drop_last=True)"
    assert type(dp.batch(32).stages[0]).__name__ == "Batch"
    assert dp.batch(4) != dp.batch(4, max_tokens=100)


# -- pack ----------------------------------------------------------------------------------


token_lists = st.lists(st.lists(st.integers(1, 1000), max_size=30), max_size=30)


@settings(max_examples=200, deadline=None)
@given(seqs=token_lists, length=st.integers(1, 40), drop=st.booleans())
def test_pack_is_the_model(seqs, length, drop):
    pipe = dp.from_sequence(seqs) | pack(length, drop_remainder=drop)
    expected = model_pack(seqs, length, drop)
    got = list(pipe)
    assert plain_rows(got) == expected
    assert plain_rows(reference(pipe)) == expected
    assert plain_rows(pack_iter(seqs, length, drop_remainder=drop)) == expected
    for row in got:
        assert row["tokens"].dtype == np.int64 and row["tokens"].shape == (length,)
        assert row["segment_ids"].dtype == np.int32 and row["segment_ids"].shape == (length,)
        assert row["positions"].dtype == np.int32 and row["positions"].shape == (length,)


@settings(max_examples=50, deadline=None)
@given(seqs=token_lists, length=st.integers(1, 40))
def test_pack_keeps_every_token(seqs, length):
    rows = list(dp.from_iterable(seqs) | pack(length))
    flat = [t for row in rows for t, s in zip(row["tokens"], row["segment_ids"], strict=True)
            if s]
    assert flat == [t for seq in seqs for t in seq]


def test_pack_numpy_arrays_and_a_long_sequence():
    seqs = [np.arange(1, 11, dtype=np.int32), np.array([7], np.uint8)]
    rows = list(dp.from_sequence(seqs) | pack(4))
    assert [r["tokens"].tolist() for r in rows] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 7, 0]]
    assert [r["segment_ids"].tolist() for r in rows] == [[1] * 4, [1] * 4, [1, 1, 2, 0]]
    assert [r["positions"].tolist() for r in rows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]


def test_pack_field_of_dicts():
    records = [{"tokens": [1, 2], "label": 0}, {"tokens": np.array([3, 4, 5]), "label": 1}]
    rows = list(dp.from_sequence(records) | pack(3, field="tokens"))
    assert plain_rows(rows) == model_pack([[1, 2], [3, 4, 5]], 3)


def test_pack_edge_cases():
    assert list(dp.from_sequence([]) | pack(4)) == []
    assert list(dp.from_sequence([[], []]) | pack(4)) == []
    exact = list(dp.from_sequence([[1, 2], [3, 4]]) | pack(4, drop_remainder=True))
    assert plain_rows(exact) == model_pack([[1, 2], [3, 4]], 4)
    assert list(dp.from_sequence([[1, 2, 3]]) | pack(4, drop_remainder=True)) == []


def test_pack_keys_are_row_numbers():
    out = keyed(dp.from_sequence([[1] * 5, [2] * 5]) | pack(3))
    assert [k for k, _ in out] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("element", "field", "exc", "message"),
    [
        ([[1, 2], [3, 4]], None, ValueError, r"^pack: a sequence must be 1-D, got shape \(2, 2\)"),
        ([1.5, 2.5], None, TypeError, r"^pack: tokens must be integers, got dtype float64"),
        ("abc", None, ValueError, r"^pack: a sequence must be 1-D"),
        ([1, 2], "tokens", TypeError, r"^pack: field='tokens' takes the tokens from dict"),
        ({"ids": [1]}, "tokens", ValueError, r"^pack: the element has no field 'tokens'"),
    ],
)
def test_pack_bad_elements(element, field, exc, message):
    first = [1] if field is None else {field: [1]}
    pipe = dp.from_sequence([first, element]) | pack(4, field=field)
    with pytest.raises(exc, match=message) as e:
        list(pipe)
    assert "pack(4" in e.value.__notes__[0] and "key 1" in e.value.__notes__[0]


# -- arguments, repr, equality, pickling -----------------------------------------------------


@pytest.mark.parametrize(
    ("make", "exc", "message"),
    [
        (lambda: bucket_by_length([3, 2], [1, 1, 1]), ValueError,
         r"^bucket_by_length: boundaries must be strictly increasing, got \[3, 2\]"),
        (lambda: bucket_by_length([2, 2], [1, 1, 1]), ValueError,
         "^bucket_by_length: boundaries must be strictly increasing"),
        (lambda: bucket_by_length([0, 2], [1, 1, 1]), ValueError,
         "^bucket_by_length: boundaries must be a sequence of ints >= 1"),
        (lambda: bucket_by_length([1.5], [1, 1]), TypeError,
         "^bucket_by_length: boundaries must be a sequence of ints"),
        (lambda: bucket_by_length(3, [1]), TypeError, "^bucket_by_length: boundaries must be"),
        (lambda: bucket_by_length("ab", [1]), TypeError, "^bucket_by_length: boundaries must"),
        (lambda: bucket_by_length(np.array(3), [1]), TypeError,
         "^bucket_by_length: boundaries must"),
        (lambda: bucket_by_length({2: 1}, [1, 1]), TypeError,
         "^bucket_by_length: boundaries must"),
        (lambda: bucket_by_length([2], [1]), ValueError,
         "^bucket_by_length: batch_sizes must give one size per bucket: 2 for 1 boundaries, "
         "got 1"),
        (lambda: bucket_by_length([2], [1, 0]), ValueError,
         "^bucket_by_length: batch_sizes must be a sequence of ints >= 1"),
        (lambda: bucket_by_length([2], [1, True]), TypeError,
         "^bucket_by_length: batch_sizes must be"),
        (lambda: bucket_by_length([2], [1, 1], length=3), TypeError,
         "^bucket_by_length: length must be callable"),
        (lambda: bucket_by_length([2], [1, 1], drop_last=1), TypeError,
         "^bucket_by_length: drop_last must be a bool"),
        (lambda: dp.batch(), TypeError, r"^batch: size must be an int >= 1 \(or give max_tokens"),
        (lambda: dp.batch(max_tokens=0), ValueError, "^batch: max_tokens must be an int >= 1"),
        (lambda: dp.batch(max_tokens=2.5), TypeError, "^batch: max_tokens must be an int"),
        (lambda: dp.batch(0, max_tokens=8), ValueError, "^batch: size must be an int >= 1"),
        (lambda: dp.batch(max_tokens=8, oversize="drop"), ValueError,
         "^batch: oversize must be 'error' or 'alone', got 'drop'"),
        (lambda: dp.batch(max_tokens=8, length=None), TypeError,
         "^batch: length must be callable"),
        (lambda: dp.batch(max_tokens=8, drop_last="no"), TypeError, "^batch: drop_last must be"),
        (lambda: dp.batch(4, length=count_words), ValueError,
         r"^batch: length and oversize apply only with max_tokens"),
        (lambda: dp.batch(4, oversize="alone"), ValueError, "^batch: length and oversize"),
        (lambda: pack(0), ValueError, "^pack: length must be an int >= 1"),
        (lambda: pack("8"), TypeError, "^pack: length must be an int"),
        (lambda: pack(8, field=""), TypeError, "^pack: field must be a non-empty str"),
        (lambda: pack(8, field=3), TypeError, "^pack: field must be"),
        (lambda: pack(8, drop_remainder=None), TypeError, "^pack: drop_remainder must be a bool"),
    ],
)
def test_bad_arguments_raise_at_construction(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


VARIANTS = [
    (lambda: bucket_by_length([2, 4], [3, 2, 1]), "bucket_by_length((2, 4), (3, 2, 1))"),
    (lambda: bucket_by_length((2, 4), np.array([3, 2, 1])),
     "bucket_by_length((2, 4), (3, 2, 1))"),
    (lambda: bucket_by_length([2, 5], [3, 2, 1]), "bucket_by_length((2, 5), (3, 2, 1))"),
    (lambda: bucket_by_length([2], [3, 2], length=count_words, drop_last=True),
     "bucket_by_length((2,), (3, 2), length=count_words, drop_last=True)"),
    (lambda: bucket_by_length([], [4], length=len), "bucket_by_length((), (4,))"),
    (lambda: dp.batch(max_tokens=64), "batch(max_tokens=64)"),
    (lambda: dp.batch(None, max_tokens=64, length=len, oversize="error"),
     "batch(max_tokens=64)"),
    (lambda: dp.batch(8, max_tokens=64), "batch(8, max_tokens=64)"),
    (lambda: dp.batch(max_tokens=64, length=count_words, oversize="alone", drop_last=True),
     "batch(drop_last=True, max_tokens=64, length=count_words, oversize='alone')"),
    (lambda: pack(128), "pack(128)"),
    (lambda: pack(128, field="tokens"), "pack(128, field='tokens')"),
    (lambda: pack(128, drop_remainder=True), "pack(128, drop_remainder=True)"),
]


@pytest.mark.parametrize(("make", "text"), VARIANTS, ids=[t for _, t in VARIANTS])
def test_repr_reads_like_the_call_and_evaluates(make, text):
    pipe = make()
    assert repr(pipe) == text
    namespace = {"bucket_by_length": bucket_by_length, "pack": pack,
                 "count_words": count_words, "len": len}
    exec("from datapipes import *", namespace)
    assert eval(repr(pipe), namespace) == pipe
    runnable = dp.from_sequence([[1, 2]]) | pipe
    assert eval(repr(runnable), namespace) == runnable


@pytest.mark.parametrize(("make", "text"), VARIANTS, ids=[t for _, t in VARIANTS])
def test_equal_by_value_and_pickles(make, text):
    a, b = make(), make()
    assert a == b and hash(a) == hash(b)
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and repr(copy) == repr(a)
    # equal exactly to the variants that read the same
    assert [m() == a for m, _ in VARIANTS] == [t == text for _, t in VARIANTS]


def test_stages_are_frozen():
    stage = bucket_by_length([2], [1, 1]).stages[0]
    with pytest.raises(AttributeError):
        stage.drop_last = True  # type: ignore[misc]


# -- the central properties: every executor, and resuming ------------------------------------

PIPES = {
    "bucket_by_length": lambda: (
        dp.from_sequence(range(90)) | dp.shuffle() | dp.map(random_tokens, rng=True)
        | bucket_by_length([4, 10, 15], [3, 4, 2, 5])
    ),
    "bucket_by_length, drop_last": lambda: (
        dp.from_sequence(range(60)) | dp.map(tokens_of) | dp.filter(is_long)
        | bucket_by_length([8], [4, 3], drop_last=True)
    ),
    "batch(max_tokens)": lambda: (
        dp.from_sequence(range(90)) | dp.shuffle() | dp.map(random_tokens, rng=True)
        | dp.batch(max_tokens=40, oversize="alone")
    ),
    "batch(size, max_tokens), stream": lambda: (
        dp.from_iterable(list(range(70))) | dp.map(tokens_of)
        | dp.batch(4, max_tokens=48, drop_last=True)
    ),
    "pack": lambda: (
        dp.from_sequence(range(90)) | dp.shuffle() | dp.map(random_tokens, rng=True) | pack(16)
    ),
    "pack(field)": lambda: (
        dp.from_sequence(range(60)) | dp.map(record_of) | pack(7, field="tokens",
                                                                drop_remainder=True)
    ),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(PIPES))
def test_threads_match_the_reference(name):
    assert_matches_reference(PIPES[name](), workers=2, backend="thread")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(PIPES))
def test_processes_match_the_reference(name):
    assert_matches_reference(PIPES[name](), workers=2, backend="process")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(PIPES))
def test_resumes_exactly(name):
    assert_resumable(PIPES[name](), at=[0, 1, 3], workers=2, backend="thread")


@pytest.mark.timeout(120)
def test_resumes_exactly_with_processes_and_other_worker_counts():
    assert_resumable(PIPES["batch(max_tokens)"](), at=[0, 2, -1], workers=2,
                     resume_with={"workers": 0})
    assert_resumable(PIPES["pack"](), at=[1, -2], workers=2, resume_with={"workers": 1})


def test_token_batches_resume_from_a_counter_and_buffers_replay():
    def position(pipe):
        loader = pipe.compile(workers=0)
        try:
            it = iter(loader)
            next(it)
            return loader.state_dict()["position"]
        finally:
            loader.close()

    assert position(PIPES["batch(max_tokens)"]())[0] != "replay"
    assert position(PIPES["bucket_by_length"]())[0] == "replay"
    assert position(PIPES["pack"]())[0] == "replay"


@pytest.mark.timeout(120)
@settings(max_examples=15, deadline=None)
@given(lens=st.lists(st.integers(0, 12), max_size=40), max_tokens=st.integers(12, 30),
       spec=bucketing(), at=st.integers(0, 5))
def test_random_lengths_under_threads_and_resumed(lens, max_tokens, spec, at):
    bounds, sizes = spec
    for stage in (bucket_by_length(bounds, sizes), dp.batch(max_tokens=max_tokens), pack(9)):
        pipe = dp.from_sequence(lens) | dp.map(count_up) | stage
        assert_matches_reference(pipe, workers=2, backend="thread", epochs=1)
        n = len(reference(pipe))
        if n:
            assert_resumable(pipe, at=[at % n], workers=2, backend="thread", epochs=1)
