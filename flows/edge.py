"""Edge flow: inference and drift decisions over a dataset's frames, one task run per batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from scopeflow.settings import DEFAULTS, EdgeSettings
from storage.models import ModelRegistry
from tasks.drift.edge_loop import EdgeLoop, Escalation
from tasks.embedding.ingest import embed_missing
from tasks.inference.batching import BatchReport

from .artifacts import publish_edge_run
from .retrain import default_dispatch, dispatch_retraining


@task(name="edge-batch", cache_policy=NO_CACHE)
def edge_batch_task(loop: EdgeLoop, stop_at: int) -> list[BatchReport]:
    """Atoms and a drift decision for the next batch of frames before ``stop_at`` ([] when none).

    Returns data; an escalation in it is the flow's to dispatch. The loop forgets a batch that
    failed before its commit, so a retry continues from the committed state.
    """
    return loop.advance(stop_at, max_batches=1)


def run_batches(
    loop: EdgeLoop, stop_at: int, escalate: Callable[[Escalation], Any], log: Callable[[BatchReport], None]
) -> list[BatchReport]:
    """Edge batches up to ``stop_at``, one task run each; retraining dispatched from the flow
    (its own run) before the next batch, so a promoted model is adopted there."""
    reports: list[BatchReport] = []
    while loop.next_frame < stop_at and (batch := edge_batch_task(quote(loop), stop_at)):
        for r in batch:
            log(r)
            if r.escalation is not None:
                r.retrain = escalate(r.escalation)
        reports += batch
    return reports


@flow(name="edge")
def edge_flow(
    dataset: str,
    model: str = "production",
    batch_size: int = DEFAULTS.batch_size,
    registry: str | None = None,
    ert: float = DEFAULTS.ert,
    reference_frames: int = DEFAULTS.reference_frames,
    instrument: str = "twin",
    dispatch: str | None = None,
) -> dict:
    """Locate atoms and decide about drift for every frame of ``dataset`` not yet decided.

    ``dispatch``: ``event`` (emit ``scopeflow.drift.detected`` for the retrain deployment) or
    ``inprocess`` (also retrain here, as a subflow run); default: ``event`` when a Prefect server
    is configured.
    """
    logger = get_run_logger()
    reg = ModelRegistry(registry) if registry else ModelRegistry()
    mode = dispatch or default_dispatch()
    settings = EdgeSettings(ert=ert, reference_frames=reference_frames, batch_size=batch_size)
    loop = EdgeLoop.open(dataset, model, registry=reg, settings=settings)
    ensemble = loop.adaptive.ensemble
    logger.info(
        "model %s (%d members) on %s; retraining by %s", ensemble.version, ensemble.members, dataset, mode
    )

    def escalate(e: Escalation) -> dict:
        logger.warning(
            "drift not absorbed by selection at frames %d-%d (%s)", e.frame_start, e.frame_end, e.summary
        )
        result = dispatch_retraining(e, instrument, mode, registry, settings.retrain_steps)
        logger.info(result["reason"])
        return result

    def log(r: BatchReport) -> None:
        d = r.outcome.decision
        if d.detected:
            logger.warning(
                "drift at frame %d (%s): %s → %s",
                d.first_alarm,
                ", ".join(d.fired()),
                d.summary,
                r.outcome.action,
            )

    stop_at = loop.data.n_frames
    # Frames another writer appended have no embeddings yet: once for all, not per batch (it
    # opens the dataset), before the frames this run decides.
    embed_missing(str(loop.path))
    reports = run_batches(loop, stop_at, escalate, log)
    summary = loop.summary(reports)
    summary["retraining"] = [r.retrain for r in reports if r.retrain is not None]
    logger.info("drift monitor: %s", summary["monitor"])
    f1 = f"- F1 against truth: **{summary['f1']:.4f}**\n" if "f1" in summary else ""
    actions = (
        "".join(f"- frame {start}: {action}\n" for start, action in summary["actions"]) or "- no drift\n"
    ) + "".join(f"- drift at frame {frame}: {text}\n" for frame, text in summary["attributions"])
    actions += f"- monitor: {summary['monitor']}\n"
    images = publish_edge_run("edge", dataset, reports)
    figures = "".join(f"\n![{caption}]({url})\n" for caption, url in images)
    create_markdown_artifact(
        key="edge-summary",
        markdown=f"## Edge inference\n\n- dataset: `{Path(dataset).resolve()}`\n- model: `{summary['model_version']}`\n"
        f"- frames processed: **{summary['frames_processed']}**\n- atoms found: **{summary['atoms']}**\n{f1}"
        f"\n### Drift decisions\n{actions}{figures}",
    )
    return summary
