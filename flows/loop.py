"""The closed loop on one machine: acquire → edge inference with drift decisions → retraining
→ provenance and data in the federated store. ``scopeflow run`` runs it on the digital twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from scopeflow.settings import DEFAULTS, EdgeSettings
from storage.datasets import DatasetWriter
from storage.models import ModelRegistry
from tasks.acquisition import make_instrument
from tasks.acquisition.loop import acquire_batch, batches
from tasks.drift.edge_loop import EdgeLoop, Escalation
from tasks.drift.pipeline import overlap_pays, run_pipelined
from tasks.inference.batching import BatchReport

from .artifacts import publish_edge_run
from .edge import run_batches
from .retrain import dispatch_retraining

PROGRESS_STEP = 10.0  # percent of the run between progress artifact updates


def _publish(
    dataset: str,
    registry: ModelRegistry,
    versions: list[str],
    decisions: list[BatchReport],
    retrains: list[dict] | None = None,
) -> dict:
    """Records for the dataset, models, predictions, decisions and retraining runs (each
    candidate ``ver`` its parent and ``der`` the run that made it); the dataset synced."""
    from storage.federation.embedded import serve_in_thread
    from storage.federation.push import push_dataset
    from storage.provenance import (
        record_dataset,
        record_decision,
        record_model,
        record_prediction,
        record_training_run,
    )
    from tasks.embedding.ingest import send_to_store

    known = set(registry.versions())
    with serve_in_thread() as store, store.client() as client:
        ds_id = record_dataset(client, dataset)
        send_to_store(client, dataset, ds_id)  # its frames become findable by `store similar`
        models: dict[str, str] = {}
        runs: dict[str, str] = {}  # candidate version -> its training run's record

        def model(version: str) -> str:
            """The version's record, its parent's first (for the ``ver`` link)."""
            if version not in models:
                manifest = registry.manifest(version) if version in known else {}
                parent = manifest.get("parent")
                f1 = manifest.get("metrics", {}).get("validation_f1")
                models[version] = record_model(
                    client,
                    version=version,
                    parent=model(parent) if parent in known else None,
                    produced_by=runs.get(version),
                    training_data=[ds_id] if version in runs else [],
                    metrics={"validation_f1": float(f1)} if isinstance(f1, int | float) else None,
                )
            return models[version]

        recorded: dict[tuple[int, int], str] = {}

        def decision(r: BatchReport) -> str:
            d = r.outcome.decision
            key = (int(d.frame_start), int(d.frame_end))
            if key not in recorded:
                recorded[key] = record_decision(
                    client,
                    dataset=ds_id,
                    frame_start=d.frame_start,
                    frame_end=d.frame_end,
                    detected=True,
                    action=r.outcome.action,
                    scores={k: float(v) for k, v in d.scores.items()},
                    model=model(r.outcome.model_version),
                )
            return recorded[key]

        # The escalation names the decision's last frame (its first may be the batch's).
        by_end = {int(r.outcome.decision.frame_end): r for r in decisions}
        for t in retrains or []:
            candidate = t.get("candidate")
            if candidate not in known:
                continue  # the retraining failed before registering a candidate
            parent = registry.manifest(candidate).get("parent")
            trigger = by_end.get(int(t["frames"][1]))
            validation = t.get("validation") or {}
            runs[candidate] = record_training_run(
                client,
                training_data=[ds_id],
                parent_model=model(parent) if parent in known else None,
                trigger=decision(trigger) if trigger is not None else None,
                status="promoted" if t.get("promoted") else "rejected",
                metrics={f"validation_{k}": float(v) for k, v in validation.items()},
                metadata={"frames": list(t["frames"]), "candidate": candidate, "reason": t.get("reason", "")},
            )
            model(candidate)
        for v in versions:
            record_prediction(client, dataset=ds_id, model=model(v))
        for r in decisions:
            decision(r)
        pushed = push_dataset(client, dataset, record=ds_id)
        return {
            "store_dir": str(store.store_dir),
            "dataset_record": ds_id,
            "models": models,
            "url_while_running": store.url,
            "files_synced": pushed.report.files_sent,
            "bytes_synced": pushed.report.bytes_sent,
            "destination": pushed.report.destination,
        }


@flow(name="loop")
def loop_flow(
    frames: int,
    dataset: str,
    seed: int = 0,
    drift: str | None = "demo",
    batch_size: int = DEFAULTS.batch_size,
    ert: float = DEFAULTS.ert,
    reference_frames: int = DEFAULTS.reference_frames,
    registry: str | None = None,
    retrain_steps: int | None = DEFAULTS.retrain_steps,
    publish: bool = True,
) -> dict:
    """The whole loop on the twin; returns F1 per batch, decisions, retraining outcomes, store ids."""
    logger = get_run_logger()
    reg = ModelRegistry(registry) if registry else ModelRegistry()
    instrument = make_instrument("twin", seed=seed, drift=drift)
    writer = DatasetWriter.open(dataset, instrument.state())
    settings = EdgeSettings(
        ert=ert,
        reference_frames=reference_frames,
        batch_size=batch_size,
        seed=seed,
        retrain_steps=retrain_steps,
    )
    loop = EdgeLoop.open(dataset, registry=reg, settings=settings)  # open across batches
    retrains: list[dict] = []

    def escalate(e: Escalation) -> dict:
        logger.warning(
            "drift not absorbed by selection at frames %d-%d (%s): retraining",
            e.frame_start,
            e.frame_end,
            e.summary,
        )
        result = dispatch_retraining(e, instrument.name, "inprocess", registry, settings.retrain_steps)
        if not result.get("promoted"):
            logger.warning(result["reason"])
        retrains.append({"frames": [e.frame_start, e.frame_end], **result})
        return result

    def log(r: BatchReport) -> None:
        f1 = f"F1 {r.scores.f1:.3f}" if r.scores else ""
        sel = r.outcome.selection
        regime = f", the {sel.regime_name} regime's" if sel is not None and sel.regime_name else ""
        if sel is not None and sel.threshold is not None:
            regime += f" at its threshold {sel.threshold:g}"
        note = (
            f" [{r.outcome.action}: members {list(r.outcome.members)}{regime}]"
            if r.outcome.action != "none"
            else ""
        )
        logger.info("frames %d-%d %s%s", r.start, r.stop - 1, f1, note)

    progress = create_progress_artifact(
        progress=0.0, key="loop-progress", description=f"twin loop into {dataset}"
    )
    shown = [0.0]

    def edge(end: int) -> list[BatchReport]:
        done = run_batches(loop, end, escalate, log)
        # Each update is a call to the API: every PROGRESS_STEP %, not every batch.
        if 100.0 * end / frames >= shown[0] + PROGRESS_STEP or end >= frames:
            shown[0] = 100.0 * end / frames
            update_progress_artifact(progress, shown[0])
        return done

    # The execution trial before the first frame is taken, not inside its latency.
    loop.warm(instrument.shape, float(instrument.conditions(writer.n_frames)["pixel_size"]))
    # Where a core is spare, the next batch is acquired and committed (in a writer thread, not a
    # task run) while this one is inferred; one task run per batch.
    acquired = run_pipelined(
        lambda first, end: acquire_batch(instrument, writer, first, end),
        batches(writer.n_frames, frames, batch_size),
        edge,
        overlap=overlap_pays(),
        committed=lambda: writer.n_frames,
    )
    reports = [r for batch in acquired for r in batch]
    versions = sorted({r.model_version for r in reports})
    out: dict[str, Any] = {
        "dataset": str(Path(dataset).resolve()),
        "frames": writer.n_frames,
        "f1_by_batch": [(r.start, round(r.scores.f1, 4)) for r in reports if r.scores],
        "decisions": [
            {
                "frames": [r.outcome.decision.frame_start, r.outcome.decision.frame_end],
                "action": r.outcome.action,
                "members": list(r.outcome.members),
                "regime": r.outcome.selection.regime_name if r.outcome.selection else None,
                "threshold": r.outcome.selection.threshold if r.outcome.selection else None,
                "scores": r.outcome.decision.scores,
            }
            for r in reports
            if r.outcome.action != "none"
        ],
        "retraining": retrains,
        "model_versions": versions,
        "production": reg.resolve("production"),
    }
    if publish:
        out["store"] = _publish(
            dataset, reg, versions, [r for r in reports if r.outcome.action != "none"], retrains
        )
    images = publish_edge_run("loop", dataset, reports)
    create_markdown_artifact(key="loop-summary", markdown=_markdown(out, images))
    return out


def _markdown(out: dict, images: list[tuple[str, str]]) -> str:
    rows = "\n".join(f"| {start} | {f1:.4f} |" for start, f1 in out["f1_by_batch"])
    decisions = (
        "\n".join(
            f"- frames {d['frames'][0]}–{d['frames'][1]}: **{d['action']}**, members {d['members']}"
            for d in out["decisions"]
        )
        or "- none"
    )
    retrains = (
        "\n".join(f"- frames {r['frames'][0]}–{r['frames'][1]}: {r['reason']}" for r in out["retraining"])
        or "- none"
    )
    return (
        f"## Loop on the twin\n\n- dataset `{out['dataset']}` ({out['frames']} frames)\n"
        f"- production model now `{out['production']}`\n\n### Drift decisions\n{decisions}\n\n"
        f"### Retraining\n{retrains}\n\n### F1 over time\n| first frame | F1 |\n|---|---|\n{rows}\n"
        + "".join(f"\n![{caption}]({url})\n" for caption, url in images)
    )
