"""One open dataset for the edge: reads the committed frames, owns the tables it appends to.

The acquirer (``DatasetWriter``) appends frames and truth; the edge appends atoms
(``predictions/<version>``), decisions (``drift``) and the monitor's state (``drift_monitor``).
A ``Dataset`` holds one write handle on the group for all of the edge's tables and one commit
per batch; it repairs only those tables (never the frames an acquirer may be writing), reads
frames and truth by offset (the cost of a batch does not grow with the run), and stays open
across batches: ``refresh`` rereads only the consolidated metadata to see frames committed since.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.storage import LocalStore

from scopeflow.errors import InputError, NotFoundError
from scopeflow.frame import Truth

from .chunk_files import ChunkFiles
from .decisions import GROUP as DECISIONS
from .decisions import MONITOR_GROUP, DecisionWriter, MonitorWriter, state_of
from .file_writes import SPARE
from .predictions import GROUP as PREDICTIONS
from .predictions import PredictionWriter, new_prediction_group
from .tables import ROW_CHUNK, commit, open_root, repair, trim, writing

OPTICS = ("voltage_kv", "semiangle_mrad", "cs_mm")  # instrument settings, not drifting conditions


class Dataset:
    """The edge's handle on the dataset at ``path``: committed reads, its own appends, one commit."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise NotFoundError(f"no scopeflow dataset at {self.path} (no zarr.json)")
        self._root = open_root(self.path, create=False)
        self._decisions: DecisionWriter | None = None
        self._predictions: dict[str, PredictionWriter] = {}
        self._monitor: MonitorWriter | None = None
        self._monitor_entries: dict[str, Any] = {}  # the state written in this batch, to publish
        self._truth_at = (0, 0)  # (frame, first truth row of that frame): where the last read ended
        self._frame_files: ChunkFiles | Literal[False] | None = None  # the frames' files, if direct
        self.refresh()

    # ------------------------------------------------------------------ reads (committed)
    def refresh(self) -> int:
        """Reread the commit point (frames an acquirer committed since); returns the frame count."""
        self._read = zarr.open_group(
            store=LocalStore(self.path, read_only=True), mode="r", use_consolidated=True
        )
        self._arrays = dict(self._read.arrays())
        return self.n_frames

    @property
    def n_frames(self) -> int:
        """Frames committed as of the last ``refresh``."""
        frames = self._arrays.get("frames")
        return 0 if frames is None else int(frames.shape[0])

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames at positions ``start``..``stop``-1, (k, H, W) float32 counts."""
        if self._frame_files is None:  # the layout, read once (it never changes)
            self._frame_files = ChunkFiles.of(self._arrays["frames"]) or False
        stop = min(stop, self.n_frames)
        if self._frame_files and self._frame_files.sharded and stop > start:
            return self._frame_files.read_rows(start, stop)  # committed rows only (stop clipped)
        return np.asarray(self._arrays["frames"][start:stop])

    def pixel_sizes(self, start: int, stop: int) -> np.ndarray:
        """Pixel sizes (Å/px) of frames ``start``..``stop``-1."""
        return np.asarray(self._arrays["pixel_size"][start:stop], np.float64)

    def truths(self, start: int, stop: int) -> list[Truth] | None:
        """Ground truth of frames ``start``..``stop``-1 (None without truth), reading their rows only.

        Truth rows are appended in frame order, so the rows of a batch are found from where the
        previous batch's ended, a chunk at a time.
        """
        owner = self._arrays.get("truth_frame")
        if owner is None:
            return None
        frame, row = self._truth_at
        base = row if start >= frame else 0
        lo = self._first_row(owner, start, base)
        hi = self._first_row(owner, stop, lo)
        self._truth_at = (stop, hi)
        frames_of = np.asarray(owner[lo:hi])
        rows = {
            k: np.asarray(self._arrays[k][lo:hi])
            for k in ("truth_row", "truth_col", "truth_class", "truth_weight")
        }
        out = []
        for i in range(start, stop):
            a, b = np.searchsorted(frames_of, [i, i + 1])
            out.append(
                Truth(
                    rowcol=np.stack([rows["truth_row"][a:b], rows["truth_col"][a:b]], axis=1),
                    cls=rows["truth_class"][a:b],
                    weight=rows["truth_weight"][a:b],
                )
            )
        return out

    @staticmethod
    def _first_row(owner: Any, frame: int, row: int) -> int:
        """The first truth row at or after ``row`` that belongs to ``frame`` or a later one."""
        n = int(owner.shape[0])
        while row < n:
            block = np.asarray(owner[row : min(n, row + ROW_CHUNK)])
            at = int(np.searchsorted(block, frame))
            if at < len(block):
                return row + at
            row += len(block)
        return n

    def optics(self) -> dict[str, float] | None:
        """The instrument's voltage, aperture and Cs as recorded with the first frame (None if not)."""
        names_arr = self._arrays.get("condition")
        if names_arr is None or "conditions" not in self._arrays or self.n_frames == 0:
            return None
        names = [str(n) for n in names_arr[:]]
        if not {"voltage_kv", "semiangle_mrad"} <= set(names):
            return None
        first = np.asarray(self._arrays["conditions"][0])
        return {k: float(first[names.index(k)]) for k in OPTICS if k in names}

    def decisions(self) -> dict[str, np.ndarray]:
        """The committed decisions as columns (empty without any)."""
        if DECISIONS not in self._read:
            return {}
        return {name: arr[:] for name, arr in self._read[DECISIONS].arrays()}

    def monitor_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The committed drift monitor state (attrs, arrays), or None when no run stored one."""
        if MONITOR_GROUP not in self._read:
            return None
        return state_of(self._read[MONITOR_GROUP])

    # ------------------------------------------------------------------ appends (own tables)
    @property
    def decision_writer(self) -> DecisionWriter:
        """The ``drift`` table's writer on this handle (its table repaired on first use)."""
        if self._decisions is None:
            repair(self.path, owned=lambda name: name.startswith(f"{DECISIONS}/"))
            # Nodes are created under the lock: another writer's commit lists the hierarchy.
            with writing(self.path):
                self._decisions = DecisionWriter(self.path, root=self._root)
        return self._decisions

    def predictions(self, name: str, attrs: dict[str, Any] | None = None) -> PredictionWriter:
        """The writer of prediction set ``name`` (created with ``attrs`` if new; its own tables
        repaired on first use; the creation is committed at the next ``commit``)."""
        writer = self._predictions.get(name)
        if writer is None:
            if not name or "/" in name:
                raise InputError(f"bad prediction set name {name!r}")
            prefix = f"{PREDICTIONS}/{name}/"
            repair(self.path, owned=lambda array: array.startswith(prefix))
            with writing(self.path):  # as for the decisions' table
                group = new_prediction_group(self.path, self._root, name, attrs)
            writer = self._predictions[name] = PredictionWriter(self.path, group, name)
        return writer

    def write_monitor_state(self, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Replace the drift monitor's stored state; visible when this ``batch`` commits (call
        it inside one)."""
        if self._monitor is None:
            # Its arrays left beyond the committed state by a killed run go first (under the
            # lock the caller's batch holds: trim, not repair).
            trim(self.path, lambda name: name.startswith(f"{MONITOR_GROUP}/"))
            self._monitor = MonitorWriter(self.path, self._root)
        self._monitor_entries = self._monitor.write(attrs, arrays)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One batch of this handle's appends: under the writers' lock, committed together on
        leaving; on an exception they are trimmed away and this handle's writers must not be used
        again (open a new ``Dataset``). Get the writers (``predictions``, ``decision_writer``)
        before entering."""
        with writing(self.path):
            try:
                yield
            except BaseException:
                # Trimmed before the lock is released: no other writer's commit may publish them.
                trim(self.path, self._owns)
                raise
            # Only this handle's nodes are published (the acquirer's, whatever their state, keep
            # their committed entries): ~16 ms less a batch than zarr's whole consolidation.
            commit(self.path, self._written(), spare=self._spare(), drop=self._dropped())
            self._monitor_entries = {}
            if self._monitor is not None:
                self._monitor.drop = []

    def _written(self) -> dict[str, Any]:
        """Metadata of every node this handle's writers wrote (None: read its zarr.json)."""
        return self._columns() | self._monitor_entries

    def _columns(self) -> dict[str, Any]:
        """Metadata of the columns this handle's decision and prediction writers append to."""
        entries: dict[str, Any] = {}
        if self._decisions is not None:
            entries |= self._decisions.table.metadata()
        for writer in self._predictions.values():
            entries |= writer.columns()
        return entries

    def _dropped(self) -> list[str]:
        return self._monitor.drop if self._monitor is not None and self._monitor_entries else []

    def _spare(self) -> Path | None:
        """A scratch file in one of this handle's arrays' directories, free at commit time."""
        # Never a group's directory: zarr would take the file for a node when listing it.
        return next((self.path / name / SPARE for name in self._columns()), None)

    def _owns(self, name: str) -> bool:
        """Whether array ``name`` belongs to a table this handle appends to (the monitor state is
        checked against the decisions when read, but its rows of a failed batch go too)."""
        return name.startswith((f"{DECISIONS}/", f"{MONITOR_GROUP}/")) or any(
            name.startswith(f"{PREDICTIONS}/{set_name}/") for set_name in self._predictions
        )

    def commit(self) -> None:
        """Make what this handle wrote visible (atomically), under the writers' lock."""
        with writing(self.path):
            # The prediction sets' groups too: a set may have no column yet.
            groups = {writer.group.path: None for writer in self._predictions.values()}
            commit(self.path, self._written() | groups, drop=self._dropped())


def open_predictions(
    path: str | Path, model_version: str, attrs: dict[str, Any] | None = None
) -> PredictionWriter:
    """Open (creating and committing if needed) the prediction set ``model_version`` of the
    dataset at ``path``, through a ``Dataset`` handle (which repairs only this set)."""
    dataset = Dataset(path)
    writer = dataset.predictions(model_version, attrs)
    dataset.commit()
    return writer
