"""Back-fill frame embeddings for an existing archive over dask.distributed, with progress.

The archive is a list of dataset directories, or (by default) every dataset record in the
store (``md.kind == "dataset"`` with ``md.path``) whose directory is reachable here. Each
block of frames is one dask task (data in, descriptors out, read straight from the Zarr
chunks on the worker); the driver appends the descriptors to the dataset's
``embeddings/<version>`` group in order, updates a Prefect progress artifact, and sends
each finished dataset's embeddings to its store record. Frames already embedded are skipped,
so a re-run continues where a killed one stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from scopeflow.errors import InputError
from storage.datasets import open_dataset
from storage.datasets.embeddings import EmbeddingWriter
from tasks.embedding import EMBEDDER_VERSION
from tasks.embedding.ingest import embed_block, missing_frames, send_to_store
from tasks.inference.batching import contiguous_batches
from tasks.inference.reprocess import Cluster

from .artifacts import Progress


def store_datasets(client: Any) -> list[tuple[str, str]]:
    """(record id, path) of the store's dataset records whose directory exists here."""
    out = []
    for item in client.iter_search(md='md.kind == "dataset"'):
        md = item.get("metadata") or {}
        path = md.get("path") if isinstance(md, dict) else None
        if isinstance(path, str) and (Path(path) / "zarr.json").exists():
            out.append((item["id"], path))
    return out


@flow(name="embed-backfill")
def backfill_flow(
    datasets: list[str] | None = None,
    records: list[str] | None = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    processes: bool = True,
    batch_frames: int = 64,
    to_store: bool = True,
) -> dict[str, Any]:
    """Embed every frame of the archive that has no embedding yet; send them to the store.

    ``datasets`` (with ``records``, their store records, in the same order) or, when None, the
    store's dataset records. Returns frames embedded and sent per dataset.
    """
    log = get_run_logger()
    client = None
    if to_store or datasets is None:
        from storage.federation.client import StoreClient

        client = StoreClient.from_env()
    try:
        if datasets is None:
            pairs = store_datasets(client)
        else:
            if records is not None and len(records) != len(datasets):
                raise InputError(f"{len(datasets)} datasets but {len(records)} records")
            pairs = list(zip(records or [None] * len(datasets), datasets, strict=True))
        todo = {path: missing_frames(path) for _, path in pairs}
        total = sum(len(v) for v in todo.values())
        log.info("%d frames to embed in %d datasets", total, len(pairs))
        progress = Progress("embed-backfill", f"frames embedded ({EMBEDDER_VERSION})")
        done, summary = 0, {}
        t0 = time.perf_counter()
        cluster = Cluster(scheduler, n_workers, 1, processes)
        try:
            import dask

            for record, path in pairs:
                ds = open_dataset(path)
                frames_da, sizes = ds["frames"].data, ds["pixel_size"].values
                blocks = contiguous_batches(todo[path], batch_frames)
                writer = EmbeddingWriter.open(path, EMBEDDER_VERSION)
                tasks = [dask.delayed(embed_block, pure=False)(frames_da[a:b], sizes[a:b]) for a, b in blocks]
                for (a, b), future in zip(blocks, cluster.client.compute(tasks), strict=True):
                    views = future.result()
                    writer.append(list(range(a, b)), views[:, 0], views[:, 1:])
                    future.release()
                    done += b - a
                    progress.update(done, total)
                sent = send_to_store(client, path, record) if (to_store and record and client) else 0
                summary[path] = {"record": record, "embedded": len(todo[path]), "sent": sent}
        finally:
            cluster.close()
        progress.update(total, total)
        log.info("%d frames embedded in %.1f s", done, time.perf_counter() - t0)
        return {"embedder": EMBEDDER_VERSION, "frames": done, "datasets": summary}
    finally:
        if client is not None:
            client.close()
