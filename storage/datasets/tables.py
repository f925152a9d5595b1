"""Appendable columns in a Zarr v3 group, committed atomically through consolidated metadata.

Every batch is written in three steps: new chunks (invisible: beyond the committed shape),
then each array's own metadata (resized), then the root's consolidated metadata, rewritten
atomically by zarr's LocalStore (temporary file, then rename). Readers that open the
dataset the default way (``xarray.open_zarr``, ``zarr.open_group``) read shapes from the
consolidated metadata, so they only ever see whole batches; a writer killed at any moment
leaves the last committed batch readable, and ``repair`` trims what lies beyond it.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import zarr
from zarr import AsyncArray
from zarr.codecs import BloscCodec

# The one private zarr name here: zarr's own event loop, so that a batch's resizes and writes of
# every column take one round trip (public per-array calls cost ~25% more: 46 vs 37 ms for a
# batch of 11 small columns, measured 2026-11-30 on a shared 2-core machine). If a zarr release
# moves it, this import fails loudly; it cannot change what is written.
from zarr.core.sync import sync
from zarr.storage import LocalStore

from scopeflow.errors import ShapeMismatchError, StorageError

ROW_CHUNK = 8192  # rows per chunk of 1-D columns: few files, cheap partial rewrites


def fill_for(dtype: np.dtype) -> Any:
    """Value that marks a missing entry of this dtype (NaN, -1 or empty)."""
    kind = np.dtype(dtype).kind
    if kind in "UTO":
        return ""
    if kind == "f":
        return np.nan
    if kind in "iu":
        return -1 if kind == "i" else 0
    if kind == "b":
        return False
    raise TypeError(f"unsupported column dtype {dtype}")


@contextmanager
def storage_errors(path: Path | str) -> Iterator[None]:
    """Turn the disk's refusals into a ``StorageError`` that names the path and the cause."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        reason = {
            errno.ENOSPC: "the disk is full",
            errno.EACCES: "permission denied",
            errno.EROFS: "the file system is read-only",
            errno.EDQUOT: "the disk quota is exceeded",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise StorageError(
            f"cannot write to dataset {path}: {reason}; frames committed before this batch are intact"
        ) from exc


def open_root(path: Path, *, create: bool, attributes: Mapping[str, Any] | None = None) -> zarr.Group:
    """The root group of a dataset directory for writing (its own, unconsolidated metadata).

    A new dataset is built beside ``path`` and renamed into place, so readers never see a
    group without consolidated metadata.
    """
    if create and not (path / "zarr.json").exists():
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.creating")
        with storage_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = LocalStore(staging)
            zarr.open_group(store=staged, mode="w", zarr_format=3, attributes=dict(attributes or {}))
            consolidate(staged)
            if path.exists():
                path.rmdir()  # an empty directory the user made for us
            os.rename(staging, path)
    return zarr.open_group(store=LocalStore(path), mode="r+", use_consolidated=False)


def consolidate(store: LocalStore) -> None:
    """Rewrite the root's consolidated metadata (the commit point), atomically."""
    with warnings.catch_warnings():
        # Consolidated metadata is not (yet) in the v3 spec; zarr-python and xarray read it.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store)


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Hold the dataset's writer lock across a batch's appends and its commit.

    The acquirer and the edge append to one group; a commit publishes every array's current
    shape, so without the lock one writer's commit could publish the other's half-written batch.
    The lock is an ``flock`` on the dataset directory itself (a file in it would be taken for a
    node by zarr). Not reentrant: take it once per batch. The kernel releases it when a writer dies.
    """
    with storage_errors(path):
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def commit(path: Path) -> None:
    """Make everything written so far visible to readers, atomically."""
    with storage_errors(path):
        consolidate(LocalStore(path))


def committed_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of every array as of the last commit, keyed by its path in the group."""
    root = zarr.open_group(store=LocalStore(path, read_only=True), mode="r", use_consolidated=True)
    return {name: tuple(arr.shape) for name, arr in root.arrays()} | {
        f"{gname}/{name}": tuple(arr.shape)
        for gname, group in root.groups()
        for name, arr in _all_arrays(group)
    }


def _all_arrays(group: zarr.Group) -> Iterator[tuple[str, zarr.Array]]:
    for name, arr in group.arrays():
        yield name, arr
    for gname, sub in group.groups():
        for name, arr in _all_arrays(sub):
            yield f"{gname}/{name}", arr


def repair(path: Path, owned: Callable[[str], bool] | None = None) -> None:
    """Bring arrays back to their committed shape (drop a batch that never committed).

    ``owned`` (an array's path in the group → bool) limits the repair to the tables the caller
    appends to: another writer's arrays beyond their committed shape are its batch in flight,
    not debris. Takes the writers' lock; commits only when something was trimmed.
    """
    with writing(path):
        if trim(path, owned):
            commit(path)


def trim(path: Path, owned: Callable[[str], bool] | None = None) -> bool:
    """``repair`` without the lock and the commit (for a writer that holds the lock); returns
    whether anything was trimmed. The committed metadata is untouched: no commit is needed."""
    owned = owned or (lambda name: True)
    committed = committed_shapes(path)
    root = open_root(path, create=False)
    changed = False
    with storage_errors(path):
        for name, arr in list(_all_arrays(root)):
            if not owned(name):
                continue
            if name not in committed:
                parent, _, leaf = name.rpartition("/")
                del (root[parent] if parent else root)[leaf]
                changed = True
            elif tuple(arr.shape) != committed[name]:
                arr.resize(committed[name])
                changed = True
        for partial in path.rglob("*.partial"):
            if owned(partial.relative_to(path).as_posix().split("/c/")[0]):
                partial.unlink(missing_ok=True)
    return changed


class DirectChunks:
    """Writes one-row chunks of a blosc-compressed column as files, in parallel threads.

    zarr-python spends ~1 ms of event-loop and codec-pipeline work per chunk; a frame is one
    chunk, so at microscope rates that overhead dominates. What to write is read from the
    array's own metadata as the Zarr v3 specification spells it (``bytes`` then ``blosc``,
    the ``default`` chunk-key encoding), not from zarr-python's classes, so a zarr release
    that renames its internals cannot silently change the bytes; numcodecs' Blosc (the
    library zarr itself calls) compresses. The files are exactly what zarr writes (checked
    in tests/datasets/test_direct_chunks.py against zarr's own path, and read back by
    tensorstore), atomically (temporary file, then rename). ``applies`` falls back to zarr
    for any array not laid out that way.
    """

    # Blosc's shuffle names in the Zarr v3 spec, as numcodecs numbers them.
    SHUFFLES: ClassVar[dict[str, int]] = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}

    def __init__(self, blosc: BloscCodec, threads: int = 2) -> None:
        self.blosc = blosc.to_dict()["configuration"]
        self.threads = threads

    def applies(self, arr: zarr.Array) -> bool:
        """Whether ``arr`` is one row per chunk, bytes then this blosc codec, on local disk."""
        return isinstance(arr.store, LocalStore) and self._blosc(arr) is not None

    def _blosc(self, arr: zarr.Array) -> dict[str, Any] | None:
        """The array's blosc configuration (spec JSON) where the direct path writes its bytes."""
        meta = arr.metadata.to_dict()
        codecs = meta.get("codecs") or []
        grid = meta.get("chunk_grid") or {}
        keys = meta.get("chunk_key_encoding") or {}
        if not (
            meta.get("zarr_format") == 3
            and not meta.get("storage_transformers")
            and grid.get("name") == "regular"
            and list(grid["configuration"]["chunk_shape"]) == [1, *arr.shape[1:]]
            and keys.get("name") == "default"
            and (keys.get("configuration") or {}).get("separator", "/") == "/"
            and [c.get("name") for c in codecs] == ["bytes", "blosc"]
            and (arr.dtype.itemsize == 1 or (codecs[0].get("configuration") or {}).get("endian") == "little")
        ):
            return None
        blosc = dict(codecs[1]["configuration"])
        # typesize follows the dtype (zarr sets it); the rest is what this column was declared with.
        same = all(blosc.get(k) == v for k, v in self.blosc.items() if k != "typesize")
        return blosc if same else None

    def write(self, arr: zarr.Array, first: int, values: np.ndarray) -> None:
        """Rows ``first``… of ``arr`` from ``values`` (k, *rest), one chunk file each."""
        from concurrent.futures import ThreadPoolExecutor

        import numcodecs

        blosc = self._blosc(arr)
        if blosc is None:
            raise ValueError(f"array {arr.path!r} is not laid out for direct chunk writes")
        codec = numcodecs.Blosc(
            cname=blosc["cname"],
            clevel=int(blosc["clevel"]),
            shuffle=self.SHUFFLES[blosc["shuffle"]],
            blocksize=int(blosc["blocksize"]),
            typesize=int(blosc["typesize"]),
        )
        # The default chunk-key encoding: c/<row>/0/0 under the array's own directory.
        base = Path(arr.store.root) / arr.path / "c"
        tail = ("0",) * (values.ndim - 1)
        data = np.ascontiguousarray(values, dtype=arr.dtype.newbyteorder("<"))

        def one(i: int) -> None:
            target = base.joinpath(str(first + i), *tail)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
            tmp.write_bytes(codec.encode(data[i]))
            os.replace(tmp, target)

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(one, range(len(data))))


class Table:
    """Columns of one length along ``dim`` in a group; ``append`` adds rows to all of them.

    Columns may have trailing dimensions (``frames`` is (frame, y, x)); a column first seen
    after rows exist is back-filled with its missing value, so tables can grow new columns.
    The column arrays are cached: this writer is the only one appending to its dataset.
    """

    def __init__(
        self,
        group: zarr.Group,
        dim: str,
        chunk_rows: Mapping[str, int] | None = None,
        compressors: Mapping[str, Any] | None = None,
        direct: Mapping[str, DirectChunks] | None = None,
    ) -> None:
        self.group = group
        self.dim = dim
        self.chunk_rows = dict(chunk_rows or {})
        self.compressors = dict(compressors or {})
        self.direct = dict(direct or {})
        self._columns = {
            name: arr
            for name, arr in group.arrays()
            if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == dim
        }

    def columns(self) -> dict[str, zarr.Array]:
        """The arrays of this table, by name."""
        return dict(self._columns)

    def __len__(self) -> int:
        lengths = {arr.shape[0] for arr in self._columns.values()}
        if len(lengths) > 1:
            raise ShapeMismatchError(f"columns along {self.dim!r} disagree on length: {sorted(lengths)}")
        return lengths.pop() if lengths else 0

    def append(
        self,
        data: Mapping[str, np.ndarray],
        *,
        dims: Mapping[str, tuple[str, ...]] | None = None,
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Append rows (every array in ``data`` the same length); returns the new length.

        Not visible to readers until ``commit``. ``dims`` names trailing dimensions of new
        multi-dimensional columns; ``attrs`` sets attributes of new columns.
        """
        data = {name: _normalise(v) for name, v in data.items()}
        sizes = {len(v) for v in data.values()}
        if len(sizes) != 1:
            raise ShapeMismatchError(f"columns of one append differ in length: {sorted(sizes)}")
        k = sizes.pop()
        n = len(self)
        for name, values in data.items():
            arr = self._columns.get(name)
            if arr is None:
                self._columns[name] = self._create(
                    name, values, n, (dims or {}).get(name), (attrs or {}).get(name)
                )
            elif arr.shape[1:] != values.shape[1:] or not _same_kind(arr.dtype, values.dtype):
                raise ShapeMismatchError(
                    f"{name!r}: dataset holds {arr.dtype} of shape (n, {', '.join(map(str, arr.shape[1:]))}), "
                    f"got {values.dtype} of shape (n, {', '.join(map(str, values.shape[1:]))})"
                )
        writes, grow_only = [], []
        for name, arr in self._columns.items():
            values = data.get(name)
            direct = self.direct.get(name)
            if values is not None and k and direct is not None and direct.applies(arr):
                # Beyond the committed shape, so invisible until the metadata is resized and committed.
                direct.write(arr, n, values)
                grow_only.append(arr.async_array)
                continue
            if values is None:
                values = np.full((k, *arr.shape[1:]), fill_for(arr.dtype), dtype=arr.dtype)
            writes.append((arr.async_array, values))
        if k:
            sync(_grow_and_write(writes, n, k, grow_only))
        return n + k

    def _create(
        self,
        name: str,
        values: np.ndarray,
        n: int,
        trailing: tuple[str, ...] | None,
        attrs: Mapping[str, Any] | None,
    ) -> zarr.Array:
        extra = values.shape[1:]
        if trailing is None:
            trailing = tuple(f"{name}_{i}" for i in range(len(extra)))
        rows = self.chunk_rows.get(name, 1 if extra else ROW_CHUNK)
        return self.group.create_array(
            name,
            shape=(n, *extra),
            dtype=str if values.dtype.kind in "UTO" else values.dtype,
            chunks=(rows, *extra),
            fill_value=fill_for(values.dtype),
            dimension_names=(self.dim, *trailing),
            attributes=dict(attrs or {}),
            # Small columns are rewritten in place each batch: compressing them costs more than it saves.
            compressors=self.compressors.get(name, "auto" if extra else None),
        )


async def _grow_and_write(
    writes: list[tuple[AsyncArray, np.ndarray]], n: int, k: int, grow_only: list[AsyncArray] = ()
) -> None:
    # One event-loop round trip for the whole batch: every column resizes, then writes, concurrently.
    arrays = [arr for arr, _ in writes] + list(grow_only)
    await asyncio.gather(*(arr.resize((n + k, *arr.shape[1:])) for arr in arrays))
    await asyncio.gather(*(arr.setitem(slice(n, n + k), values) for arr, values in writes))


def _normalise(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values.astype(str) if values.dtype.kind in "OT" else values


def _same_kind(stored: np.dtype, given: np.dtype) -> bool:
    if stored.kind in "UTO" or given.kind in "UTO":
        return stored.kind in "UTO" and given.kind in "UTO"
    return stored == given
