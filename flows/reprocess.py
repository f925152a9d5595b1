"""Re-analysis as a Prefect flow: ``tasks.inference.reprocess.reprocess`` on dask, with artifacts
in the UI (a per-batch table, progress, an atom overlay, F1 over frames, a summary with links)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from scopeflow.settings import DEFAULTS
from storage.datasets import open_dataset
from tasks.inference.batching import BatchReport
from tasks.inference.reprocess import reprocess


@flow(name="reprocess")
def reprocess_flow(
    dataset: str,
    model: str = "production",
    registry: str | None = None,
    prediction_set: str | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    batch_frames: int = DEFAULTS.batch_size,
    record_in_store: bool = False,
) -> dict[str, Any]:
    """Re-analyse ``dataset`` with ``model`` on dask (see ``reprocess``), with artifacts in the UI:
    a per-batch table, progress, an atom overlay, F1 over frames and a summary with links.
    ``n_workers`` None: one worker per ``threads_per_worker`` cores of a LocalCluster here;
    ignored with ``scheduler``."""
    from flows.artifacts import BatchTable, Progress, artifact_key, publish_figure, publish_summary
    from tasks.reporting import atom_overlay, f1_timeline

    logger = get_run_logger()
    total = max(1, int(open_dataset(dataset).sizes.get("frame", 0)))
    table = BatchTable("reprocess-batches", f"re-analysis of {dataset}")
    progress = Progress("reprocess-progress", f"frames of {dataset}")
    f1_points: list[tuple[int, float]] = []
    done = 0
    last: BatchReport | None = None

    def report(batch: BatchReport) -> None:
        nonlocal done, last
        done += batch.stop - batch.start
        last = batch
        table.add(
            frame_start=batch.start,
            frame_end=batch.stop - 1,
            atoms=batch.atom_count,
            model_version=batch.model_version,
            uncertainty=batch.mean_uncertainty,
            seconds=batch.seconds,
            f1=batch.scores.f1 if batch.scores is not None else None,
        )
        if batch.scores is not None:
            f1_points.append((batch.stop - 1, batch.scores.f1))
        progress.update(done, total)
        logger.info(
            "frames %d-%d: %d atoms (%.2f s)", batch.start, batch.stop - 1, batch.atom_count, batch.seconds
        )

    result = reprocess(
        dataset,
        model,
        registry=registry,
        prediction_set=prediction_set,
        scheduler=scheduler,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        batch_frames=batch_frames,
        record_in_store=record_in_store,
        on_batch=report,
    )
    table.publish()
    progress.update(1, 1)
    images: list[tuple[str, str]] = []
    if last is not None and last.atoms:
        ds = open_dataset(dataset)
        i = last.stop - 1
        png = atom_overlay(
            ds["frames"].isel(frame=i).values,
            last.atoms[-1].rowcol,
            last.atoms[-1].uncertainty,
            title=f"frame {i}: {len(last.atoms[-1])} columns ({result.model_version})",
            pixel_size=float(ds["pixel_size"].values[i]),
        )
        images.append(("atom overlay", publish_figure("reprocess-overlay", png, f"frame {i}")))
    if f1_points:
        png = f1_timeline(
            [p[0] for p in f1_points], [p[1] for p in f1_points], [result.model_version] * len(f1_points)
        )
        images.append(("F1 over frames", publish_figure("reprocess-f1", png, "F1 against ground truth")))
    facts = {
        "dataset": f"`{result.dataset}`",
        "prediction set": f"`predictions/{result.prediction_set}`",
        "model": f"`{result.model_version}`",
        "frames processed": f"{result.frames_processed} of {result.frames}",
        "atoms": result.atoms,
        "dask workers": f"{result.workers} at `{result.scheduler}`",
        "throughput": f"{result.frames_per_second:.1f} frames/s",
    }
    if result.f1 is not None:
        facts["F1 against truth"] = f"{result.f1:.4f}"
    publish_summary(
        artifact_key("reprocess-summary"),
        "Re-analysis",
        facts,
        links={caption: url for caption, url in images},
        images=images,
    )
    return result.as_dict()
