"""The vector index of one embedder version: a cache of the ``frame_embeddings`` rows.

A frame may have several rows: its own descriptor (view 0) and those of crops of it (views
1…, ``tasks.embedding.embed_views``): a copy of a part of a frame matches the crop it shows
better than the whole frame. Every row names its frame; a query's hits are grouped by frame,
a frame's distance its nearest row's. A frame's own vector (view 0) is what a query by frame
and the map use.

The vectors are held in a flat faiss index (``IndexFlatIP``, row order: exact scans, the
map, a query frame's vector) and, past ``EXACT_BELOW`` vectors, in an inverted file
(``IndexIVFFlat``, inner product on unit vectors: about √n lists, the query's ``nprobe``
nearest scanned exactly). A query whose filter leaves few vectors is answered exactly over
those, read in place from the flat copy: gathering them from the lists (``reconstruct_batch``)
took 20 ms per 10k vectors on the loaded machine, against under 1 ms from rows in order. A
filter that leaves more is answered by the lists nearest the query among those holding
allowed rows, only the allowed rows compared (``_probe_allowed``): at 1M crop rows a filter
to another material than the query's scanned a third of the archive (10 ms of one core),
now a few batches of ~25 lists (~2 ms). Queries only catch up with rows added since the index last
looked (row ids only grow: each new vector is assigned to its list, microseconds). The work that costs
seconds at scale (training the lists, measuring how many lists a query must scan, writing the
files) is ``reorganise``'s, run after uploads (``maintain_soon``, a background thread of the
store), never inside a query. The files are saved beside the catalog and rebuilt from the rows
when missing or unreadable.

Why an inverted file, not a graph: on an archive of runs of near-duplicate frames (1M vectors,
clusters of ~100 copies), faiss's HNSW (M=32) stopped at recall@10 0.87-0.90 whatever the beam
(efSearch 64-1024, efConstruction 64), because a walk among near-ties misses; an inverted file
scans whole lists exactly, so recall only depends on how many lists are scanned, and grows to
1.0 (benchmarks/README.md, similarity rows). The price is memory: two copies of the vectors
(~1.1 kB per 133-d vector against the graph's ~0.87 kB).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sqlalchemy import select
from sqlalchemy.orm import Session

from scopeflow.errors import InputError
from storage.federation.models import FrameEmbedding

log = logging.getLogger(__name__)

#: Below this many allowed vectors, search is exact over them: ~2 ms per 20k vectors of 133
#: dimensions on one core, less than a filtered probe of the lists. Also the size at which the
#: inverted file is first trained (below it every query is exact anyway).
EXACT_BELOW = 20_000
#: Training vectors per list: faiss's k-means warns below 39 per centroid; 64 keeps its
#: training (the cost of a rebuild) a few seconds at 1M vectors.
TRAIN_PER_LIST = 64
#: Recall@10 of a query against the exact answer that the index keeps (the figure users are
#: promised, not a tuning): the number of lists scanned is raised until a sample of the
#: index's own vectors reaches it (``_calibrate_nprobe``) at every rebuild.
TARGET_RECALL = 0.95
#: Vectors of the index queried to measure that recall (each against the exact answer
#: without itself): the recall's standard error is below 0.01 at 0.95.
CALIBRATION_QUERIES = 500
#: Rows read per catalog query while catching up.
CHUNK = 50_000
#: Save the index files after this many new rows, or a tenth of the index if more: a save
#: rewrites every vector, so its cost stays a fixed share of ingest, and a restart reads at
#: most that share back from the catalog.
SAVE_EVERY = 10_000


def n_lists(n: int) -> int:
    """Lists of an inverted file over ``n`` vectors: √n, faiss's usual order, balancing the
    centroids a query compares against (nlist) with the vectors of one list (n / nlist)."""
    return max(1, round(float(np.sqrt(n))))


def _build(vectors: np.ndarray, k: int = 10) -> tuple[Any, int, float]:
    """An inverted file over ``vectors`` (unit rows, positions kept as ids) and the fewest
    lists per query (a power of two) whose recall@``k`` on a sample of these vectors
    reaches ``TARGET_RECALL``; returns (index, nprobe, measured recall)."""
    import faiss

    n, dim = vectors.shape
    nlist = n_lists(n)
    rng = np.random.default_rng(n)
    train = vectors[np.sort(rng.choice(n, min(n, TRAIN_PER_LIST * nlist), replace=False))]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 1234  # a rebuild of the same vectors gives the same lists
    index.train(train)
    for start in range(0, n, CHUNK):
        index.add(vectors[start : start + CHUNK])
    nprobe, recall = _calibrate_nprobe(index, vectors, rng, k)
    return index, nprobe, recall


def _add_to_lists(ivf: Any, vectors: np.ndarray) -> np.ndarray:
    """Add ``vectors`` (contiguous float32) to the inverted file ``ivf`` (None: nothing) and
    return each one's list (all 0 without lists): assigned once, for faiss and the tables."""
    import faiss

    if ivf is None:
        return np.zeros(len(vectors), np.int64)
    lists = np.ascontiguousarray(ivf.quantizer.assign(vectors, 1).ravel(), np.int64)
    ivf.add_core(len(vectors), faiss.swig_ptr(vectors), None, faiss.swig_ptr(lists))
    return lists


def _calibrate_nprobe(index: Any, vectors: np.ndarray, rng: np.random.Generator, k: int) -> tuple[int, float]:
    """The fewest lists (1, 2, 4, …, all) whose recall@k on ``CALIBRATION_QUERIES`` of the
    index's own vectors (each query's own position left out of both answers) reaches
    ``TARGET_RECALL`` with two standard errors to spare. How many lists the k nearest spread
    over depends on the data (runs of near-duplicate frames straddle lists), so it is measured."""
    import faiss

    n = len(vectors)
    sample = np.sort(rng.choice(n, min(CALIBRATION_QUERIES, n), replace=False))
    queries = np.ascontiguousarray(vectors[sample])
    # Brute force over the vectors in place (no second copy of them).
    _, truth_ = faiss.knn(queries, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    truth = [set(row[row != s][:k].tolist()) for row, s in zip(truth_, sample, strict=True)]
    params = faiss.SearchParametersIVF()
    nprobe, recall = 1, 0.0
    while True:
        params.nprobe = nprobe
        _, found = index.search(queries, k + 1, params=params)
        recall = float(
            np.mean(
                [
                    len(t & set(f[f != s][:k].tolist())) / k
                    for t, f, s in zip(truth, found, sample, strict=True)
                ]
            )
        )
        margin = 2 * np.sqrt(max(recall * (1 - recall), 1e-6) / (len(queries) * k))
        if recall - margin >= TARGET_RECALL or nprobe >= index.nlist:
            return min(nprobe, index.nlist), recall
        nprobe *= 2


@dataclass(frozen=True)
class _Layout:
    """What a query needs to know of the rows beside their vectors: rows per record id; most
    rows of one frame (1 + crops); the rows as runs of one record (a record's rows arrive
    together, a run per upload), from which a filter's allowed positions are spread without
    a pass over a row table; the inverted file's list sizes and a sparse (record id × list)
    count of rows. Kept up to date as rows arrive (``extended``), rebuilt with the lists."""

    counts: np.ndarray
    views: int
    run_start: np.ndarray
    run_length: np.ndarray
    run_record: np.ndarray
    list_sizes: np.ndarray
    record_lists: sparse.csr_matrix

    def nbytes(self) -> int:
        """Bytes of these tables."""
        m = self.record_lists
        arrays = (self.counts, self.run_start, self.run_length, self.run_record, self.list_sizes)
        return sum(a.nbytes for a in (*arrays, m.data, m.indices, m.indptr))

    @classmethod
    def of(cls, record: np.ndarray, view: np.ndarray, ivf: Any) -> _Layout:
        """The tables of these rows (positions 0…), ``ivf`` holding them (None: no lists)."""
        nlist = 1 if ivf is None else int(ivf.nlist)
        list_of = np.zeros(len(record), np.int64)
        if ivf is not None:
            import faiss

            for lst in range(nlist):
                size = ivf.invlists.list_size(lst)
                if size:
                    ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), size)
                    list_of[ids[ids < len(record)]] = lst
        empty = cls(
            counts=np.zeros(1, np.int64),
            views=1,
            run_start=np.zeros(0, np.int64),
            run_length=np.zeros(0, np.int64),
            run_record=np.zeros(0, np.int64),
            list_sizes=np.zeros(nlist, np.int64),
            record_lists=sparse.csr_matrix((1, nlist), dtype=np.float32),
        )
        return empty.extended(0, record, view, list_of)

    def extended(self, start: int, record: np.ndarray, view: np.ndarray, list_of: np.ndarray) -> _Layout:
        """These tables with rows at positions ``start``… appended (``list_of``: their lists)."""
        if not len(record):
            return self
        counts = np.bincount(record, minlength=len(self.counts))
        counts[: len(self.counts)] += self.counts
        edges = np.concatenate([[0], np.flatnonzero(np.diff(record)) + 1, [len(record)]])
        run_start, run_length = edges[:-1] + start, np.diff(edges)
        run_record = record[edges[:-1]]
        nlist = len(self.list_sizes)
        added = sparse.csr_matrix(
            (np.ones(len(record), np.float32), (record, list_of)), shape=(len(counts), nlist)
        )
        old = self.record_lists
        if old.shape[0] < len(counts):
            old = sparse.vstack(
                [old, sparse.csr_matrix((len(counts) - old.shape[0], nlist), dtype=np.float32)]
            )
        record_lists = (old + added).tocsr()
        return _Layout(
            counts=counts,
            views=max(self.views, int(view.max()) + 1),
            run_start=np.concatenate([self.run_start, run_start]),
            run_length=np.concatenate([self.run_length, run_length]),
            run_record=np.concatenate([self.run_record, run_record]),
            list_sizes=self.list_sizes + np.bincount(list_of, minlength=nlist),
            record_lists=record_lists,
        )

    def positions(self, lut: np.ndarray) -> np.ndarray:
        """Positions of the rows of the records that ``lut`` (a table by record id) allows, in
        order: the allowed runs' ranges concatenated without a Python loop."""
        keep = lut[self.run_record]
        lo, lengths = self.run_start[keep], self.run_length[keep]
        if not len(lo):
            return np.zeros(0, np.int64)
        steps = np.ones(int(lengths.sum()), np.int64)
        firsts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        steps[firsts] = lo - np.concatenate([[0], lo[:-1] + lengths[:-1] - 1])
        steps[0] = lo[0]
        return np.cumsum(steps)

    def bitmap(self, lut: np.ndarray) -> np.ndarray:
        """Allowed positions as faiss's ``IDSelectorBitmap`` reads them (bit i of byte i // 8)."""
        return np.packbits(np.repeat(lut[self.run_record], self.run_length), bitorder="little")


class VectorIndex:
    """Vectors of one embedder: row id, record id and frame per vector, in one faiss index."""

    def __init__(self, embedder: str, directory: Path | None = None) -> None:
        self.embedder = embedder
        self.directory = directory
        self.lock = threading.Lock()
        self.dim = 0
        self.rows = np.zeros(0, np.int64)
        self.record = np.zeros(0, np.int64)
        self.frame = np.zeros(0, np.int32)
        self.view = np.zeros(0, np.int16)
        self.flat: Any = None
        self.ivf: Any = None
        self.vectors = np.zeros((0, 0), np.float32)
        self.last_id = 0
        self.nprobe = 0
        self.recall = 0.0
        self._built_at = 0
        self._unsaved = 0
        self._loaded = False
        self._layout_cache: tuple[tuple[int, int], _Layout] | None = None
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._again = False

    def __len__(self) -> int:
        return len(self.rows)

    def nbytes(self) -> int:
        """Bytes the index holds: the flat vectors, the lists' vectors, ids and centroids, and
        the row, record and frame of each vector, and the queries' tables (``_layout``); not
        counting a rebuild's passing copy."""
        n = len(self.rows)
        held = n * (
            4 * self.dim
            + self.rows.itemsize
            + self.record.itemsize
            + self.frame.itemsize
            + self.view.itemsize
        )
        if self.ivf is not None:
            held += self.ivf.ntotal * (4 * self.dim + 8) + 4 * self.dim * self.lists
        return held + self._layout().nbytes()

    @property
    def lists(self) -> int:
        """Lists of the inverted file (0 while the index is exact)."""
        return 0 if self.ivf is None else int(self.ivf.nlist)

    # -- persistence ----------------------------------------------------------------------
    def _paths(self) -> tuple[Path, Path, Path] | None:
        if self.directory is None:
            return None
        # The name is appended to, never given a suffix: ``with_suffix`` made "a.b" and "a.c"
        # share one file and "." a file beside the directory. Names outside the API's pattern
        # (letters, digits, ".", "_", "-") are hex-encoded so that no two names meet.
        name = self.embedder
        if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
            name = "x" + name.encode().hex()
        return (
            self.directory / f"{name}.npz",
            self.directory / f"{name}.faiss",
            self.directory / f"{name}.ivf",
        )

    def _load(self) -> None:
        import faiss

        paths = self._paths()
        if paths is None or not paths[0].exists() or not paths[1].exists():
            return
        try:
            with np.load(paths[0]) as z:
                # Files from before views (no "view") are unreadable here: rebuilt from the rows.
                rows, record, frame, view = z["rows"], z["record"], z["frame"], z["view"]
                nprobe, built_at = int(z["nprobe"]), int(z["built_at"])
            flat = faiss.read_index(str(paths[1]))
            ivf = faiss.read_index(str(paths[2])) if nprobe else None
            if (
                flat.ntotal != len(rows)
                or len(view) != len(rows)
                or (ivf is not None and (ivf.ntotal != len(rows) or nprobe > ivf.nlist))
            ):
                raise ValueError("index files disagree")
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            log.warning("similarity index %s unreadable (%s): rebuilding from the catalog", paths[0], error)
            return
        self.rows, self.record, self.frame, self.view = rows, record, frame, view
        self.nprobe, self._built_at = nprobe, built_at
        self.dim = flat.d
        self.flat, self.ivf = flat, ivf
        self._layout_cache = None  # the tables are made from these rows at the first query
        self._view_vectors()
        self.last_id = int(rows[-1]) if len(rows) else 0

    def save(self) -> None:
        """Write the index files atomically (temporary file, then rename). The index is
        serialised under the lock (a copy in memory), written to disk outside it."""
        import faiss

        paths = self._paths()
        with self.lock:
            if paths is None or self.flat is None:
                return
            blobs = [faiss.serialize_index(self.flat)]
            if self.ivf is not None:
                blobs.append(faiss.serialize_index(self.ivf))
            meta = {
                "rows": self.rows,
                "record": self.record,
                "frame": self.frame,
                "view": self.view,
                "nprobe": self.nprobe,
                "built_at": self._built_at,
            }
            self._unsaved = 0
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        tmp_npz = paths[0].with_name(paths[0].name + ".tmp.npz")
        np.savez(tmp_npz, **meta)
        tmps = [path.with_name(path.name + ".tmp") for path in paths[1 : 1 + len(blobs)]]
        for blob, tmp in zip(blobs, tmps, strict=True):
            blob.tofile(tmp)
        for tmp, path in zip(tmps, paths[1:], strict=False):
            tmp.replace(path)
        tmp_npz.replace(paths[0])

    # -- growth ---------------------------------------------------------------------------
    def add(
        self,
        rows: np.ndarray,
        record: np.ndarray,
        frame: np.ndarray,
        vectors: np.ndarray,
        view: np.ndarray | None = None,
    ) -> None:
        """Append vectors (unit length, one per row id, ids increasing; ``view`` 0 for a frame's
        own, 1… for its crops, None: all 0) to the index: cheap (a list assignment each); the
        lists are rebuilt by ``reorganise``."""
        if not len(rows):
            return
        vectors = np.ascontiguousarray(vectors, np.float32)
        if self.flat is None:
            import faiss

            self.dim = vectors.shape[1]
            self.flat = faiss.IndexFlatIP(self.dim)
        if vectors.shape[1] != self.dim:
            raise InputError(
                f"embedder {self.embedder}: vectors of {vectors.shape[1]} values, the index holds {self.dim}"
            )
        start = len(self.rows)
        self.flat.add(vectors)
        lists = _add_to_lists(self.ivf, vectors)
        self._view_vectors()
        record = record.astype(np.int64)
        view = np.zeros(len(rows), np.int16) if view is None else np.asarray(view, np.int16)
        if self._layout_cache is not None and self._layout_cache[0] == (start, id(self.ivf)):
            layout = self._layout_cache[1].extended(start, record, view, lists)
            self._layout_cache = ((start + len(rows), id(self.ivf)), layout)
        self.rows = np.concatenate([self.rows, rows.astype(np.int64)])
        self.record = np.concatenate([self.record, record])
        self.frame = np.concatenate([self.frame, frame.astype(np.int32)])
        self.view = np.concatenate([self.view, view])
        self.last_id = int(rows[-1])
        self._unsaved += len(rows)

    def due(self) -> bool:
        """Whether the lists should be (re)built: the index outgrew exact search, or doubled
        since its lists were trained (√n lists, trained on vectors of that time)."""
        n = len(self.rows)
        return n > EXACT_BELOW and n >= 2 * self._built_at

    def reorganise(self) -> bool:
        """Rebuild the inverted file and measure its ``nprobe`` if ``due``, then save the files
        if enough is unsaved; returns whether it rebuilt. Seconds at 1M vectors: run after
        uploads (``maintain_soon``), never by a query. Queries go on meanwhile: the build works
        on a copy, and rows added during it join the new index before it replaces the old."""
        with self.lock:
            n = len(self.rows)
            rebuild = self.due()
            # A copy: the flat index's buffer moves when a query's catch-up adds to it.
            snapshot = self.vectors[:n].copy() if rebuild else None
            record, view = self.record, self.view  # replaced, never changed in place, by ``add``
        if snapshot is not None:
            index, nprobe, recall = _build(snapshot)
            layout = _Layout.of(record[:n], view[:n], index)
            with self.lock:
                m = len(self.rows)
                if m > n:
                    lists = _add_to_lists(index, np.ascontiguousarray(self.vectors[n:m]))
                    layout = layout.extended(n, self.record[n:m], self.view[n:m], lists)
                self.ivf, self.nprobe, self.recall, self._built_at = index, nprobe, recall, n
                self._layout_cache = ((m, id(index)), layout)
                self._unsaved = m
            log.info(
                "similarity index %s: %d lists, nprobe %d reaches recall@10 %.3f at %d vectors",
                self.embedder,
                index.nlist,
                nprobe,
                recall,
                n,
            )
        if self._unsaved >= max(SAVE_EVERY, len(self.rows) // 10) or (
            self._unsaved and not self._paths_exist()
        ):
            self.save()
        return rebuild

    def maintain(self, reading: Callable[[], AbstractContextManager[Session]]) -> bool:
        """Catch up with the catalog, then ``reorganise``; ``reading`` opens a read session."""
        with reading() as session, self.lock:
            self.catch_up(session)
        return self.reorganise()

    def maintain_soon(self, reading: Callable[[], AbstractContextManager[Session]]) -> None:
        """``maintain`` in a background thread (one per index; a call during a run makes it
        run once more), so that no request waits for it (not even for a query holding ``lock``)."""
        with self._worker_lock:
            self._again = True
            if self._worker is not None:
                return
            self._worker = threading.Thread(
                target=self._maintain_loop, args=(reading,), name=f"vector-index-{self.embedder}", daemon=True
            )
            self._worker.start()

    def _maintain_loop(self, reading: Callable[[], AbstractContextManager[Session]]) -> None:
        while True:
            with self._worker_lock:
                if not self._again:
                    self._worker = None  # under the lock: a later call starts a new thread
                    return
                self._again = False
            try:
                self.maintain(reading)
            except Exception:  # a background thread: logged, and the next upload tries again
                log.exception("similarity index %s: maintenance failed", self.embedder)

    def _view_vectors(self) -> None:
        """``vectors``: the flat index's own copy, viewed (not copied again). Re-taken after
        every add, which may move faiss's buffer."""
        import faiss

        n = self.flat.ntotal
        self.vectors = faiss.rev_swig_ptr(self.flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def catch_up(self, session: Session) -> int:
        """Read rows added to the catalog since the last look; returns how many. Cheap per row
        (no training, no file written): the caller holds ``lock``."""
        if not self._loaded:
            self._load()
            self._loaded = True
        added = 0
        while True:
            batch = session.execute(
                select(
                    FrameEmbedding.id,
                    FrameEmbedding.record_id,
                    FrameEmbedding.frame,
                    FrameEmbedding.vector,
                    FrameEmbedding.view,
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
                np.array([b[4] for b in ok], np.int16),
            )
            self.last_id = int(batch[-1][0])
            added += len(batch)
        return added

    def _paths_exist(self) -> bool:
        paths = self._paths()
        return paths is None or paths[0].exists()

    # -- queries --------------------------------------------------------------------------
    def search(
        self, query: np.ndarray, k: int, allowed_records: np.ndarray | None
    ) -> list[tuple[int, int, float]]:
        """The ``k`` nearest frames (record id, frame, cosine distance) among vectors of allowed
        records (None: all), nearest first: one hit per (record, frame), at its nearest row
        (its own vector's or a crop's)."""
        import faiss

        if self.flat is None or not len(self.rows) or k < 1:
            return []
        # One query, one core (OpenMP's thread count is per calling thread, restored after):
        # a single query gains nothing from a second thread, and faiss's parallel loops stall
        # when the other core is busy (a 10k-vector gather: 16 ms on two threads, 1.8 on one).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._search(faiss, query, k, allowed_records)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search(
        self, faiss: Any, query: np.ndarray, k: int, allowed_records: np.ndarray | None
    ) -> list[tuple[int, int, float]]:
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        if q.shape[1] != self.dim:
            raise InputError(f"query of {q.shape[1]} values; embedder {self.embedder} makes {self.dim}")
        q /= max(float(np.linalg.norm(q)), 1e-12)
        layout = self._layout()
        # Allowed records as a lookup table, their rows counted from the per-record counts:
        # nothing here passes over every row.
        lut: np.ndarray | None = None
        if allowed_records is None:
            n_allowed = len(self.rows)
        else:
            ids = np.asarray(allowed_records, np.int64)
            ids = np.unique(ids[(ids >= 0) & (ids < len(layout.counts))])
            lut = np.zeros(len(layout.counts), bool)
            lut[ids] = True
            n_allowed = int(layout.counts[ids].sum())
        if n_allowed == 0:
            return []
        # A frame holds at most ``views`` rows, so the ``k * views`` nearest rows hold at least k
        # frames, and their first k distinct frames are the k frames nearest by their best
        # row. A frame with more rows (uploaded twice) can leave fewer: then twice as many.
        want = min(n_allowed, k * layout.views)
        while True:
            pos, sim = self._nearest_rows(faiss, q, want, lut, n_allowed, layout)
            if lut is not None:  # the filter's guarantee does not rest on faiss's selector alone
                keep = lut[self.record[pos]]
                pos, sim = pos[keep], sim[keep]
            out, seen = [], set()
            for p, s in zip(pos.tolist(), sim.tolist(), strict=True):
                key = (int(self.record[p]), int(self.frame[p]))
                if key in seen:
                    continue
                seen.add(key)
                out.append((key[0], key[1], float(1.0 - s)))
                if len(out) == k:
                    return out
            if want >= n_allowed:
                return out
            want = min(n_allowed, 2 * want)

    def _nearest_rows(
        self,
        faiss: Any,
        q: np.ndarray,
        want: int,
        lut: np.ndarray | None,
        n_allowed: int,
        layout: _Layout,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions and similarities of about the ``want`` nearest allowed rows, nearest first."""
        if lut is not None and (n_allowed <= EXACT_BELOW or self.ivf is None):
            # Exact over the allowed rows only, read in place by faiss (one core, no copy of
            # them and no BLAS thread pool that a busy machine stalls).
            idx = layout.positions(lut)
            sims = np.empty(len(idx), np.float32)
            faiss.fvec_inner_products_by_idx(
                faiss.swig_ptr(sims),
                faiss.swig_ptr(q),
                faiss.swig_ptr(self.vectors),
                faiss.swig_ptr(idx),
                self.dim,
                1,
                len(idx),
            )
            best = np.argpartition(-sims, want - 1)[:want] if want < len(idx) else np.arange(len(idx))
            best = best[np.argsort(-sims[best])]
            return idx[best], sims[best]
        if self.ivf is None:
            sim_, pos_ = self.flat.search(q, want)
        elif lut is None:
            params = faiss.SearchParametersIVF()
            params.nprobe = self.nprobe
            sim_, pos_ = self.ivf.search(q, want, params=params)
        else:
            sim_, pos_ = self._probe_allowed(faiss, q, want, lut, layout)
        keep = pos_[0] >= 0
        return pos_[0][keep], sim_[0][keep]

    def _probe_allowed(
        self, faiss: Any, q: np.ndarray, want: int, lut: np.ndarray, layout: _Layout
    ) -> tuple[np.ndarray, np.ndarray]:
        """The inverted file probed only where allowed rows are, and only they compared.

        Lists are taken in order of their centroids' similarity to the query, skipping those
        without an allowed row, until (a) ``nprobe / s`` of them are taken, s the allowed share
        of all rows: the k nearest allowed lie about as deep as the k/s nearest of all (the
        calibrated ``nprobe`` is for s = 1), and (b) they hold ``want`` allowed rows. Inside
        the lists faiss's selector (a bitmap of allowed positions) skips other rows before
        computing their distance.

        The calibration holds where the query's own neighbourhood (its ``nprobe`` nearest
        lists) holds the rows wanted. Where it does not (a filter to another material than
        the query's), the query lies outside the allowed rows' lists, the centroids' order is
        a weaker guide and the nearest allowed rows spread deeper: further lists are scanned,
        as many again each time, until a batch adds no row to the answer. Before, such a
        filter was answered by a scan of all allowed rows (10 ms of one core for a third of
        1M rows)."""
        allowed_per_list = lut.astype(np.float32) @ layout.record_lists
        _, order_ = self.ivf.quantizer.search(q, self.lists)
        order = order_[0]
        near = float(allowed_per_list[order[: self.nprobe]].sum()) >= want
        order = np.ascontiguousarray(order[allowed_per_list[order] > 0], np.int64)
        if not len(order):
            return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64)
        held = allowed_per_list[order]
        probe = int(np.ceil(self.nprobe * len(self.rows) / float(held.sum())))
        filled = int(np.searchsorted(np.cumsum(held), want)) + 1
        batch = max(probe, filled)
        bits = layout.bitmap(lut)
        sel = faiss.IDSelectorBitmap(len(self.rows), faiss.swig_ptr(bits))
        sim, pos = self._scan_lists(faiss, q, want, order[:batch], sel)
        start = batch
        while not near and start < len(order):
            more_sim, more_pos = self._scan_lists(faiss, q, want, order[start : start + batch], sel)
            start += batch
            if not len(more_sim) or (len(sim) == want and more_sim[0] <= sim[-1]):
                break
            sim, pos = np.concatenate([sim, more_sim]), np.concatenate([pos, more_pos])
            best = np.argsort(-sim, kind="stable")[:want]
            sim, pos = sim[best], pos[best]
        return sim.reshape(1, -1), pos.reshape(1, -1)

    def _scan_lists(
        self, faiss: Any, q: np.ndarray, want: int, lists: np.ndarray, sel: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` nearest rows ``sel`` allows in these lists, nearest first."""
        params = faiss.SearchParametersIVF()
        params.nprobe = len(lists)
        params.sel = sel
        sim = np.empty(want, np.float32)
        pos = np.empty(want, np.int64)
        lists = np.ascontiguousarray(lists, np.int64)
        coarse = np.zeros(len(lists), np.float32)  # unused by an inner-product IVFFlat scan
        self.ivf.search_preassigned_c(
            1,
            faiss.swig_ptr(q),
            want,
            faiss.swig_ptr(lists),
            faiss.swig_ptr(coarse),
            faiss.swig_ptr(sim),
            faiss.swig_ptr(pos),
            False,
            params,
        )
        keep = pos >= 0
        return sim[keep], pos[keep]

    def _layout(self) -> _Layout:
        """The query tables of the rows (``_Layout``): extended as rows arrive, rebuilt with
        the lists; made here only where neither happened (an index loaded from its files)."""
        if self._layout_cache is None or self._layout_cache[0] != (len(self.rows), id(self.ivf)):
            self._layout_cache = (
                (len(self.rows), id(self.ivf)),
                _Layout.of(self.record, self.view, self.ivf),
            )
        return self._layout_cache[1]

    def vector_of(self, record: int, frame: int) -> np.ndarray | None:
        """The stored vector of one frame (its own, not a crop's; the newest), or None."""
        hit = np.flatnonzero((self.record == record) & (self.frame == frame) & (self.view == 0))
        return None if not len(hit) else self.vectors[hit[-1]].copy()


class VectorIndexes:
    """One ``VectorIndex`` per embedder version, kept in ``directory`` (None: memory only).
    Given ``reading`` (opens a catalog read session), an index's first use in this process
    starts its maintenance (load or rebuild, lists, files) in the background."""

    def __init__(
        self, directory: Path | None, reading: Callable[[], AbstractContextManager[Session]] | None = None
    ) -> None:
        self.directory = directory
        self.reading = reading
        self._lock = threading.Lock()
        self._indexes: dict[str, VectorIndex] = {}

    def get(self, embedder: str) -> VectorIndex:
        """The index of ``embedder`` (created empty on first use)."""
        with self._lock:
            if embedder not in self._indexes:
                self._indexes[embedder] = VectorIndex(embedder, self.directory)
                if self.reading is not None:
                    self._indexes[embedder].maintain_soon(self.reading)
            return self._indexes[embedder]
