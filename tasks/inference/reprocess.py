"""Re-analyse an archived dataset with a chosen model version over dask.distributed (plain Python;
``flows/reprocess.py`` wraps it in a flow with artifacts).

The frames are read with xarray as a dask array over the dataset's Zarr chunks (one chunk
per frame), cut into batches of ``batch_frames`` the way the edge loop cuts them
(``batching.contiguous_batches``); each batch is one dask task that runs the
ensemble on a worker. The model goes to every worker once (scattered, broadcast), so the
workers need the dataset's directory (a shared filesystem when scaled out) but not the
model registry. The driver writes the atoms back in frame order as a new prediction set
``predictions/<set name>`` of the dataset, with provenance in the set's attributes (and as
store records when asked).

A ``LocalCluster`` (``n_workers`` processes of ``threads_per_worker`` threads) is started and
stopped around the run unless ``scheduler`` names a running scheduler (``tcp://host:8786``)
to scale out on.
"""

from __future__ import annotations

import datetime as dt
import importlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import scopeflow
from scopeflow.atoms import Atoms
from scopeflow.errors import InputError
from scopeflow.settings import DEFAULTS, limit_threads
from storage.datasets import Dataset, open_dataset
from storage.models import ModelRegistry

from .batching import BatchReport, contiguous_batches
from .ensemble import Ensemble, EnsembleConfig
from .metrics import Scores, evaluate
from .registry import load_ensemble

#: Ensembles already built in this (worker) process, by version: built once, reused per batch.
_WORKER_ENSEMBLES: dict[str, Ensemble] = {}


@dataclass(frozen=True)
class ModelPayload:
    """What a worker needs to rebuild the ensemble: weights (CPU tensors), config, version."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]
    version: str

    @classmethod
    def of(cls, ensemble: Ensemble) -> ModelPayload:
        return cls(ensemble.tensors(), ensemble.config.as_dict(), ensemble.version)

    def build(self) -> Ensemble:
        """The ensemble on this process's device (cached per process)."""
        ensemble = _WORKER_ENSEMBLES.get(self.version)
        if ensemble is None:
            ensemble = Ensemble.from_tensors(
                self.tensors, EnsembleConfig.from_dict(self.config), self.version
            )
            _WORKER_ENSEMBLES[self.version] = ensemble
        return ensemble


def locate_block(
    frames: np.ndarray, pixel_sizes: np.ndarray, model: ModelPayload, threads: int
) -> tuple[list[Atoms], float]:
    """Atoms of a block of frames (n, H, W) at ``pixel_sizes`` (n,) Å/px; and the seconds it took.

    Runs on a dask worker; ``threads`` caps torch's intra-op threads so workers do not
    oversubscribe the cores they share.
    """
    limit_threads(threads)
    t0 = time.perf_counter()
    atoms = model.build().locate(list(np.asarray(frames)), [float(p) for p in pixel_sizes])
    return atoms, time.perf_counter() - t0


@dataclass
class ReprocessResult:
    """Summary of a re-analysis: where the set went, what model, how many frames, how fast.

    ``seconds`` is the compute (cluster ready → last batch written); ``startup_seconds`` the
    cluster start and the model broadcast before it.
    """

    dataset: str
    prediction_set: str
    model_version: str
    frames: int
    frames_processed: int
    atoms: int
    seconds: float
    workers: int
    scheduler: str
    f1: float | None = None
    startup_seconds: float = 0.0
    records: dict[str, str] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["frames_per_second"] = self.frames_per_second
        return out


def default_set_name(version: str) -> str:
    """``<version>-reprocess-<UTC stamp>``: a new set, beside the edge loop's ``<version>``."""
    return f"{version}-reprocess-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}"


class Cluster:
    """A distributed Client on ``scheduler`` or on a LocalCluster started (and stopped) here."""

    def __init__(self, scheduler: str | None, n_workers: int, threads_per_worker: int, processes: bool):
        import logging

        from distributed import Client, LocalCluster

        # The scheduler's and workers' start-up INFO lines (~30 per run) reach the console
        # through Prefect's root handler: warnings and errors are what a user needs from them.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        self.cluster = None
        if scheduler:
            self.client = Client(scheduler, timeout="30s")
        else:
            self.cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=processes,
                dashboard_address=None,
                # Loopback for worker processes; threads talk in-process (inproc://, no host).
                **({"host": "127.0.0.1"} if processes else {}),
            )
            self.client = Client(self.cluster)

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address) if self.client.scheduler else "unknown"

    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def reprocess(
    dataset: str | Path,
    model: str = "production",
    *,
    registry: str | Path | None = None,
    prediction_set: str | None = None,
    scheduler: str | None = None,
    n_workers: int = 1,
    threads_per_worker: int = 1,
    processes: bool = True,
    batch_frames: int = DEFAULTS.batch_size,
    frames: tuple[int, int] | None = None,
    record_in_store: bool = False,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> ReprocessResult:
    """Run model ``model`` (alias or version) over the dataset's frames on dask; write a prediction set.

    ``prediction_set`` names the set (default ``default_set_name``); naming an existing set
    resumes it (frames already in it are skipped). ``frames`` (start, stop) limits the
    positions. ``record_in_store`` adds store records (dataset, model, predictions ``der``
    both) through ``StoreClient.from_env()``.
    """
    if batch_frames < 1:
        raise InputError(f"batch_frames must be ≥ 1, got {batch_frames}")
    path = Path(dataset).resolve()
    reg = ModelRegistry(registry) if registry else ModelRegistry()
    ensemble = load_ensemble(model, reg, device=torch.device("cpu"))
    manifest = reg.manifest(ensemble.version)
    data = Dataset(path)
    n = data.n_frames
    lo, hi = frames if frames is not None else (0, n)
    lo, hi = max(0, lo), min(n, hi)
    name = prediction_set or default_set_name(ensemble.version)
    started = dt.datetime.now(dt.UTC).isoformat()
    writer = data.predictions(
        name,
        attrs={
            # The set's name is free; model_version names the weights that made it.
            "model_version": ensemble.version,
            "config": ensemble.config.as_dict(),
            "provenance": {
                "activity": "reprocess",
                "dataset": str(path),
                "model_version": ensemble.version,
                "model_sha256": manifest.get("weights", {}).get("sha256", ""),
                "model_ref": model,
                "frames": [lo, hi],
                "batch_frames": batch_frames,
                "scheduler": scheduler or "LocalCluster",
                "host": socket.gethostname(),
                "scopeflow": scopeflow.__version__,
                "started": started,
            },
        },
    )
    data.commit()
    done = set(writer.done().tolist())
    todo = [i for i in range(lo, hi) if i not in done]
    batches = contiguous_batches(todo, batch_frames)
    pixel_sizes = data.pixel_sizes(0, n)
    frames_da = open_dataset(path)["frames"].data  # dask array over the Zarr chunks (one per frame)

    import dask

    t_start = time.perf_counter()
    cluster = Cluster(scheduler, n_workers, threads_per_worker, processes)
    atoms_total, scored = 0, []
    try:
        payload = cluster.client.scatter(ModelPayload.of(ensemble), broadcast=True)
        # Import this module (torch, xarray) on every worker now, not inside the first batch.
        cluster.client.run(importlib.import_module, __name__)
        t0 = time.perf_counter()
        # One task per batch: its frames come straight from the Zarr chunks on the worker.
        tasks = [
            dask.delayed(locate_block, pure=False)(
                frames_da[a:b], pixel_sizes[a:b], payload, threads_per_worker
            )
            for a, b in batches
        ]
        futures = cluster.client.compute(tasks)
        for (a, b), future in zip(batches, futures, strict=True):
            atoms, seconds = future.result()
            future.release()
            writer.append(list(range(a, b)), atoms)  # one commit per batch
            atoms_total += sum(len(x) for x in atoms)
            truths = data.truths(a, b)
            scores = None
            if truths is not None:
                scores = evaluate([x.rowcol for x in atoms], [t.rowcol for t in truths], pixel_sizes[a:b])
                scored.append(scores)
            if on_batch is not None:
                on_batch(BatchReport(a, b, atoms, ensemble.version, seconds, scores))
        workers = cluster.workers()
        address = cluster.address
    finally:
        cluster.close()
    seconds = time.perf_counter() - t0
    total = Scores.total(scored)
    result = ReprocessResult(
        str(path),
        name,
        ensemble.version,
        n,
        len(todo),
        atoms_total,
        seconds,
        workers,
        address,
        total.f1 if total is not None else None,
        startup_seconds=t0 - t_start,
    )
    if record_in_store:
        result.records = _record(path, ensemble.version, name, lo, hi)
    prov = dict(writer.group.attrs["provenance"])
    prov.update(
        finished=dt.datetime.now(dt.UTC).isoformat(),
        workers=workers,
        seconds=round(seconds, 3),
        records=result.records,
    )
    writer.group.attrs["provenance"] = prov
    data.commit()
    return result


def _record(path: Path, version: str, name: str, lo: int, hi: int) -> dict[str, str]:
    """Store records: the dataset and model (found by path / version, else created) and the
    new prediction set ``der`` both."""
    from storage.federation.client import StoreClient
    from storage.provenance import record_dataset, record_model, record_prediction

    with StoreClient.from_env() as client:
        by_kind: dict[str, dict[str, str]] = {"dataset": {}, "model": {}}
        for kind, key in (("dataset", "path"), ("model", "version")):
            for item in client.iter_search(md=f'md.kind == "{kind}"'):
                md = item.get("metadata") or {}
                if isinstance(md, dict) and key in md:
                    by_kind[kind][str(md[key])] = item["id"]
        dataset_id = by_kind["dataset"].get(str(path)) or record_dataset(client, path)
        model_id = by_kind["model"].get(version) or record_model(client, version=version)
        prediction_id = record_prediction(
            client,
            dataset=dataset_id,
            model=model_id,
            title=f"re-analysis {name}",
            frame_start=lo,
            frame_end=max(lo, hi - 1),
            metadata={"model_version": version, "path": f"{path}/predictions/{name}"},
            tags=("prediction", "reprocess"),
        )
    return {"dataset": dataset_id, "model": model_id, "prediction": prediction_id}
