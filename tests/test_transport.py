"""Unit tests for the process transport: shared-memory pickling, the fd channel, and the
serialized list that protects forked workers from copy-on-read."""

from __future__ import annotations

import errno
import json
import math
import mmap
import os
import pickle
import socket
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
import torch

import datapipes as dp
from datapipes.buffers import allocator
from datapipes.executors import transport
from datapipes.executors.shared_list import MIN_LENGTH, SerializedSequence, share_objects
from datapipes.stages.collate import collate_value
from datapipes.testing import assert_equal_elements, assert_matches_reference

#: a timeout for every test here (those that start workers also carry their own)
pytestmark = pytest.mark.timeout(60)

BIG = transport.INLINE_BYTES  # bytes from which an array travels through shared memory


def round_trip(obj: Any) -> tuple[Any, transport.Arena]:
    """``obj`` through ``dumps``/``loads`` as a worker and the main process do it, with the
    worker's arena still open (the caller releases it)."""
    arena = transport.Arena()
    body = transport.dumps(obj, arena)
    # The worker sends its fds over a socket, which duplicates them; ``loads`` closes its own.
    fds = [os.dup(fd) for fd in arena.fds]
    return transport.loads(body, fds, arena.sizes()), arena


def mmap_base(arr: np.ndarray) -> mmap.mmap | None:
    """The mmap at the end of ``arr``'s ``base`` chain, if there is one."""
    base: Any = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def backed_by(obj: np.ndarray | torch.Tensor, arena: transport.Arena) -> bool:
    """Whether ``obj`` (as loaded in the main process) is the very memory the worker filled:
    a byte flipped through it shows in the worker's maps of the shared memory."""
    flat = (obj.numpy() if isinstance(obj, torch.Tensor) else obj).reshape(-1).view(np.uint8)
    before = [bytes(c.map) for c in arena.chunks]
    flat[0] ^= 0xFF
    changed = [bytes(c.map) for c in arena.chunks] != before
    flat[0] ^= 0xFF
    return changed


# -- dumps / loads ------------------------------------------------------------------------------
def test_nested_structure_round_trips_with_types_and_values() -> None:
    obj = {
        "image": np.arange(BIG, dtype=np.float32).reshape(64, -1),  # 64 KiB: shared memory
        "small": np.arange(5, dtype=np.int16),  # pickled inline
        "pair": (torch.arange(10_000, dtype=torch.int64), torch.tensor([1.5, 2.5])),
        "nested": [{"mask": np.ones((128, 128), dtype=bool)}, "text", 3, None],
        "scalar": np.float64(2.5),
    }
    out, arena = round_trip(obj)
    try:
        assert_equal_elements(obj, out)
        assert type(out["pair"]) is tuple and type(out["nested"]) is list
        assert out["image"].dtype == np.float32 and out["image"].shape == (64, BIG // 64)
        assert out["pair"][0].dtype == torch.int64 and isinstance(out["pair"][0], torch.Tensor)
        # large ones live in the shared memory (one chunk), small ones were pickled
        assert len(arena.fds) == 1
        assert backed_by(out["image"], arena)
        assert backed_by(out["pair"][0], arena)
        assert backed_by(out["nested"][0]["mask"], arena)
        assert not backed_by(out["small"], arena)
        assert not backed_by(out["pair"][1], arena)
    finally:
        arena.release()


def test_large_arrays_are_mapped_not_copied() -> None:
    big = np.zeros(BIG // 8, dtype=np.float64)
    out, arena = round_trip([big, big.copy(), torch.zeros(BIG // 4, dtype=torch.float32)])
    try:
        arr, arr2, tensor = out
        # the base chain ends in an mmap of the shared memory; both arrays come from the
        # same chunk, so they share one mapping
        assert mmap_base(arr) is not None
        assert mmap_base(arr) is mmap_base(arr2)
        assert not np.shares_memory(arr, arr2)
        assert backed_by(tensor, arena)
        assert len(arena.chunks) == 1
        arr[3] = 42.0
        worker_view = np.frombuffer(arena.chunks[0].map, dtype=np.float64, count=arr.size)
        assert worker_view[3] == 42.0  # the same memory, not a copy
    finally:
        arena.release()


def test_results_outlive_the_worker_side_and_the_fds() -> None:
    arr = np.arange(BIG, dtype=np.int32)
    out, arena = round_trip({"x": arr})
    arena.release()  # the worker closes its fds and maps once the result is sent
    np.testing.assert_array_equal(out["x"], arr)
    out["x"][:] = 7  # still mapped, still writable
    assert int(out["x"].sum()) == 7 * arr.size


def test_small_only_results_use_no_shared_memory() -> None:
    obj = {"a": np.arange(10), "t": torch.ones(3), "s": "x" * 100_000}
    out, arena = round_trip(obj)
    try:
        assert arena.fds == []
        assert mmap_base(out["a"]) is None
        assert_equal_elements(obj, out)
    finally:
        arena.release()


def test_threshold_is_inclusive_of_inline_bytes() -> None:
    below = np.zeros(BIG - 1, dtype=np.uint8)
    at = np.zeros(BIG, dtype=np.uint8)
    out, arena = round_trip((below, at))
    try:
        assert not backed_by(out[0], arena)
        assert backed_by(out[1], arena)
    finally:
        arena.release()


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(40_000.0).reshape(200, 200)[:, ::2],  # strided
        lambda: np.asfortranarray(np.arange(40_000.0).reshape(200, 200)),  # Fortran order
        lambda: np.arange(10_000.0)[::-1],  # negative strides
        lambda: torch.arange(40_000.0).reshape(200, 200).t(),  # transposed tensor
        lambda: torch.arange(40_000, dtype=torch.int32)[1::3],  # offset, strided tensor
    ],
    ids=["strided", "fortran", "reversed", "tensor-transposed", "tensor-offset"],
)
def test_non_contiguous_arrays_round_trip(make: Any) -> None:
    obj = make()
    out, arena = round_trip({"v": obj})
    try:
        assert type(out["v"]) is type(obj)
        assert_equal_elements(obj, out["v"])
        assert backed_by(out["v"], arena)
    finally:
        arena.release()


@pytest.mark.parametrize(
    "dtype", ["<f2", ">i8", "complex128", "bool", "<U8", "S5", "datetime64[ns]", "uint64"]
)
def test_dtypes_are_kept(dtype: str) -> None:
    arr = np.zeros(BIG // 2, dtype=dtype)
    out, arena = round_trip(arr)
    try:
        assert out.dtype == arr.dtype and out.shape == arr.shape
        assert_equal_elements(arr, out)
    finally:
        arena.release()


def test_structured_dtype_keeps_its_fields() -> None:
    arr = np.zeros(BIG // 8, dtype=[("a", "<f8"), ("b", "<i4")])
    arr["a"] = np.arange(arr.size)
    out, arena = round_trip(arr)
    try:
        assert out.dtype == arr.dtype, f"got dtype {out.dtype}, expected {arr.dtype}"
        np.testing.assert_array_equal(out["a"], arr["a"])
    finally:
        arena.release()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.bool, torch.uint8])
def test_tensor_dtypes_are_kept(dtype: torch.dtype) -> None:
    tensor = torch.ones(BIG, dtype=dtype)
    out, arena = round_trip(tensor)
    try:
        assert isinstance(out, torch.Tensor)
        assert out.dtype == dtype and out.shape == tensor.shape
        assert torch.equal(out, tensor)
    finally:
        arena.release()


def test_object_arrays_are_pickled_inline() -> None:
    arr = np.array([{"k": i} for i in range(5_000)], dtype=object)  # 40 KB of pointers
    out, arena = round_trip({"objs": arr})
    try:
        assert arena.fds == []
        assert out["objs"].dtype == object
        assert out["objs"][4_999] == {"k": 4_999}
    finally:
        arena.release()


def test_subclasses_and_special_tensors_are_pickled_as_themselves() -> None:
    masked = np.ma.masked_array(np.arange(5_000.0), mask=np.arange(5_000) % 2 == 0)
    grad = torch.ones(10_000, requires_grad=True)
    out, arena = round_trip((masked, grad))
    try:
        assert type(out[0]) is np.ma.MaskedArray
        np.testing.assert_array_equal(out[0].mask, masked.mask)
        assert out[1].requires_grad and torch.equal(out[1].detach(), grad.detach())
    finally:
        arena.release()


def test_empty_and_zero_size_arrays() -> None:
    obj = [np.zeros((0, 100_000)), torch.empty(0, 5_000), np.zeros(())]
    out, arena = round_trip(obj)
    try:
        assert_equal_elements(obj, out)
    finally:
        arena.release()


def test_arrays_built_in_the_arena_are_not_copied_again() -> None:
    arena = transport.Arena()
    try:
        with transport.collating_into(arena):
            assert allocator.get() is not None
            batch = collate_value([np.full(4, i, dtype=np.float32) for i in range(3)])
        assert allocator.get() is None  # restored on exit
        used = list(arena.used)
        assert arena.locate(batch.numpy()) is not None  # stacked straight into shared memory
        body = transport.dumps({"b": batch}, arena)
        assert arena.used == used  # no new room taken: the batch is sent where it is
        out = transport.loads(body, [os.dup(fd) for fd in arena.fds], arena.sizes())
        # small, but it was built in shared memory, so it travels by descriptor
        assert backed_by(out["b"], arena)
        assert torch.equal(out["b"], torch.tensor([[0.0] * 4, [1.0] * 4, [2.0] * 4]))
    finally:
        arena.release()


@pytest.mark.parametrize("n", [3, BIG])
def test_collated_tensors_can_cross_as_arrays_and_arrive_as_tensors(n: int) -> None:
    """What a worker whose pipe ends in collate does: it needs no torch, the main process
    makes the tensors, and they are the reference's (same values, dtype and shape)."""
    elements = [{"x": np.full(n, i, dtype=np.int16), "y": float(i), "s": str(i)}
                for i in range(3)]
    arena = transport.Arena()
    try:
        with transport.collating_into(arena, tensors_as_arrays=True):
            batch = collate_value(elements)
        assert type(batch["x"]) is transport.TensorOf and type(batch["y"]) is transport.TensorOf
        body = transport.dumps(batch, arena)
        out = transport.loads(body, [os.dup(fd) for fd in arena.fds], arena.sizes())
        assert_equal_elements(collate_value(elements), out)
        assert type(out["x"]) is torch.Tensor and out["x"].dtype == torch.int16
        assert backed_by(out["x"], arena)  # stacked in shared memory, sent from there
        assert not backed_by(out["y"], arena)  # numbers: a small array, pickled inline
    finally:
        arena.release()
    with transport.collating_into(transport.Arena()):
        assert type(collate_value(elements)["x"]) is torch.Tensor  # not asked: real tensors


def test_arena_packs_arrays_aligned_in_one_chunk() -> None:
    arena = transport.Arena()
    try:
        a = arena.array((10,), np.uint8)
        b = arena.array((3, 3), np.float64)
        where_a, where_b = arena.locate(a), arena.locate(b)
        assert where_a is not None and where_b is not None
        (ca, oa), (cb, ob) = where_a, where_b
        assert ca == cb == 0 and oa == 0 and ob % 64 == 0 and ob >= 10
        assert all(size % mmap.PAGESIZE == 0 for _, size in arena.sizes())
        assert arena.locate(np.zeros(3)) is None  # not in the arena
        assert arena.locate(b[:, ::2]) is None  # not contiguous
    finally:
        arena.release()


def test_shared_memory_is_anonymous() -> None:
    before = set(os.listdir("/dev/shm"))
    out, arena = round_trip(np.ones(1_000_000))
    arena.release()
    assert set(os.listdir("/dev/shm")) == before
    assert float(out.sum()) == 1_000_000.0


# torch's own pickle of these does not load back (torch 2.x): they travel as raw bytes
TORCH_ONLY_DTYPES = [torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn]


@pytest.mark.parametrize("shape", [(3,), (0,), (), (0, 5), (BIG,)], ids=str)
@pytest.mark.parametrize("dtype", TORCH_ONLY_DTYPES, ids=str)
def test_tensors_of_dtypes_torch_cannot_pickle_round_trip(dtype: torch.dtype, shape: Any) -> None:
    tensor = torch.arange(math.prod(shape) or 1)[: math.prod(shape)].reshape(shape).to(dtype)
    out, arena = round_trip({"t": tensor, "pair": (tensor, tensor)})
    try:
        assert_equal_elements({"t": tensor, "pair": (tensor, tensor)}, out)
    finally:
        arena.release()


def nested(depth: int) -> list[Any]:
    value: list[Any] = [0]
    for _ in range(depth):
        value = [value]
    return value


def test_a_result_nested_too_deeply_to_pickle_is_a_clear_error() -> None:
    arena = transport.Arena()
    with pytest.raises(ValueError, match="nested too deeply to send") as info:
        transport.dumps({"x": nested(5_000)}, arena)
    assert "recursion limit" in str(info.value)
    arena.release()
    transport.dumps(nested(300), arena)  # deep but not too deep


def open_fds() -> set[int]:
    """This process's open descriptors (less the one that listed them)."""
    listed = {int(fd) for fd in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if _is_open(fd)}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("where", ["mmap", "ftruncate"])
def test_shared_memory_that_cannot_be_had_is_a_clear_error_and_leaks_no_fd(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(*args: Any) -> Any:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    before = open_fds()
    arena = transport.Arena()
    with monkeypatch.context() as patch:
        patch.setattr(transport.mmap if where == "mmap" else transport.os, where, no_memory)
        for _ in range(3):
            with pytest.raises(transport.SharedMemoryError) as info:
                transport.dumps(np.zeros(BIG * 4, dtype=np.uint8), arena)
    arena.release()
    assert open_fds() == before  # no memfd left open, however often it failed
    message = str(info.value)
    assert info.value.errno == errno.ENOMEM
    assert "shared memory" in message and "/dev/shm" in message and "memory limit" in message
    assert f"{transport._CHUNK} bytes" in message, message


FEW_FDS = """
import errno, json, os, resource
import numpy as np
from datapipes.executors import transport

def open_fds():
    listed = {int(fd) for fd in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if os.path.exists(f"/proc/self/fd/{fd}")}

arena = transport.Arena()
a, b = transport.channel_pair()
# six chunks, never written: no memory is used
body = transport.dumps([arena.array((transport._CHUNK,), np.uint8) for _ in range(6)], arena)
a.send(body, arena.fds)
before = open_fds()
room = [n for n in range(max(before) + 3) if n not in before][:2]  # for two of the six
limit = room[-1] + 1
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
data, fds = b.recv()
try:
    transport.loads(data, fds, arena.sizes())
    error = None
except Exception as exc:
    error = exc
print(json.dumps({"limit": limit, "leaked": sorted(open_fds() - before),
                  "type": type(error).__name__, "errno": getattr(error, "errno", None),
                  "message": str(error)}))
"""


@pytest.mark.timeout(60)
def test_running_out_of_fds_while_receiving_is_a_clear_error_and_leaks_none() -> None:
    """The kernel drops the descriptors that do not fit under the limit (lowered in a child
    process): the message must say so, and those that did arrive must be closed."""
    run = subprocess.run([sys.executable, "-c", FEW_FDS], capture_output=True, text=True,
                         timeout=50, check=False)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    message = got["message"]
    assert got["errno"] == errno.EMFILE, got
    assert "main process ran out of file descriptors" in message, message
    assert f"limit is {got['limit']}" in message and "ulimit -n" in message, message
    assert got["leaked"] == []


def test_running_out_of_fds_while_mapping_is_a_clear_error_and_leaks_none(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    arena = transport.Arena()
    real = mmap.mmap
    calls = []

    def second_fails(*args: Any) -> Any:  # CPython's mmap duplicates the fd it maps
        calls.append(args)
        if len(calls) == 2:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real(*args)

    try:
        body = transport.dumps([arena.array((transport._CHUNK,), np.uint8) for _ in range(3)],
                               arena)
        before = open_fds()
        fds = [os.dup(fd) for fd in arena.fds]
        with monkeypatch.context() as patch:
            patch.setattr(transport.mmap, "mmap", second_fails)
            with pytest.raises(OSError, match="main process ran out of file descriptors"):
                transport.loads(body, fds, arena.sizes())
        assert open_fds() == before
    finally:
        arena.release()


# -- Channel ------------------------------------------------------------------------------------
def test_channel_sends_messages_in_order_with_their_boundaries() -> None:
    a, b = transport.channel_pair()
    try:
        for message in [b"one", b"", b"three" * 10]:
            a.send(message)
        assert [b.recv() for _ in range(3)] == [(b"one", []), (b"", []), (b"three" * 10, [])]
    finally:
        a.close()
        b.close()


def test_channel_passes_file_descriptors() -> None:
    a, b = transport.channel_pair()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"through the fd")
        a.send(b"payload", [read_end])
        data, fds = b.recv()
        assert data == b"payload" and len(fds) == 1
        assert fds[0] != read_end  # a new descriptor for the same pipe
        try:
            assert os.read(fds[0], 100) == b"through the fd"
        finally:
            os.close(fds[0])
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_channel_passes_more_descriptors_than_one_message_holds() -> None:
    a, b = transport.channel_pair()
    read_end, write_end = os.pipe()
    sent = [os.dup(read_end) for _ in range(3 * transport._MAX_FDS + 5)]
    try:
        os.write(write_end, b"x")
        a.send(b"many", sent)
        a.send(b"next")  # and the stream is still in step
        data, fds = b.recv()
        try:
            assert data == b"many" and len(fds) == len(sent)
            assert all(os.fstat(fd).st_ino == os.fstat(read_end).st_ino for fd in fds)
        finally:
            transport.close_fds(fds)
        assert b.recv() == (b"next", [])
    finally:
        transport.close_fds([*sent, read_end, write_end])
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_channel_carries_a_message_larger_than_the_socket_buffer() -> None:
    a, b = transport.channel_pair()
    message = os.urandom(8 * 1024 * 1024)
    sender = threading.Thread(target=a.send, args=(message,), name="test-sender")
    sender.start()
    try:
        data, fds = b.recv()
        assert data == message and fds == []
    finally:
        sender.join(10)
        a.close()
        b.close()


def test_recv_on_a_closed_peer_raises_eoferror() -> None:
    a, b = transport.channel_pair()
    a.close()
    try:
        with pytest.raises(EOFError):
            b.recv()
    finally:
        b.close()


def test_recv_of_a_truncated_message_raises_eoferror() -> None:
    a, b = transport.channel_pair()
    try:
        a.sock.sendall(transport._HEADER.pack(100, 0) + b"only ten b")
        a.sock.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError):
            b.recv()
    finally:
        a.close()
        b.close()



# -- through worker processes -------------------------------------------------------------------
def through_workers(pipe: dp.Pipe[Any]) -> list[Any]:
    with pipe.compile(workers=2) as loader:
        return list(loader)


def torch_only_tensor(i: int) -> dict[str, torch.Tensor]:
    return {"u16": torch.tensor([i, 2, 3], dtype=torch.uint16),
            "u32": torch.tensor(i, dtype=torch.uint32),
            "u64": torch.zeros(0, dtype=torch.uint64)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("collate", [False, True], ids=["elements", "collated"])
def test_unsigned_tensors_through_workers_equal_the_reference(collate: bool) -> None:
    pipe = dp.from_sequence(range(8)) | dp.map(torch_only_tensor)
    if collate:
        pipe = pipe | dp.batch(2) | dp.collate()
    assert_equal_elements(list(pipe), through_workers(pipe))


@pytest.mark.timeout(120)
def test_ints_beyond_int64_fail_through_workers_as_in_the_reference() -> None:
    for values in ([0, 2**63], [2**63, 2**63]):
        pipe = dp.from_sequence([{"id": v} for v in values]) | dp.batch(2) | dp.collate()
        with pytest.raises(ValueError) as reference:
            list(pipe)
        with pytest.raises(ValueError) as compiled:
            through_workers(pipe)
        assert "['id']" in str(compiled.value) and str(2**63) in str(compiled.value)
        assert str(compiled.value) == str(reference.value)


def big_array(i: int) -> np.ndarray:
    # over half a chunk: each array needs a chunk (and a descriptor) of its own
    return np.full(transport._CHUNK // 2 + 4096, i % 251, dtype=np.uint8)


@pytest.mark.timeout(180)
def test_a_result_with_more_arrays_than_one_message_carries_descriptors_for() -> None:
    n = transport._MAX_FDS + 2
    pipe = dp.from_sequence(range(n)) | dp.map(big_array) | dp.batch(n)
    (batch,) = through_workers(pipe)
    assert len(batch) == n
    for i, arr in enumerate(batch):
        assert arr.shape == big_array(i).shape and arr.dtype == np.uint8
        assert arr[0] == arr[-1] == i % 251 and int(arr.min()) == int(arr.max())


@pytest.mark.timeout(120)
def test_a_result_nested_too_deeply_to_send_is_a_clear_error_through_workers() -> None:
    pipe = dp.from_sequence(range(2)) | dp.map(lambda i: nested(600))
    assert next(iter(pipe)) == nested(600)  # the reference need not pickle it
    with pytest.raises(ValueError, match="nested too deeply to send"):
        through_workers(pipe)


# -- SerializedSequence -------------------------------------------------------------------------
def test_serialized_sequence_indexing() -> None:
    items = [{"id": i, "name": f"item{i}"} for i in range(50)] + [None, (1, 2), "last"]
    seq = SerializedSequence(items)
    assert len(seq) == len(items)
    assert [seq[i] for i in range(len(items))] == items
    assert seq[-1] == "last" and seq[-len(items)] == items[0]
    assert seq[np.int64(3)] == items[3]  # type: ignore[index]
    assert seq.nbytes > 0
    # each read unpickles a fresh object: mutating it does not change the sequence
    seq[0]["id"] = -1
    assert seq[0] == {"id": 0, "name": "item0"}


@pytest.mark.parametrize("index", [53, -54, 10**9])
def test_serialized_sequence_index_out_of_range(index: int) -> None:
    seq = SerializedSequence(list(range(53)))
    with pytest.raises(IndexError, match="out of range"):
        seq[index]


def test_empty_serialized_sequence() -> None:
    seq = SerializedSequence([])
    assert len(seq) == 0
    with pytest.raises(IndexError):
        seq[0]


def test_serialized_sequence_pickles() -> None:
    seq = SerializedSequence(["a", "b", {"c": 3}])
    again = pickle.loads(pickle.dumps(seq))
    assert [again[i] for i in range(3)] == ["a", "b", {"c": 3}]


def test_share_objects_replaces_only_large_lists() -> None:
    big = [{"i": i} for i in range(MIN_LENGTH)]
    pipe = dp.from_sequence(big) | dp.map(len)
    shared, note = share_objects(pipe)
    assert isinstance(shared.stages[0].seq, SerializedSequence)  # type: ignore[attr-defined]
    assert shared.stages[1:] == pipe.stages[1:]
    assert note is not None and f"list of {MIN_LENGTH} objects" in note
    assert list(shared) == list(pipe)

    for small in (dp.from_sequence(big[:10]), dp.from_sequence(range(MIN_LENGTH * 2))):
        assert share_objects(small) == (small, None)


def test_share_objects_keeps_a_list_that_does_not_pickle() -> None:
    lock = threading.Lock()
    pipe = dp.from_sequence([lock] * MIN_LENGTH)
    same, note = share_objects(pipe)
    assert same is pipe
    assert note is not None and "does not pickle" in note


@pytest.mark.timeout(120)
def test_a_long_list_of_tensors_torch_cannot_pickle_reaches_forked_workers() -> None:
    # a list of 10,000 or more is pickled element by element for process workers
    import torch

    data = [torch.tensor([i, 2**15 + i], dtype=torch.uint16) for i in range(10_000)]
    pipe = dp.from_sequence(data) | dp.take(50) | dp.batch(10) | dp.collate()
    with pipe.compile(workers=2, start_method="fork") as loader:
        got = list(loader)
    want = list(pipe)
    assert [b.dtype for b in got] == [torch.uint16] * 5
    assert all(torch.equal(a.to(torch.int32), b.to(torch.int32)) for a, b in zip(got, want,
                                                                                strict=True))


# -- the output-buffer hook -------------------------------------------------------------------
def _stack_rows(batch: list[Any]) -> Any:
    out = dp.output_array((len(batch), *np.shape(batch[0])), np.float32)
    for i, row in enumerate(batch):
        out[i] = row
    return out


def _stack_rows_as_tensor(batch: list[Any]) -> Any:
    import torch

    return torch.from_numpy(_stack_rows(batch))


@pytest.mark.parametrize("fn", [_stack_rows, _stack_rows_as_tensor])
def test_a_batch_written_into_output_array_is_placed_without_a_copy(fn: Any) -> None:
    from datapipes.executors.transport import collating_into

    arena = transport.Arena()
    batch = [np.full(8192, i, np.float32) for i in range(4)]
    with collating_into(arena):
        out = fn(batch)
    array = out.numpy() if hasattr(out, "numpy") else out
    assert arena.locate(array) is not None  # it lies in the worker's shared memory already
    assert dp.output_array(3, "int16").dtype == np.int16  # outside: ordinary memory
    arena.release()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fn", [_stack_rows, _stack_rows_as_tensor])
def test_a_collate_fn_using_output_array_equals_the_reference_through_workers(fn: Any) -> None:
    pipe = (dp.from_sequence([np.full(8192, i, np.float32) for i in range(40)]) | dp.batch(8)
            | dp.collate(fn))
    assert_matches_reference(pipe, workers=2)
    with pipe.compile(workers=2) as loader:
        list(loader)
        assert loader.stats().shared_bytes >= 40 * 8192 * 4


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_tensors_torch_cannot_pickle_in_the_pipe_reach_spawned_workers(start_method: str) -> None:
    import torch

    data = [torch.tensor([i, 2**15 + i, 7], dtype=torch.uint16) for i in range(8)]
    pipe = dp.from_sequence(data) | dp.batch(4) | dp.collate()
    assert_matches_reference(pipe, workers=2, start_method=start_method)
