"""Zarr v3 arrays written as files: chunks, shards and metadata, without zarr-python.

``ChunkFiles`` writes what an array's own ``zarr.json`` describes (the layouts ``Table`` creates,
and those of datasets written before); ``array_metadata`` spells a new array's ``zarr.json`` as
zarr-python's ``create_array`` would. Every file is checked against zarr's own bytes and read
back with tensorstore in tests/datasets/test_direct_chunks.py.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec, ZstdCodec
from zarr.storage import LocalStore


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
                jobs.append(lambda key=key, buf=buf: atomic_write(key, self._encode(buf), self.spare))
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
            atomic_write(key, data, self.spare)
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
            atomic_write(key, self._encode(buf), self.spare)
            return
        try:
            if os.fstat(fd).st_size != buf.nbytes:
                atomic_write(key, self._encode(buf), self.spare)
                return
            _pwrite_all(fd, data, lo * buf[0].nbytes)
        finally:
            os.close(fd)

    def resize(self, length: int) -> None:
        """Write the new row count into the array's own ``zarr.json`` (atomically)."""
        meta = dict(self.meta, shape=[length, *self.meta["shape"][1:]])
        atomic_write(self.directory / "zarr.json", json_bytes(meta), self.spare)
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


def atomic_write(target: Path, data: bytes, spare: Path | None = None) -> None:
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


def run_writes(heavy: list[Callable[[], None]], light: list[Callable[[], None]]) -> None:
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


def json_bytes(doc: Any) -> bytes:
    # Compact: with ``indent`` the json module falls back to its pure-Python encoder (~10x slower,
    # 6 ms a commit of the dataset's root here); every reader parses it the same.
    return json.dumps(doc, separators=(",", ":")).encode()
