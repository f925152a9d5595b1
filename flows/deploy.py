"""Apply ``deployments/prefect.yaml`` with Prefect's own deployment objects.

Each entry becomes ``flow.to_deployment(...)`` (schedules, triggers, work pool, parameters)
applied with ``RunnerDeployment.apply``: what ``prefect deploy --all`` does for this file,
without its prompts. Missing work pools are created as process pools first.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from scopeflow.errors import InputError, NotFoundError

#: The repository root: deployments' entrypoints and the workers' working directory.
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "deployments" / "prefect.yaml"


def load_spec(path: Path = DEFAULT_SPEC) -> dict[str, Any]:
    """The deployments file, anchors resolved."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise NotFoundError(f"no deployments file at {path}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("deployments"), list):
        raise InputError(f"{path} has no 'deployments:' list")
    return spec


def pool_names(spec: Mapping[str, Any]) -> list[str]:
    """Work pools the spec's deployments use, in order of first use."""
    return list(dict.fromkeys(d["work_pool"]["name"] for d in spec["deployments"] if d.get("work_pool")))


async def ensure_pools(names: list[str]) -> list[str]:
    """Create the missing pools as process pools; returns those created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    created = []
    async with get_client() as client:
        for name in names:
            try:
                await client.read_work_pool(name)
            except ObjectNotFound:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="process",
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                    )
                )
                created.append(name)
    return created


def schedule(config: Mapping[str, Any]) -> Any:
    """A Prefect ``Schedule`` from a prefect.yaml schedule (cron, interval in s, or rrule, with
    ``timezone``, ``active`` and the other keys Prefect's ``Cron``/``Interval``/``RRule`` take)."""
    from prefect.schedules import Cron, Interval, RRule

    kinds = {"cron": Cron, "interval": Interval, "rrule": RRule}
    kind = next((k for k in kinds if k in config), None)
    if kind is None:
        raise InputError(f"schedule {dict(config)} has none of cron, interval, rrule")
    try:
        return kinds[kind](config[kind], **{k: v for k, v in config.items() if k != kind})
    except TypeError as exc:
        raise InputError(f"schedule {dict(config)}: {exc}") from exc


def _load_flow(entrypoint: str, root: Path) -> Any:
    """The flow an entrypoint ``flows/x.py:fn`` names: imported as the package module ``flows.x``
    when it is one of ours (already imported modules are reused), else loaded from the file."""
    from prefect.flows import load_flow_from_entrypoint

    path, _, name = entrypoint.partition(":")
    if path.endswith(".py") and (root / path).resolve().is_relative_to(ROOT):
        module = ".".join(Path(path).with_suffix("").parts)
        with contextlib.suppress(ImportError):
            return getattr(importlib.import_module(module), name)
    return load_flow_from_entrypoint(str(root / entrypoint))


async def apply_deployments(spec_path: Path = DEFAULT_SPEC, root: Path = ROOT) -> dict[str, UUID]:
    """Apply every deployment of ``spec_path`` to the current Prefect API (``PREFECT_API_URL``).

    Pools are created as process pools; each deployment is upserted with its parameters,
    schedules and a pull step that sets the working directory to ``root``; its triggers
    replace the automations it owned. Returns the deployments' ids by name.
    """
    from prefect.client.schemas.objects import VersionInfo
    from prefect.events import DeploymentTriggerTypes
    from prefect.runner.storage import LocalStorage
    from pydantic import TypeAdapter

    spec = load_spec(spec_path)
    await ensure_pools(pool_names(spec))
    triggers_of = TypeAdapter(DeploymentTriggerTypes)
    ids: dict[str, UUID] = {}
    for dep in spec["deployments"]:
        pool = dep.get("work_pool") or {}
        flow = _load_flow(dep["entrypoint"], root)
        deployment = await flow.ato_deployment(
            dep["name"],
            parameters=dep.get("parameters") or {},
            schedules=[schedule(s) for s in dep.get("schedules") or []],
            triggers=[triggers_of.validate_python(t) for t in dep.get("triggers") or []],
            description=dep.get("description"),
            tags=dep.get("tags") or [],
            version=dep.get("version"),
            work_pool_name=pool.get("name"),
            work_queue_name=pool.get("work_queue_name"),
            job_variables=pool.get("job_variables") or {},
        )
        # to_deployment takes the entrypoint relative to this process's directory; the spec's
        # is relative to ``root``, where the pull step puts the workers.
        deployment.entrypoint = dep["entrypoint"]
        deployment.storage = LocalStorage(str(root))
        # An explicit version: Prefect would otherwise ask git (or CI variables) for one.
        version = VersionInfo(type="prefect:simple", version=deployment.version or "")
        ids[dep["name"]] = await deployment.aapply(version_info=version)
    return ids
