"""Edge inference flow: the ensemble over a dataset's frames, one task run per batch."""

from __future__ import annotations

from pathlib import Path

import xarray as xr
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from storage.datasets.predictions import PredictionWriter
from storage.models import ModelRegistry, load_ensemble
from tasks.inference.edge import EdgeBatch, infer_batch, run_edge
from tasks.inference.ensemble import Ensemble


@task(name="infer-batch", cache_policy=NO_CACHE)
def infer_batch_task(
    ds: xr.Dataset, ensemble: Ensemble, writer: PredictionWriter, start: int, stop: int
) -> EdgeBatch:
    """Atoms of one batch of frames, written to the dataset (a task run per batch, not per frame)."""
    return infer_batch(ds, ensemble, writer, start, stop)


@flow(name="edge")
def edge_flow(
    dataset: str, model: str = "production", batch_size: int = 32, registry: str | None = None
) -> dict:
    """Locate atoms in every frame of ``dataset`` not yet predicted by ``model``; summarise."""
    logger = get_run_logger()
    ensemble = load_ensemble(model, ModelRegistry(registry) if registry else None)
    logger.info("model %s (%d members) on %s", ensemble.version, ensemble.members, dataset)

    def report(batch: EdgeBatch) -> None:
        f1 = f", F1 {batch.scores.f1:.3f}" if batch.scores is not None else ""
        logger.info(
            "frames %d-%d: %d atoms in %.2f s%s", batch.start, batch.stop - 1, batch.atoms, batch.seconds, f1
        )

    def run_batch(
        ds: xr.Dataset, ens: Ensemble, writer: PredictionWriter, start: int, stop: int
    ) -> EdgeBatch:
        # quote(): Prefect must not walk into the dataset, the network or the writer.
        return infer_batch_task(quote(ds), quote(ens), quote(writer), start, stop)

    summary = run_edge(dataset, ensemble, batch_size, on_batch=report, run_batch=run_batch)
    f1 = f"- F1 against truth: **{summary['f1']:.4f}**\n" if "f1" in summary else ""
    create_markdown_artifact(
        key="edge-summary",
        markdown=f"## Edge inference\n\n- dataset: `{Path(dataset).resolve()}`\n- model: `{summary['model_version']}`\n"
        f"- frames processed: **{summary['frames_processed']}** of {summary['frames']}\n"
        f"- atoms found: **{summary['atoms']}**\n{f1}",
    )
    return summary
