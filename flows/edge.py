"""Edge flow: inference and drift decisions over a dataset's frames, one task run per batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from storage.datasets import frame_count
from storage.models import ModelRegistry
from tasks.drift.edge_loop import (
    BatchReport,
    EdgeLoopSettings,
    EdgeState,
    Escalation,
    new_state,
    run_adaptive_edge,
    summarize,
)
from tasks.embedding.ingest import embed_missing
from tasks.inference.registry import load_ensemble

from .artifacts import publish_edge_run
from .retrain import default_dispatch, dispatch_retraining


@task(name="edge-batch", cache_policy=NO_CACHE)
def edge_batch_task(
    dataset: str,
    state: EdgeState,
    registry: ModelRegistry,
    settings: EdgeLoopSettings,
    stop_at: int,
    escalate: Callable[[Escalation], Any] | None,
) -> list[BatchReport]:
    """Atoms and a drift decision for the frames before ``stop_at`` not yet decided."""
    reports: list[BatchReport] = []
    embed_missing(dataset)  # frames another writer appended have no embeddings yet
    run_adaptive_edge(
        dataset,
        registry=registry,
        settings=settings,
        state=state,
        stop_at=stop_at,
        escalate=escalate,
        on_batch=reports.append,
    )
    return reports


@flow(name="edge")
def edge_flow(
    dataset: str,
    model: str = "production",
    batch_size: int = 16,
    registry: str | None = None,
    ert: float = 1000.0,
    reference_frames: int = 64,
    instrument: str = "twin",
    dispatch: str | None = None,
) -> dict:
    """Locate atoms and decide about drift for every frame of ``dataset`` not yet decided.

    ``dispatch``: ``event`` (emit ``scopeflow.drift.detected`` for the retrain deployment) or
    ``inprocess`` (also retrain here); default: ``event`` when a Prefect server is configured.
    """
    logger = get_run_logger()
    reg = ModelRegistry(registry) if registry else ModelRegistry()
    mode = dispatch or default_dispatch()
    settings = EdgeLoopSettings(ert=ert, reference_frames=reference_frames, batch_size=batch_size)
    ensemble = load_ensemble(model, reg)
    state = new_state(ensemble, settings, reg)
    logger.info(
        "model %s (%d members) on %s; retraining by %s", ensemble.version, ensemble.members, dataset, mode
    )

    def escalate(e: Escalation) -> dict:
        logger.warning(
            "drift not absorbed by selection at frames %d-%d (%s)", e.frame_start, e.frame_end, e.summary
        )
        result = dispatch_retraining(e, instrument, mode, registry)
        logger.info(result["reason"])
        return result

    n = frame_count(dataset)
    reports: list[BatchReport] = []
    for stop in range(batch_size, n + batch_size, batch_size):
        batch = edge_batch_task(
            dataset, quote(state), quote(reg), quote(settings), min(stop, n), quote(escalate)
        )
        for r in batch:
            d = r.outcome.decision
            if d.detected:
                logger.warning(
                    "drift at frame %d (%s): %s → %s",
                    d.first_alarm,
                    ", ".join(d.fired()),
                    d.summary,
                    r.outcome.action,
                )
        reports += batch
    summary = summarize(Path(dataset), state.adaptive, reports)
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
