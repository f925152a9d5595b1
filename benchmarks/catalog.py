"""Catalog benchmark: records created per second over HTTP, and search latency at 100 000 records.

Writes ``benchmarks/results/catalog.json``. Run: ``PYTHONPATH=. python benchmarks/catalog.py``.
The server runs as a subprocess (``spawn_server``) so client and server do not share a GIL.
The 100 000 records are bulk-inserted through the catalog's tables (same rows, tags and
metadata index the API writes); every search is measured through the HTTP API.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import write_result
from sqlalchemy import func, select

from storage.federation.client import StoreClient
from storage.federation.database import Database, sqlite_url
from storage.federation.embedded import init_store, spawn_server
from storage.federation.metadata_index import flatten
from storage.federation.models import MetadataEntry, Record, RecordTag, User
from storage.federation.paths import store_paths

N_RECORDS = 100_000
MATERIALS = ["MoS2", "WS2", "graphene", "hBN", "MoSe2", "WSe2"]


def bulk_insert(store_dir: Path, n: int, seed: int = 0) -> float:
    """Insert ``n`` records owned by the store's admin; returns seconds taken."""
    rng = random.Random(seed)
    db = Database(sqlite_url(store_paths(store_dir)[0]))
    t0 = time.perf_counter()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def insert(session: Any) -> None:
        owner = session.scalar(select(User.id).order_by(User.id).limit(1))
        first = (session.scalar(select(func.max(Record.id))) or 0) + 1
        for lo in range(0, n, 10_000):
            records, tags, md_rows = [], [], []
            for i in range(lo, min(n, lo + 10_000)):
                rid = first + i
                material = MATERIALS[i % len(MATERIALS)]
                md = {
                    "kind": "dataset",
                    "material": material,
                    "drift_score": round(rng.random(), 4),
                    "defocus": round(rng.uniform(-10, 10), 2),
                    "n_frames": rng.randint(1, 5000),
                    "conditions": {
                        "dose": round(rng.uniform(1, 100), 1),
                        "probe": rng.choice(["A", "B", "C"]),
                    },
                }
                when = start + dt.timedelta(seconds=i * 300)
                word = " rareword" if i % 100 == 0 else ""
                records.append(
                    {
                        "id": rid,
                        "title": f"scan {i} of {material}{word}",
                        "description": "HAADF-STEM frames from the digital twin",
                        "md": md,
                        "owner_id": owner,
                        "size": 0,
                        "created": when,
                        "updated": when,
                    }
                )
                tags += [{"record_id": rid, "tag": material}, {"record_id": rid, "tag": f"batch{i % 100}"}]
                md_rows += [
                    {"record_id": rid, "key": k, "kind": kind, "num": num, "text": text}
                    for k, kind, num, text in flatten(md)
                ]
            session.execute(Record.__table__.insert(), records)
            session.execute(RecordTag.__table__.insert(), tags)
            session.execute(MetadataEntry.__table__.insert(), md_rows)

    db.write(insert)
    # No ANALYZE: a store never runs it, so the planner works without statistics here too.
    db.dispose()
    return time.perf_counter() - t0


def create_rate(client_factory: Any, n: int, workers: int) -> float:
    """Records created per second through the API by ``workers`` concurrent clients."""
    per = n // workers

    def work(w: int) -> None:
        with client_factory() as c:
            for i in range(per):
                c.create_record(f"bench {w}-{i}", tags=["bench"], metadata={"w": w, "i": i, "score": i / per})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))
    return per * workers / (time.perf_counter() - t0)


QUERIES: dict[str, dict[str, Any]] = {
    "md_expression": {"md": 'md.drift_score > 0.9 and md.material == "MoS2"'},
    "md_range_nested": {"md": "md.defocus >= -1 and md.defocus < 1 and md.conditions.dose > 50"},
    "tag": {"tags": ["batch7"]},
    "text": {"text": "rareword"},
    "owner_sorted_by_title": {"owner": None, "sort": "title"},
    "date_range": {"created_after": "2026-03-01T00:00:00Z", "created_before": "2026-03-08T00:00:00Z"},
    "id_wildcard": {"id": "d/4242*"},
    "everything_newest_first": {},
}


def search_latency(client: StoreClient, owner: str, repeats: int = 30) -> dict[str, Any]:
    """Per-query and overall latency (ms) of one page of 50 results, through HTTP.

    Searches count matches up to the default ``count_limit`` (500; past it the total is a lower
    bound); ``exact_total_p50_ms`` is the same search counting every match (``count_limit`` null).
    """
    per_query: dict[str, Any] = {}
    every: list[float] = []
    for name, q in QUERIES.items():
        q = {**q, "owner": owner} if "owner" in q else q
        client.search(limit=50, **q)  # warm
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            page = client.search(limit=50, **q)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        every += times
        exact_ms = []
        for _ in range(3):
            t0 = time.perf_counter()
            exact = client.search(limit=50, exact_total=True, **q)
            exact_ms.append((time.perf_counter() - t0) * 1000)
        per_query[name] = {
            "total": page["total"],
            "total_is_lower_bound": page["total_is_lower_bound"],
            "p50_ms": statistics.median(times),
            "p95_ms": times[int(0.95 * (len(times) - 1))],
            "total_matches": exact["total"],
            "exact_total_p50_ms": statistics.median(exact_ms),
        }
    every.sort()
    return {
        "queries": per_query,
        "p50_ms": statistics.median(every),
        "p95_ms": every[int(0.95 * (len(every) - 1))],
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sf-bench-catalog-") as tmp:
        store_dir = Path(tmp)
        init_store(store_dir, user="bench")
        with spawn_server(store_dir) as store, store.client() as client:

            def factory() -> StoreClient:
                return StoreClient(store.url, store.token)

            rate_1 = create_rate(factory, 300, 1)
            rate_8 = create_rate(factory, 800, 8)
        insert_s = bulk_insert(store_dir, N_RECORDS)
        with spawn_server(store_dir) as store, store.client() as client:
            latency = search_latency(client, "bench")
            total = client.search(limit=1, exact_total=True)["total"]
    result = {
        "database": "SQLite (WAL), embedded",
        "records_created_per_s": {"1_client": rate_1, "8_clients": rate_8},
        "bulk_insert": {"records": N_RECORDS, "seconds": insert_s, "records_per_s": N_RECORDS / insert_s},
        "search": {"records_in_catalog": total, "page_size": 50, **latency, "goal_p95_ms": 50},
    }
    write_result("catalog", result)


if __name__ == "__main__":
    main()
