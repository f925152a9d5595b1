"""Parts of ``similarity.py``: the vector index at scale, and the map's projection time.

- index: 1,000,000 vectors made from the quality part's 10k archive descriptors (each
  archive vector plus small Gaussian jitter, renormalised: 100 near-copies per frame, as runs
  of similar frames are), in 1000 records of 1000 frames, each record labelled with its
  frames' lattice. Queries: 200 held-out jittered archive vectors, filtered by a metadata
  condition (the records of one lattice: a third of the vectors) and by a narrow one (1 %
  of the records) and others (see ``filters``). Recall@10 against exact search over the same allowed vectors; p50/p95
  latency of ``VectorIndex.search`` (the allowed record ids given, as the store passes
  them); build rate; resident memory per vector. The SQL side of a filter (the allowed ids)
  is timed separately on a real catalog of 1000 records.
- index-views: the same with crop rows, as the store now holds them (``index_views_part``).
- map: UMAP of 100k of those vectors (fit on a sample, the rest placed by ``transform``, as
  the store does) and of a 5k selection, warm (numba compiled once per process, timed apart).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from storage.federation.similarity.index import EXACT_BELOW, TRAIN_PER_LIST, VectorIndex

WORK = Path("/tmp/scopeflow-similarity-bench")


def jitter(base: np.ndarray) -> float:
    """Per-component jitter that puts a copy as far from its source (in L2) as the median
    archive frame is from its nearest other frame: new frames look like the archive's."""
    sims = base @ base.T
    np.fill_diagonal(sims, -1.0)
    nn = np.sqrt(np.maximum(2.0 - 2.0 * sims.max(axis=1), 0.0))
    return float(np.median(nn) / np.sqrt(base.shape[1]))


def _vectors(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = np.load(WORK / "archive.npz")
    base, lattice = z["emb"], z["lattice"]
    sigma = jitter(base)
    src = np.repeat(np.arange(len(base)), int(np.ceil(n / len(base))))[:n]
    out = np.empty((n, base.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        part = src[start : start + 100_000]
        v = base[part] + rng.normal(0, sigma, (len(part), base.shape[1])).astype(np.float32)
        out[start : start + len(part)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out, src, lattice


def index_part(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    n = args.vectors
    vectors, src, lattice = _vectors(n, rng)
    per_record = 1000
    record = np.arange(n) // per_record + 1
    record_lattice = lattice[src[::per_record]]
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    index = VectorIndex("bench", None)
    t0 = time.perf_counter()
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        index.add(
            np.arange(start, stop) + 1,
            record[start:stop],
            np.arange(start, stop) % per_record,
            vectors[start:stop],
        )
        # As the store does after each upload (its background thread): the lists are
        # rebuilt, and their nprobe measured, every time the index doubles.
        index.reorganise()
    build_s = time.perf_counter() - t0
    rss = proc.memory_info().rss - rss0
    print(
        f"built {n} in {build_s:.0f} s, {rss / n:.0f} B/vector resident, {index.nbytes() / n:.0f} B held, {index.lists} lists, nprobe {index.nprobe}",
        flush=True,
    )
    queries_src = rng.choice(len(np.unique(src)), 200, replace=False)
    z = np.load(WORK / "archive.npz")
    sigma = jitter(z["emb"])
    q = z["emb"][queries_src] + rng.normal(0, sigma, (200, vectors.shape[1])).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out: dict[str, Any] = {
        "vectors": n,
        "dim": int(vectors.shape[1]),
        "library": "faiss-cpu " + __import__("faiss").__version__,
        "index": f"IndexIVFFlat, inner product, sqrt(n) lists trained on {TRAIN_PER_LIST} vectors per list; exact below {EXACT_BELOW} allowed vectors",
        "lists": index.lists,
        "nprobe_calibrated": index.nprobe,
        "self_recall_at_10_calibration": index.recall,
        "build_s": build_s,
        "build_vectors_per_s": n / build_s,
        "resident_bytes_per_vector": rss / n,
        "index_bytes_per_vector": index.nbytes() / n,
        "jitter_per_component": sigma,
        "load_average_at_start": os.getloadavg(),
    }
    records = np.arange(1, n // per_record + 1)
    q_lattice = lattice[queries_src]
    lattices = sorted(set(record_lattice.tolist()))
    narrow = rng.choice(records, max(1, len(records) // 100), replace=False)
    # Filters per query (record ids allowed): a project owning a third of the records (no
    # relation to content); the query's own lattice (``md.lattice == "mos2"`` for a MoS2
    # frame, the usual case); another lattice (the hard case: the allowed vectors all lie
    # far from the query); 1 % of the records; none.
    filters = {
        "project_third": lambda i: records[records % 3 == 0],
        "same_lattice": lambda i: records[record_lattice == q_lattice[i]],
        "other_lattice": lambda i: records[
            record_lattice == lattices[(lattices.index(q_lattice[i]) + 1) % len(lattices)]
        ],
        "one_percent_of_records": lambda i: narrow,
        "none": lambda i: None,
    }
    for name, allowed_for in filters.items():
        lat, cpu, rec, sizes, found = [], [], [], [], []
        load = os.getloadavg()[0]
        # Every query first, the exact answers after (numpy's BLAS threads, left spinning by
        # an exact answer's product, took the cores from the next query).
        for i, qi in enumerate(q):
            t, c = time.perf_counter(), time.thread_time()
            found.append(index.search(qi, 10, allowed_for(i)))
            lat.append(time.perf_counter() - t)
            # CPU time of the query's thread: what the query costs, apart from the waits
            # that the other jobs of a shared machine add to its wall time.
            cpu.append(time.thread_time() - c)
        for i, (qi, hits) in enumerate(zip(q, found, strict=True)):
            allowed = allowed_for(i)
            mask = np.ones(n, bool) if allowed is None else np.isin(record, allowed)
            allowed_idx = np.flatnonzero(mask)
            exact = allowed_idx[np.argsort(-(vectors[allowed_idx] @ qi))[:10]]
            truth = {(int(record[j]), int(j % per_record)) for j in exact}
            rec.append(len(truth & {(h[0], h[1]) for h in hits}) / 10)
            sizes.append(len(allowed_idx))
        out[name] = {
            "allowed_vectors_mean": float(np.mean(sizes)),
            "recall_at_10": float(np.mean(rec)),
            "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p95_ms": float(np.percentile(lat, 95) * 1e3),
            "cpu_p50_ms": float(np.percentile(cpu, 50) * 1e3),
            "cpu_p95_ms": float(np.percentile(cpu, 95) * 1e3),
            "load_average_1min": load,
        }
        print(name, out[name], flush=True)
    out["load_average_at_end"] = os.getloadavg()
    out["sql_filter"] = _sql_filter_time(record_lattice)
    return out


def _sql_filter_time(record_lattice: np.ndarray) -> dict[str, Any]:
    """p50/p95 of the allowed-record query (grants + a metadata term) on a 1000-record catalog."""
    from storage.federation.access import Principal
    from storage.federation.api_models import RecordIn, SearchIn
    from storage.federation.catalog import Catalog
    from storage.federation.catalog import records as ops
    from storage.federation.database import Database, sqlite_url
    from storage.federation.embedded import init_store
    from storage.federation.similarity.ops import allowed_records

    with tempfile.TemporaryDirectory() as tmp:
        init_store(Path(tmp))
        db = Database(sqlite_url(Path(tmp) / "catalog.db"))
        cat = Catalog(db)
        admin = Principal(1, "admin", True)

        def make(ctx: Any) -> None:
            for i, lat in enumerate(record_lattice):
                ops.create_record(ctx, RecordIn(title=f"run {i}", metadata={"lattice": str(lat)}))

        cat.write(admin, make)
        q = SearchIn(md='md.lattice == "mos2"')
        times = []
        for _ in range(50):
            t = time.perf_counter()
            ids = cat.read(admin, lambda ctx: allowed_records(ctx, q))
            times.append(time.perf_counter() - t)
        db.dispose()
    return {
        "records": len(record_lattice),
        "allowed": len(ids),
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p95_ms": float(np.percentile(times, 95) * 1e3),
    }


def map_part(args: argparse.Namespace) -> dict[str, Any]:
    from storage.federation.similarity.map_view import FIT_SAMPLE, layout, place

    rng = np.random.default_rng(5)
    vectors, _, _ = _vectors(100_000, rng)
    t = time.perf_counter()
    # numba compiles UMAP's code once per process: the exact-neighbour path below 4096 points
    # and NN-descent above (a fit of the sample's size), and the membership kernel ``place`` uses.
    place(vectors[:100], vectors[:500], layout(vectors[:FIT_SAMPLE]), 15)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    xy = layout(vectors)
    full_s = time.perf_counter() - t
    pick = np.flatnonzero(xy[:, 0] < np.quantile(xy[:, 0], 0.3))[:5000]
    t = time.perf_counter()
    layout(vectors[pick])
    sel_s = time.perf_counter() - t
    return {
        "points": 100_000,
        "fit_sample": FIT_SAMPLE,
        "first_call_compile_s": compile_s,
        "umap_100k_s": full_s,
        "reproject_5k_s": float(sel_s),
        "selection": len(pick),
        "total_s": full_s + sel_s,
    }


def rerank_store_part(args: Any) -> dict[str, Any]:
    """What the second stage costs a query end to end: ``POST /api/similar`` on a real store
    (SQLite, loopback) holding 3 pushed datasets of 80 twin frames (one per lattice), queried
    by transformed copies of their frames with ``rerank`` 0, 20 and 50, in alternating rounds;
    wall and CPU time per query, frame reads from the datasets included."""
    from similarity import transformed_copy

    from storage.datasets import DatasetWriter
    from storage.federation.embedded import serve_in_thread
    from storage.federation.push import push_dataset
    from storage.federation.similarity.client import image_payload, put_embeddings, similar
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule
    from tasks.embedding import EMBEDDER_VERSION, embed_frame
    from tasks.embedding.ingest import embed_missing, upload_payload

    rng = np.random.default_rng(5)
    settings = (0, 20, 50)
    times: dict[int, list[float]] = {s: [] for s in settings}
    # The store runs in this process (a thread), so the process's CPU time per query is the
    # client's and the server's together: a figure the machine's load does not inflate.
    cpu: dict[int, list[float]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = serve_in_thread(root / "store")
        try:
            with store.client() as admin:
                token = admin.create_user("bench")
                admin.set_allocation("local", user="bench", max_bytes=10**11, max_records=10**6)
            from storage.federation.client import StoreClient

            client = StoreClient(store.url, token)
            frames = []
            for n, lattice in enumerate(("graphene", "mos2", "perovskite")):
                path = root / lattice / "run.zarr"
                path.parent.mkdir()
                twin = DigitalTwin(
                    seed=40 + n, schedule=DriftSchedule((), {"lattice": lattice, "drift_x": 7.3})
                )
                acquired = [twin.acquire(i) for i in range(80)]
                DatasetWriter.open(path, twin.state()).append(acquired)
                embed_missing(path)
                rec = client.create_record(f"{lattice} run", metadata={"lattice": lattice})
                push_dataset(client, path, record=rec["id"], state_dir=root / "state")
                put_embeddings(client, rec["id"], upload_payload(path))
                frames += acquired
            queries = []
            for i in rng.choice(len(frames), args.store_queries, replace=False):
                image, p = transformed_copy(frames[int(i)].image, frames[int(i)].pixel_size, rng)
                queries.append((embed_frame(image, p).tolist(), image_payload(image, p)))
            similar(client, embedder=EMBEDDER_VERSION, vector=queries[0][0], k=10)  # warm
            for vector, image in queries:
                for s in settings:
                    t0, c0 = time.perf_counter(), time.process_time()
                    similar(
                        client,
                        embedder=EMBEDDER_VERSION,
                        vector=vector,
                        k=10,
                        rerank=s or None,
                        image=image if s else None,
                    )
                    times[s].append(time.perf_counter() - t0)
                    cpu[s].append(time.process_time() - c0)
            client.close()
        finally:
            store.stop()
    return {
        "frames": len(frames),
        "queries": len(queries),
        **{
            f"rerank_{s}": {
                "p50_s": float(np.percentile(times[s], 50)),
                "p95_s": float(np.percentile(times[s], 95)),
                "cpu_p50_s": float(np.percentile(cpu[s], 50)),
                "cpu_p95_s": float(np.percentile(cpu[s], 95)),
            }
            for s in settings
        },
    }


def index_views_part(args: argparse.Namespace) -> dict[str, Any]:
    """``index_part`` with crop rows, as the store now holds them: ``args.vectors`` rows of
    frames of 1 + N_CROPS rows each (each archive frame's views from ``similarity_crops.py``'s
    cache, jittered as ``_vectors`` does, ten copies of the archive), 1000 records. Recall@10 of
    frames (a frame's score its best row) against exact search over the same allowed rows;
    latency of ``VectorIndex.search`` by filter."""
    from similarity import COMBOS, SEED

    from tasks.embedding import EMBEDDER_VERSION

    z = np.load(WORK / f"views_{EMBEDDER_VERSION}_7_{SEED}_10000.npz")
    views = z["views"]
    n_arch, per, dim = views.shape
    lattice = np.array([COMBOS[i // int(np.ceil(n_arch / len(COMBOS)))][0] for i in range(n_arch)])
    rng = np.random.default_rng(11)
    sigma = jitter(views[:, 0])
    n_frames = args.vectors // per
    n = n_frames * per
    src = np.arange(n_frames) % n_arch
    frames_per_record = n_frames // 1000
    record_of_frame = np.arange(n_frames) // frames_per_record + 1
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n_frames, 10_000):
        part = src[start : start + 10_000]
        v = views[part] + rng.normal(0, sigma, (len(part), per, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=2, keepdims=True)
        vectors[start * per : (start + len(part)) * per] = v.reshape(-1, dim)
    record = np.repeat(record_of_frame, per)
    frame = np.repeat(np.arange(n_frames) % frames_per_record, per)
    view = np.tile(np.arange(per), n_frames)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    index = VectorIndex("bench", None)
    t0 = time.perf_counter()
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        index.add(
            np.arange(start, stop) + 1,
            record[start:stop],
            frame[start:stop],
            vectors[start:stop],
            view[start:stop],
        )
        index.reorganise()
    build_s = time.perf_counter() - t0
    rss = proc.memory_info().rss - rss0
    print(f"built {n} rows in {build_s:.0f} s, {index.lists} lists, nprobe {index.nprobe}", flush=True)
    record_lattice = lattice[src[::frames_per_record]]
    records = np.arange(1, 1001)
    qsrc = rng.choice(n_arch, 200, replace=False)
    q = views[qsrc, 0] + rng.normal(0, sigma, (200, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q_lattice = lattice[qsrc]
    lattices = sorted(set(record_lattice.tolist()))
    narrow = rng.choice(records, 10, replace=False)
    filters = {
        "project_third": lambda i: records[records % 3 == 0],
        "same_lattice": lambda i: records[record_lattice == q_lattice[i]],
        "other_lattice": lambda i: records[
            record_lattice == lattices[(lattices.index(q_lattice[i]) + 1) % len(lattices)]
        ],
        "one_percent_of_records": lambda i: narrow,
        "none": lambda i: None,
    }
    out: dict[str, Any] = {
        "rows": n,
        "frames": n_frames,
        "rows_per_frame": per,
        "dim": dim,
        "lists": index.lists,
        "nprobe_calibrated": index.nprobe,
        "build_s": build_s,
        "build_rows_per_s": n / build_s,
        "resident_bytes_per_row": rss / n,
        "index_bytes_per_row": index.nbytes() / n,
        "load_average_at_start": os.getloadavg(),
    }
    for name, allowed_for in filters.items():
        lat, cpu, rec, found = [], [], [], []
        load = os.getloadavg()[0]
        # Every query first, the exact answers after: numpy's BLAS threads, left spinning by
        # an exact answer's product, took the cores from the next query (wall p95 45 ms
        # against 2 ms of the query's own CPU at load ~9).
        for i, qi in enumerate(q):
            allowed = allowed_for(i)
            t, c = time.perf_counter(), time.thread_time()
            found.append(index.search(qi, 10, allowed))
            lat.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        for i, (qi, hits) in enumerate(zip(q, found, strict=True)):
            allowed = allowed_for(i)
            fmask = np.ones(n_frames, bool) if allowed is None else np.isin(record_of_frame, allowed)
            fidx = np.flatnonzero(fmask)
            best = (vectors.reshape(n_frames, per, dim)[fidx] @ qi).max(axis=1)
            top = fidx[np.argsort(-best)[:10]]
            truth = {(int(record_of_frame[f]), int(f % frames_per_record)) for f in top}
            rec.append(len(truth & {(h[0], h[1]) for h in hits}) / 10)
        out[name] = {
            "recall_at_10_frames": float(np.mean(rec)),
            "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p95_ms": float(np.percentile(lat, 95) * 1e3),
            "cpu_p50_ms": float(np.percentile(cpu, 50) * 1e3),
            "cpu_p95_ms": float(np.percentile(cpu, 95) * 1e3),
            "load_average_1min": load,
        }
        print(name, out[name], flush=True)
    out["load_average_at_end"] = os.getloadavg()
    return out
