"""A run's per-batch table is one artifact, not one per re-publication."""

from __future__ import annotations

import json

from prefect import flow

from flows.artifacts import BatchTable
from tests.helpers.prefect_api import artifacts


@flow(name="table-once")
def _table_run() -> str:
    from prefect.runtime import flow_run

    table = BatchTable("table-once-batches")
    for start in range(0, 48, 16):
        table.add(frame_start=start, frame_end=start + 15, atoms=100, model_version="v1")
    table.publish()
    table.publish()  # nothing new: no second artifact
    return str(flow_run.id)


def test_the_batch_table_is_published_once_per_run(prefect_api: None) -> None:
    tables = artifacts(flow_run_id=_table_run())
    assert [t.key for t in tables] == ["table-once-batches"]
    rows = tables[0].data
    assert len(json.loads(rows) if isinstance(rows, str) else rows) == 3
