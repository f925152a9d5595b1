"""Re-analyse an archived dataset with a chosen model version over dask.distributed (plain Python;
``flows/reprocess.py`` wraps it in a flow with artifacts).

The frame positions still to do are cut into batches of ``batch_frames`` the way the edge
loop cuts them (``batching.contiguous_batches``); each batch is one dask task that reads
its frames, pixel sizes and truth from the dataset's Zarr store by position, runs the
ensemble and scores it against the truth, all on the worker. Only the positions go out and
only the atoms and scores come back, so the driver does nothing per batch but append and
commit. The model goes to every worker once (``ModelOnWorkers``, a worker plugin) and is
built once per worker process, so the workers need the dataset's directory (a shared
filesystem when scaled out) but not the model registry. The driver writes the atoms back in frame order as
a new prediction set ``predictions/<set name>`` of the dataset, with provenance in the
set's attributes (and as store records when asked).

A ``LocalCluster`` (``n_workers`` processes of ``threads_per_worker`` threads, by default one
single-threaded worker per core) is started and stopped around the run unless ``scheduler``
names a running scheduler (``tcp://host:8786``) to scale out on.

Where a worker's time went, measured on the 2-core machine (benchmarks/README.md, 2026-11-30):
dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; glibc then stops raising its
mmap threshold, so every tensor over 128 KiB is a fresh mmap, zero-filled page by page
(~28,000 page faults per 256² frame): the kernel time equalled the user time and a frame cost
2.2× its in-process CPU. Each worker also measures the network's execution paths on its first
batch (``execution``: 5–20 s per worker at one thread on a busy machine), which the warm-up
now does before the clock starts, once per batch length.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from distributed.diagnostics.plugin import WorkerPlugin

import scopeflow
from scopeflow.atoms import Atoms
from scopeflow.errors import InputError, NotFoundError
from scopeflow.settings import DEFAULTS, limit_threads
from storage.datasets import Dataset
from storage.models import ModelRegistry

from .batching import BatchReport, contiguous_batches
from .ensemble import Ensemble, EnsembleConfig
from .metrics import Scores, evaluate
from .registry import load_ensemble

log = logging.getLogger(__name__)

#: Ensembles already built in this (worker) process, by version: built once, reused per batch.
_WORKER_ENSEMBLES: dict[str, Ensemble] = {}
#: This (worker) process's read handles on datasets, by path: opened once, refreshed as they grow.
_WORKER_DATASETS: dict[str, Dataset] = {}
#: dask's nanny sets this in its workers' environment (``distributed.nanny.pre-spawn-environ``);
#: see the module docstring for what it costs torch.
MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"


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


class ModelOnWorkers(WorkerPlugin):
    """Builds the ensemble in every worker process of a cluster, in those that join later too.

    The model reaches the workers this way rather than as an argument of every task: tasks with
    no data to wait for are handed out by the scheduler as workers free up (a task that
    depended on one scattered model was placed by guesswork before any had finished: both
    batches of a 16-frame run went to the same one of two workers). The plugin stays
    registered (a few MB per version on a standing cluster), so runs of the same version may
    overlap.
    """

    def __init__(self, payload: ModelPayload) -> None:
        self.payload = payload
        self.name = f"scopeflow-model-{payload.version}"

    def setup(self, worker: Any) -> None:
        self.payload.build()


def worker_ensemble(version: str) -> Ensemble:
    """The ensemble ``version`` built in this process (``ModelOnWorkers``, ``ModelPayload.build``)."""
    ensemble = _WORKER_ENSEMBLES.get(version)
    if ensemble is None:
        raise NotFoundError(f"model {version} is not on this worker (register ModelOnWorkers first)")
    return ensemble


def _worker_dataset(path: str, stop: int) -> Dataset:
    """This process's read handle on the dataset at ``path``, refreshed when ``stop`` lies beyond
    the frames it saw committed (a standing cluster serves runs over a growing dataset)."""
    data = _WORKER_DATASETS.get(path)
    if data is None:
        data = _WORKER_DATASETS[path] = Dataset(path)
    if stop > data.n_frames:
        data.refresh()
    return data


@dataclass(frozen=True)
class Block:
    """What a worker sends back for frames [start, stop): their atoms, the scores against truth
    (None without truth) and the seconds the ensemble took (wall, on the worker)."""

    atoms: list[Atoms]
    scores: Scores | None
    seconds: float


def locate_block(path: str, start: int, stop: int, version: str, threads: int) -> Block:
    """Atoms of the dataset's frames [start, stop), read here from its Zarr store, scored against
    its truth when it has some, with the ensemble ``version`` built in this process.

    Runs on a dask worker; ``threads`` caps torch's intra-op threads so workers do not
    oversubscribe the cores they share.
    """
    limit_threads(threads)
    data = _worker_dataset(path, stop)
    frames, pixel_sizes = data.frames(start, stop), data.pixel_sizes(start, stop)
    if len(frames) != stop - start:
        raise InputError(f"{path}: frames {start}..{stop - 1} asked for, {data.n_frames} committed")
    t0 = time.perf_counter()
    try:
        atoms = worker_ensemble(version).locate(list(frames), [float(p) for p in pixel_sizes])
    except InputError as exc:  # its frame numbers count from the batch's first
        raise InputError(f"{path}, batch of frames {start}..{stop - 1}: {exc}") from exc
    seconds = time.perf_counter() - t0
    truths = data.truths(start, stop)
    scores = None
    if truths is not None:
        scores = evaluate([x.rowcol for x in atoms], [t.rowcol for t in truths], pixel_sizes)
    return Block(atoms, scores, seconds)


def warm_worker(path: str, start: int, stop: int, version: str, threads: int) -> None:
    """Run the network of the ensemble ``version`` built in this process once on frames [start, stop)
    (the execution trial for that batch shape happens here, before the run's clock starts)."""
    limit_threads(threads)
    data = _worker_dataset(path, stop)
    worker_ensemble(version).outputs(
        list(data.frames(start, stop)), [float(p) for p in data.pixel_sizes(start, stop)]
    )


@dataclass
class ReprocessResult:
    """Summary of a re-analysis: where the set went, what model, how many frames, how fast.

    ``seconds`` is the compute (workers warm → last batch written); ``startup_seconds`` the
    cluster start, the model broadcast and the workers' warm-up before it.
    ``worker_cpu_seconds`` the CPU seconds (user + system) each worker process spent in
    ``seconds``, by worker address (thread workers share one process: each shows its total);
    ``driver_cpu_seconds`` this process's over the same time (a LocalCluster's scheduler and
    nannies run here too). CPU per frame stays flat as workers are added when the work scales,
    whatever else the machine runs.
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
    worker_cpu_seconds: dict[str, float] = field(default_factory=dict)
    driver_cpu_seconds: float = 0.0

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
    """A distributed Client on ``scheduler`` or on a LocalCluster started (and stopped) here.

    ``n_workers`` None: one worker per ``threads_per_worker`` cores (a worker's tasks run torch
    on that many threads, so the workers together fill the cores and no more).
    """

    def __init__(
        self, scheduler: str | None, n_workers: int | None, threads_per_worker: int, processes: bool
    ):
        import dask
        from distributed import Client, LocalCluster

        # The scheduler's and workers' start-up INFO lines (~30 per run) reach the console
        # through Prefect's root handler: warnings and errors are what a user needs from them.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        self.cluster = None
        if scheduler:
            self.client = Client(scheduler, timeout="30s")
        else:
            if n_workers is None:
                n_workers = max(1, (os.cpu_count() or 1) // max(1, threads_per_worker))
            # None unsets it (nanny's documented override): the module docstring says why.
            with dask.config.set({f"distributed.nanny.pre-spawn-environ.{MALLOC_TRIM}": None}):
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

    def workers(self) -> list[str]:
        """The addresses of the workers the scheduler knows now."""
        return sorted(self.client.scheduler_info().get("workers", {}))

    def warn_slow_workers(self) -> None:
        """Log a warning naming the workers started with dask's malloc trim setting (a cluster
        started elsewhere, or a shell that exports it): each frame costs them about twice the
        CPU (module docstring)."""
        slow = sorted(w for w, v in self.client.run(os.environ.get, MALLOC_TRIM).items() if v is not None)
        if slow:
            log.warning(
                "%d of the cluster's workers run with %s set (%s): torch pays a page fault per "
                "allocation there; start them without it (deployments/README.md)",
                len(slow),
                MALLOC_TRIM,
                ", ".join(slow[:3]) + (" ..." if len(slow) > 3 else ""),
            )

    def cpu_seconds(self) -> dict[str, float]:
        """Each worker process's CPU seconds (user + system) so far, by worker address."""
        return dict(self.client.run(time.process_time))

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
    n_workers: int | None = None,
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
    positions. ``n_workers`` None: one worker per ``threads_per_worker`` cores (``Cluster``).
    ``record_in_store`` adds store records (dataset, model, predictions ``der``
    both) through ``StoreClient.from_env()``.
    """
    if batch_frames < 1:
        raise InputError(f"batch_frames must be ≥ 1, got {batch_frames}")
    if n_workers is not None and n_workers < 1:
        raise InputError(f"workers must be ≥ 1, got {n_workers}")
    if threads_per_worker < 1:
        raise InputError(f"threads per worker must be ≥ 1, got {threads_per_worker}")
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
    where = str(path)

    t_start = time.perf_counter()
    cluster = Cluster(scheduler, n_workers, threads_per_worker, processes)
    atoms_total, scored = 0, []
    try:
        cluster.warn_slow_workers()
        cluster.client.register_plugin(ModelOnWorkers(ModelPayload.of(ensemble)))
        # Every worker runs the execution trial of each batch length (a trial is per shape)
        # before the clock starts; a worker joining later does it in its first batch.
        first_of_length = {b - a: (a, b) for a, b in reversed(batches)}
        warm = [
            cluster.client.submit(
                warm_worker, where, a, b, ensemble.version, threads_per_worker, workers=[w], pure=False
            )
            for w in cluster.workers()
            for a, b in first_of_length.values()
        ]
        cluster.client.gather(warm)
        del warm
        cpu0, driver0 = cluster.cpu_seconds(), time.process_time()
        t0 = time.perf_counter()
        futures = [
            cluster.client.submit(locate_block, where, a, b, ensemble.version, threads_per_worker, pure=False)
            for a, b in batches
        ]
        # The driver only appends and commits, in frame order (one commit per batch).
        for (a, b), future in zip(batches, futures, strict=True):
            block: Block = future.result()
            future.release()
            writer.append(list(range(a, b)), block.atoms)
            atoms_total += sum(len(x) for x in block.atoms)
            if block.scores is not None:
                scored.append(block.scores)
            if on_batch is not None:
                on_batch(BatchReport(a, b, block.atoms, ensemble.version, block.seconds, block.scores))
        seconds = time.perf_counter() - t0
        driver_cpu = time.process_time() - driver0
        cpu1 = cluster.cpu_seconds()
        worker_cpu = {w: round(cpu1[w] - cpu0.get(w, 0.0), 3) for w in cpu1}
        workers = len(cluster.workers())
        address = cluster.address
    finally:
        cluster.close()
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
        worker_cpu_seconds=worker_cpu,
        driver_cpu_seconds=driver_cpu,
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
