"""`scopeflow edge` and `scopeflow drift-report` on a dataset written by the folder watcher."""

import csv
import io
import time

import numpy as np
from typer.testing import CliRunner

from flows.cli import app
from tasks.acquisition.loop import acquire_run
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.acquisition.watcher import FolderWatcher
from tests.helpers.prefect_api import artifacts


def test_edge_then_drift_report_on_a_watched_folder(prefect_api, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    twin = DigitalTwin(seed=9, schedule=DriftSchedule(), shape=(128, 128))
    for i in range(40):
        np.save(incoming / f"frame{i:03d}.npy", twin.acquire(i).image)
        time.sleep(0.002)  # distinct modification times keep the order
    dataset = tmp_path / "watched.zarr"
    watcher = FolderWatcher(incoming, settle=0.05, timeout=10, pixel_size=0.12)
    assert acquire_run(watcher, str(dataset), 40, batch_size=20) == 40

    runner = CliRunner()
    registry = tmp_path / "registry"
    result = runner.invoke(
        app, ["edge", "--dataset", str(dataset), "--batch-size", "8", "--registry", str(registry)]
    )
    assert result.exit_code == 0, result.output
    assert "atoms" in result.output

    report = runner.invoke(app, ["drift-report", "--dataset", str(dataset)])
    assert report.exit_code == 0, report.output
    rows = list(csv.reader(io.StringIO(report.stdout)))
    assert rows[0][:4] == ["frame_start", "frame_end", "detected", "action"]
    assert {"embedding", "disagreement", "physics"} <= set(rows[0][4:])
    assert [int(r[0]) for r in rows[1:]] == list(range(0, 40, 8))
    assert all(r[3] in {"none", "select", "retrain"} for r in rows[1:])

    keys = {"edge-batches", "edge-overlay", "edge-drift", "edge-summary"}
    assert keys <= {a.key for a in artifacts(keys=keys)}
