"""The store as a user searches it: a dataset record says what the dataset holds, a second
``scopeflow sync`` of the same dataset moves nothing, and a retrained model's lineage has its
parent and the retraining run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from storage.datasets import DatasetWriter
from storage.datasets.decisions import DecisionRow, DecisionWriter
from storage.federation.embedded import RunningStore, serve_in_thread
from storage.models import ModelRegistry
from storage.provenance import lineage_text, record_dataset
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.ensemble import Ensemble, EnsembleConfig
from tasks.inference.network import FusedUNet
from tasks.inference.registry import save_ensemble

ROOT = Path(__file__).resolve().parents[2]


def _twin_run(path: Path) -> Path:
    """Six MoS2 frames, a dose drop at frame 3 and the decision that saw it."""
    twin = DigitalTwin(2, DriftSchedule.parse("lattice=mos2@0,dose=4e4@3"), (48, 48))
    DatasetWriter.open(path, twin.state()).append([twin.acquire(i) for i in range(6)])
    DecisionWriter(path).append(
        [
            DecisionRow(0, 0, False, "none", (0, 1), "v0001", {"kernel": float("nan")}),  # reference
            DecisionRow(1, 2, False, "none", (0, 1), "v0001", {"kernel": 0.2}),
            DecisionRow(3, 5, True, "retrain", (0, 1), "v0001", {"kernel": 2.5}),
        ]
    )
    return path


@pytest.fixture
def store(tmp_path: Path) -> RunningStore:
    running = serve_in_thread(tmp_path / "store")
    yield running
    running.stop()


def test_the_readmes_search_finds_the_dataset(store: RunningStore, tmp_path: Path) -> None:
    dataset = _twin_run(tmp_path / "run.zarr")
    with store.client() as client:
        rid = record_dataset(client, dataset)
        found = client.search(
            md='md.drift_score > 0.3 and md.material == "MoS2"', tags=["stem"], created_after="2026-01-01"
        )
        md = client.get(rid)["metadata"]
    assert [item["id"] for item in found["items"]] == [rid]
    assert md["n_frames"] == 6 and md["instrument_kind"] == "twin"
    assert md["conditions"]["dose"] == {"min": 4e4, "max": 5e6}
    assert md["drift_events"] == [{"frame_start": 3, "frame_end": 5, "action": "retrain", "score": 2.5}]


def test_a_second_sync_finds_the_record_and_moves_nothing(store: RunningStore, tmp_path: Path) -> None:
    dataset = _twin_run(tmp_path / "run.zarr")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCOPEFLOW_STORE_URL": store.url,
        "SCOPEFLOW_STORE_TOKEN": store.token,
    }

    def sync() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "flows", "sync", str(dataset)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first, second = sync(), sync()
    record = first.split(":")[0]
    assert second.startswith(f"{record}: 0/"), (first, second)
    with store.client() as client:
        assert client.search(md='md.kind == "dataset"')["total"] == 1


def test_lineage_has_the_retraining_run_and_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import loop

    torch.manual_seed(0)
    registry = ModelRegistry(tmp_path / "registry", fallback=None)
    net = FusedUNet(2, (4, 8, 8))
    parent = save_ensemble(registry, Ensemble(net, EnsembleConfig(members=2, widths=(4, 8, 8))))
    child = save_ensemble(
        registry,
        Ensemble(net, EnsembleConfig(members=2, widths=(4, 8, 8))),
        metrics={"validation_f1": 0.93},
        parent=parent,
    )
    dataset = _twin_run(tmp_path / "run.zarr")
    retrain = {
        "frames": [3, 5],
        "candidate": child,
        "promoted": True,
        "reason": "promoted",
        "validation": {"new_candidate": 0.9, "new_production": 0.6},
    }
    monkeypatch.setenv("SCOPEFLOW_HOME", str(tmp_path))  # the embedded store of _publish lives here
    out = loop._publish(str(dataset), registry, [parent, child], [], [retrain])
    with serve_in_thread(Path(out["store_dir"])) as embedded, embedded.client() as client:
        child_id, parent_id = out["models"][child], out["models"][parent]
        graph = client.lineage(child_id, direction="up")
        child_md = client.get(child_id)["metadata"]
    edges = {(e["subject"], e["kind"], e["object"]) for e in graph["edges"]}
    runs = [rid for rid, node in graph["nodes"].items() if node["kind"] == "training_run"]
    assert (child_id, "ver", parent_id) in edges, lineage_text(graph)
    assert len(runs) == 1 and (child_id, "der", runs[0]) in edges, lineage_text(graph)
    assert (runs[0], "der", parent_id) in edges
    assert child_md["metrics"] == {"validation_f1": 0.93}
