"""An acquisition run as a Zarr v3 group: frames, their conditions, and ground truth.

Layout (readable with plain ``xarray.open_zarr(path)``):

- ``frames`` (frame, y, x) float32, one chunk per frame in shard files (raw,
  or lz4 after a bit shuffle where the first batch is integer counts: ``COUNTS_CODEC``), with
  coordinates ``frame_index``, ``time`` (UTC) and ``pixel_size`` (Å) along ``frame``;
- ``conditions`` (frame, condition) float64 with the names in ``condition``
  (``ds.conditions.sel(condition="defocus")``); text conditions (``lattice``) as string
  variables along ``frame``; numbers first seen after the first batch in ``metadata`` (JSON);
- ``source`` along ``frame``: the file or instrument each frame came from;
- ground truth along ``truth``: ``truth_frame``, ``truth_row``, ``truth_col`` (pixels),
  ``truth_class``, ``truth_weight``.

Root attributes: ``scopeflow_schema`` (layout version), ``instrument`` (its ``state()``),
``created``. Prediction sets and drift decisions live in subgroups (see ``predictions``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import LocalStore

from scopeflow.errors import InputError, NotFoundError, ShapeMismatchError
from scopeflow.frame import Frame, Truth

from .file_writes import SPARE, Beside, atomic_write
from .tables import (
    ROW_CHUNK,
    AppendPlan,
    Table,
    commit,
    commit_bytes,
    open_root,
    repair,
    storage_errors,
    writing,
)

SCHEMA_VERSION = 1
# The frames' codec is chosen from the first batch's frames, once per dataset (it lives in
# ``frames/zarr.json``). Measured 2026-11-30 (256² float32 frames, one thread, numcodecs' Blosc;
# ``codec_figures`` in benchmarks/acquire.py): lz4 after a bit shuffle shrinks exact integer
# detector counts (the abTEM HAADF frames in /work/shared/data) 3.8-5.6x at 0.05-0.07 ms a
# frame, less than ``numpy.save`` spends writing the frame raw (~0.08 ms), and a counting
# detector's archive and its syncs are 4-6x smaller. Counts with read noise or gain applied
# (the twin's: Poisson plus Gaussian) are not integers: their low bits are noise, the codec
# shrinks them only 1.07-1.23x at 0.09-0.13 ms, and they are written raw from where they lie.
COUNTS_CODEC = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
FRAME_DIM = "frame"
TRUTH_DIM = "truth"
CONDITION_DIM = "condition"
TIME_ATTRS = {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"}
# Instrument settings that must agree for a run to be resumed into an existing dataset.
RESUME_KEYS = ("kind", "seed", "shape", "schedule", "base", "folder")


class DatasetWriter:
    """Appends batches of frames to a dataset; each ``append`` is one atomic commit."""

    def __init__(self, path: Path, root: zarr.Group) -> None:
        self.path = path
        self.root = root
        self.frames = Table(root, FRAME_DIM, chunk_rows={"frames": 1})
        # A few hundred atoms a frame (~360 in a 256² graphene frame at 0.12 Å/px): 8192-row chunks
        # would make a new file every ~23 frames, each as costly as a frame's; 2^16 rows (256 KiB
        # of float32) span ~180 frames.
        self.truth = Table(root, TRUTH_DIM, rows=ROW_CHUNK * 8)
        self._conditions: list[str] | None = None  # names of the numeric conditions, once stored
        self._names: Table | None = None  # their array, when this writer made it (to commit)
        self._new_names: np.ndarray | None = None  # those names, until a batch has written them

    @classmethod
    def open(cls, path: str | Path, instrument: dict[str, Any] | None = None) -> DatasetWriter:
        """Open ``path`` for appending, creating it if absent and repairing an interrupted batch.

        ``instrument`` (an ``Instrument.state()``) is recorded on creation; on reopening it
        must match the recorded one, so a resumed run continues the same acquisition.
        """
        path = Path(path)
        exists = (path / "zarr.json").exists()
        if path.exists() and not exists and any(path.iterdir()):
            raise InputError(f"{path} exists and is not a scopeflow dataset (no zarr.json)")
        if exists:
            # Its own tables only (root-level arrays): the edge appends to subgroups meanwhile.
            repair(path, owned=lambda name: "/" not in name)
            root = open_root(path, create=False)
            recorded = root.attrs.get("instrument")
            if instrument and recorded:
                clash = [k for k in RESUME_KEYS if k in recorded and recorded.get(k) != instrument.get(k)]
                if clash:
                    raise InputError(
                        f"dataset {path} was acquired with different instrument settings ({', '.join(clash)}): "
                        f"recorded {json.dumps({k: recorded.get(k) for k in clash})}, "
                        f"now {json.dumps({k: instrument.get(k) for k in clash})}; choose another --dataset"
                    )
        else:
            attributes = {
                "scopeflow_schema": SCHEMA_VERSION,
                "instrument": json.loads(json.dumps(instrument or {}, default=str)),
                "created": dt.datetime.now(dt.UTC).isoformat(),
            }
            root = open_root(path, create=True, attributes=attributes)
        writer = cls(path, root)
        if not exists:
            writer._conditions = []  # none stored yet in a dataset this writer made
        return writer

    @property
    def n_frames(self) -> int:
        """Frames committed so far."""
        return len(self.frames)

    @property
    def frame_shape(self) -> tuple[int, int] | None:
        """(rows, cols) of the stored frames, or None while the dataset is empty."""
        shape = self.frames.trailing_shape("frames")
        return None if shape is None else (shape[0], shape[1])

    def condition_names(self) -> list[str]:
        """Names of the numeric conditions, in the column order of ``conditions``."""
        if self._conditions is None:  # written once, with the first batch that has conditions
            # Looked for on disk first: a new dataset has none, and zarr's lookup costs ~0.2 ms.
            stored = (self.path / CONDITION_DIM / "zarr.json").exists() and CONDITION_DIM in self.root
            arr = self.root.get(CONDITION_DIM) if stored else None
            self._conditions = [] if arr is None else [str(s) for s in arr[:]]
        return list(self._conditions)

    def _condition_columns(self, batch: Sequence[Frame]) -> dict[str, np.ndarray]:
        """Numeric conditions as one (k, C) array; text ones as columns; new numbers as JSON."""
        # One pass over every frame's conditions (a test per key and frame was most of the
        # Python time of an append, ~0.2 ms a batch of 32).
        seen: set[str] = set()
        text: set[str] = set()
        for f in batch:
            for k, v in f.conditions.items():
                seen.add(k)
                if type(v) not in _PLAIN_NUMBERS and k not in text and not _is_number(v):
                    text.add(k)
        keys = sorted(seen)
        numeric = [k for k in keys if k not in text]
        names = self.condition_names()
        if not names and numeric:
            names = numeric
            # Written directly like every column (zarr's create_array costs a few ms), in one chunk.
            self._names = Table(self.root, CONDITION_DIM, chunk_rows={CONDITION_DIM: len(names)})
            self._new_names = np.array(names, dtype=str)  # written with the batch's small tables
            self._conditions = list(names)
        out: dict[str, np.ndarray] = {}
        if names:
            nan = float("nan")
            out["conditions"] = np.array(
                [[f.conditions.get(k, nan) for k in names] for f in batch], dtype=np.float64
            )
        extra = [k for k in numeric if k not in names]
        if extra or "metadata" in self.frames:
            out["metadata"] = np.array(
                [json.dumps({k: f.conditions[k] for k in extra if k in f.conditions}) for f in batch]
            )
        for key in keys:
            if key in text:
                out[key] = np.array([str(f.conditions.get(key, "")) for f in batch], dtype=str)
        return out

    def sources(self) -> list[str]:
        """Where each committed frame came from (file names for the folder watcher)."""
        arr = self.frames.columns().get("source")
        return [] if arr is None else [str(s) for s in arr[:]]

    def append(self, batch: Sequence[Frame]) -> int:
        """Append frames (in order) and commit; returns the committed frame count."""
        if not batch:
            return self.n_frames
        images = [np.asarray(f.image) for f in batch]
        for f, img in zip(batch, images, strict=True):
            if img.ndim != 2:
                raise ShapeMismatchError(
                    f"frame {f.index} ({f.source}): expected a 2-D image, got shape {img.shape}"
                )
        shape = self.frame_shape or images[0].shape
        for f, img in zip(batch, images, strict=True):
            if img.shape != shape:
                raise ShapeMismatchError(
                    f"frame {f.index} ({f.source}) has shape {img.shape}, the dataset {self.path} holds {shape}"
                )
            if img.dtype.kind not in "iuf":  # real numbers (not complex, bool or objects)
                raise ShapeMismatchError(
                    f"frame {f.index} ({f.source}): dtype {img.dtype} is not a real number type"
                )
        if "frames" not in self.frames:
            counts = all(np.array_equal(img, np.round(img)) for img in images)
            self.frames.compressors["frames"] = COUNTS_CODEC if counts else None
        n0 = self.n_frames
        columns: dict[str, Any] = {
            # Rows, not one stacked array: each frame is a chunk of its own, encoded from where it lies.
            "frames": [img.astype(np.float32, copy=False) for img in images],
            "frame_index": np.array([f.index for f in batch], dtype=np.int64),
            "time": np.array([np.datetime64(f.time, "ns") for f in batch]).astype(np.int64),
            "pixel_size": np.array([f.pixel_size for f in batch], dtype=np.float64),
            "source": np.array([f.source for f in batch], dtype=str),
        }
        columns.update(self._condition_columns(batch))
        attrs = {
            "frames": {"coordinates": "frame_index time pixel_size", "units": "counts"},
            "time": TIME_ATTRS,
            "pixel_size": {"units": "angstrom / pixel"},
            "conditions": {"description": "numeric imaging conditions per frame; names in `condition`"},
        }
        truths = [(n0 + i, f.truth) for i, f in enumerate(batch) if f.truth is not None]

        truth_plans: list[AppendPlan] = []

        def condition_names() -> None:
            if self._new_names is not None:
                assert self._names is not None
                self._names.append({CONDITION_DIM: self._new_names})
                self._new_names = None

        def truth() -> list[Callable[[], None]]:
            if not truths:
                return []
            plan = self.truth.plan_append(
                {
                    "truth_frame": np.concatenate([np.full(len(t.rowcol), i, np.int64) for i, t in truths]),
                    "truth_row": np.concatenate([t.rowcol[:, 0] for _, t in truths]).astype(np.float32),
                    "truth_col": np.concatenate([t.rowcol[:, 1] for _, t in truths]).astype(np.float32),
                    "truth_class": np.concatenate([t.cls for _, t in truths]).astype(np.int8),
                    "truth_weight": np.concatenate([t.weight for _, t in truths]).astype(np.float32),
                }
            )
            truth_plans.append(plan)
            return [*plan.light, plan.heavy]

        def published() -> dict[str, dict[str, Any] | None]:
            tables = [plan.published(), *(p.published() for p in truth_plans)]
            if not truth_plans:
                tables.append(self.truth.metadata())
            if self._names:
                tables.append(self._names.metadata())
            return {name: meta for table in tables for name, meta in table.items()}

        root: list[bytes] = []

        def publish() -> None:
            # The commit's new root metadata, prepared (read, updated, encoded: ~0.1 ms) in
            # whichever thread finishes the other tables, while the frames are being written:
            # the writers' lock is held, so the root cannot change before it is written.
            data = commit_bytes(self.path, published())
            if data is not None:
                root.append(data)

        with writing(self.path), storage_errors(self.path):
            try:
                # The frames' bytes (most of a batch) are written in this thread, the other
                # tables' and columns' files in another meanwhile, and this one helps with what
                # is left once the frames are written: in a new dataset's first batch, creating
                # the dozen other columns' files takes longer than the frames (each file
                # created costs 0.1-0.4 ms of kernel time on this project's disks, and two
                # threads create them ~1.8x as fast as one). Handing the frames to a thread
                # and waiting for it cost two thread wake-ups a batch (0.3-0.8 ms each on a
                # loaded machine). The truth and the condition names start first: they need
                # nothing from the frames' table.
                with Beside([truth, condition_names]) as beside:
                    plan = self.frames.plan_append(
                        columns, dims={"frames": ("y", "x"), "conditions": (CONDITION_DIM,)}, attrs=attrs
                    )
                    beside.add(plan.light)
                    beside.run(plan.heavy, last=publish)
            except BaseException:
                if self._new_names is not None:  # never written: the next batch writes them
                    self._conditions, self._names, self._new_names = None, None, None
                raise
            for truth_plan in truth_plans:
                truth_plan.finish()
            plan.finish()
            spare = self.path / "frames" / SPARE
            # The frames array's spare: only this writer replaces its files, each in turn and
            # under the lock, and its content is never read.
            if root:
                atomic_write(self.path / "zarr.json", root[0], spare)
            else:  # (a root without consolidated metadata, made by another tool)
                commit(self.path, published(), spare=spare)
        return n0 + len(batch)


_PLAIN_NUMBERS = {float, int}  # most conditions: no isinstance chain needed


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def open_dataset(path: str | Path) -> xr.Dataset:
    """The committed frames of a dataset as an ``xarray.Dataset`` (lazy, dask-backed)."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise NotFoundError(f"no scopeflow dataset at {path} (no zarr.json)")
    return xr.open_zarr(LocalStore(path, read_only=True), consolidated=True)


def frame_count(path: str | Path) -> int:
    """Frames committed in the dataset at ``path`` (0 when it holds none yet)."""
    ds = open_dataset(path)
    return int(ds.sizes.get(FRAME_DIM, 0))


def read_truth(ds: xr.Dataset, frame: int) -> Truth | None:
    """Ground truth of frame position ``frame`` (0-based in the dataset), if stored."""
    truths = read_truths(ds, frame, frame + 1)
    return None if truths is None else truths[0]


def read_truths(ds: xr.Dataset, start: int, stop: int) -> list[Truth] | None:
    """Ground truth of frame positions ``start``..``stop``-1, reading only their rows."""
    if "truth_frame" not in ds:
        return None
    owner = ds["truth_frame"].values  # appended in frame order, so sorted
    lo, hi = np.searchsorted(owner, [start, stop])
    rows = (
        ds[["truth_row", "truth_col", "truth_class", "truth_weight"]]
        .isel(truth=slice(int(lo), int(hi)))
        .compute()
    )
    owner = owner[lo:hi]
    out = []
    for frame in range(start, stop):
        a, b = np.searchsorted(owner, [frame, frame + 1])
        out.append(
            Truth(
                rowcol=np.stack([rows["truth_row"].values[a:b], rows["truth_col"].values[a:b]], axis=1),
                cls=rows["truth_class"].values[a:b],
                weight=rows["truth_weight"].values[a:b],
            )
        )
    return out


def load_store(path: str | Path) -> LocalStore:
    """A read-only store on a dataset directory (for tools that speak zarr directly)."""
    return LocalStore(Path(path), read_only=True)
