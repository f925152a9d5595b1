"""The attacks of issue 14, each a test that failed before its fix: a user with read on a record
must not become more through a collection, reach another record's files, or take a schema name
the project uses."""

from __future__ import annotations

import hashlib
import stat
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from scopeflow.errors import InputError, IntegrityError, NotFoundError
from storage.federation.cli import sync_command
from storage.federation.client import StoreClient
from storage.federation.embedded import RunningStore, init_store
from storage.federation.errors import (
    AuthenticationError,
    ChecksumMismatchError,
    ConflictError,
    PermissionDeniedError,
)
from storage.federation.push import push_dataset
from storage.transfer.local import LocalBackend
from tests.helpers.trees import make_tree


def test_read_never_becomes_admin_through_a_collection_link(
    alice: StoreClient, bob: StoreClient, tag: str
) -> None:
    rec = alice.create_record("alice's frames", tags=[tag])
    alice.grant(rec["id"], "read")  # public read
    mine = bob.create_collection(f"bob's {tag}")
    bob.link(mine["id"], rec["id"])  # linking is allowed: bob may read it
    assert rec["id"] in [r["id"] for r in bob.search(collection=mine["id"])["items"]]
    with pytest.raises(PermissionDeniedError):
        bob.update(rec["id"], title="bob's now")
    with pytest.raises(PermissionDeniedError):
        bob.delete(rec["id"])
    with pytest.raises(PermissionDeniedError):
        bob.grant(rec["id"], "admin")
    with pytest.raises(PermissionDeniedError):
        bob.grant(rec["id"], "none", user="alice")
    with pytest.raises(PermissionDeniedError):
        bob.add_dependency(rec["id"], "der", rec["id"])
    # Search applies the same rule: nothing links bob's collection to write on the record.
    assert alice.get(rec["id"])["title"] == "alice's frames"


def test_a_project_reader_cannot_widen_rights_through_a_collection(
    alice: StoreClient, bob: StoreClient, admin: StoreClient, tag: str
) -> None:
    carol_token = admin.create_user(f"carol{tag}")
    with StoreClient(alice.url, carol_token) as carol:
        alice.create_project(f"q{tag}")
        alice.set_member(f"q{tag}", "bob", "read")
        rec = alice.create_record("project data", tags=[tag], project=f"q{tag}")
        coll = bob.create_collection("bob's")
        bob.link(coll["id"], rec["id"])
        bob.grant(coll["id"], "admin", user=f"carol{tag}")
        # carol reaches bob's collection, but the record in it stays out of her reach.
        assert carol.get_collection(coll["id"])["n_records"] == 0
        with pytest.raises(NotFoundError):
            carol.get(rec["id"])
        assert carol.search(tags=[tag])["total"] == 0
        with pytest.raises(PermissionDeniedError):
            bob.update(rec["id"], title="changed")


def test_an_owner_shares_through_a_collection_as_before(
    alice: StoreClient, bob: StoreClient, tag: str
) -> None:
    coll = alice.create_collection("shared")
    rec = alice.create_record("to share", tags=[tag])
    alice.link(coll["id"], rec["id"])
    alice.grant(coll["id"], "write", user="bob")
    assert bob.update(rec["id"], title="edited")["title"] == "edited"
    assert bob.search(tags=[tag])["total"] == 1


def _repo(store: RunningStore) -> Path:
    return store.store_dir / "repo"


def _auth(client: StoreClient) -> dict[str, str]:
    return {"Authorization": client._http.headers["Authorization"]}


def test_a_replica_cannot_point_at_another_records_folder(
    store: RunningStore, alice: StoreClient, bob: StoreClient
) -> None:
    victim = alice.create_record("alice's files", repository="local")
    alice.put_file(victim["id"], "zarr.json", b"alice's bytes")
    n = victim["id"].removeprefix("d/")
    spy = bob.create_record("bob's", repository="local")
    for path in (f"records/{n}", f"records/{n}/x", "records", "elsewhere"):
        with pytest.raises(PermissionDeniedError, match="lies under records/"):
            bob.add_replica(spy["id"], "local", path, [])
    # Nothing of alice's is readable or writable through bob's record.
    with pytest.raises(NotFoundError):
        bob.get_file(spy["id"], "zarr.json")
    bob.put_file(spy["id"], "zarr.json", b"bob's bytes")
    assert alice.get_file(victim["id"], "zarr.json") == b"alice's bytes"


def test_a_replica_records_the_servers_checksums_never_the_clients(
    store: RunningStore, alice: StoreClient
) -> None:
    rec = alice.create_record("synced", repository="local")
    n = rec["id"].removeprefix("d/")
    folder = _repo(store) / f"records/{n}/data"
    folder.mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"real bytes")
    real = hashlib.sha256(b"real bytes").hexdigest()
    with pytest.raises(ChecksumMismatchError, match="not what the manifest says"):
        alice.add_replica(
            rec["id"], "local", f"records/{n}/data", [{"path": "a.bin", "size": 0, "sha256": "0" * 64}]
        )
    with pytest.raises(ChecksumMismatchError, match="not in repository"):
        alice.add_replica(
            rec["id"], "local", f"records/{n}/data", [{"path": "ghost", "size": 1, "sha256": real}]
        )
    replica = alice.add_replica(
        rec["id"], "local", f"records/{n}/data", [{"path": "a.bin", "size": 10, "sha256": real}]
    )
    assert (replica["size"], replica["n_files"]) == (10, 1)
    assert alice.get(rec["id"])["size"] == 10


def test_uploads_commit_only_what_is_on_disk(store: RunningStore, alice: StoreClient) -> None:
    rec = alice.create_record("uploads", repository="local")
    n = rec["id"].removeprefix("d/")
    url = f"{store.url}/api/records/{n}/files"
    r = httpx.put(f"{url}/{'x' * 300}", content=b"x", headers=_auth(alice))
    assert r.status_code == 400, r.text
    assert "path" in r.json()["detail"]  # the stated rule: components of at most 127 characters
    alice.put_file(rec["id"], "dir/inner.bin", b"inner")
    r = httpx.put(f"{url}/dir", content=b"x", headers=_auth(alice))
    assert r.status_code == 409, r.text
    r = httpx.put(f"{url}/dir/inner.bin/below", content=b"x", headers=_auth(alice))
    assert r.status_code == 409, r.text
    files = alice.replicas(rec["id"])[0]["files"]
    assert [f["path"] for f in files] == ["dir/inner.bin"]
    for f in files:
        assert (_repo(store) / f"records/{n}" / f["path"]).is_file()


def test_get_refuses_a_planted_symlink_and_checks_the_checksum(
    store: RunningStore, alice: StoreClient, tmp_path: Path
) -> None:
    rec = alice.create_record("links", repository="local")
    n = rec["id"].removeprefix("d/")
    alice.put_file(rec["id"], "a.bin", b"original")
    target = _repo(store) / f"records/{n}/a.bin"
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    target.unlink()
    target.symlink_to(secret)
    with pytest.raises(NotFoundError, match="missing on disk"):
        alice.get_file(rec["id"], "a.bin")
    target.unlink()
    target.write_bytes(b"rotted!!")
    with pytest.raises(IntegrityError, match="manifest says"):
        alice.get_file(rec["id"], "a.bin")


def test_sync_checks_the_right_before_writing_anything(
    store: RunningStore, alice: StoreClient, bob: StoreClient, tmp_path: Path
) -> None:
    victim = alice.create_record("alice's dataset", repository="local")
    n = victim["id"].removeprefix("d/")
    alice.grant(victim["id"], "read", user="bob")
    src = tmp_path / "ds.zarr"
    make_tree(src, 3, 64)
    with pytest.raises(PermissionDeniedError, match="write permission"):
        push_dataset(bob, src, record=victim["id"], state_dir=tmp_path / "state")
    assert not (_repo(store) / f"records/{n}").exists()  # not a byte written


def test_a_killed_push_resumes_into_the_same_record(
    alice: StoreClient, tmp_path: Path, tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / f"killed-{tag}.zarr"
    make_tree(src, 6, 64)
    real, copied = LocalBackend._copy, [0]

    def dies_after_two(self: LocalBackend, *args: object) -> object:
        if copied[0] == 2:
            raise KeyboardInterrupt  # what a kill looks like from inside the process
        copied[0] += 1
        return real(self, *args)

    monkeypatch.setattr(LocalBackend, "_copy", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        push_dataset(alice, src, backend=LocalBackend(workers=1), state_dir=tmp_path / "state")
    monkeypatch.undo()
    result = push_dataset(alice, src, state_dir=tmp_path / "state")
    assert result.report.files_sent == 7 - 2
    found = alice.search(text=f"killed-{tag}")
    assert [r["id"] for r in found["items"]] == [result.record]  # one record, not two


def test_sync_says_what_verify_changed_checked(store: RunningStore, tmp_path: Path) -> None:
    root = typer.Typer()
    root.command("sync")(sync_command)
    root.command("noop")(lambda: None)
    src = tmp_path / "ds.zarr"
    make_tree(src, 3, 100)
    env = {
        "SCOPEFLOW_STORE_URL": store.url,
        "SCOPEFLOW_STORE_TOKEN": store.token,
        "SCOPEFLOW_HOME": str(tmp_path),
    }
    assert CliRunner().invoke(root, ["sync", str(src)], env=env).exit_code == 0
    out = CliRunner().invoke(root, ["sync", str(src)], env=env)
    assert "0/4 files sent" in out.stdout  # the same record again, nothing moved
    assert "4 unchanged files checked by size and mtime only" in out.stdout
    assert "verified" not in out.stdout.replace("sent files verified", "")
    out = CliRunner().invoke(root, ["sync", str(src), "--verify", "full"], env=env)
    assert "every destination file re-hashed" in out.stdout


def test_a_record_names_only_the_links_its_reader_may_see(alice: StoreClient, bob: StoreClient) -> None:
    hidden_source = alice.create_record("alice's private source")
    hidden_coll = alice.create_collection("alice's private folder")
    shown = alice.create_record(
        "shared result", dependencies=[("der", hidden_source["id"])], collections=[hidden_coll["id"]]
    )
    alice.grant(shown["id"], "read", user="bob")
    seen = bob.get(shown["id"])
    assert seen["dependencies"] == [] and seen["collections"] == []
    assert alice.get(shown["id"])["dependencies"] == [{"kind": "der", "id": hidden_source["id"]}]


def test_dependency_cycles_are_refused(alice: StoreClient) -> None:
    a = alice.create_record("a")
    b = alice.create_record("b", dependencies=[("der", a["id"])])
    with pytest.raises(ConflictError, match="cycle"):
        alice.add_dependency(a["id"], "der", b["id"])
    c = alice.create_record("c", dependencies=[("ver", b["id"])])
    with pytest.raises(ConflictError, match="cycle"):
        alice.add_dependency(a["id"], "ver", c["id"])
    alice.add_dependency(c["id"], "comp", a["id"])  # no loop: fine


def test_store_files_are_owner_only(tmp_path: Path) -> None:
    init_store(tmp_path / "store")
    root = tmp_path / "store"
    assert stat.S_IMODE((root / "catalog.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "repo").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "token").stat().st_mode) == 0o600


def test_tokens_expire_and_can_be_revoked(store: RunningStore, alice: StoreClient) -> None:
    issued = alice.new_token("laptop", days=30)
    assert issued["expires"] is not None
    with StoreClient(store.url, issued["token"]) as laptop:
        assert laptop.whoami()["name"] == "alice"
        assert issued["id"] in [t["id"] for t in alice.tokens()]
        alice.revoke_token(issued["id"])
        with pytest.raises(AuthenticationError, match="expired or revoked"):
            laptop.whoami()
    short = alice.new_token("short", days=1e-5)  # about a second
    time.sleep(1.5)
    with StoreClient(store.url, short["token"]) as gone, pytest.raises(AuthenticationError):
        gone.whoami()
    with pytest.raises(InputError):
        alice.new_token("forever", days=10_000)
