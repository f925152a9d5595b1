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
import errno
import fcntl
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr import AsyncArray
from zarr.codecs import BytesCodec, ShardingCodec, ZstdCodec
from zarr.core.group import GroupMetadata

# The one private zarr name here: zarr's own event loop, so that a batch's resizes and writes of
# every column take one round trip (public per-array calls cost ~25% more: 46 vs 37 ms for a
# batch of 11 small columns, measured 2026-11-30 on a shared 2-core machine). If a zarr release
# moves it, this import fails loudly; it cannot change what is written.
from zarr.core.sync import sync
from zarr.storage import LocalStore, StorePath

from scopeflow.errors import InputError, ShapeMismatchError, StorageError

from .chunk_files import ChunkFiles
from .file_writes import SPARE, atomic_write, json_bytes
from .zarr_metadata import array_metadata

ROW_CHUNK = 8192  # rows per chunk of 1-D columns: few files, cheap partial rewrites
# Raw bytes of the rows in one shard of a one-row-per-chunk column: few files (a file per frame
# cost as much as numpy.save's whole write of it), and an incremental sync during acquisition
# re-sends at most this much of the shard still growing.
SHARD_BYTES = 16 * 2**20
SHARD_ROWS = 4096  # and at most this many rows: a 64 KiB index
# Rows per chunk of a string column: its last chunk is encoded whole every batch (vlen-utf8 has
# no fixed offsets to write new rows at), 0.35 ms for 6400 file names against 25 µs for 1024
# (numcodecs, measured 2026-11-30); an append's CPU grew from ~1.6 to ~2.4 ms over 6400 frames
# with 8192-row chunks (two string columns), flat with 1024. A file per 1024 frames is nothing
# beside the frames' shards.
STRING_ROWS = 1024


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
            staging.mkdir()
            # The group's metadata with its (empty) consolidated metadata, as zarr's
            # ``open_group`` then ``consolidate_metadata`` write it, in one file written once
            # (zarr's two calls cost ~3 ms, each file created here ~0.1-0.5 ms).
            root = {**GROUP_META, "attributes": dict(attributes or {})}
            (staging / "zarr.json").write_bytes(json_bytes(consolidated_entry(root)))
            if path.exists():
                path.rmdir()  # an empty directory the user made for us
            os.rename(staging, path)
        # zarr's handle on what was just written, without reading it back (~0.5 ms).
        metadata = GroupMetadata(attributes=root["attributes"])
        return zarr.Group(zarr.AsyncGroup(metadata=metadata, store_path=StorePath(LocalStore(path))))
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


def commit(
    path: Path,
    arrays: Mapping[str, Mapping[str, Any] | None],
    spare: Path | None = None,
    drop: Sequence[str] = (),
) -> None:
    """Make what was written visible to readers, atomically: the nodes at these paths, whose own
    metadata (given, or read from its ``zarr.json`` where None) replaces their entries in the
    root's consolidated metadata, with any group above them not yet published; the nodes in
    ``drop`` and those under them leave it (the caller removed them).

    ``spare``: a scratch file on the same file system that only the caller writes (while it
    holds the writers' lock), for ``atomic_write`` to fill and swap in: creating a temporary
    file each commit costs ~0.35 ms idle, more while other processes create files.

    Only the caller's nodes, never the whole hierarchy: a writer killed mid-batch leaves its
    arrays resized beyond their commit until it reopens and repairs them, and a whole
    consolidation by anyone else meanwhile would publish that debris as committed (a pipelined
    run killed by SIGKILL then resumed on columns of one table at different lengths). It is
    also cheaper: zarr's consolidation opens every node (~8 ms a batch, measured 2026-11-30).
    A root without consolidated metadata (a group some other tool made) is consolidated whole.
    """
    with storage_errors(path):
        data = commit_bytes(path, arrays, drop)
        if data is None:
            consolidate(LocalStore(path))
            return
        # No spare file in the root itself: zarr would take it for a node when listing the
        # group; the caller's lies in one of its arrays' directories.
        atomic_write(path / "zarr.json", data, spare)


def commit_bytes(
    path: Path, arrays: Mapping[str, Mapping[str, Any] | None], drop: Sequence[str] = ()
) -> bytes | None:
    """The root's ``zarr.json`` that ``commit`` writes (None: the root has no consolidated
    metadata, to be consolidated whole); the caller holds the writers' lock until it is written."""
    with storage_errors(path):
        root = json.loads((path / "zarr.json").read_bytes())
        entries = (root.get("consolidated_metadata") or {}).get("metadata")
        if entries is None:
            return None
        for gone in drop:
            for name in [n for n in entries if n == gone or n.startswith(f"{gone}/")]:
                del entries[name]
        published = dict(arrays)
        for name in arrays:
            parent = name.rpartition("/")[0]
            while parent and parent not in entries and parent not in published:
                published[parent] = None
                parent = parent.rpartition("/")[0]
        for name, meta in published.items():
            entries[name] = (
                meta if meta is not None else consolidated_entry(_read_json(path / name / "zarr.json"))
            )
        # In path order, as zarr writes them: zarr 3.1 nests the entries of one group's
        # children only where they stand together (``_flat_to_nested`` groups runs of them).
        root["consolidated_metadata"]["metadata"] = dict(sorted(entries.items()))
        return json_bytes(root)


GROUP_META = {"attributes": {}, "zarr_format": 3, "node_type": "group"}


def consolidated_entry(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A node's entry in consolidated metadata, as zarr writes one (a group's names its own,
    empty, consolidated metadata)."""
    if meta.get("node_type") != "group":
        return dict(meta)
    return {**meta, "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": {}}}


def _read_json(file: Path) -> Any:
    return json.loads(file.read_bytes())


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
        resized = trim(path, owned)
        if resized:
            # The trimmed arrays' own metadata only (see ``commit``): their committed entries
            # already say so, but a reader without consolidation reads these.
            commit(path, dict.fromkeys(resized))


def trim(path: Path, owned: Callable[[str], bool] | None = None) -> list[str]:
    """``repair`` without the lock and the commit (for a writer that holds the lock); returns
    the arrays brought back to their committed shape (those never committed are removed). The
    committed metadata is untouched: no commit is needed."""
    owned = owned or (lambda name: True)
    with storage_errors(path):
        for name in _unfinished_arrays(path):
            if owned(name):
                shutil.rmtree(path / name)
    committed = committed_shapes(path)
    root = open_root(path, create=False)
    resized: list[str] = []
    with storage_errors(path):
        with warnings.catch_warnings():
            # Another writer's array whose creation was killed (``_unfinished_arrays``) is a
            # directory zarr does not recognise: that writer's own repair removes it.
            warnings.filterwarnings("ignore", message=".*not recognized as a component", category=UserWarning)
            arrays = list(_all_arrays(root))
        for name, arr in arrays:
            if not owned(name):
                continue
            if name not in committed:
                parent, _, leaf = name.rpartition("/")
                del (root[parent] if parent else root)[leaf]
            elif tuple(arr.shape) != committed[name]:
                arr.resize(committed[name])
                resized.append(name)
        for partial in path.rglob("*.partial"):
            # The array a temporary file belongs to: its directory, less any chunk directories
            # (c/<row>/...); the root's own metadata is ".".
            where = partial.parent.relative_to(path).as_posix()
            if owned(where.split("/c/")[0].removesuffix("/c")):
                partial.unlink(missing_ok=True)
    return resized


def _unfinished_arrays(path: Path, prefix: str = "") -> Iterator[str]:
    """Directories in the group at ``path`` and its subgroups without a ``zarr.json``: arrays
    whose creation was killed before their metadata was written (``Table._create``), which
    zarr skips with a warning. Arrays' own directories (their chunks) are not entered, nor
    hidden ones (other tools' scratch space, e.g. a sync's partial files)."""
    for entry in os.scandir(path):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        name = f"{prefix}{entry.name}"
        try:
            meta = json.loads((Path(entry.path) / "zarr.json").read_bytes())
        except FileNotFoundError:
            if _only_chunks(Path(entry.path)):
                yield name
            continue  # (anything else in it is not ours to remove: a user's own directory)
        except ValueError:
            continue  # not this writer's to judge: zarr reports it when it opens the node
        if isinstance(meta, dict) and meta.get("node_type") == "group":
            yield from _unfinished_arrays(Path(entry.path), f"{name}/")


def _only_chunks(directory: Path) -> bool:
    """Whether ``directory`` holds nothing but what ``Table._create`` writes before an array's
    ``zarr.json``: chunk files (``c`` or ``c.<n>...``, the "." key separator), the spare and
    temporary files of ``atomic_write``."""
    for entry in os.scandir(directory):
        name = entry.name
        if not entry.is_file(follow_symlinks=False):
            return False
        if not (name == "c" or name.startswith("c.") or name == SPARE or name.endswith(".partial")):
            return False
    return True


def _may_hold_nodes(group: zarr.Group) -> bool:
    """False for a local group directory without subdirectories (a new dataset's root): zarr's
    listing of it costs ~0.2 ms a call, and a dataset's creation and first batch make three."""
    if not isinstance(group.store, LocalStore):
        return True
    try:
        with os.scandir(Path(group.store.root) / group.path) as entries:
            return any(entry.is_dir() for entry in entries)
    except FileNotFoundError:
        return True  # zarr's to say


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
            for name, arr in (group.arrays() if _may_hold_nodes(group) else ())
            if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == dim
        }
        self._spare: Path | None = None
        self._new: set[str] = set()  # columns made by this writer whose zarr.json is not written
        self._files = {name: self._share_spare(ChunkFiles.of(arr)) for name, arr in self._arrays.items()}

    def _share_spare(self, files: ChunkFiles | None) -> ChunkFiles | None:
        """``files`` with the table's one spare file (that of its first column's directory): a
        spare per column cost a file creation per column in a new dataset's second batch. The
        spare is only used from the appending thread (``ChunkFiles.writes``' threads never
        replace files through it), one replacement at a time."""
        if files is not None:
            self._spare = self._spare or files.spare
            files.spare = self._spare
        return files

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
        plan = self.plan_append(data, dims=dims, attrs=attrs)
        for unit in plan.light:
            unit()
        plan.heavy()
        return plan.finish()

    def plan_append(
        self,
        data: Mapping[str, np.ndarray | Sequence[np.ndarray]],
        *,
        dims: Mapping[str, tuple[str, ...]] | None = None,
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> AppendPlan:
        """``append`` in parts that the caller runs (``AppendPlan``): the big columns' rows
        (frames) in one thread while the small columns are written in another, or the caller's
        other tables; nothing is written yet, but for columns that go through zarr (not local)."""
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
            for name in list(self._new):
                files = self._files[name]
                assert files is not None  # (a column zarr made is never new here)
                self._write_new(name, files, [], n)
            return AppendPlan([], _nothing, lambda: n, self.metadata)
        through_zarr = []
        small: list[ChunkFiles] = []
        big: list[ChunkFiles] = []
        heavy: list[Callable[[], None]] = []
        light: list[Callable[[], None]] = []
        units: list[Callable[[], None]] = []
        for name, files in self._files.items():
            values = data.get(name)
            if values is None:
                dtype = self._dtype(name)
                values = np.full((k, *self._shape(name)[1:]), fill_for(dtype), dtype=dtype)
            if files is None:
                through_zarr.append((self._arrays[name].async_array, np.asarray(values)))
            elif files.rows == 1 or files.sharded:
                # Rows of a chunk each (frames): most of a batch's bytes.
                if name in self._new:
                    # (No other part of this batch swaps a file through the table's spare: new
                    # columns' parts use none, and the existing ones' spare lies in their own.)
                    heavy.append(partial(self._write_new, name, files, [], None))
                heavy.extend(files.writes(n, values))
                big.append(files)
            elif name in self._new:
                # A new column: its directory, rows and first ``zarr.json``, written apart from
                # the others (no shared spare file), so that a new dataset's first batch shares
                # its dozen columns' file creations (~0.1-0.4 ms each here) between two threads.
                units.append(partial(self._write_new, name, files, files.writes(n, values), n + k))
            else:
                light.extend(files.writes(n, values))
                small.append(files)

        def write_light() -> None:
            # Chunks first, then each array's shape: a reader of an array's own metadata never
            # finds rows whose chunks are not written.
            for job in light:
                job()
            if through_zarr:
                sync(_grow_and_write(through_zarr, n, k))
            for files in small:
                files.resize(n + k)

        def write_heavy() -> None:
            for job in heavy:
                job()

        def finish() -> int:
            for files in big:
                files.resize(n + k)
            return n + k

        def published() -> dict[str, dict[str, Any] | None]:
            return self.metadata() | {files.path: files.meta_at(n + k) for files in big}

        if light or through_zarr or small:
            units.insert(0, write_light)
        return AppendPlan(units, write_heavy, finish, published)

    def _write_new(
        self, name: str, files: ChunkFiles, writes: list[Callable[[], None]], length: int | None
    ) -> None:
        """A new column's first rows: its directory, its chunks, then its ``zarr.json`` (for a
        big column, written by ``finish`` with the others': ``length`` None)."""
        self._make_directory(name)
        for job in writes:
            job()
        if length is not None:
            files.resize(length)  # through a temporary file of its own (``files.spare`` is None)
        files.spare = self._spare  # from now on, the table's (one thread's at a time)
        self._new.discard(name)

    def _create(
        self,
        name: str,
        values: np.ndarray,
        n: int,
        trailing: tuple[str, ...] | None,
        attrs: Mapping[str, Any] | None,
    ) -> None:
        """Take ``name`` as a new column (written from row ``n`` on, the rows before it missing);
        on local disk its directory is made by the batch's writes (``_make_directory``)."""
        extra = values.shape[1:]
        if trailing is None:
            trailing = tuple(f"{name}_{i}" for i in range(len(extra)))
        # Rows of multi-dimensional columns: as many as fit in a 1-D column's chunk (a frame is a
        # chunk of its own; the conditions of ~500 frames share one), so a batch touches few files.
        row_bytes = max(1, values.dtype.itemsize * int(np.prod(extra)))
        rows = self.chunk_rows.get(name, max(1, ROW_CHUNK * 8 // row_bytes) if extra else self.rows)
        if values.dtype.kind in "UTO" and name not in self.chunk_rows:
            rows = min(rows, STRING_ROWS)
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
            self._files[name] = self._share_spare(ChunkFiles.of(arr))
            return
        # zarr's create_array costs ~2.5 ms a column (a dataset's first batch makes a dozen).
        # Here the array's directory only, made by the job that writes its first rows
        # (``_make_directory``); its ``zarr.json`` is written once, by the append's ``resize``
        # after its chunks, through the table's spare file (creating a file costs ~0.1-0.5 ms
        # on this project's disks, and the first batch creates one per column less).
        # Until its commit the array is invisible to readers; killed before its ``zarr.json``,
        # it is a directory that ``trim`` removes (zarr ignores it), killed after, an array
        # that ``trim`` removes as never committed.
        files.start_empty(n)
        self._files[name] = self._share_spare(files)
        # Until its first ``zarr.json`` is written, a temporary file of its own for each file
        # replaced (rare: rows after missing ones), not the table's spare (``_write_new``).
        files.spare = None
        self._new.add(name)

    def _make_directory(self, name: str) -> None:
        """The directory of new column ``name``, before its first chunk is written."""
        files = self._files[name]
        assert files is not None  # (zarr made the directories of the columns it made)
        try:
            files.directory.mkdir()
        except FileExistsError:
            if (files.directory / "zarr.json").exists():
                # Another node (a group, another table's column): never overwritten.
                raise InputError(
                    f"column {files.path!r} of {self.dim!r}: a node of that name exists in {files.root}"
                ) from None
            # A creation killed before its zarr.json, or a batch of this writer's that failed.
            shutil.rmtree(files.directory)
            files.directory.mkdir()


@dataclass(frozen=True)
class AppendPlan:
    """One batch's writes into a table (``Table.plan_append``). ``light``: the small columns'
    writes in units that touch different files (each new column's directory, rows and first
    ``zarr.json``; the existing columns' rows, then their ``zarr.json``), ``heavy``: the big
    columns' rows (frames). They may run in any order and at once, in any threads; all must
    have returned before ``finish`` (the big columns' own metadata, which returns the new
    length) and the commit, on every path (errors included) before the writers' lock is
    released."""

    light: list[Callable[[], None]]
    heavy: Callable[[], None]
    finish: Callable[[], int]
    # The table's metadata as ``finish`` leaves it (``Table.metadata``), once ``light`` is done:
    # what the commit publishes, prepared while the frames are still being written.
    published: Callable[[], dict[str, dict[str, Any] | None]]


def _nothing() -> None:
    pass


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
