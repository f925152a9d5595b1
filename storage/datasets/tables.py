"""Appendable columns in a Zarr v3 group, committed atomically through consolidated metadata.

Every batch is written in three steps: new chunks (invisible: beyond the committed shape; a
chunk that also holds committed rows gets only the new rows' bytes or is replaced atomically),
then each array's own metadata (resized), then the root's consolidated metadata, replaced
atomically with the new entries of the committing writer's arrays. Readers that open the
dataset the default way (``xarray.open_zarr``, ``zarr.open_group``) read shapes from the
consolidated metadata, so they only ever see whole batches; a writer killed at any moment
leaves the last committed batch readable, and ``repair`` trims what lies beyond it.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import zarr
from zarr import AsyncArray
from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec, ZstdCodec

# The one private zarr name here: zarr's own event loop, so that a batch's resizes and writes of
# every column take one round trip (public per-array calls cost ~25% more: 46 vs 37 ms for a
# batch of 11 small columns, measured 2026-11-30 on a shared 2-core machine). If a zarr release
# moves it, this import fails loudly; it cannot change what is written.
from zarr.core.sync import sync
from zarr.storage import LocalStore

from scopeflow.errors import ShapeMismatchError, StorageError

ROW_CHUNK = 8192  # rows per chunk of 1-D columns: few files, cheap partial rewrites
# Raw bytes of the rows in one shard of a one-row-per-chunk column: few files (a file per frame
# cost as much as numpy.save's whole write of it), and an incremental sync during acquisition
# re-sends at most this much of the shard still growing.
SHARD_BYTES = 16 * 2**20
SHARD_ROWS = 4096  # and at most this many rows: a 64 KiB index


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


def commit(path: Path, arrays: Mapping[str, Mapping[str, Any] | None] | None = None) -> None:
    """Make what was written visible to readers, atomically: every node (``arrays=None``), or
    only the arrays at these paths, whose own metadata (given, or read from its ``zarr.json``
    where None) replaces their entries in the root's consolidated metadata.

    Publishing only the caller's arrays is cheaper than ``consolidate`` (which opens every
    node: ~8 ms a batch, measured 2026-11-30) and publishes nothing another writer left
    half-written. Falls back to the whole consolidation where a path's parent group is not
    committed yet.
    """
    with storage_errors(path):
        if arrays is not None:
            root_file = path / "zarr.json"
            root = json.loads(root_file.read_bytes())
            entries = (root.get("consolidated_metadata") or {}).get("metadata")
            if entries is not None and all(
                "/" not in name or name.rpartition("/")[0] in entries for name in arrays
            ):
                for name, meta in arrays.items():
                    entries[name] = meta if meta is not None else _read_json(path / name / "zarr.json")
                # No spare file in the root: zarr would take it for a node when listing the group.
                _atomic_write(root_file, _json_bytes(root))
                return
        consolidate(LocalStore(path))


def _read_json(file: Path) -> Any:
    return json.loads(file.read_bytes())


def _json_bytes(doc: Any) -> bytes:
    # Compact: with ``indent`` the json module falls back to its pure-Python encoder (~10x slower,
    # 6 ms a commit of the dataset's root here); every reader parses it the same.
    return json.dumps(doc, separators=(",", ":")).encode()


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
            # The array a temporary file belongs to: its directory, less any chunk directories
            # (c/<row>/...); the root's own metadata is ".".
            where = partial.parent.relative_to(path).as_posix()
            if owned(where.split("/c/")[0].removesuffix("/c")):
                partial.unlink(missing_ok=True)
    return changed


class ChunkFiles:
    """Writes an array's chunks and its own metadata as files, as the Zarr v3 spec lays them out.

    zarr-python spends ~1 ms of event-loop and codec-pipeline work per chunk and array: a frame
    is one chunk, and every batch touches a dozen small columns, so at microscope rates that
    overhead (and the read-modify-write of each column's last chunk) dominated the append. Here
    the last, partly filled chunk of each column is kept decoded in memory (read once), so a batch
    encodes each touched chunk once and writes it, and the new shape is written straight into the
    array's ``zarr.json``. What to write is read from that ``zarr.json`` as the specification
    spells it (``bytes`` or ``vlen-utf8``, then optionally ``blosc`` or ``zstd``; a regular grid
    of whole rows; the ``default`` chunk-key encoding), not from zarr-python's classes, so a zarr
    release that renames its internals cannot silently change the bytes; numcodecs (the library
    zarr itself calls) encodes. The files are exactly what zarr writes (checked in
    tests/datasets/test_direct_chunks.py against zarr's own path, and read back by tensorstore),
    each atomically (temporary file, then rename). ``of`` returns None for any other layout, which
    then goes through zarr.
    """

    # Blosc's shuffle names in the Zarr v3 spec, as numcodecs numbers them.
    SHUFFLES: ClassVar[dict[str, int]] = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}

    def __init__(
        self, root: Path, path: str, meta: dict[str, Any], encode: Callable[[np.ndarray], bytes]
    ) -> None:
        self.root = root  # the dataset directory
        self.path = path  # the array's path in the group
        self.directory = root / path
        self.spare = self.directory / SPARE  # one replacement at a time per array: chunk, then metadata
        self.meta = meta
        self.rows = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        self.separator = (meta["chunk_key_encoding"].get("configuration") or {}).get("separator", "/")
        self.dtype = np.dtype(object) if meta["data_type"] == "string" else np.dtype(meta["data_type"])
        self.fill = _fill_from_json(meta.get("fill_value"), self.dtype)
        self._encode = encode
        # Shards of one-row chunks with the index first (``from_metadata`` checked the layout).
        self.sharded = meta["codecs"][0]["name"] == "sharding_indexed"
        # Raw fixed-width chunks (no compressor): a row sits at a fixed offset of its chunk file.
        self.raw = len(meta["codecs"]) == 1 and self.dtype.kind != "O" and not self.sharded
        self._tail: np.ndarray | None = None  # the decoded chunk holding the next row to append
        self._tail_start = -1  # its first row

    @classmethod
    def of(cls, arr: zarr.Array) -> ChunkFiles | None:
        """The direct writer of ``arr``, or None where its layout is not one this writes."""
        if not isinstance(arr.store, LocalStore):
            return None
        root = Path(arr.store.root)
        try:
            meta = json.loads((root / arr.path / "zarr.json").read_bytes())
        except (OSError, ValueError):
            return None
        return cls.from_metadata(root, arr.path, meta)

    @classmethod
    def from_metadata(cls, root: Path, path: str, meta: dict[str, Any]) -> ChunkFiles | None:
        """The direct writer of the array at ``path`` under ``root`` described by ``meta`` (its
        ``zarr.json``), or None where that layout is not one this writes."""
        grid = meta.get("chunk_grid") or {}
        keys = meta.get("chunk_key_encoding") or {}
        shape = list(meta.get("shape") or [])
        if not (
            meta.get("zarr_format") == 3
            and meta.get("node_type") == "array"
            and not meta.get("storage_transformers")
            and shape
            and grid.get("name") == "regular"
            and list(grid["configuration"]["chunk_shape"])[1:] == shape[1:]
            and keys.get("name") == "default"
            and (keys.get("configuration") or {}).get("separator", "/") in ("/", ".")
        ):
            return None
        try:
            codecs = meta.get("codecs") or []
            if codecs and codecs[0].get("name") == "sharding_indexed":
                config = codecs[0].get("configuration") or {}
                if not (
                    len(codecs) == 1
                    and list(config.get("chunk_shape") or []) == [1, *shape[1:]]
                    and config.get("index_location") == "start"
                    and config.get("index_codecs")
                    == [{"name": "bytes", "configuration": {"endian": "little"}}]
                ):
                    return None
                meta_inner = {"codecs": config.get("codecs"), "data_type": meta.get("data_type")}
                encode = _encoder(meta_inner, len(shape))
            else:
                encode = _encoder(meta, len(shape))
            return None if encode is None else cls(root, path, meta, encode)
        except (TypeError, ValueError, KeyError):  # a data type or fill value spelled otherwise
            return None

    @property
    def length(self) -> int:
        """Rows in the array's own metadata (written, maybe not yet committed)."""
        return int(self.meta["shape"][0])

    def _key(self, chunk: int) -> Path:
        """The chunk file of row-chunk ``chunk`` (trailing dimensions are one chunk: index 0)."""
        parts = ("c", str(chunk), *("0",) * (len(self.meta["shape"]) - 1))
        return self.directory.joinpath(*parts) if self.separator == "/" else self.directory / ".".join(parts)

    def _empty(self) -> np.ndarray:
        shape = (self.rows, *self.meta["shape"][1:])
        return np.full(shape, self.fill, dtype=self.dtype)

    def _tail_for(self, n: int) -> np.ndarray:
        """The chunk that row ``n`` falls in, holding rows before ``n`` as stored (read once)."""
        start = n - n % self.rows
        if self._tail is None or self._tail_start != start:
            tail = self._empty()
            if n > start:
                stored = zarr.open_array(
                    store=LocalStore(self.root, read_only=True), path=self.path, mode="r"
                )
                stored = stored[start:n]
                tail[: n - start] = np.asarray(stored, dtype=self.dtype)
            self._tail, self._tail_start = tail, start
        return self._tail

    def writes(self, n: int, values: np.ndarray) -> list[Callable[[], None]]:
        """The file writes that put rows ``n``… from ``values`` in place, one per touched chunk,
        to be run in any order (the shape is unchanged until ``resize``).

        A chunk that holds only new rows lies beyond the committed shape, invisible until the
        commit: it is written in place. The one that also holds committed rows must never be seen
        torn: a raw chunk gets only the new rows' bytes, at their offset (the committed bytes are
        never rewritten, and the file never changes size); an encoded one is replaced atomically.
        """
        k = len(values)
        r = self.rows
        jobs: list[Callable[[], None]] = []
        if self.sharded:
            for shard in range(n // r, (n + k - 1) // r + 1):
                lo, hi = max(n, shard * r), min(n + k, (shard + 1) * r)
                # Encoding (as costly as writing) starts now in threads of its own, so the shard's
                # writer writes each row as soon as it is encoded.
                # Rows go to the encoders in groups: a hand-off costs ~40 µs, a row's encoding ~250.
                pool = _pool("encode", ENCODE_THREADS)
                step = max(1, -(-(hi - lo) // (4 * ENCODE_THREADS)))
                groups = [
                    pool.submit(self._encode_rows, values, range(i - n, min(hi, i + step) - n))
                    for i in range(lo, hi, step)
                ]
                key = self._key(shard)
                jobs.append(
                    lambda key=key, first=lo - shard * r, groups=groups: self._extend(key, first, groups)
                )
            return jobs
        for chunk in range(n // r, (n + k - 1) // r + 1):
            lo, hi = max(n, chunk * r), min(n + k, (chunk + 1) * r)
            key = self._key(chunk)
            if lo == chunk * r and hi == lo + r:
                rows = values[lo - n : hi - n]  # a whole chunk of new rows: no copy
                jobs.append(lambda key=key, rows=rows: self._fresh(key, rows))
                continue
            buf = self._tail_for(n) if chunk == n // r else self._empty()
            buf[lo - chunk * r : hi - chunk * r] = values[lo - n : hi - n]
            self._tail, self._tail_start = buf, chunk * r
            if lo == chunk * r:
                jobs.append(lambda key=key, buf=buf: self._fresh(key, buf))
            elif self.raw:
                span = (lo - chunk * r, hi - chunk * r)
                jobs.append(lambda key=key, buf=buf, span=span: self._patch(key, buf, *span))
            else:
                jobs.append(lambda key=key, buf=buf: _atomic_write(key, self._encode(buf), self.spare))
        if (n + k) % r == 0:
            self._tail, self._tail_start = None, -1  # the next row starts a fresh chunk
        return jobs

    def _fresh(self, key: Path, rows: np.ndarray) -> None:
        """A chunk no reader looks at yet (beyond the committed shape): written in place."""
        if self.separator == "/":
            key.parent.mkdir(parents=True, exist_ok=True)
        with open(key, "wb") as f:
            f.write(self._encode(rows))

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start``..``stop``-1 of a sharded array, straight from its shard files: per shard
        one read of their index entries and one of their bytes (zarr reads each row's bytes
        apart, ~2x slower here). The caller reads committed rows only: their entries and bytes
        never change."""
        if not self.sharded:
            raise ValueError(f"array {self.path!r} is not sharded")
        inner = self.meta["codecs"][0]["configuration"]["codecs"]
        decode = _decoder(inner)
        rest = tuple(self.meta["shape"][1:])
        little = self.dtype.newbyteorder("<")
        out = np.empty((stop - start, *rest), dtype=self.dtype)
        r = self.rows
        for shard in range(start // r, (stop - 1) // r + 1):
            lo, hi = max(start, shard * r), min(stop, (shard + 1) * r)
            try:
                f = open(self._key(shard), "rb")  # noqa: SIM115 (closed below, after two reads)
            except FileNotFoundError:
                out[lo - start : hi - start] = self.fill  # zarr writes no shard of fill values
                continue
            with f:
                f.seek((lo - shard * r) * 16)
                entries = np.frombuffer(f.read((hi - lo) * 16), dtype="<u8").reshape(-1, 2)
                present = entries[:, 0] != 2**64 - 1
                first = int(entries[present, 0].min()) if present.any() else 0
                end = int((entries[present, 0] + entries[present, 1]).max()) if present.any() else 0
                f.seek(first)
                blob = memoryview(f.read(end - first))
            for i, (offset, size) in enumerate(entries.tolist()):
                if offset == 2**64 - 1:
                    out[lo - start + i] = self.fill
                    continue
                raw = decode(blob[offset - first : offset - first + size])
                out[lo - start + i] = np.frombuffer(raw, dtype=little).reshape(rest)
        return out

    def _encode_rows(self, values: Any, rows: range) -> list[bytes]:
        return [self._encode(values[i : i + 1]) for i in rows]

    def _extend(self, key: Path, first: int, groups: list[Future[list[bytes]]]) -> None:
        """Inner chunks ``first``… of the shard ``key``: their bytes at the file's end, then their
        index entries (offset, length) in place. Rows a reader may read keep their bytes and
        their entries; a new shard is written whole (nothing in it is committed)."""
        header = self.rows * 16  # the index: (offset, length) as two uint64 per row
        try:
            fd = os.open(key, os.O_RDWR)
        except FileNotFoundError:
            fd = -1
        try:
            end = -1 if fd < 0 else os.fstat(fd).st_size
            if end < header:
                # A new shard; or earlier rows committed without a file (zarr writes no shard of
                # fill values only): then the whole shard, atomically.
                blobs = [blob for group in groups for blob in group.result()]
                self._new_shard(key, first, blobs, atomic=first > 0)
            else:
                new = []
                for group in groups:  # written as each group is encoded
                    blobs = group.result()
                    data = b"".join(blobs)
                    _pwrite_all(fd, data, end)
                    for blob in blobs:
                        new.append((end, len(blob)))
                        end += len(blob)
                entries = np.array(new, dtype="<u8")
                _pwrite_all(fd, entries.tobytes(), first * 16)  # after the bytes they point to
        finally:
            if fd >= 0:
                os.close(fd)

    def _new_shard(self, key: Path, first: int, blobs: list[bytes], *, atomic: bool) -> None:
        entries = np.full((self.rows, 2), 2**64 - 1, dtype="<u8")  # the spec's "missing"
        sizes = np.array([len(b) for b in blobs], dtype="<u8")
        entries[first : first + len(blobs), 0] = entries.nbytes + np.cumsum(sizes) - sizes
        entries[first : first + len(blobs), 1] = sizes
        data = entries.tobytes() + b"".join(blobs)
        if atomic:
            _atomic_write(key, data, self.spare)
            return
        if self.separator == "/":
            key.parent.mkdir(parents=True, exist_ok=True)
        with open(key, "wb") as f:
            f.write(data)

    def _patch(self, key: Path, buf: np.ndarray, lo: int, hi: int) -> None:
        """Rows ``lo``..``hi``-1 of the raw chunk ``buf`` into its file, in place; the whole chunk
        atomically where the file is not the full raw chunk (zarr skips writing a chunk that
        holds only fill values)."""
        data = self._encode(buf[lo:hi])
        try:
            fd = os.open(key, os.O_WRONLY)
        except FileNotFoundError:
            _atomic_write(key, self._encode(buf), self.spare)
            return
        try:
            if os.fstat(fd).st_size != buf.nbytes:
                _atomic_write(key, self._encode(buf), self.spare)
                return
            _pwrite_all(fd, data, lo * buf[0].nbytes)
        finally:
            os.close(fd)

    def resize(self, length: int) -> None:
        """Write the new row count into the array's own ``zarr.json`` (atomically)."""
        meta = dict(self.meta, shape=[length, *self.meta["shape"][1:]])
        _atomic_write(self.directory / "zarr.json", _json_bytes(meta), self.spare)
        self.meta = meta


def _fill_from_json(value: Any, dtype: np.dtype) -> Any:
    """A fill value as the spec writes it in JSON (NaN and infinities as strings) for ``dtype``."""
    if dtype.kind == "O":
        if not isinstance(value, str):
            raise ValueError(f"fill value {value!r} of a string array")
        return value
    if isinstance(value, str):
        return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}[value]
    return value


def _decoder(codecs: list[dict[str, Any]]) -> Callable[[Any], Any]:
    """Bytes of a chunk encoded with ``codecs`` (``bytes``, then blosc or zstd), decoded back to
    raw little-endian bytes (``ChunkFiles.from_metadata`` accepted the chain)."""
    import numcodecs

    if len(codecs) == 1:
        return bytes
    name = codecs[1]["name"]
    codec = numcodecs.Blosc() if name == "blosc" else numcodecs.Zstd()
    return codec.decode


def _encoder(meta: dict[str, Any], ndim: int) -> Callable[[np.ndarray], bytes] | None:
    """The chunk encoder that the array's codecs (spec JSON) describe, if this module writes them."""
    import numcodecs
    from numcodecs.vlen import VLenUTF8

    codecs = meta.get("codecs") or []
    if not codecs or len(codecs) > 2:
        return None
    first = codecs[0]
    config = first.get("configuration") or {}
    serialise: Callable[[np.ndarray], Any]
    if meta.get("data_type") == "string":
        if first.get("name") != "vlen-utf8" or ndim != 1:
            return None
        vlen = VLenUTF8()

        def serialise(rows: np.ndarray) -> Any:
            return vlen.encode(np.asarray(rows, dtype=object).ravel())

    else:
        try:
            dtype = np.dtype(meta.get("data_type"))
        except TypeError:
            return None
        little = dtype.newbyteorder("<")
        if first.get("name") != "bytes" or dtype.kind not in "biuf":
            return None
        if dtype.itemsize > 1 and config.get("endian") != "little":
            return None

        def serialise(rows: np.ndarray) -> Any:
            return np.ascontiguousarray(rows, dtype=little)

    if len(codecs) == 1:
        return lambda rows: bytes(memoryview(serialise(rows)).cast("B"))
    second = codecs[1]
    cfg = second.get("configuration") or {}
    compressor: Any
    if second.get("name") == "blosc":
        compressor = numcodecs.Blosc(
            cname=cfg["cname"],
            clevel=int(cfg["clevel"]),
            shuffle=ChunkFiles.SHUFFLES[cfg["shuffle"]],
            blocksize=int(cfg["blocksize"]),
            typesize=int(cfg["typesize"]),
        )
    elif second.get("name") == "zstd":
        compressor = numcodecs.Zstd(level=int(cfg["level"]), checksum=bool(cfg.get("checksum", False)))
    else:
        return None
    return lambda rows: compressor.encode(serialise(rows))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


SPARE = ".scopeflow-spare"  # per directory: the file a replacement is written into, then swapped in


def _atomic_write(target: Path, data: bytes, spare: Path | None = None) -> None:
    """Replace ``target`` with ``data`` atomically: readers see the old file or the new one.

    With ``spare`` (a file of the caller's own, reused batch after batch), the bytes are written
    into it and it is swapped with ``target`` (``_exchange``): it then holds the old version,
    overwritten next time. Writing into an existing file and swapping costs ~20 µs against
    ~350 µs for creating a temporary file (measured 2026-11-30): a batch replaces a dozen files.
    Without it, a temporary file is created and swapped in (or, where the system cannot swap,
    renamed over ``target``).
    """
    if spare is not None and _renameat2 is not None:
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            _pwrite_all(fd, data, 0)  # not O_TRUNC: truncating makes ext4 flush, as a rename does
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        if not _exchange(spare, target):
            os.replace(spare, target)  # a new name: nothing to flush
        return
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        if not _exchange(tmp, target):
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # after an exchange: the old file, under the temporary name


_RENAME_EXCHANGE = 2  # linux/fs.h
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(tmp: Path, target: Path) -> bool:
    """Swap ``tmp`` and an existing ``target`` atomically (Linux ``renameat2``); False where the
    target is absent or the system cannot (the caller then renames).

    ext4 flushes a file renamed over another before the rename returns (its ``auto_da_alloc``
    safeguard): 0.4–3 ms a replace here, ~10 µs an exchange (measured 2026-11-30). Readers see
    the old file or the new one either way.
    """
    if _renameat2 is None:
        return False
    at_cwd = -100
    if _renameat2(at_cwd, os.fsencode(tmp), at_cwd, os.fsencode(target), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(target))


class Table:
    """Columns of one length along ``dim`` in a group; ``append`` adds rows to all of them.

    Columns may have trailing dimensions (``frames`` is (frame, y, x)); a column first seen
    after rows exist is back-filled with its missing value, so tables can grow new columns.
    The columns are cached: this writer is the only one appending to them. Columns laid out
    the way ``ChunkFiles`` writes (every column this class creates on local disk) bypass
    zarr-python, from their creation on; any other layout goes through it.
    """

    def __init__(
        self,
        group: zarr.Group,
        dim: str,
        chunk_rows: Mapping[str, int] | None = None,
        compressors: Mapping[str, Any] | None = None,
        rows: int = ROW_CHUNK,
    ) -> None:
        self.group = group
        self.dim = dim
        self.rows = rows  # per chunk of a new 1-D column
        self.chunk_rows = dict(chunk_rows or {})
        self.compressors = dict(compressors or {})
        # zarr's handles: of direct columns only as opened (their shape goes stale), else current.
        self._arrays = {
            name: arr
            for name, arr in group.arrays()
            if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == dim
        }
        self._files = {name: ChunkFiles.of(arr) for name, arr in self._arrays.items()}

    def columns(self) -> dict[str, zarr.Array]:
        """zarr's handles on the columns of this table, by name (as written, committed or not)."""
        for name, files in self._files.items():
            if files is not None and (
                name not in self._arrays or self._arrays[name].shape[0] != files.length
            ):
                self._arrays[name] = self.group[name]
        return {name: self._arrays[name] for name in self._files}

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def trailing_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape of one row of column ``name`` (None if the table has no such column)."""
        if name not in self._files:
            return None
        return tuple(int(n) for n in self._shape(name)[1:])

    def _shape(self, name: str) -> tuple[int, ...]:
        files = self._files[name]
        return tuple(files.meta["shape"]) if files is not None else tuple(self._arrays[name].shape)

    def _dtype(self, name: str) -> np.dtype:
        files = self._files[name]
        return files.dtype if files is not None else self._arrays[name].dtype

    def metadata(self) -> dict[str, dict[str, Any] | None]:
        """Every column's path in the root group and its metadata as written (None: read it from
        its ``zarr.json``): what ``commit`` publishes for this table."""
        return {
            (files.path if files is not None else self._arrays[name].path): None
            if files is None
            else files.meta
            for name, files in self._files.items()
        }

    def __len__(self) -> int:
        lengths = {self._shape(name)[0] for name in self._files}
        if len(lengths) > 1:
            raise ShapeMismatchError(f"columns along {self.dim!r} disagree on length: {sorted(lengths)}")
        return lengths.pop() if lengths else 0

    def append(
        self,
        data: Mapping[str, np.ndarray | Sequence[np.ndarray]],
        *,
        dims: Mapping[str, tuple[str, ...]] | None = None,
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Append rows (every array in ``data`` the same length; a list of equal-shaped arrays
        is taken as rows, unstacked); returns the new length.

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
            if name not in self._files:
                self._create(name, values, n, (dims or {}).get(name), (attrs or {}).get(name))
                continue
            shape, dtype = self._shape(name), self._dtype(name)
            if shape[1:] != values.shape[1:] or not _same_kind(dtype, values.dtype):
                raise ShapeMismatchError(
                    f"{name!r}: dataset holds {dtype} of shape (n, {', '.join(map(str, shape[1:]))}), "
                    f"got {values.dtype} of shape (n, {', '.join(map(str, values.shape[1:]))})"
                )
        if not k:
            return n
        through_zarr = []
        direct: list[ChunkFiles] = []
        heavy: list[Callable[[], None]] = []
        light: list[Callable[[], None]] = []
        for name, files in self._files.items():
            values = data.get(name)
            if values is None:
                dtype = self._dtype(name)
                values = np.full((k, *self._shape(name)[1:]), fill_for(dtype), dtype=dtype)
            if files is None:
                through_zarr.append((self._arrays[name].async_array, np.asarray(values)))
            else:
                # Rows of a chunk each (frames) are most of a batch's bytes: written in threads
                # while this one writes the small columns (tens of µs each, less than a hand-off).
                (heavy if files.rows == 1 or files.sharded else light).extend(files.writes(n, values))
                direct.append(files)
        # Chunks first, then each array's shape: a reader of an array's own metadata never
        # finds rows whose chunks are not written.
        _run(heavy, light)
        if through_zarr:
            sync(_grow_and_write(through_zarr, n, k))
        for files in direct:
            files.resize(n + k)
        return n + k

    def _create(
        self,
        name: str,
        values: np.ndarray,
        n: int,
        trailing: tuple[str, ...] | None,
        attrs: Mapping[str, Any] | None,
    ) -> None:
        extra = values.shape[1:]
        if trailing is None:
            trailing = tuple(f"{name}_{i}" for i in range(len(extra)))
        # Rows of multi-dimensional columns: as many as fit in a 1-D column's chunk (a frame is a
        # chunk of its own; the conditions of ~500 frames share one), so a batch touches few files.
        row_bytes = max(1, values.dtype.itemsize * int(np.prod(extra)))
        rows = self.chunk_rows.get(name, max(1, ROW_CHUNK * 8 // row_bytes) if extra else self.rows)
        spec: dict[str, Any] = {
            "shape": (n, *extra),
            "dtype": str if values.dtype.kind in "UTO" else values.dtype,
            "chunks": (rows, *extra),
            "fill_value": fill_for(values.dtype),
            "dimension_names": (self.dim, *trailing),
            "attributes": dict(attrs or {}),
            # A chunk of many rows gets rows in place batch after batch, which needs it raw.
            "compressors": None,
            # Files side by side (c.<n>.0.0) rather than a directory per chunk (c/<n>/0/0).
            "chunk_key_encoding": {"name": "default", "separator": "."},
        }
        if rows == 1 and values.dtype.kind not in "UTO":
            # One row per chunk (a frame), compressed, and the chunks of many rows in one shard
            # file of SHARD_BYTES (see there; measured 2026-11-30).
            compressor = self.compressors.get(name, "auto")
            inner = ZstdCodec(level=0, checksum=False) if compressor == "auto" else compressor
            spec["chunks"] = (min(SHARD_ROWS, max(1, SHARD_BYTES // row_bytes)), *extra)
            spec["serializer"] = ShardingCodec(
                chunk_shape=(1, *extra),
                codecs=[BytesCodec(), *([inner] if inner is not None else [])],
                index_codecs=[BytesCodec()],
                index_location="start",
            )
        store = self.group.store
        meta = array_metadata(**spec) if isinstance(store, LocalStore) else None
        path = f"{self.group.path}/{name}" if self.group.path else name
        files = None if meta is None else ChunkFiles.from_metadata(Path(store.root), path, meta)
        if files is None:
            arr = self.group.create_array(name, **spec)
            self._arrays[name] = arr
            self._files[name] = ChunkFiles.of(arr)
            return
        # zarr's create_array costs ~2.5 ms a column (a dataset's first batch makes a dozen). The
        # new array is invisible to readers until committed; written now, it is one that
        # ``repair`` sees (and removes) if this writer dies before the commit.
        files.directory.mkdir(exist_ok=True)  # a crashed creation may have left it
        _atomic_write(files.directory / "zarr.json", _json_bytes(meta))
        self._files[name] = files


def _codecs_json(dt: np.dtype | None, string: bool, compressor: Any) -> list[dict[str, Any]] | None:
    """The codecs of a chunk (serialiser, then ``compressor``) as the spec spells them."""
    codecs: list[dict[str, Any]] = (
        [{"name": "vlen-utf8", "configuration": {}}]
        if string or dt is None
        else [
            {"name": "bytes"}
            if dt.itemsize == 1
            else {"name": "bytes", "configuration": {"endian": "little"}}
        ]
    )
    if compressor == "auto":
        codecs.append({"name": "zstd", "configuration": {"level": 0, "checksum": False}})
    elif isinstance(compressor, ZstdCodec):
        codecs.append(
            {"name": "zstd", "configuration": {"level": compressor.level, "checksum": compressor.checksum}}
        )
    elif isinstance(compressor, BloscCodec) and compressor.shuffle is not None and dt is not None:
        config = compressor.to_dict()["configuration"]
        codecs.append({"name": "blosc", "configuration": {**config, "typesize": dt.itemsize}})
    elif compressor is not None:
        return None
    return codecs


def array_metadata(
    *,
    shape: tuple[int, ...],
    dtype: Any,
    chunks: tuple[int, ...],
    fill_value: Any,
    dimension_names: tuple[str, ...],
    attributes: dict[str, Any],
    compressors: Any,
    chunk_key_encoding: dict[str, str],
    serializer: Any = "auto",
) -> dict[str, Any] | None:
    """The ``zarr.json`` of a new array as the Zarr v3 spec writes it (and zarr-python's
    ``create_array`` with these arguments: tests/datasets/test_direct_chunks.py compares them),
    or None for what this does not spell out (then zarr creates the array)."""
    string = dtype is str
    dt = None if string else np.dtype(dtype)
    if dt is not None and (dt.kind not in "biuf" or dt.byteorder == ">"):
        return None
    if isinstance(serializer, ShardingCodec):
        # Rows as inner chunks of shards, the index first and without a checksum: appending a row
        # writes its bytes at the shard's end and its own index entry, nothing a reader has read.
        inner = [c for c in serializer.codecs if not isinstance(c, BytesCodec)]
        inner_codecs = _codecs_json(dt, string, inner[0] if len(inner) == 1 else None if not inner else 0)
        if (
            compressors is not None
            or inner_codecs is None
            or str(serializer.index_location.value) != "start"
            or list(serializer.index_codecs) != [BytesCodec()]
            or list(serializer.chunk_shape) != [1, *chunks[1:]]
        ):
            return None
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(serializer.chunk_shape),
                    "codecs": inner_codecs,
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_location": "start",
                },
            }
        ]
    elif serializer != "auto":
        return None
    else:
        codecs = _codecs_json(dt, string, compressors)
        if codecs is None:
            return None
    if string:
        fill: Any = str(fill_value)
    elif isinstance(fill_value, float) and not np.isfinite(fill_value):
        fill = "NaN" if np.isnan(fill_value) else "Infinity" if fill_value > 0 else "-Infinity"
    else:
        fill = bool(fill_value) if dt.kind == "b" else fill_value
    return {
        "shape": list(shape),
        "data_type": "string" if string else dt.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {
            "name": chunk_key_encoding["name"],
            "configuration": {"separator": chunk_key_encoding["separator"]},
        },
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": list(dimension_names),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


WRITE_THREADS = 4  # file writes mostly wait on the file system
ENCODE_THREADS = 2  # compression is CPU work: a thread per core of the edge box (2 here)
_POOLS: dict[str, ThreadPoolExecutor] = {}


def _pool(role: str, threads: int) -> ThreadPoolExecutor:
    """The module's threads for ``role`` (apart, so a writer waiting on an encoder never
    holds the thread that encoder needs)."""
    pool = _POOLS.get(role)
    if pool is None:
        pool = _POOLS[role] = ThreadPoolExecutor(threads, thread_name_prefix=f"scopeflow-{role}")
    return pool


def _run(heavy: list[Callable[[], None]], light: list[Callable[[], None]]) -> None:
    """Run the ``heavy`` file writes in the module's threads and the ``light`` ones here,
    meanwhile; the first error is raised once all are done."""
    pool = _pool("write", WRITE_THREADS)
    futures = [pool.submit(job) for job in heavy]
    try:
        for job in light:
            job()
    finally:
        wait(futures)  # none still writing when the caller's error handling (or lock release) runs
    for future in futures:
        future.result()


async def _grow_and_write(writes: list[tuple[AsyncArray, np.ndarray]], n: int, k: int) -> None:
    # One event-loop round trip for the whole batch: every column resizes, then writes, concurrently.
    await asyncio.gather(*(arr.resize((n + k, *arr.shape[1:])) for arr, _ in writes))
    await asyncio.gather(*(arr.setitem(slice(n, n + k), values) for arr, values in writes))


class Rows:
    """Equal-shaped arrays taken as the rows of one array without stacking them (a batch of
    frames: 8 MiB copied for nothing when each row is written as a chunk of its own)."""

    def __init__(self, rows: Sequence[np.ndarray]) -> None:
        self.rows = list(rows)
        first = self.rows[0]
        if any(r.shape != first.shape or r.dtype != first.dtype for r in self.rows):
            raise ShapeMismatchError("rows of one column differ in shape or type")
        self.shape = (len(self.rows), *first.shape)
        self.dtype = first.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, rows: slice) -> np.ndarray:
        part = self.rows[rows]
        return part[0][np.newaxis] if len(part) == 1 else np.stack(part)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        stacked = np.stack(self.rows)
        return stacked if dtype is None else stacked.astype(dtype)


def _normalise(values: Any) -> Any:
    if isinstance(values, list | tuple) and values and all(isinstance(v, np.ndarray) for v in values):
        return Rows(values)
    values = np.asarray(values)
    return values.astype(str) if values.dtype.kind in "OT" else values


def _same_kind(stored: np.dtype, given: np.dtype) -> bool:
    if stored.kind in "UTO" or given.kind in "UTO":
        return stored.kind in "UTO" and given.kind in "UTO"
    return stored == given
