"""Cloud retraining flow: started by a ``scopeflow.drift.detected`` event (or in-process by the loop)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import DeploymentEventTrigger

from scopeflow.settings import DEFAULTS
from storage.models import ModelRegistry
from tasks.drift.edge_loop import Escalation
from tasks.training.retrain import RetrainOutcome, retrain

from .events import DRIFT_EVENT, emit_drift


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
    steps: int | None,
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
    steps: int | None = DEFAULTS.retrain_steps,
) -> dict:
    """Fine-tune production on drifted frames; promote only a validated, better candidate.

    ``members`` are the production members still trusted, comma-separated (from the event);
    ``steps`` None: the budget of the device the retraining runs on (a GPU's on the cloud pool).
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


def dispatch_retraining(
    escalation: Escalation,
    instrument: str,
    mode: str,
    registry: str | None = None,
    steps: int | None = DEFAULTS.retrain_steps,
) -> dict:
    """Hand drift that selection could not absorb to retraining: one decision, two dispatches.

    The event ``scopeflow.drift.detected`` is always emitted (a deployed ``retrain`` listens);
    ``mode="inprocess"`` (embedded defaults, no server) also runs the retraining as a subflow run
    of the calling flow (call this from the flow, not from a task) and returns its outcome; ``mode="report"`` only says that retraining is needed. A failed retraining is reported, never raised: the edge goes on
    with the version it has.
    """
    e = escalation
    members = ",".join(map(str, e.members))
    attribution = {"changed": ";".join(e.changed), "summary": e.summary, **e.attribution}
    emit_drift(
        instrument,
        e.dataset,
        e.frame_start,
        e.frame_end,
        list(e.members),
        e.scores,
        e.model_version,
        attribution,
    )
    if mode == "report":  # no server, retraining not asked for: say so rather than retrain
        return {
            "promoted": False,
            "reason": f"drift at frames {e.frame_start}-{e.frame_end} needs retraining: re-run with "
            "--retrain, or `scopeflow up` so the retrain deployment takes the event",
        }
    if mode != "inprocess":
        return {"promoted": False, "reason": f"event {DRIFT_EVENT} emitted for the retrain deployment"}
    state = retrain_flow(e.dataset, e.frame_start, e.frame_end, members, registry, steps, return_state=True)
    if state.is_completed():
        return state.result()
    return {"promoted": False, "reason": f"retraining failed ({state.message}); kept production"}


def default_dispatch() -> str:
    """``event`` when a Prefect server is configured (a deployment can pick it up), else ``inprocess``."""
    import os

    return "event" if os.environ.get("PREFECT_API_URL") else "inprocess"
