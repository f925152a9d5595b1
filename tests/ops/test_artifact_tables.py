"""A run's per-batch table is one artifact, not one per re-publication."""

from __future__ import annotations

import asyncio
import json

from prefect import flow

from flows.artifacts import BatchTable


@flow(name="table-once")
def _table_run() -> str:
    from prefect.runtime import flow_run

    table = BatchTable("table-once-batches")
    for start in range(0, 48, 16):
        table.add(frame_start=start, frame_end=start + 15, atoms=100, model_version="v1")
    table.publish()
    table.publish()  # nothing new: no second artifact
    return str(flow_run.id)


async def _tables(run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )


def test_the_batch_table_is_published_once_per_run(prefect_api: None) -> None:
    tables = asyncio.run(_tables(_table_run()))
    assert [t.key for t in tables] == ["table-once-batches"]
    rows = tables[0].data
    assert len(json.loads(rows) if isinstance(rows, str) else rows) == 3
