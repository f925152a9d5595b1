"""The acquisition flow against a real Prefect API (a server subprocess from the test harness)."""

import asyncio

import xarray as xr

from flows.acquire import acquire_flow


def _flow_run_artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )

    return asyncio.run(read())


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )

    return asyncio.run(read())


def test_acquire_flow_batches_are_task_runs_with_artifacts(prefect_api, tmp_path):
    path = tmp_path / "flow.zarr"
    state = acquire_flow(
        frames=10, dataset=str(path), seed=2, drift="defocus=30@5", batch_size=4, return_state=True
    )
    assert state.is_completed()
    result = state.result()
    assert result["frames"] == 10
    ds = xr.open_zarr(path)
    assert ds.sizes["frame"] == 10
    assert "truth_row" in ds

    flow_run_id = state.state_details.flow_run_id
    batches = [t for t in _task_runs(flow_run_id) if t.name.startswith("acquire-batch")]
    assert len(batches) == 3  # 4 + 4 + 2 frames: batches, not frames, are task runs
    keys = {a.key for a in _flow_run_artifacts(flow_run_id)}
    assert {"acquire-progress", "acquire-summary"} <= keys

    # A second run resumes: nothing left to acquire, the dataset is unchanged.
    again = acquire_flow(frames=10, dataset=str(path), seed=2, drift="defocus=30@5", batch_size=4)
    assert again["frames"] == 10
