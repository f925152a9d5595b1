"""The vector index of one embedder version: a cache of the ``frame_embeddings`` rows.

faiss (``IndexHNSWFlat``, inner product on unit vectors) answers broad queries; a query whose
filter leaves few vectors is answered exactly over those (a matrix product is then faster and
never misses). The index catches up with rows added since it last looked (row ids only grow)
before every query, is saved beside the catalog, and is rebuilt from the rows when its files
are missing or unreadable.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from scopeflow.errors import InputError
from storage.federation.models import FrameEmbedding

log = logging.getLogger(__name__)

#: Below this many allowed vectors, search is exact over them: ~2 ms per 20k vectors of 133
#: dimensions on one core, less than a filtered graph walk that must skip most nodes.
EXACT_BELOW = 20_000
#: Beam width of a graph walk at the least (faiss's default is 16; 64 is the usual choice
#: for recall near 0.9 on unfiltered data), and the most candidates one walk collects.
EF_SEARCH = 64
MAX_CANDIDATES = 4096
#: HNSW graph degree and construction depth (faiss defaults are 32 and 40).
HNSW_M = 32
EF_CONSTRUCTION = 64
#: Recall@10 of a graph walk against the exact answer that the index keeps (the figure users
#: are promised, not a tuning): the beam width is raised until the walk reaches it on the
#: index's own vectors (``_calibrate_beam``), every time the index has doubled.
TARGET_RECALL = 0.95
#: Vectors of the index queried to measure that recall (each against the exact answer
#: without itself): the recall's standard error is below 0.01 at 0.95.
CALIBRATION_QUERIES = 500
#: Rows read per catalog query while catching up.
CHUNK = 50_000
#: Save the index files after this many new rows (and after a rebuild).
SAVE_EVERY = 10_000


class VectorIndex:
    """Vectors of one embedder: row id, record id and frame per vector, plus an HNSW graph."""

    def __init__(self, embedder: str, directory: Path | None = None) -> None:
        self.embedder = embedder
        self.directory = directory
        self.lock = threading.Lock()
        self.dim = 0
        self.rows = np.zeros(0, np.int64)
        self.record = np.zeros(0, np.int64)
        self.frame = np.zeros(0, np.int32)
        self.vectors = np.zeros((0, 0), np.float32)
        self.graph = None
        self.last_id = 0
        self.ef_search = EF_SEARCH
        self._calibrated_at = 0
        self._unsaved = 0
        self._loaded = False
        self._by_record: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    # -- persistence ----------------------------------------------------------------------
    def _paths(self) -> tuple[Path, Path] | None:
        if self.directory is None:
            return None
        # The name is appended to, never given a suffix: ``with_suffix`` made "a.b" and "a.c"
        # share one file and "." a file beside the directory. Names outside the API's pattern
        # (letters, digits, ".", "_", "-") are hex-encoded so that no two names meet.
        name = self.embedder
        if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
            name = "x" + name.encode().hex()
        return self.directory / f"{name}.npz", self.directory / f"{name}.faiss"

    def _load(self) -> None:
        import faiss

        paths = self._paths()
        if paths is None or not paths[0].exists() or not paths[1].exists():
            return
        try:
            with np.load(paths[0]) as z:
                rows, record, frame = z["rows"], z["record"], z["frame"]
                beam = int(z["ef_search"]) if "ef_search" in z else EF_SEARCH
                calibrated_at = int(z["calibrated_at"]) if "calibrated_at" in z else 0
            graph = faiss.read_index(str(paths[1]))
            if graph.ntotal != len(rows):
                raise ValueError("index files disagree")
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            log.warning("similarity index %s unreadable (%s): rebuilding from the catalog", paths[0], error)
            return
        self.rows, self.record, self.frame = rows, record, frame
        self.ef_search, self._calibrated_at = beam, calibrated_at
        self.dim = graph.d
        self.graph = graph
        self._view_vectors()
        self.last_id = int(rows[-1]) if len(rows) else 0

    def save(self) -> None:
        """Write the index files atomically (temporary file, then rename)."""
        import faiss

        paths = self._paths()
        if paths is None or self.graph is None:
            return
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        tmp_npz = paths[0].with_name(paths[0].name + ".tmp.npz")
        np.savez(
            tmp_npz,
            rows=self.rows,
            record=self.record,
            frame=self.frame,
            ef_search=self.ef_search,
            calibrated_at=self._calibrated_at,
        )
        tmp_graph = paths[1].with_name(paths[1].name + ".tmp")
        faiss.write_index(self.graph, str(tmp_graph))
        tmp_npz.replace(paths[0])
        tmp_graph.replace(paths[1])
        self._unsaved = 0

    # -- growth ---------------------------------------------------------------------------
    def add(self, rows: np.ndarray, record: np.ndarray, frame: np.ndarray, vectors: np.ndarray) -> None:
        """Append vectors (unit length, one per row id, ids increasing) to the index."""
        import faiss

        if not len(rows):
            return
        vectors = np.ascontiguousarray(vectors, np.float32)
        if self.graph is None:
            self.dim = vectors.shape[1]
            self.graph = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.graph.hnsw.efConstruction = EF_CONSTRUCTION
        if vectors.shape[1] != self.dim:
            raise InputError(
                f"embedder {self.embedder}: vectors of {vectors.shape[1]} values, the index holds {self.dim}"
            )
        self.graph.add(vectors)
        self.rows = np.concatenate([self.rows, rows.astype(np.int64)])
        self.record = np.concatenate([self.record, record.astype(np.int64)])
        self.frame = np.concatenate([self.frame, frame.astype(np.int32)])
        self._view_vectors()
        self.last_id = int(rows[-1])
        self._unsaved += len(rows)
        if len(self.rows) > EXACT_BELOW and len(self.rows) >= 2 * self._calibrated_at:
            self._calibrate_beam()

    def _calibrate_beam(self, k: int = 10) -> None:
        """The smallest beam width (a power of two from ``EF_SEARCH``) whose graph walk finds
        ``TARGET_RECALL`` of the exact ``k`` nearest on a sample of the index's own vectors
        (each query's own row left out of both answers), or the width past which the walk
        gains nothing more. How hard the walk is depends on the data (near-duplicate frames of
        one region make close ties), so it is measured here."""
        import faiss

        n = len(self.rows)
        sample = np.random.default_rng(n).choice(n, min(CALIBRATION_QUERIES, n), replace=False)
        queries = np.ascontiguousarray(self.vectors[sample])
        storage = faiss.downcast_index(self.graph.storage)
        _, exact = storage.search(queries, k + 1)
        truth = [[p for p in row if p != s][:k] for row, s in zip(exact, sample, strict=True)]
        params = faiss.SearchParametersHNSW()

        def recall_at(beam: int) -> float:
            params.efSearch = beam
            _, found = self.graph.search(queries, k + 1, params=params)
            return float(
                np.mean([len(set(t) & set(f.tolist())) / k for t, f in zip(truth, found, strict=True)])
            )

        beam, recall = EF_SEARCH, recall_at(EF_SEARCH)
        while recall < TARGET_RECALL and beam < MAX_CANDIDATES:
            wider = recall_at(2 * beam)
            # A walk that no longer gains (by more than two standard errors of the measured
            # recall) has reached what the graph's links allow: a wider beam only costs time.
            if wider - recall <= 2 * np.sqrt(max(recall * (1 - recall), 1e-6) / (len(queries) * k)):
                log.warning(
                    "similarity index %s: recall@%d %.3f at beam %d, short of %.2f (the graph's limit)",
                    self.embedder,
                    k,
                    recall,
                    beam,
                    TARGET_RECALL,
                )
                break
            beam, recall = 2 * beam, wider
        log.info(
            "similarity index %s: beam %d reaches recall@%d %.3f at %d vectors",
            self.embedder,
            beam,
            k,
            recall,
            n,
        )
        self.ef_search, self._calibrated_at = beam, n

    def _view_vectors(self) -> None:
        """``vectors``: the graph's own copy, viewed (one copy in memory, not two). Re-taken
        after every add, which may move faiss's buffer."""
        import faiss

        storage = faiss.downcast_index(self.graph.storage)
        n = self.graph.ntotal
        self.vectors = faiss.rev_swig_ptr(storage.get_xb(), n * self.dim).reshape(n, self.dim)

    def catch_up(self, session: Session) -> int:
        """Read rows added to the catalog since the last look; returns how many."""
        if not self._loaded:
            self._load()
            self._loaded = True
        added = 0
        while True:
            batch = session.execute(
                select(
                    FrameEmbedding.id, FrameEmbedding.record_id, FrameEmbedding.frame, FrameEmbedding.vector
                )
                .where(FrameEmbedding.embedder == self.embedder, FrameEmbedding.id > self.last_id)
                .order_by(FrameEmbedding.id)
                .limit(CHUNK)
            ).all()
            if not batch:
                break
            # Uploads of one embedder with another length are refused (ops.put_embeddings);
            # rows from before that rule are skipped, never allowed to stop every query.
            dim = self.dim or len(batch[0][3]) // 4
            ok = [b for b in batch if len(b[3]) == 4 * dim]
            if len(ok) < len(batch):
                log.warning(
                    "similarity index %s: %d rows of another length skipped",
                    self.embedder,
                    len(batch) - len(ok),
                )
            self.add(
                np.array([b[0] for b in ok]),
                np.array([b[1] for b in ok]),
                np.array([b[2] for b in ok]),
                np.frombuffer(b"".join(b[3] for b in ok), np.float32).reshape(len(ok), dim),
            )
            self.last_id = int(batch[-1][0])
            added += len(batch)
        if self._unsaved >= SAVE_EVERY or (added and not self._paths_exist()):
            self.save()
        return added

    def _paths_exist(self) -> bool:
        paths = self._paths()
        return paths is None or paths[0].exists()

    # -- queries --------------------------------------------------------------------------
    def search(
        self, query: np.ndarray, k: int, allowed_records: np.ndarray | None
    ) -> list[tuple[int, int, float]]:
        """The ``k`` nearest (record id, frame, cosine distance) among vectors of allowed
        records (None: all), nearest first, one hit per (record, frame)."""
        import faiss

        if self.graph is None or not len(self.rows):
            return []
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        if q.shape[1] != self.dim:
            raise InputError(f"query of {q.shape[1]} values; embedder {self.embedder} makes {self.dim}")
        q /= max(float(np.linalg.norm(q)), 1e-12)
        idx: np.ndarray | None = None
        if allowed_records is None:
            n_allowed = len(self.rows)
        else:
            idx = self._positions_of(np.asarray(allowed_records, np.int64))
            n_allowed = len(idx)
        if n_allowed == 0:
            return []
        if n_allowed <= EXACT_BELOW:
            idx = np.arange(len(self.rows)) if idx is None else idx
            sims = self.vectors[idx] @ q[0]
            take = min(len(idx), 4 * k)
            best = np.argpartition(-sims, take - 1)[:take] if take < len(idx) else np.arange(len(idx))
            best = best[np.argsort(-sims[best])]
            pos, sim = idx[best], sims[best]
        else:
            share = n_allowed / len(self.rows)
            # Walk the graph unfiltered for as many candidates as should hold 4k allowed ones
            # at this share, then keep the allowed. A walk filtered inside faiss fills its
            # beam with frames it may not return and, when the allowed frames all lie away
            # from the query (another material than the query's), never reaches them
            # (measured: recall 0.0005); here that case is seen (too few allowed candidates)
            # and answered by the exact scan over the allowed frames instead.
            want = int(min(MAX_CANDIDATES, np.ceil(4 * k / share)))
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, want)
            sim_, pos_ = self.graph.search(q, want, params=params)
            pos, sim = pos_[0], sim_[0]
            keep = pos >= 0
            member = None
            if idx is not None:
                member = np.zeros(len(self.rows), bool)
                member[idx] = True
                keep &= member[np.where(pos >= 0, pos, 0)]
            pos, sim = pos[keep], sim[keep]
            if len(pos) < k:
                # The exact scan of the graph's own flat storage, filtered in faiss's C++ loop:
                # no copy of the allowed vectors (a third of 1M is 177 MB).
                exact = faiss.SearchParameters()
                if member is not None:
                    bits = np.packbits(member, bitorder="little")
                    exact.sel = faiss.IDSelectorBitmap(len(member), faiss.swig_ptr(bits))
                storage = faiss.downcast_index(self.graph.storage)
                sim_, pos_ = storage.search(q, min(4 * k, n_allowed), params=exact)
                keep = pos_[0] >= 0
                pos, sim = pos_[0][keep], sim_[0][keep]
        out, seen = [], set()
        for p, s in zip(pos, sim, strict=True):
            key = (int(self.record[p]), int(self.frame[p]))
            if key in seen:
                continue
            seen.add(key)
            out.append((key[0], key[1], float(1.0 - s)))
            if len(out) == k:
                break
        return out

    def _positions_of(self, records: np.ndarray) -> np.ndarray:
        """Index positions of every vector of these records, from the rows sorted by record
        (sorted once per growth): no pass over all vectors per query."""
        if self._by_record is None or len(self._by_record[0]) != len(self.record):
            order = np.argsort(self.record, kind="stable")
            self._by_record = (order, self.record[order])
        order, sorted_record = self._by_record
        records = np.unique(records)
        lo = np.searchsorted(sorted_record, records, "left")
        hi = np.searchsorted(sorted_record, records, "right")
        keep = hi > lo
        lo, hi = lo[keep], hi[keep]
        if not len(lo):
            return np.zeros(0, np.int64)
        # Concatenated ranges [lo, hi) without a Python loop: a cumulative sum of steps.
        lengths = hi - lo
        steps = np.ones(int(lengths.sum()), np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        steps[starts] = lo - np.concatenate([[0], hi[:-1] - 1])
        steps[0] = lo[0]
        return order[np.cumsum(steps)]

    def vector_of(self, record: int, frame: int) -> np.ndarray | None:
        """The stored vector of one frame (the newest), or None."""
        hit = np.flatnonzero((self.record == record) & (self.frame == frame))
        return None if not len(hit) else self.vectors[hit[-1]].copy()


class VectorIndexes:
    """One ``VectorIndex`` per embedder version, kept in ``directory`` (None: memory only)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._indexes: dict[str, VectorIndex] = {}

    def get(self, embedder: str) -> VectorIndex:
        """The index of ``embedder`` (created empty on first use)."""
        with self._lock:
            if embedder not in self._indexes:
                self._indexes[embedder] = VectorIndex(embedder, self.directory)
            return self._indexes[embedder]
