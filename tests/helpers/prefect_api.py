"""Reading back what runs left in the Prefect API (artifacts, flow runs, task runs), for assertions.

Each call opens a fresh client on the configured API (the test harness's server), or on
``api_url`` when given (a server that ``up`` started), and returns the API's own objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def query(ask: Callable[[Any], Awaitable[T]], api_url: str | None = None) -> T:
    """``await ask(client)`` with a fresh Prefect client, synchronously."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def run() -> T:
        async with get_client() as client:
            return await ask(client)

    if api_url is None:
        return asyncio.run(run())
    with temporary_settings({PREFECT_API_URL: api_url}):
        return asyncio.run(run())


def artifacts(
    *,
    flow_run_id: str | None = None,
    keys: Iterable[str] | None = None,
    types: Iterable[str] | None = None,
    api_url: str | None = None,
) -> list[Any]:
    """Artifacts of one flow run, with one of ``keys``, of one of ``types`` (each filter optional)."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        ArtifactFilterType,
    )

    found = ArtifactFilter(
        flow_run_id=None if flow_run_id is None else ArtifactFilterFlowRunId(any_=[flow_run_id]),
        key=None if keys is None else ArtifactFilterKey(any_=list(keys)),
        type=None if types is None else ArtifactFilterType(any_=list(types)),
    )
    return query(lambda client: client.read_artifacts(artifact_filter=found), api_url)


def flow_runs(
    *, deployment_id: str, states: Iterable[Any] | None = None, api_url: str | None = None
) -> list[Any]:
    """Flow runs of one deployment, in one of ``states`` (``StateType``s) when given."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    of = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    run_filter = (
        None
        if states is None
        else FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states))))
    )
    return query(
        lambda client: client.read_flow_runs(deployment_filter=of, flow_run_filter=run_filter), api_url
    )


def task_runs(flow_run_id: str) -> list[Any]:
    """Task runs of one flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    of = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    return query(lambda client: client.read_task_runs(flow_run_filter=of))
