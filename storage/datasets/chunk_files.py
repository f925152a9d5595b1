"""Zarr v3 arrays written as files: chunks, shards and metadata, without zarr-python.

``ChunkFiles`` writes what an array's own ``zarr.json`` describes (the layouts ``Table`` creates,
and those of datasets written before); ``zarr_metadata.array_metadata`` spells a new array's
``zarr.json`` as zarr-python's ``create_array`` would, and ``file_writes`` replaces files atomically
and runs the writes in threads. Every file is checked against zarr's own bytes and read
back with tensorstore in tests/datasets/test_direct_chunks.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from .file_writes import ENCODE_THREADS, SPARE, atomic_write, json_bytes, pwrite_all, pwritev_all, thread_pool
from .zarr_metadata import array_metadata, decoder, encoder, fill_from_json

# Fill values as raw chunks' bytes, by (little-endian dtype, fill value, elements): ``_fill_bytes``.
_FILL_BYTES: dict[tuple[str, str, int], bytes] = {}

# Where tests and callers have imported them from.
__all__ = ["SPARE", "ChunkFiles", "array_metadata"]


class ChunkFiles:
    """Writes an array's chunks and its own metadata as files, as the Zarr v3 spec lays them out.

    zarr-python spends ~1 ms of event-loop and codec-pipeline work per chunk and array: a frame
    is one chunk, and every batch touches a dozen small columns, so at microscope rates that
    overhead (and the read-modify-write of each column's last chunk) dominated the append. Here
    new rows of a raw column are written into its last chunk file at their offset (nothing read),
    the last, partly filled chunk of an encoded column is kept decoded in memory (read once), so a
    batch encodes each touched chunk once and writes it, and the new shape is written straight into
    the array's ``zarr.json``. What to write is read from that ``zarr.json`` as the specification
    spells it (``bytes`` or ``vlen-utf8``, then optionally ``blosc`` or ``zstd``; a regular grid
    of whole rows; the ``default`` chunk-key encoding), not from zarr-python's classes, so a zarr
    release that renames its internals cannot silently change the bytes; numcodecs (the library
    zarr itself calls) encodes. The files are exactly what zarr writes (checked in
    tests/datasets/test_direct_chunks.py against zarr's own path, and read back by tensorstore),
    each atomically (temporary file, then rename). ``of`` returns None for any other layout, which
    then goes through zarr.
    """

    def __init__(
        self, root: Path, path: str, meta: dict[str, Any], encode: Callable[[np.ndarray], bytes]
    ) -> None:
        self.root = root  # the dataset directory
        self.path = path  # the array's path in the group
        self.directory = root / path
        # The file a replacement is written into (``atomic_write``), one at a time; a ``Table``
        # gives its columns one spare (``Table._share_spare``).
        self.spare = self.directory / SPARE
        self.meta = meta
        self.rows = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        self.separator = (meta["chunk_key_encoding"].get("configuration") or {}).get("separator", "/")
        self.dtype = np.dtype(object) if meta["data_type"] == "string" else np.dtype(meta["data_type"])
        self.fill = fill_from_json(meta.get("fill_value"), self.dtype)
        self._encode = encode
        # Shards of one-row chunks with the index first (``from_metadata`` checked the layout).
        self.sharded = meta["codecs"][0]["name"] == "sharding_indexed"
        inner = meta["codecs"][0]["configuration"]["codecs"] if self.sharded else meta["codecs"]
        # Raw fixed-width chunks (no compressor): a row sits at a fixed offset of its chunk file;
        # in a shard, its bytes are the row's own memory (nothing to encode).
        self.raw = len(inner) == 1 and self.dtype.kind != "O"
        self._little = self.dtype.newbyteorder("<") if self.dtype.kind != "O" else self.dtype
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
                encode = encoder(meta_inner, len(shape))
            else:
                encode = encoder(meta, len(shape))
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

    def start_empty(self, n: int) -> None:
        """Take the array as new, with no row stored yet (its first ``n`` rows are missing
        values): the chunk that row ``n`` falls in is not read (nor its ``zarr.json``, which the
        first ``resize`` writes)."""
        # A shard's rows are never read back (its tail would be 16 MiB), nor a raw chunk's: new
        # rows are written at their offset (``_patch``).
        if not (self.sharded or self.raw):
            self._tail, self._tail_start = self._empty(), n - n % self.rows

    def _tail_for(self, n: int) -> np.ndarray:
        """The chunk that row ``n`` falls in, holding rows before ``n`` as stored (read once)."""
        start = n - n % self.rows
        if self._tail is None or self._tail_start != start:
            self._tail, self._tail_start = self._stored(start, n), start
        return self._tail

    def _stored(self, start: int, n: int) -> np.ndarray:
        """The chunk that starts at row ``start``, holding its rows before ``n`` as stored."""
        tail = self._empty()
        if n > start:
            stored = zarr.open_array(store=LocalStore(self.root, read_only=True), path=self.path, mode="r")
            tail[: n - start] = np.asarray(stored[start:n], dtype=self.dtype)
        return tail

    def _fill_bytes(self, rows: int) -> memoryview:
        """``rows`` rows of fill values as a raw chunk's bytes (made once per layout and process:
        a new column's first chunk is mostly fill values, 64-512 KiB each in a new dataset)."""
        per_row = int(np.prod(self.meta["shape"][1:], dtype=np.int64))
        key = (self._little.str, repr(self.fill), self.rows * per_row)
        full = _FILL_BYTES.get(key)
        if full is None:
            full = _FILL_BYTES[key] = np.full(key[2], self.fill, dtype=self._little).tobytes()
        return memoryview(full)[: rows * per_row * self.dtype.itemsize]

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
                key = self._key(shard)
                if self.raw:
                    # Uncompressed rows: written from where they lie, with ``pwritev`` (``pwritev_all``), with no
                    # encoding thread to hand them to (a hand-off costs ~40 µs, the copy ~10 µs);
                    # their views are taken in the writing thread too.
                    rows = range(lo - n, hi - n)
                    jobs.append(
                        lambda key=key, first=lo - shard * r, rows=rows: self._extend(
                            key, first, [self._raw_rows(values, rows)]
                        )
                    )
                    continue
                # Encoding (as costly as writing) starts now in threads of its own, so the shard's
                # writer writes each row as soon as it is encoded.
                # Rows go to the encoders in groups: a hand-off costs ~40 µs, a row's encoding ~250.
                pool = thread_pool("encode", ENCODE_THREADS)
                step = max(1, -(-(hi - lo) // (4 * ENCODE_THREADS)))
                groups = [
                    pool.submit(self._encode_rows, values, range(i - n, min(hi, i + step) - n))
                    for i in range(lo, hi, step)
                ]
                jobs.append(
                    lambda key=key, first=lo - shard * r, groups=groups: self._extend(key, first, groups)
                )
            return jobs
        for chunk in range(n // r, (n + k - 1) // r + 1):
            lo, hi = max(n, chunk * r), min(n + k, (chunk + 1) * r)
            key = self._key(chunk)
            if (lo == chunk * r and hi == lo + r) or (self.raw and lo == chunk * r):
                # A new chunk: its rows, no copy (a raw chunk's rest: fill values, ``_fresh``).
                rows = values[lo - n : hi - n]
                jobs.append(lambda key=key, rows=rows: self._fresh(key, rows))
                continue
            if self.raw:
                # New rows after committed ones: their bytes at their offset (``_patch``).
                rows = values[lo - n : hi - n]
                jobs.append(
                    lambda key=key, rows=rows, start=chunk * r, at=lo: self._patch(key, rows, start, at)
                )
                continue
            buf = self._tail_for(n) if chunk == n // r else self._empty()
            buf[lo - chunk * r : hi - chunk * r] = values[lo - n : hi - n]
            self._tail, self._tail_start = buf, chunk * r
            if lo == chunk * r:
                jobs.append(lambda key=key, buf=buf: self._fresh(key, buf))
            else:
                jobs.append(lambda key=key, buf=buf: atomic_write(key, self._encode(buf), self.spare))
        if (n + k) % r == 0:
            self._tail, self._tail_start = None, -1  # the next row starts a fresh chunk
        return jobs

    def _fresh(self, key: Path, rows: np.ndarray) -> None:
        """A chunk no reader looks at yet (beyond the committed shape): written in place; a raw
        chunk's rows after ``rows`` are fill values, as zarr writes them."""
        if self.separator == "/":
            key.parent.mkdir(parents=True, exist_ok=True)
        data = [self._bytes(rows)]
        if len(rows) < self.rows:
            data.append(self._fill_bytes(self.rows - len(rows)))
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            pwritev_all(fd, data, 0)
        finally:
            os.close(fd)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start``..``stop``-1 of a sharded array, straight from its shard files: per shard
        one read of their index entries and one of their bytes (zarr reads each row's bytes
        apart, ~2x slower here). The caller reads committed rows only: their entries and bytes
        never change."""
        if not self.sharded:
            raise ValueError(f"array {self.path!r} is not sharded")
        inner = self.meta["codecs"][0]["configuration"]["codecs"]
        decode = decoder(inner)
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

    def _raw_rows(self, values: Any, rows: range) -> Future[list[Any]]:
        """Rows of ``values`` as raw chunks' bytes (little-endian), without a copy where a row
        already lies so in memory, as the finished result ``_extend`` takes."""
        done: Future[list[Any]] = Future()
        done.set_result(
            [memoryview(np.ascontiguousarray(values[i : i + 1], dtype=self._little)).cast("B") for i in rows]
        )
        return done

    def _bytes(self, rows: np.ndarray) -> Any:
        """``rows`` as a chunk's bytes: a raw chunk's straight from memory (a new column's first
        chunks are mostly fill values, ~2 MiB in a dataset's first batch, copied once less), to
        be written before the rows change (``writes``' jobs run before the next ``writes``)."""
        if self.raw:
            return memoryview(np.ascontiguousarray(rows, dtype=self._little)).cast("B")
        return self._encode(rows)

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
                    pwritev_all(fd, blobs, end)
                    for blob in blobs:
                        new.append((end, len(blob)))
                        end += len(blob)
                entries = np.array(new, dtype="<u8")
                pwrite_all(fd, entries.tobytes(), first * 16)  # after the bytes they point to
        finally:
            if fd >= 0:
                os.close(fd)

    def _new_shard(self, key: Path, first: int, blobs: list[bytes], *, atomic: bool) -> None:
        entries = np.full((self.rows, 2), 2**64 - 1, dtype="<u8")  # the spec's "missing"
        sizes = np.array([len(b) for b in blobs], dtype="<u8")
        entries[first : first + len(blobs), 0] = entries.nbytes + np.cumsum(sizes) - sizes
        entries[first : first + len(blobs), 1] = sizes
        if atomic:
            # A temporary file, not the spare: this runs in a writing thread, and the spare may
            # be in use by the appending thread (``Table._share_spare``). Rare: only after rows
            # committed without a shard file.
            atomic_write(key, b"".join([entries.tobytes(), *blobs]))
            return
        if self.separator == "/":
            key.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            pwritev_all(fd, [entries.tobytes(), *blobs], 0)
        finally:
            os.close(fd)

    def _patch(self, key: Path, rows: np.ndarray, start: int, at: int) -> None:
        """``rows`` into the raw chunk file ``key`` (rows ``start``…) from row ``at`` on, in
        place; the whole chunk atomically where the file is not the full raw chunk (zarr skips
        writing a chunk that holds only fill values)."""
        row_bytes = int(np.prod(self.meta["shape"][1:], dtype=np.int64)) * self.dtype.itemsize
        try:
            fd = os.open(key, os.O_WRONLY)
        except FileNotFoundError:
            fd = -1
        try:
            if fd >= 0 and os.fstat(fd).st_size == self.rows * row_bytes:
                pwrite_all(fd, self._bytes(rows), (at - start) * row_bytes)
                return
        finally:
            if fd >= 0:
                os.close(fd)
        # No file: every row stored so far is a fill value (a column new in this batch too).
        buf = self._stored(start, at) if fd >= 0 else self._empty()
        buf[at - start : at - start + len(rows)] = rows
        atomic_write(key, self._encode(buf), self.spare)

    def meta_at(self, length: int) -> dict[str, Any]:
        """The array's ``zarr.json`` as ``resize(length)`` writes it."""
        return dict(self.meta, shape=[length, *self.meta["shape"][1:]])

    def resize(self, length: int) -> None:
        """Write the new row count into the array's own ``zarr.json`` (atomically)."""
        meta = self.meta_at(length)
        atomic_write(self.directory / "zarr.json", json_bytes(meta), self.spare)
        self.meta = meta
