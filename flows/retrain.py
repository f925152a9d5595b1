"""Cloud retraining flow: started by a ``scopeflow.drift.detected`` event (or in-process by the loop)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import DeploymentEventTrigger

from storage.models import ModelRegistry
from tasks.training.retrain import RetrainOutcome, retrain

DRIFT_EVENT = "scopeflow.drift.detected"


def drift_trigger() -> DeploymentEventTrigger:
    """The retrain deployment's trigger: any instrument's drift event, parameters from its payload.

    deployments/prefect.yaml declares the same trigger (a test keeps the two in step).
    """
    return DeploymentEventTrigger(
        enabled=True,
        match={"prefect.resource.id": "scopeflow.instrument.*"},
        expect={DRIFT_EVENT},
        parameters={
            "dataset": "{{ event.payload.dataset }}",
            "frame_start": "{{ event.payload.frame_start }}",
            "frame_end": "{{ event.payload.frame_end }}",
            "members": "{{ event.payload.members }}",
        },
    )


def parse_members(members: str | list[int] | None) -> list[int] | None:
    """Members as a list from an event's comma-separated text (or a list already)."""
    if members is None or isinstance(members, list):
        return members
    text = str(members).strip()
    return [int(m) for m in text.split(",") if m.strip()] or None


@task(name="fine-tune-validate-promote", cache_policy=NO_CACHE)
def retrain_task(
    dataset: str,
    frame_start: int,
    frame_end: int,
    members: list[int] | None,
    registry: str | None,
    steps: int,
) -> RetrainOutcome:
    """The whole retraining run (one task: it is one unit of GPU work)."""
    logger = get_run_logger()
    return retrain(
        dataset,
        frame_start,
        frame_end,
        registry=ModelRegistry(registry) if registry else None,
        members=members,
        steps=steps,
        log=logger.info,
    )


@flow(name="retrain")
def retrain_flow(
    dataset: str,
    frame_start: int,
    frame_end: int,
    members: str | None = None,
    registry: str | None = None,
    steps: int = 120,
) -> dict:
    """Fine-tune production on drifted frames; promote only a validated, better candidate.

    ``members`` are the production members still trusted, comma-separated (from the event).
    """
    outcome = retrain_task(dataset, frame_start, frame_end, parse_members(members), registry, steps)
    get_run_logger().info(outcome.reason)
    create_markdown_artifact(
        key="retrain-outcome",
        markdown=f"## Retraining\n\n- frames {frame_start}–{frame_end} of `{dataset}`\n"
        f"- candidate `{outcome.candidate}`\n- production now `{outcome.production}`\n- {outcome.reason}\n",
    )
    return {
        "candidate": outcome.candidate,
        "promoted": outcome.promoted,
        "production": outcome.production,
        "reason": outcome.reason,
        "validation": outcome.metrics.get("validation", {}),
    }
