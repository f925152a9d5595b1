"""ChunkFiles writes the bytes zarr writes, and an independent Zarr v3 reader agrees.

The direct path bypasses zarr-python's codec pipeline for speed; these tests are what keeps
it honest across zarr releases: for every layout it accepts, appended in uneven batches that
cross chunk boundaries (so the tail chunk is patched in place or replaced), each chunk file is
compared byte for byte with the one ``arr[...] = values`` writes, and tensorstore (another
implementation of the spec) reads the array back.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec, ZstdCodec
from zarr.storage import LocalStore, MemoryStore

from scopeflow.frame import Frame
from storage.datasets import DatasetWriter
from storage.datasets.chunk_files import SPARE, ChunkFiles, array_metadata
from storage.datasets.dataset import COUNTS_CODEC
from storage.datasets.file_writes import WRITE_BYTES, pwritev_all
from storage.datasets.tables import STRING_ROWS, Table, commit, fill_for, open_root
from tasks.acquisition.twin import DigitalTwin

ROWS = 11
BATCHES = (slice(0, 3), slice(3, 4), slice(4, 11))  # uneven, crossing chunk boundaries


def _values(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Poisson counts like a detector's, in ``dtype``: compressible but not trivially."""
    rng = np.random.default_rng(3)
    counts = rng.poisson(40.0, size=(ROWS, *shape))
    if dtype == "str":
        return np.array([f"frame-{c}" * (1 + c % 3) for c in counts], dtype=str)
    return counts.astype(dtype)


def _array(root: Path, values: np.ndarray, rows: int, **kw) -> zarr.Array:
    open_root(root, create=True)
    return zarr.open_group(root, mode="a").create_array(
        "a",
        shape=(0, *values.shape[1:]),
        chunks=(rows, *values.shape[1:]),
        dtype=str if values.dtype.kind == "U" else values.dtype,
        dimension_names=("row", *(f"d{i}" for i in range(values.ndim - 1))),
        **kw,
    )


def _chunk_files(array_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(array_dir)): p.read_bytes()
        for p in sorted(array_dir.rglob("*"))
        if p.is_file() and p.name not in ("zarr.json", SPARE)  # the spare holds an old version
    }


def _tensorstore_read(array_dir: Path) -> np.ndarray:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array_dir)}}
    return ts.open(spec, open=True, read=True).result().read().result()


# The project's layouts first (frames: one float32 row per chunk, raw or under COUNTS_CODEC; raw
# columns of many rows; strings), then the other corners the direct path accepts: each
# compressor, each shuffle, a block size, 1-, 2- and 8-byte types, rows of other ranks,
# encoded tails (replaced whole) and both chunk-key separators.
CASES = [
    pytest.param(None, "float32", (64, 64), 1, ".", id="frames-float32"),
    pytest.param(COUNTS_CODEC, "float32", (64, 64), 1, ".", id="frames-float32-counts-codec"),
    pytest.param(None, "int64", (), 4, ".", id="raw-int64-column"),
    pytest.param(None, "float64", (3,), 4, ".", id="raw-float64-rows"),
    pytest.param(None, "bool", (), 8, "/", id="raw-bool-slash-keys"),
    pytest.param(None, "str", (), 4, ".", id="strings"),
    pytest.param(ZstdCodec(level=1), "str", (), 4, "/", id="strings-zstd"),
    pytest.param(ZstdCodec(level=3), "float32", (5,), 4, ".", id="zstd-tail-replaced"),
    pytest.param(
        BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), "uint16", (32, 48), 1, "/", id="zstd-bit"
    ),
    pytest.param(
        BloscCodec(cname="blosclz", clevel=9, shuffle="noshuffle"), "float64", (40,), 2, ".", id="blosclz-1d"
    ),
    pytest.param(
        BloscCodec(cname="lz4hc", clevel=3, shuffle="shuffle", blocksize=4096),
        "int8",
        (16, 16),
        1,
        "/",
        id="lz4hc-blocksize-int8",
    ),
    pytest.param(
        BloscCodec(cname="zlib", clevel=1, shuffle="shuffle"), "int32", (4, 8, 8), 3, ".", id="zlib-3d"
    ),
]


@pytest.mark.parametrize(("codec", "dtype", "shape", "rows", "separator"), CASES)
def test_chunk_files_are_zarrs_own_bytes_and_tensorstore_reads_them(
    tmp_path, codec, dtype, shape, rows, separator
):
    values = _values(dtype, shape)
    keys = {"name": "default", "separator": separator}
    ours = _array(tmp_path / "ours.zarr", values, rows, compressors=codec, chunk_key_encoding=keys)
    table = Table(open_root(tmp_path / "ours.zarr", create=False), "row")
    assert ChunkFiles.of(ours) is not None  # the fast path is not silently off for this layout
    for batch in BATCHES:
        table.append({"a": values[batch]})
        commit(tmp_path / "ours.zarr", table.metadata())
    reference = _array(tmp_path / "ref.zarr", values, rows, compressors=codec, chunk_key_encoding=keys)
    reference.resize(values.shape)
    reference[...] = values  # zarr's own write path

    written = _chunk_files(tmp_path / "ours.zarr" / "a")
    assert len(written) == -(-ROWS // rows)
    assert written == _chunk_files(tmp_path / "ref.zarr" / "a")
    assert not list((tmp_path / "ours.zarr").rglob("*.partial"))  # every temporary file was renamed
    ours_meta = json.loads((tmp_path / "ours.zarr" / "a" / "zarr.json").read_bytes())
    assert ours_meta == json.loads((tmp_path / "ref.zarr" / "a" / "zarr.json").read_bytes())
    committed = zarr.open_group(tmp_path / "ours.zarr", mode="r", use_consolidated=True)["a"]
    assert np.array_equal(committed[...], values)
    if dtype != "str":  # tensorstore has no variable-length strings
        assert np.array_equal(_tensorstore_read(tmp_path / "ours.zarr" / "a"), values)


def test_a_reopened_table_continues_the_tail_chunk_it_did_not_write(tmp_path):
    values = _values("int64", ())
    path = tmp_path / "t.zarr"
    _array(path, values, 8, compressors=None)
    Table(open_root(path, create=False), "row").append({"a": values[:5]})
    again = Table(open_root(path, create=False), "row")  # a new writer: the tail is read from disk
    assert len(again) == 5
    again.append({"a": values[5:]})
    commit(path, again.metadata())
    assert np.array_equal(_tensorstore_read(path / "a"), values)


def test_big_endian_input_is_written_little_endian(tmp_path):
    values = _values("float32", (8, 8))
    path = tmp_path / "d.zarr"
    files = ChunkFiles.of(_array(path, values, 1, compressors=None))
    for write in files.writes(0, values.astype(">f4")):
        write()
    files.resize(ROWS)
    assert np.array_equal(_tensorstore_read(path / "a"), values)


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param({"chunks": (1, 4, 8)}, id="rows-split-in-chunks"),
        pytest.param({"chunks": (1, 8, 8), "shards": (2, 8, 8)}, id="sharded"),
        pytest.param({"serializer": BytesCodec(endian="big")}, id="big-endian"),
        pytest.param({"chunk_key_encoding": {"name": "v2", "separator": "/"}}, id="v2-keys"),
        pytest.param({"store": "memory"}, id="memory-store"),
    ],
)
def test_other_layouts_fall_back_to_zarr_and_still_round_trip(tmp_path, layout):
    layout = dict(layout)
    store = MemoryStore() if layout.pop("store", None) == "memory" else LocalStore(tmp_path / "t.zarr")
    group = zarr.open_group(store=store, mode="w", zarr_format=3)
    kw = {"chunks": (1, 8, 8), "compressors": None} | layout
    group.create_array(
        "frames", shape=(0, 8, 8), dtype="float32", fill_value=np.nan, dimension_names=("f", "y", "x"), **kw
    )
    assert ChunkFiles.of(group["frames"]) is None
    table = Table(group, "f")
    values = _values("float32", (8, 8))
    table.append({"frames": values[:3]})
    table.append({"frames": values[3:]})
    assert np.array_equal(group["frames"][...], values)


def test_the_writers_dataset_reads_the_same_in_tensorstore_and_xarray(tmp_path):
    twin = DigitalTwin(seed=7, shape=(64, 64))
    path = tmp_path / "run.zarr"
    writer = DatasetWriter.open(path, twin.state())
    for start in (0, 3, 4):  # batches of 3, 1 and 5 frames
        writer.append([twin.acquire(i) for i in range(start, {0: 3, 3: 4, 4: 9}[start])])
    assert all(ChunkFiles.of(arr) is not None for arr in writer.frames.columns().values())
    ds = xr.open_zarr(path)
    numeric = [name for name in ds.variables if ds[name].dtype.kind in "biufM"]
    assert {"frames", "frame_index", "time", "pixel_size", "conditions", "truth_row"} <= set(numeric)
    for name in numeric:
        stored = zarr.open_array(path / name, mode="r")[...]  # raw values (time as int64 ns)
        assert np.array_equal(_tensorstore_read(path / name), stored, equal_nan=True), name
    stack = _tensorstore_read(path / "frames")
    assert stack.shape == (9, 64, 64)
    for i in range(9):
        assert np.array_equal(stack[i], twin.acquire(i).image)
    # Frames are stored uncompressed: a shard holds each frame's raw bytes.
    sharding = json.loads((path / "frames" / "zarr.json").read_bytes())["codecs"][0]
    assert [c["name"] for c in sharding["configuration"]["codecs"]] == ["bytes"]


def test_a_dataset_with_compressed_frames_keeps_its_codec_when_appended_to(tmp_path):
    # The codec is chosen once, from the first batch (integer counts: compressed), and kept
    # whatever comes after (here the twin's non-integer frames, appended by another writer).
    twin = DigitalTwin(seed=3, shape=(32, 32))
    path = tmp_path / "counts.zarr"
    rng = np.random.default_rng(1)
    t0 = np.datetime64("2026-11-30T12:00:00", "ns")
    counts = [Frame(i, rng.poisson(3.0, (32, 32)).astype(np.float32), 0.12, t0) for i in range(3)]
    DatasetWriter.open(path, twin.state()).append(counts)
    again = DatasetWriter.open(path, twin.state())
    again.append([twin.acquire(i) for i in range(3, 7)])
    sharding = json.loads((path / "frames" / "zarr.json").read_bytes())["codecs"][0]
    assert [c["name"] for c in sharding["configuration"]["codecs"]] == ["bytes", "blosc"]
    stack = _tensorstore_read(path / "frames")
    want = [f.image for f in counts] + [twin.acquire(i).image for i in range(3, 7)]
    assert np.array_equal(stack, np.stack(want))
    assert np.array_equal(xr.open_zarr(path)["frames"].values, stack)


@pytest.mark.parametrize(
    ("dtype", "shape", "chunks", "compressors"),
    [
        ("float32", (0, 8, 8), (1, 8, 8), None),
        ("float32", (0, 8, 8), (1, 8, 8), COUNTS_CODEC),
        ("int64", (0,), (8192,), None),
        ("float64", (2,), (8192,), None),
        ("float64", (0, 17), (481, 17), None),
        ("float32", (0, 64), (1, 64), "auto"),
        ("int8", (0,), (16,), None),
        ("bool", (0,), (16,), None),
        ("uint16", (3, 4), (1, 4), "auto"),
        ("str", (0,), (8192,), None),
        ("str", (5,), (1,), "auto"),
    ],
)
def test_new_columns_get_the_metadata_zarr_would_write(tmp_path, dtype, shape, chunks, compressors):
    spec = {
        "shape": shape,
        "dtype": str if dtype == "str" else np.dtype(dtype),
        "chunks": chunks,
        "fill_value": fill_for(np.dtype("U1") if dtype == "str" else np.dtype(dtype)),
        "dimension_names": ("row", *(f"d{i}" for i in range(len(shape) - 1))),
        "attributes": {"units": "pixel"},
        "compressors": compressors,
        "chunk_key_encoding": {"name": "default", "separator": "."},
    }
    zarr.open_group(tmp_path / "z.zarr", mode="w").create_array("a", **spec)
    assert array_metadata(**spec) == json.loads((tmp_path / "z.zarr" / "a" / "zarr.json").read_bytes())


def _sharding(inner, shape: tuple[int, ...]) -> ShardingCodec:
    """One-row chunks in shards, the index first and unchecksummed: how ``Table`` lays out frames."""
    return ShardingCodec(
        chunk_shape=(1, *shape),
        codecs=[BytesCodec(), *([inner] if inner is not None else [])],
        index_codecs=[BytesCodec()],
        index_location="start",
    )


@pytest.mark.parametrize(
    ("inner", "dtype", "shape"),
    [
        pytest.param(None, "float32", (64, 64), id="frames"),
        pytest.param(COUNTS_CODEC, "float32", (64, 64), id="frames-lz4-bitshuffle"),
        pytest.param(ZstdCodec(level=0), "uint16", (8, 8), id="zstd"),
        pytest.param(None, "float64", (5,), id="raw"),
    ],
)
def test_shards_appended_row_by_row_are_the_bytes_zarr_writes_at_once(tmp_path, inner, dtype, shape):
    values = _values(dtype, shape)
    kw = {"serializer": _sharding(inner, shape), "compressors": None}
    kw["chunk_key_encoding"] = {"name": "default", "separator": "."}
    _array(tmp_path / "ours.zarr", values, 4, **kw)  # shards of 4 rows: 11 rows end in a partial one
    table = Table(open_root(tmp_path / "ours.zarr", create=False), "row")
    for batch in BATCHES:
        table.append({"a": values[batch]})
        commit(tmp_path / "ours.zarr", table.metadata())
    reference = _array(tmp_path / "ref.zarr", values, 4, **kw)
    reference.resize(values.shape)
    reference[...] = values

    written = _chunk_files(tmp_path / "ours.zarr" / "a")
    assert len(written) == 3
    assert written == _chunk_files(tmp_path / "ref.zarr" / "a")
    committed = zarr.open_group(tmp_path / "ours.zarr", mode="r", use_consolidated=True)["a"]
    assert np.array_equal(committed[...], values)
    assert np.array_equal(_tensorstore_read(tmp_path / "ours.zarr" / "a"), values)
    files = ChunkFiles.of(committed)
    assert np.array_equal(files.read_rows(2, 11), values[2:11])  # across shards, as written
    assert np.array_equal(files.read_rows(5, 6), values[5:6])


def test_new_one_row_columns_are_sharded_as_zarr_would_spell_it(tmp_path):
    spec = {
        "shape": (0, 8, 8),
        "dtype": np.dtype("float32"),
        "chunks": (16, 8, 8),
        "fill_value": np.nan,
        "dimension_names": ("frame", "y", "x"),
        "attributes": {},
        "compressors": None,
        "serializer": _sharding(None, (8, 8)),
        "chunk_key_encoding": {"name": "default", "separator": "."},
    }
    zarr.open_group(tmp_path / "z.zarr", mode="w").create_array("a", **spec)
    assert array_metadata(**spec) == json.loads((tmp_path / "z.zarr" / "a" / "zarr.json").read_bytes())


def test_string_columns_span_chunks_of_their_own_size(tmp_path):
    # String chunks are re-encoded whole each batch, so they are smaller than numeric ones.
    path = tmp_path / "s.zarr"
    open_root(path, create=True)
    table = Table(open_root(path, create=False), "row")
    names = np.array([f"/data/frame_{i:05d}.tif" for i in range(STRING_ROWS + 700)])
    for start in range(0, len(names), 300):
        table.append(
            {
                "source": names[start : start + 300],
                "index": np.arange(start, start + 300)[: len(names) - start],
            }
        )
        commit(path, table.metadata())
    meta = json.loads((path / "source" / "zarr.json").read_bytes())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [STRING_ROWS]
    committed = zarr.open_group(path, mode="r", use_consolidated=True)
    assert list(committed["source"][...]) == list(names)
    assert np.array_equal(committed["index"][...], np.arange(len(names)))


@pytest.mark.parametrize(
    "sizes",
    [
        # A shard of small frames takes up to 4096 encoded rows in one write: more than one
        # pwritev accepts (IOV_MAX), and empty rows among them.
        pytest.param([i % 7 for i in range(3000)], id="more-buffers-than-iov-max"),
        # Frames of a few MiB are written in calls of at most WRITE_BYTES each.
        pytest.param([WRITE_BYTES + 3, 7, 2 * WRITE_BYTES + 11, WRITE_BYTES], id="larger-than-one-call"),
    ],
)
def test_buffers_beyond_one_system_call_are_written_in_order(tmp_path, sizes):
    rng = np.random.default_rng(0)
    buffers = [rng.bytes(n) for n in sizes]
    target = tmp_path / "f"
    target.write_bytes(b"x" * 5)
    fd = os.open(target, os.O_WRONLY)
    try:
        pwritev_all(fd, buffers, 5)
    finally:
        os.close(fd)
    assert target.read_bytes() == b"x" * 5 + b"".join(buffers)


def test_a_short_write_is_resumed_where_it_stopped(tmp_path, monkeypatch):
    # The kernel may write less than asked (a signal, a nearly full disk): the rest follows.
    from storage.datasets import file_writes

    real = os.pwritev

    def short(fd, views, offset):
        data = b"".join(bytes(v) for v in views)[:1000]
        return real(fd, [data], offset)

    monkeypatch.setattr(file_writes.os, "pwritev", short)
    buffers = [np.random.default_rng(1).bytes(n) for n in (700, 1, 2500, 300)]
    target = tmp_path / "short"
    target.write_bytes(b"")
    fd = os.open(target, os.O_WRONLY)
    try:
        pwritev_all(fd, buffers, 0)
    finally:
        os.close(fd)
    assert target.read_bytes() == b"".join(buffers)


def test_new_columns_written_apart_are_zarrs_bytes_with_their_fill_values(tmp_path):
    # Columns this writer creates (each new one's directory, rows and zarr.json written as a
    # unit of its own, either thread): the first chunk holds the rows, then fill values, as zarr
    # writes it; a column first seen after rows exist starts mid-chunk, with no file yet.
    rng = np.random.default_rng(5)
    ints = rng.integers(0, 9, 300).astype(np.int64)
    floats = rng.normal(size=(300, 3)).astype(np.float32)
    late = rng.normal(size=300).astype(np.float64)
    path = tmp_path / "ours.zarr"
    open_root(path, create=True)
    table = Table(open_root(path, create=False), "row", rows=128)
    for lo, hi in ((0, 40), (40, 41), (41, 200), (200, 300)):
        data = {"ints": ints[lo:hi], "floats": floats[lo:hi]}
        if lo >= 41:
            data["late"] = late[lo:hi]
        table.append(data)
        commit(path, table.metadata())
    assert not list(path.rglob("*.partial"))
    ref = zarr.open_group(tmp_path / "ref.zarr", mode="w")
    committed = zarr.open_group(path, mode="r", use_consolidated=True)
    for name, values in (("ints", ints), ("floats", floats), ("late", late)):
        if name == "late":
            values = np.concatenate([np.full(41, np.nan), late[41:]])
        meta = json.loads((path / name / "zarr.json").read_bytes())
        chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        arr = ref.create_array(
            name,
            shape=values.shape,
            chunks=chunks,
            dtype=values.dtype,
            fill_value=fill_for(values.dtype),
            compressors=None,
            chunk_key_encoding={"name": "default", "separator": "."},
            dimension_names=meta["dimension_names"],
        )
        arr[...] = values
        assert _chunk_files(path / name) == _chunk_files(tmp_path / "ref.zarr" / name), name
        assert np.array_equal(committed[name][...], values, equal_nan=True)
        assert np.array_equal(_tensorstore_read(path / name), values, equal_nan=True)


def test_beside_runs_each_job_once_and_waits_before_raising(tmp_path):
    import threading
    import time

    from storage.datasets.file_writes import Beside

    ran: list[tuple[int, str]] = []
    lock = threading.Lock()
    working, helping = threading.Event(), threading.Event()  # each thread has taken a job

    def job(i: int):
        def run():
            if threading.current_thread() is threading.main_thread():
                helping.set()
            elif i == 0:
                working.set()
                helping.wait(5)  # the other thread holds its first job until the caller helps
            with lock:
                ran.append((i, threading.current_thread().name))
            return [job(100 + i)] if i < 3 else None  # a job may queue more

        return run

    def last() -> None:
        with lock:
            ran.append((-1, f"last, after {len(ran)} jobs"))

    with Beside([job(i) for i in range(6)]) as beside:
        beside.add([job(i) for i in range(6, 10)])
        beside.run(lambda: working.wait(5), last=last)  # meanwhile the other thread works
    assert sorted(i for i, _ in ran) == [-1, *range(10), 100, 101, 102]
    assert ran[-1] == (-1, "last, after 13 jobs")  # once, after every job
    assert helping.is_set() and len({name for _, name in ran[:-1]}) == 2  # both threads took jobs

    started, finished = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.05)
        finished.set()

    def fails() -> None:
        started.wait(5)
        raise OSError("disk refused")

    # A failing job is raised only once the other thread's job has finished (nothing writing
    # when the caller's error handling runs); after the caller's own error, no new job starts.
    with pytest.raises(OSError, match="disk refused"), Beside([slow]) as beside:
        beside.run(fails, last=lambda: ran.append((-2, "never")))
    assert finished.is_set()
    with pytest.raises(OSError, match="disk refused"), Beside([fails]) as beside:
        beside.run(lambda: None, last=lambda: ran.append((-2, "never")))
    assert (-2, "never") not in ran  # no ``last`` after a failure
    later: list[int] = []

    def caller_fails() -> None:
        with Beside([lambda: time.sleep(0.2)]) as beside:
            beside.add([lambda: later.append(1)])
            raise ValueError("the caller's own error")

    with pytest.raises(ValueError, match="own error"):
        caller_fails()
    assert not later
