"""The acquisition flow against a real Prefect API (a server subprocess from the test harness)."""

import xarray as xr

from flows.acquire import acquire_flow
from tests.helpers.prefect_api import artifacts, task_runs


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
    batches = [t for t in task_runs(flow_run_id) if t.name.startswith("acquire-batch")]
    assert len(batches) == 3  # 4 + 4 + 2 frames: batches, not frames, are task runs
    keys = {a.key for a in artifacts(flow_run_id=flow_run_id)}
    assert {"acquire-progress", "acquire-summary"} <= keys

    # A second run resumes: nothing left to acquire, the dataset is unchanged.
    again = acquire_flow(frames=10, dataset=str(path), seed=2, drift="defocus=30@5", batch_size=4)
    assert again["frames"] == 10
