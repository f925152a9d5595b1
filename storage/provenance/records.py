"""Record builders for the loop's artefacts, each validated by a versioned JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from scopeflow.errors import NotFoundError

_NUM = {"type": "number"}
_STR = {"type": "string"}

#: The JSON Schemas the builders name; registered by ``ensure_schemas``. Bump the suffix on change.
SCHEMAS: dict[str, dict[str, Any]] = {
    "scopeflow/dataset-1": {
        "type": "object",
        "required": ["kind", "format", "path"],
        "properties": {
            "kind": {"const": "dataset"},
            "format": {"enum": ["zarr", "directory", "file"]},
            "path": _STR,
            "n_frames": {"type": "integer", "minimum": 0},
            "pixel_size": {**_NUM, "exclusiveMinimum": 0},
            "instrument": _STR,
            "material": _STR,
        },
    },
    # dataset-2: what a search finds a dataset by (conditions, models, drift), see dataset_summary.
    "scopeflow/dataset-2": {
        "type": "object",
        "required": ["kind", "format", "path"],
        "properties": {
            "kind": {"const": "dataset"},
            "format": {"enum": ["zarr", "directory", "file"]},
            "path": _STR,
            "n_frames": {"type": "integer", "minimum": 0},
            "pixel_size": {**_NUM, "exclusiveMinimum": 0},
            "instrument": _STR,
            "instrument_kind": _STR,
            "material": {"anyOf": [_STR, {"type": "array", "items": _STR}]},
            "lattice": {"type": "array", "items": _STR},
            "conditions": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"min": _NUM, "max": _NUM},
                },
            },
            "model_versions": {"type": "array", "items": _STR},
            "drift_score": _NUM,
            "drift_events": {"type": "array", "items": {"type": "object"}},
        },
    },
    "scopeflow/prediction-1": {
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {"const": "prediction"},
            "frame_start": {"type": "integer", "minimum": 0},
            "frame_end": {"type": "integer", "minimum": 0},
            "model_version": _STR,
            "path": _STR,
        },
    },
    "scopeflow/model-1": {
        "type": "object",
        "required": ["kind", "version"],
        "properties": {
            "kind": {"const": "model"},
            "version": _STR,
            "metrics": {"type": "object"},
            "path": _STR,
        },
    },
    "scopeflow/drift-decision-1": {
        "type": "object",
        "required": ["kind", "frame_start", "frame_end", "detected", "action"],
        "properties": {
            "kind": {"const": "drift_decision"},
            "frame_start": {"type": "integer", "minimum": 0},
            "frame_end": {"type": "integer", "minimum": 0},
            "detected": {"type": "boolean"},
            "action": {"enum": ["none", "select", "retrain"]},
            "scores": {"type": "object", "additionalProperties": _NUM},
        },
    },
    "scopeflow/training-run-1": {
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {"const": "training_run"},
            "status": {"enum": ["running", "completed", "failed", "rejected", "promoted"]},
            "metrics": {"type": "object"},
        },
    },
}


class Client(Protocol):
    """The part of ``StoreClient`` these helpers use."""

    def create_record(self, title: str, **kwargs: Any) -> dict[str, Any]: ...
    def put_schema(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


def ensure_schemas(client: Client) -> None:
    """Register the provenance schemas (registering the same body again is a no-op).

    A ConflictError means another schema holds one of these names: an error, never taken
    for the same schema.
    """
    for name, body in SCHEMAS.items():
        client.put_schema(name, body)


def _create(
    client: Client, title: str, schema: str, md: dict[str, Any], deps: list[tuple[str, str]], **kw: Any
) -> str:
    try:
        return client.create_record(title, metadata=md, md_schema=schema, dependencies=deps, **kw)["id"]
    except NotFoundError as error:
        if not str(error).startswith("no schema"):
            raise
        # First use against a fresh store: register the schemas once and try again.
        ensure_schemas(client)
        return client.create_record(title, metadata=md, md_schema=schema, dependencies=deps, **kw)["id"]


def _zarr_attrs(path: Path) -> dict[str, Any]:
    """Scalar attributes of a Zarr v3 group (read from ``zarr.json``, no zarr import)."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return {}
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in list(attrs.items())[:64] if isinstance(v, str | int | float | bool)}


#: What the twin's lattices are, in the words a search uses (``md.material == "MoS2"``).
MATERIALS = {"graphene": "graphene", "mos2": "MoS2", "perovskite": "SrTiO3"}


def dataset_summary(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Searchable metadata of a scopeflow dataset, and tags, read from the dataset itself:
    instrument, frame count, median pixel size (Å), lattices and materials, each numeric
    condition's range, the model versions with predictions, and the drift decisions
    (``drift_score``: the largest detector score, in multiples of its threshold, so > 1 fired;
    ``drift_events``: the batches where drift was detected). Empty for other directories and
    for Zarr groups scopeflow did not write."""
    import numpy as np
    import zarr
    from zarr.storage import LocalStore

    from storage.datasets import open_dataset
    from storage.datasets.decisions import read_decisions

    path = Path(path)
    if "scopeflow_schema" not in _zarr_attrs(path):  # not a dataset scopeflow wrote
        return {}, []
    ds = open_dataset(path)
    md: dict[str, Any] = {"n_frames": int(ds.sizes.get("frame", 0))}
    tags: list[str] = []
    instrument = ds.attrs.get("instrument")
    if isinstance(instrument, dict):
        md["instrument"] = str(instrument.get("name", ""))
        md["instrument_kind"] = str(instrument.get("kind", ""))
        if instrument.get("kind") == "twin":
            tags.append("stem")  # the twin is a HAADF-STEM
    if md["n_frames"] and "pixel_size" in ds:
        sizes = np.asarray(ds["pixel_size"].values, dtype=float)
        if np.isfinite(sizes).any():
            md["pixel_size"] = float(np.nanmedian(sizes))
    if "lattice" in ds:
        lattices = sorted({str(v) for v in np.asarray(ds["lattice"].values).ravel() if str(v)})
        md["lattice"] = lattices
        materials = [MATERIALS.get(name, name) for name in lattices]
        md["material"] = materials[0] if len(materials) == 1 else materials
    if "conditions" in ds and md["n_frames"]:
        values = np.asarray(ds["conditions"].values, dtype=float)
        names = [str(n) for n in ds["condition"].values]
        md["conditions"] = {
            name: {"min": float(np.nanmin(col)), "max": float(np.nanmax(col))}
            for name, col in zip(names, values.T, strict=True)
            if np.isfinite(col).any()
        }
    root = zarr.open_group(store=LocalStore(path, read_only=True), mode="r", use_consolidated=True)
    if "predictions" in root:
        md["model_versions"] = sorted(root["predictions"].group_keys())
    decisions = read_decisions(path)
    if decisions.get("frame_start") is not None and len(decisions["frame_start"]):
        scores = [np.asarray(v, dtype=float) for k, v in decisions.items() if k.startswith("score_")]
        # fmax skips NaN (no score while the reference fills), quietly.
        best = (
            np.fmax.reduce(np.vstack(scores), axis=0) if scores else np.zeros(len(decisions["frame_start"]))
        )
        if np.isfinite(best).any():
            md["drift_score"] = float(np.nanmax(best))
        md["drift_events"] = [
            {
                "frame_start": int(decisions["frame_start"][i]),
                "frame_end": int(decisions["frame_end"][i]),
                "action": str(decisions["action"][i]),
                "score": float(best[i]) if np.isfinite(best[i]) else None,
            }
            for i in range(len(decisions["frame_start"]))
            if bool(decisions["detected"][i])
        ]
        if md["drift_events"]:
            tags.append("drift")
    return md, tags


def find_dataset_record(client: Any, path: str | Path) -> str | None:
    """The newest dataset record (that the caller may read) whose ``md.path`` is ``path``."""
    resolved = str(Path(path).resolve())
    query = f'md.kind == "dataset" and md.path == {json.dumps(resolved)}'
    page = client.search(md=query, sort="-created", limit=1)
    items = [i for i in page["items"] if (i.get("metadata") or {}).get("path", resolved) == resolved]
    return items[0]["id"] if items else None


def record_dataset(
    client: Client,
    path: str | Path,
    *,
    title: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    derived_from: Iterable[str] = (),
    tags: Iterable[str] = ("dataset",),
    collections: Iterable[str] = (),
    alias: str | None = None,
) -> str:
    """A dataset (a Zarr group or any directory) as a record; its scalar Zarr attributes, what
    ``dataset_summary`` reads from it and ``metadata`` become the record's metadata (its tags
    add ``stem`` and ``drift`` where they apply). ``derived_from``: ids it was made from."""
    path = Path(path)
    fmt = "zarr" if (path / "zarr.json").is_file() else ("directory" if path.is_dir() else "file")
    summary, found_tags = dataset_summary(path)
    md: dict[str, Any] = {"attrs": _zarr_attrs(path), **summary, **dict(metadata or {})}
    md.update(kind="dataset", format=fmt, path=str(path.resolve()))
    deps = [("der", d) for d in derived_from]
    return _create(
        client,
        title or path.name,
        "scopeflow/dataset-2",
        md,
        deps,
        tags=list(dict.fromkeys([*tags, *found_tags])),
        collections=list(collections),
        alias=alias,
    )


def record_prediction(
    client: Client,
    *,
    dataset: str,
    model: str,
    title: str | None = None,
    frame_start: int | None = None,
    frame_end: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Iterable[str] = ("prediction",),
) -> str:
    """Predictions (atom columns, uncertainties) ``der`` the frames' dataset and the model."""
    md: dict[str, Any] = {**dict(metadata or {}), "kind": "prediction"}
    if frame_start is not None:
        md["frame_start"] = frame_start
    if frame_end is not None:
        md["frame_end"] = frame_end
    deps = [("der", dataset), ("der", model)]
    return _create(
        client,
        title or f"predictions of {dataset} by {model}",
        "scopeflow/prediction-1",
        md,
        deps,
        tags=list(tags),
    )


def record_model(
    client: Client,
    *,
    version: str,
    training_data: Iterable[str] = (),
    parent: str | None = None,
    produced_by: str | None = None,
    metrics: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Iterable[str] = ("model",),
) -> str:
    """A model version: ``der`` its training data (and the run that made it), ``ver`` its parent."""
    md: dict[str, Any] = {
        **dict(metadata or {}),
        "kind": "model",
        "version": version,
        "metrics": dict(metrics or {}),
    }
    deps = [("der", d) for d in training_data]
    if produced_by:
        deps.append(("der", produced_by))
    if parent:
        deps.append(("ver", parent))
    return _create(client, f"model {version}", "scopeflow/model-1", md, deps, tags=list(tags))


def record_decision(
    client: Client,
    *,
    dataset: str,
    frame_start: int,
    frame_end: int,
    detected: bool,
    action: str,
    scores: Mapping[str, float],
    model: str | None = None,
    tags: Iterable[str] = ("drift",),
) -> str:
    """A drift decision over frames ``[frame_start, frame_end)``: ``der`` the dataset (and model).

    ``action`` is one of none, select, retrain; ``scores`` maps detector name to score.
    """
    md = {
        "kind": "drift_decision",
        "frame_start": frame_start,
        "frame_end": frame_end,
        "detected": bool(detected),
        "action": action,
        "scores": {k: float(v) for k, v in scores.items()},
    }
    deps = [("der", dataset)] + ([("der", model)] if model else [])
    title = f"drift {action} frames {frame_start}-{frame_end}"
    return _create(client, title, "scopeflow/drift-decision-1", md, deps, tags=list(tags))


def record_training_run(
    client: Client,
    *,
    training_data: Iterable[str],
    parent_model: str | None = None,
    trigger: str | None = None,
    status: str = "completed",
    metrics: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Iterable[str] = ("retraining",),
) -> str:
    """A retraining run: ``der`` its data, the model it started from and the decision that triggered it."""
    md: dict[str, Any] = {
        **dict(metadata or {}),
        "kind": "training_run",
        "status": status,
        "metrics": dict(metrics or {}),
    }
    deps = [("der", d) for d in training_data]
    if parent_model:
        deps.append(("der", parent_model))
    if trigger:
        deps.append(("der", trigger))
    return _create(client, "retraining run", "scopeflow/training-run-1", md, deps, tags=list(tags))
