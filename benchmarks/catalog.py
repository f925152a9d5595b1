"""Catalog benchmark: search latency at a million records, and records created per second.

Writes ``benchmarks/results/catalog.json``. Run:
``PYTHONPATH=. python benchmarks/catalog.py [--records 1000000] [--database sqlite postgresql]``
(``--records 2000`` for a smoke run). The server runs as a subprocess (``spawn_server``) so
client and server do not share a GIL; PostgreSQL is a throwaway cluster on loopback started by
``scripts/postgres-test.sh``. The records are bulk-loaded into the catalog's tables (the rows,
tags, metadata index, grants and collection links the API writes: ``executemany`` on SQLite,
``COPY`` on PostgreSQL); every search and every creation goes through the HTTP API.

Each query kind runs as the store's admin (no permission filter) and as ``reader``, a user who
may read ~3 % of the records through each route there is: records of their own, a project they
are a member of, direct grants, public grants and a collection granted to them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import write_result
from sqlalchemy import func, select, text

from storage.federation import shared_index
from storage.federation.catalog.context import Limits
from storage.federation.client import StoreClient
from storage.federation.database import FTS_TABLE, TRIGRAM_SUFFIX, Database, sqlite_url
from storage.federation.embedded import init_store, spawn_server
from storage.federation.metadata_index import flatten
from storage.federation.models import (
    Collection,
    MetadataEntry,
    Project,
    Record,
    RecordTag,
    User,
)
from storage.federation.paths import store_paths

MATERIALS = ["MoS2", "WS2", "graphene", "hBN", "MoSe2", "WSe2"]
POSTGRES_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres-test.sh"
#: Records loaded per executemany / COPY statement (bounds the loader's memory).
CHUNK = 50_000
#: Bulk-load start time of the first record; one record every 30 s after it.
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STEP_S = 30


def _readable_route(i: int) -> str | None:
    """How ``reader`` may read record ``i`` (None: not at all); ~3.4 % of the records."""
    if i % 100 == 1:
        return "owner"
    if i % 50 == 2:
        return "project"
    if i % 1000 == 4:
        return "grant"
    if i % 1000 == 5:
        return "public"
    if i % 500 == 6:
        return "collection"
    return None


def _copy(conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Insert rows through the driver: ``executemany`` (SQLite) or ``COPY`` (PostgreSQL)."""
    if not rows:
        return
    raw = conn.connection.driver_connection
    names = ", ".join(columns)
    if conn.dialect.name == "sqlite":
        raw.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)
        return
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def populate(url: str, n: int, seed: int = 0) -> float:
    """Bulk-load ``n`` records (owners, project, grants, links as ``_readable_route`` says);
    returns seconds taken. Secondary indexes are dropped during the load and built after it
    (one sort each instead of ~n random inserts), the full-text index rebuilt once."""
    rng = random.Random(seed)
    db = Database(url)
    sqlite = db.is_sqlite
    indexes = [ix for t in (Record, RecordTag, MetadataEntry) for ix in t.__table__.indexes]
    t0 = time.perf_counter()
    with db.write_engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql("PRAGMA cache_size=-1000000")
        admin = conn.scalar(select(User.id).where(User.is_admin).order_by(User.id).limit(1))
        reader = conn.scalar(select(User.id).where(User.name == "reader"))
        project = conn.scalar(select(Project.id).where(Project.name == "shared"))
        other = conn.scalar(select(Project.id).where(Project.name == "other"))
        shelf = conn.scalar(select(Collection.id).where(Collection.alias == "shelf"))
        first = (conn.scalar(select(func.max(Record.id))) or 0) + 1
        fts_trigger = None
        if sqlite:
            fts_trigger = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type='trigger' AND name='records_fts_insert'"
            ).scalar()
            conn.exec_driver_sql("DROP TRIGGER records_fts_insert")
        for ix in indexes:
            ix.drop(conn)
        # The shared records' index is filled once after the load, not by a trigger per row.
        shared_index.uninstall(conn)
        # PostgreSQL's trigram indexes (migration 0006) have no model: dropped and rebuilt too.
        trigram = [
            (name, definition)
            for name, definition in (
                [] if sqlite else conn.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes")
            )
            if name.endswith(TRIGRAM_SUFFIX)
        ]
        for name, _ in trigram:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        for lo in range(0, n, CHUNK):
            records, tags, md_rows, grants, links = [], [], [], [], []
            for i in range(lo, min(n, lo + CHUNK)):
                rid = first + i
                material = MATERIALS[i % len(MATERIALS)]
                md = {
                    "kind": "dataset",
                    "material": material,
                    "drift_score": round(rng.random(), 4),
                    "defocus": round(rng.uniform(-10, 10), 2),
                    "n_frames": rng.randint(1, 5000),
                    "conditions": {"dose": round(rng.uniform(1, 100), 1), "probe": rng.choice("ABC")},
                }
                when = EPOCH + dt.timedelta(seconds=i * STEP_S)
                word = " rareword" if i % 1000 == 0 else ""
                route = _readable_route(i)
                owner = reader if route == "owner" else admin
                pid = project if route == "project" else other if i % 10 == 3 else None
                records.append(
                    (
                        rid,
                        f"scan {i} of {material}{word}",
                        "HAADF-STEM frames from the digital twin",
                        json.dumps(md),
                        owner,
                        pid,
                        0,
                        when.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else when,
                        when.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else when,
                    )
                )
                tags += [(rid, material), (rid, f"batch{i % 1000}")]
                md_rows += [(rid, owner, pid, *row) for row in flatten(md)]
                if route in ("grant", "public"):
                    grants.append(("d", rid, reader if route == "grant" else None, 1))
                if route == "collection":
                    links.append((shelf, rid, 3))
            columns = (
                "id",
                "title",
                "description",
                "md",
                "owner_id",
                "project_id",
                "size",
                "created",
                "updated",
            )
            _copy(conn, "records", columns, records)
            _copy(conn, "record_tags", ("record_id", "tag"), tags)
            _copy(
                conn,
                "record_md",
                ("record_id", "owner_id", "project_id", "key", "kind", "num", "text"),
                md_rows,
            )
            _copy(conn, "grants", ("target_kind", "target_id", "user_id", "level"), grants)
            _copy(conn, "collection_items", ("collection_id", "record_id", "max_level"), links)
        for ix in indexes:
            ix.create(conn)
        for _, definition in trigram:
            conn.exec_driver_sql(definition)
        shared_index.rebuild(conn)
        shared_index.install(conn)
        if sqlite:
            conn.exec_driver_sql(fts_trigger)
            conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
        else:
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('records', 'id'), (SELECT max(id) FROM records))")
            )
    if not sqlite:
        # PostgreSQL's autovacuum would gather statistics minutes later; a store that has
        # grown to this size has them, so the benchmark does not measure the gap.
        with db.write_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    # No ANALYZE on SQLite: a store never runs it, so the planner works without statistics here too.
    db.dispose()
    return time.perf_counter() - t0


def _setup_users(admin: StoreClient) -> str:
    """The reader account, its project memberships, collection and grants; returns its token."""
    token = admin.create_user("reader")
    admin.set_allocation("local", user="reader", max_bytes=10**12, max_records=10**8)
    admin.create_project("shared")
    admin.create_project("other")
    admin.set_member("shared", "reader", "write")
    shelf = admin.create_collection("shelf", alias="shelf")
    admin.grant(shelf["id"], "read", user="reader")
    return token


def _records(n: int, tag: str) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {
            "title": f"bench {tag}-{i}",
            "tags": ["bench"],
            "metadata": {"tag": tag, "i": i, "score": i / n},
        }


def create_rate(factory: Any, per_client: int, workers: int, batch: int) -> float:
    """Records created per second through the API by ``workers`` concurrent clients, one
    request per record (``batch`` 1) or ``batch`` records per request."""

    def work(w: int) -> None:
        items = list(_records(per_client, f"{w}-{batch}"))
        with factory() as c:
            if batch == 1:
                for item in items:
                    c.create_record(**item)
            else:
                for lo in range(0, len(items), batch):
                    c.create_records(items[lo : lo + batch])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))
    return per_client * workers / (time.perf_counter() - t0)


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


def _ticks(pid: int, children: bool = False) -> int:
    """CPU clock ticks of a process (and of its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone
        return 0
    return sum(int(f) for f in fields[11 : 15 if children else 13])


def cpu_meter(store_root: Path, cluster: str | None) -> Callable[[], float] | None:
    """Cumulative CPU seconds of the store server and, on PostgreSQL, of the cluster's
    processes, parallel workers that have exited included (Linux ``/proc``; None elsewhere).
    Ticks are 10 ms: a figure is a mean over many searches, and unlike wall time it does not
    grow with what else runs on a shared machine."""
    if not Path("/proc/self/stat").exists():
        return None
    server = [
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit()
        and b"storage.federation" in (cmd := _read(d / "cmdline"))
        and str(store_root).encode() in cmd
    ]
    postmaster = int(Path(cluster, "data", "postmaster.pid").read_text().split()[0]) if cluster else None

    def seconds() -> float:
        ticks = sum(_ticks(pid) for pid in server)
        if postmaster is not None:
            ticks += _ticks(postmaster, children=True)
            for d in Path("/proc").iterdir():
                if d.name.isdigit() and _read(d / "stat").rsplit(b")", 1)[-1].split()[1:2] == [
                    str(postmaster).encode()
                ]:
                    ticks += _ticks(int(d.name))
        return ticks / os.sysconf("SC_CLK_TCK")

    return seconds


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def search_latency(
    client: StoreClient, user: str, repeats: int, cpu: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Per-query and overall latency (ms) of one page of 50 results, through HTTP.

    Searches count matches up to the default ``count_limit`` (500; past it the total is a lower
    bound); ``exact_total_p50_ms`` is the same search counting every match (``count_limit`` null).
    ``cpu`` (``cpu_meter``): the mean CPU time per search of the server and its database too.
    """
    per_query: dict[str, Any] = {}
    every: list[float] = []
    for name, q in QUERIES.items():
        q = {**q, "owner": user} if "owner" in q else q
        client.search(limit=50, **q)  # warm
        times = []
        cpu_before = cpu() if cpu else 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            page = client.search(limit=50, **q)
            times.append((time.perf_counter() - t0) * 1000)
        cpu_ms = (cpu() - cpu_before) * 1000 / repeats if cpu else None
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
            "cpu_ms_mean": cpu_ms,
            "total_matches": exact["total"],
            "exact_total_p50_ms": statistics.median(exact_ms),
        }
        spent = f", CPU {cpu_ms:.1f} ms a search" if cpu_ms is not None else ""
        print(f"  {user:>8} {name:<24} p95 {per_query[name]['p95_ms']:7.1f} ms{spent}", flush=True)
    every.sort()
    return {
        "queries": per_query,
        "p50_ms": statistics.median(every),
        "p95_ms": every[int(0.95 * (len(every) - 1))],
    }


@contextmanager
def postgres() -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL cluster on loopback (``scripts/postgres-test.sh``); yields its URL
    and its folder."""
    root = tempfile.mkdtemp(prefix="sf-bench-pg-")
    os.chmod(root, 0o711)  # the server runs as the postgres account and must reach its folder
    cluster = os.path.join(root, "cluster")
    started = subprocess.run(["bash", str(POSTGRES_SCRIPT), "start", cluster], capture_output=True, text=True)
    if started.returncode != 0:
        raise SystemExit(f"no PostgreSQL for the benchmark: {started.stderr.strip()[-300:]}")
    try:
        yield started.stdout.strip().splitlines()[-1], cluster
    finally:
        subprocess.run(["bash", str(POSTGRES_SCRIPT), "stop", cluster], capture_output=True)
        os.rmdir(root)


def run(
    store_dir: Path,
    database_url: str | None,
    n: int,
    repeats: int,
    creations: int,
    cluster: str | None = None,
) -> dict[str, Any]:
    """Load, search as admin and as reader, then measure creation rates; the figures."""
    init_store(store_dir, user="bench", database_url=database_url)
    url = database_url or sqlite_url(store_paths(store_dir)[0])
    with spawn_server(store_dir, database_url=database_url) as store, store.client() as admin:
        reader_token = _setup_users(admin)
    load_s = populate(url, n)
    print(f"loaded {n} records in {load_s:.0f} s", flush=True)
    with spawn_server(store_dir, database_url=database_url) as store, store.client() as admin:
        total = admin.search(limit=1, exact_total=True)["total"]
        cpu = cpu_meter(store.store_dir, cluster)
        search = {"admin": search_latency(admin, "bench", repeats, cpu)}
        with StoreClient(store.url, reader_token) as reader:
            search["reader"] = search_latency(reader, "reader", repeats, cpu)
            readable = reader.search(limit=1, exact_total=True)["total"]

        def factory() -> StoreClient:
            return StoreClient(store.url, store.token)

        batch = Limits().max_batch
        created = {
            "single_1_client": create_rate(factory, creations // 4, 1, 1),
            "single_8_clients": create_rate(factory, creations // 8 // 4, 8, 1),
            "batch_1_client": create_rate(factory, creations, 1, batch),
            "batch_8_clients": create_rate(factory, creations // 8, 8, batch),
        }
    every = sorted(p for s in search.values() for p in (q["p95_ms"] for q in s["queries"].values()))
    return {
        "records_in_catalog": total,
        "readable_by_reader": readable,
        "bulk_load": {"records": n, "seconds": load_s, "records_per_s": n / load_s},
        "search": {"page_size": 50, "repeats": repeats, **search, "worst_query_p95_ms": every[-1]},
        "records_created_per_s": {**created, "batch_size": batch},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records to load (default 1M)")
    parser.add_argument(
        "--database", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed searches per query kind")
    parser.add_argument("--creations", type=int, default=8000, help="records created per creation figure")
    args = parser.parse_args()
    result: dict[str, Any] = {"goal_p95_ms": 50, "uptime_before": _uptime()}
    for name in args.database:
        with tempfile.TemporaryDirectory(prefix="sf-bench-catalog-") as tmp:
            print(f"{name}: {args.records} records", flush=True)
            if name == "sqlite":
                figures = run(Path(tmp), None, args.records, args.repeats, args.creations)
                result["sqlite"] = {"database": "SQLite (WAL), embedded", **figures}
            else:
                with postgres() as (pg, cluster):
                    figures = run(Path(tmp), pg, args.records, args.repeats, args.creations, cluster)
                result["postgresql"] = {
                    "database": "PostgreSQL (throwaway cluster on loopback, fsync off)",
                    **figures,
                }
    result["uptime_after"] = _uptime()
    write_result("catalog", result)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
