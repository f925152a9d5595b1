"""Acquisition flow: N frames from an instrument into a dataset, one task run per batch."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from scopeflow.settings import DEFAULTS
from tasks.acquisition import make_instrument
from tasks.acquisition.loop import BatchResult, acquire_batch, acquire_run


@task(name="acquire-batch", cache_policy=NO_CACHE)
def acquire_batch_task(instrument, writer, first: int, end: int) -> BatchResult:  # type: ignore[no-untyped-def]
    """One committed batch of frames (a task run per batch keeps Prefect off the per-frame path)."""
    return acquire_batch(instrument, writer, first, end)


@flow(name="acquire")
def acquire_flow(
    frames: int,
    dataset: str,
    instrument: str = "twin",
    seed: int = 0,
    drift: str | None = None,
    watch: str | None = None,
    pixel_size: float | None = None,
    batch_size: int = DEFAULTS.batch_size,
    timeout: float = 60.0,
) -> dict:
    """Acquire up to ``frames`` frames into ``dataset`` (resuming), with progress and a summary;
    ``timeout``: seconds the folder instrument waits for each new file."""
    logger = get_run_logger()
    inst = make_instrument(
        instrument,
        seed=seed,
        drift=drift,
        folder=watch,
        pixel_size=pixel_size,
        timeout=timeout,
        report=logger.info,
    )
    progress = create_progress_artifact(
        progress=0.0, key="acquire-progress", description=f"frames into {dataset}"
    )

    def report(result: BatchResult) -> None:
        logger.info(
            "frames %d-%d committed (%.1f frames/s)",
            result.start,
            result.stop - 1,
            (result.stop - result.start) / max(result.seconds, 1e-9),
        )
        update_progress_artifact(progress, 100.0 * result.total / max(frames, 1))

    total = acquire_run(inst, dataset, frames, batch_size, on_batch=report, run_batch=acquire_batch_task)
    update_progress_artifact(progress, 100.0)
    create_markdown_artifact(
        key="acquire-summary",
        markdown=f"## Acquisition\n\n- instrument: `{inst.name}`\n- dataset: `{Path(dataset).resolve()}`\n"
        f"- frames stored: **{total}**\n",
    )
    return {"dataset": str(Path(dataset).resolve()), "frames": total, "instrument": inst.state()}
