"""Provenance records, lineage, PROV-JSON, the CLI, and the schema migration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from storage.federation.cli import app as store_app
from storage.federation.cli import sync_command
from storage.federation.client import StoreClient
from storage.federation.database import Database, include_name, sqlite_url
from storage.federation.embedded import RunningStore, free_port
from storage.federation.models import Base
from storage.provenance import (
    lineage_text,
    record_dataset,
    record_decision,
    record_model,
    record_prediction,
    record_training_run,
    to_prov_json,
)
from tests.helpers.trees import make_tree


def _loop(client: StoreClient, tmp_path: Path) -> dict[str, str]:
    ds_dir = tmp_path / "run.zarr"
    make_tree(ds_dir, 2, 10)
    ids = {"frames": record_dataset(client, ds_dir, metadata={"n_frames": 2, "material": "MoS2"})}
    ids["twin"] = record_dataset(client, tmp_path, title="twin data", tags=["twin"])
    ids["model1"] = record_model(client, version="v1", training_data=[ids["twin"]], metrics={"f1": 0.8})
    ids["pred"] = record_prediction(
        client, dataset=ids["frames"], model=ids["model1"], frame_start=0, frame_end=2
    )
    ids["decision"] = record_decision(
        client,
        dataset=ids["frames"],
        model=ids["model1"],
        frame_start=0,
        frame_end=2,
        detected=True,
        action="retrain",
        scores={"mmd": 0.42},
    )
    ids["run"] = record_training_run(
        client,
        training_data=[ids["frames"], ids["twin"]],
        parent_model=ids["model1"],
        trigger=ids["decision"],
    )
    ids["model2"] = record_model(
        client, version="v2", training_data=[ids["frames"]], parent=ids["model1"], produced_by=ids["run"]
    )
    return ids


def test_provenance_graph_and_prov_json(alice: StoreClient, tmp_path: Path) -> None:
    ids = _loop(alice, tmp_path)
    graph = alice.lineage(ids["model2"], direction="up")
    edges = {(e["subject"], e["kind"], e["object"]) for e in graph["edges"]}
    assert (ids["model2"], "ver", ids["model1"]) in edges
    assert (ids["model2"], "der", ids["run"]) in edges
    assert (ids["run"], "der", ids["decision"]) in edges
    assert (ids["decision"], "der", ids["frames"]) in edges
    assert (ids["model1"], "der", ids["twin"]) in edges
    assert ids["pred"] not in graph["nodes"]  # downstream of model1, not upstream of model2
    assert (
        alice.search(md='md.kind == "drift_decision" and md.action == "retrain"', owner="alice")["total"] >= 1
    )

    doc = to_prov_json(graph)
    m2, m1 = "record:" + ids["model2"].replace("/", ""), "record:" + ids["model1"].replace("/", "")
    assert doc["entity"][m2]["prov:type"] == "scopeflow:model"
    revisions = [r for r in doc["wasDerivedFrom"].values() if r.get("prov:type") == "prov:Revision"]
    assert revisions == [{"prov:generatedEntity": m2, "prov:usedEntity": m1, "prov:type": "prov:Revision"}]
    assert {a["prov:agent"] for a in doc["wasAttributedTo"].values()} == {"user:alice"}

    text = lineage_text(alice.lineage(ids["model1"]))
    assert f"--der--> {ids['twin']} [dataset]" in text
    assert "used by:" in text
    assert f"<--der-- {ids['pred']} [prediction]" in text

    with pytest.raises(ValueError, match="frame_start"):
        record_decision(
            alice,
            dataset=ids["frames"],
            frame_start=-1,
            frame_end=2,
            detected=False,
            action="none",
            scores={},
        )


def test_cli_search_lineage_and_errors(
    store: RunningStore, alice: StoreClient, tmp_path: Path, tag: str
) -> None:
    runner = CliRunner()
    env = {"SCOPEFLOW_STORE_URL": store.url, "SCOPEFLOW_STORE_TOKEN": store.token}
    out = runner.invoke(store_app, ["create", "cli record", "--tag", tag, "--md", '{"x": 0.5}'], env=env)
    assert out.exit_code == 0, out.output
    rid = out.stdout.strip()
    out = runner.invoke(store_app, ["create", "derived", "--tag", tag, "--dep", f"der:{rid}"], env=env)
    child = out.stdout.strip()
    out = runner.invoke(store_app, ["search", "--tag", tag, "--md", "md.x > 0.3"], env=env)
    assert out.exit_code == 0
    assert rid in out.stdout
    assert child not in out.stdout
    prov = tmp_path / "prov.json"
    out = runner.invoke(store_app, ["lineage", child, "--prov-json", str(prov)], env=env)
    assert out.exit_code == 0, out.output
    assert f"--der--> {rid}" in out.stdout
    assert "wasDerivedFrom" in json.loads(prov.read_text())

    out = runner.invoke(store_app, ["search", "--md", "md.x >"], env=env)
    assert out.exit_code == 2
    assert "error: cannot parse metadata expression" in out.stderr
    out = runner.invoke(
        store_app, ["get", "d/1"], env={**env, "SCOPEFLOW_STORE_URL": f"http://127.0.0.1:{free_port()}"}
    )
    assert out.exit_code == 2
    assert "cannot reach the scopeflow store" in out.stderr
    assert "Traceback" not in out.output


def test_sync_command(store: RunningStore, tmp_path: Path) -> None:
    root = typer.Typer()
    root.command("sync")(sync_command)
    root.command("noop")(lambda: None)  # two commands, so "sync" is a sub-command as in scopeflow
    src = tmp_path / "ds.zarr"
    make_tree(src, 5, 100)
    env = {
        "SCOPEFLOW_STORE_URL": store.url,
        "SCOPEFLOW_STORE_TOKEN": store.token,
        "SCOPEFLOW_HOME": str(tmp_path),
    }
    out = CliRunner().invoke(root, ["sync", str(src)], env=env)
    assert out.exit_code == 0, out.output
    assert "6/6 files sent" in out.stdout
    rid = out.stdout.split(":")[0]
    out = CliRunner().invoke(root, ["sync", str(src), "--record", rid], env=env)
    assert "0/6 files sent, 0 bytes" in out.stdout


def test_migrations_match_models(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "c.db"))
    db.migrate()
    db.migrate()  # idempotent
    with db.write_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        assert compare_metadata(context, Base.metadata) == []
        assert conn.exec_driver_sql("SELECT count(*) FROM records_fts").scalar() == 0  # 0003 ran
    db.dispose()
