"""The attacks of issue 14, each a test that failed before its fix: a user with read on a record
must not become more through a collection, reach another record's files, or take a schema name
the project uses."""

from __future__ import annotations

import pytest

from scopeflow.errors import NotFoundError
from storage.federation.client import StoreClient
from storage.federation.errors import PermissionDeniedError


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


def test_an_owner_shares_through_a_collection_as_before(alice: StoreClient, bob: StoreClient, tag: str) -> None:
    coll = alice.create_collection("shared")
    rec = alice.create_record("to share", tags=[tag])
    alice.link(coll["id"], rec["id"])
    alice.grant(coll["id"], "write", user="bob")
    assert bob.update(rec["id"], title="edited")["title"] == "edited"
    assert bob.search(tags=[tag])["total"] == 1
