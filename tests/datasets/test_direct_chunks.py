"""DirectChunks writes the bytes zarr writes, and an independent Zarr v3 reader agrees.

The direct path bypasses zarr-python's codec pipeline for speed; these tests are what keeps
it honest across zarr releases: for every blosc configuration it accepts, each chunk file is
compared byte for byte with the one ``arr[...] = values`` writes, and tensorstore (another
implementation of the spec) reads the array back.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec
from zarr.storage import LocalStore, MemoryStore

from storage.datasets import DatasetWriter
from storage.datasets.dataset import FRAME_CODEC
from storage.datasets.tables import DirectChunks, Table
from tasks.acquisition.twin import DigitalTwin

ROWS = 5


def _values(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Poisson counts like a detector's, in ``dtype``: compressible but not trivially."""
    rng = np.random.default_rng(3)
    return rng.poisson(40.0, size=(ROWS, *shape)).astype(dtype)


def _array(root: Path, name: str, values: np.ndarray, codec: BloscCodec, **kw) -> zarr.Array:
    return zarr.open_group(root, mode="a").create_array(
        name,
        shape=(0, *values.shape[1:]),
        chunks=(1, *values.shape[1:]),
        dtype=values.dtype,
        compressors=codec,
        fill_value=0,
        **kw,
    )


def _chunk_files(array_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(array_dir)): p.read_bytes()
        for p in sorted((array_dir / "c").rglob("*"))
        if p.is_file()
    }


def _tensorstore_read(array_dir: Path) -> np.ndarray:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array_dir)}}
    return ts.open(spec, open=True, read=True).result().read().result()


# The project's one configuration (frames: float32 under FRAME_CODEC) first, then the other
# corners the direct path accepts: each compressor, each shuffle, a block size, 1-, 2- and
# 8-byte types, and rows of other ranks.
CASES = [
    pytest.param(FRAME_CODEC, "float32", (64, 64), id="frames-float32-lz4-shuffle"),
    pytest.param(BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), "uint16", (32, 48), id="zstd-bit"),
    pytest.param(
        BloscCodec(cname="blosclz", clevel=9, shuffle="noshuffle"), "float64", (40,), id="blosclz-1d"
    ),
    pytest.param(
        BloscCodec(cname="lz4hc", clevel=3, shuffle="shuffle", blocksize=4096),
        "int8",
        (16, 16),
        id="lz4hc-blocksize-int8",
    ),
    pytest.param(BloscCodec(cname="zlib", clevel=1, shuffle="shuffle"), "int32", (4, 8, 8), id="zlib-3d"),
]


@pytest.mark.parametrize(("codec", "dtype", "shape"), CASES)
def test_direct_chunks_are_zarrs_own_bytes_and_tensorstore_reads_them(tmp_path, codec, dtype, shape):
    values = _values(dtype, shape)
    ours = _array(tmp_path / "ours.zarr", "a", values, codec)
    direct = DirectChunks(codec)
    assert direct.applies(ours)  # the fast path is not silently off for this configuration
    direct.write(ours, 0, values[:2])  # two batches: the second starts past row 0
    direct.write(ours, 2, values[2:])
    ours.resize(values.shape)
    reference = _array(tmp_path / "ref.zarr", "a", values, codec)
    reference.resize(values.shape)
    reference[...] = values  # zarr's own write path

    written = _chunk_files(tmp_path / "ours.zarr" / "a")
    assert len(written) == ROWS
    assert written == _chunk_files(tmp_path / "ref.zarr" / "a")
    assert not list((tmp_path / "ours.zarr").rglob("*.partial"))  # every temporary file was renamed
    assert np.array_equal(_tensorstore_read(tmp_path / "ours.zarr" / "a"), values)
    assert np.array_equal(zarr.open_array(tmp_path / "ours.zarr" / "a", mode="r")[...], values)


def test_direct_chunks_take_big_endian_input_and_write_little_endian(tmp_path):
    values = _values("float32", (8, 8))
    arr = _array(tmp_path / "d.zarr", "a", values, FRAME_CODEC)
    DirectChunks(FRAME_CODEC).write(arr, 0, values.astype(">f4"))
    arr.resize(values.shape)
    assert np.array_equal(_tensorstore_read(tmp_path / "d.zarr" / "a"), values)


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param({"compressors": ZstdCodec(level=1)}, id="another-compressor"),
        pytest.param(
            {"compressors": BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")}, id="another-blosc"
        ),
        pytest.param({"chunks": (2, 8, 8)}, id="two-rows-per-chunk"),
        pytest.param({"chunks": (1, 8, 8), "shards": (2, 8, 8)}, id="sharded"),
        pytest.param({"serializer": BytesCodec(endian="big")}, id="big-endian"),
        pytest.param({"chunk_key_encoding": {"name": "default", "separator": "."}}, id="dot-separator"),
        pytest.param({"chunk_key_encoding": {"name": "v2", "separator": "/"}}, id="v2-keys"),
        pytest.param({"store": "memory"}, id="memory-store"),
    ],
)
def test_other_layouts_fall_back_to_zarr_and_still_round_trip(tmp_path, layout):
    layout = dict(layout)
    store = MemoryStore() if layout.pop("store", None) == "memory" else LocalStore(tmp_path / "t.zarr")
    group = zarr.open_group(store=store, mode="w", zarr_format=3)
    kw = {"chunks": (1, 8, 8), "compressors": FRAME_CODEC} | layout
    group.create_array(
        "frames", shape=(0, 8, 8), dtype="float32", fill_value=np.nan, dimension_names=("f", "y", "x"), **kw
    )
    direct = DirectChunks(FRAME_CODEC)
    assert not direct.applies(group["frames"])
    table = Table(group, "f", direct={"frames": direct})
    values = _values("float32", (8, 8))
    table.append({"frames": values[:3]})
    table.append({"frames": values[3:]})
    assert np.array_equal(group["frames"][...], values)


def test_the_writers_frames_are_valid_zarr_for_tensorstore(tmp_path):
    twin = DigitalTwin(seed=7, shape=(64, 64))
    path = tmp_path / "run.zarr"
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(i) for i in range(4)])
    assert writer.frames.direct["frames"].applies(writer.frames.columns()["frames"])
    stack = _tensorstore_read(path / "frames")
    assert stack.shape == (4, 64, 64)
    for i in range(4):
        assert np.array_equal(stack[i], twin.acquire(i).image)
