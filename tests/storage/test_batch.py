"""Batch creation over HTTP: many records in one request, all or none, the same checks as one."""

from __future__ import annotations

import httpx
import pytest

from scopeflow.errors import InputError, NotFoundError
from storage.federation.catalog.context import Limits
from storage.federation.client import StoreClient
from storage.federation.embedded import RunningStore
from storage.federation.errors import (
    ConflictError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    SchemaValidationError,
)


def _frames(tag: str, n: int) -> list[dict]:
    return [
        {"title": f"frame {i}", "tags": [tag, "frame"], "metadata": {"frame": i, "drift_score": i / n}}
        for i in range(n)
    ]


def test_batch_creates_every_record(alice: StoreClient, tag: str) -> None:
    items = _frames(tag, 20)
    items[3]["alias"] = f"frame3-{tag}"
    created = alice.create_records(items)
    assert [r["title"] for r in created] == [f"frame {i}" for i in range(20)]
    assert len({r["id"] for r in created}) == 20
    assert alice.get(f"frame3-{tag}")["metadata"] == {"frame": 3, "drift_score": 3 / 20}
    assert alice.search(tags=[tag])["total"] == 20
    # Indexed like one-at-a-time creation: tags and metadata are searchable.
    assert alice.search(tags=[tag], md="md.drift_score >= 0.5")["total"] == 10
    # A later record may depend on an earlier one of the same batch.
    first, second = alice.create_records(
        [{"title": "raw", "tags": [tag]}, {"title": "cleaned", "tags": [tag], "dependencies": []}]
    )
    alice.add_dependency(second["id"], "der", first["id"])


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ({"title": ""}, InputError, r"records\.4\.title"),
        ({"title": "clash", "alias": "ALIAS"}, ConflictError, r"records\[4\]: alias .* is already taken"),
        ({"title": "no schema", "md_schema": "nonesuch"}, NotFoundError, r"records\[4\]: no schema"),
        (
            {"title": "bad md", "md_schema": "SCHEMA", "metadata": {"n": "x"}},
            SchemaValidationError,
            r"records\[4\]",
        ),
        ({"title": "no collection", "collections": ["c/999999999"]}, NotFoundError, r"records\[4\]"),
    ],
)
def test_one_bad_item_refuses_the_whole_batch(
    alice: StoreClient, tag: str, bad: dict, error: type[Exception], message: str
) -> None:
    alice.create_record("existing", alias=f"a{tag}")
    alice.put_schema(f"s{tag}", {"type": "object", "properties": {"n": {"type": "number"}}})
    if bad.get("alias") == "ALIAS":
        bad = {**bad, "alias": f"a{tag}"}
    if bad.get("md_schema") == "SCHEMA":
        bad = {**bad, "md_schema": f"s{tag}"}
    items = _frames(tag, 8)
    items[4] = {**bad, "tags": [tag]}
    with pytest.raises(error, match=message):
        alice.create_records(items)
    assert alice.search(tags=[tag])["total"] == 0  # not one of the good items was kept


def test_duplicate_alias_within_a_batch(alice: StoreClient, tag: str) -> None:
    items = _frames(tag, 3)
    items[0]["alias"] = items[2]["alias"] = f"twice-{tag}"
    with pytest.raises(ConflictError, match=r"records\[2\]"):
        alice.create_records(items)
    assert alice.search(tags=[tag])["total"] == 0


def test_batch_checks_write_permission(alice: StoreClient, bob: StoreClient, tag: str) -> None:
    alice.create_project(f"p{tag}")
    shelf = alice.create_collection("shelf", alias=f"shelf-{tag}")
    items = _frames(tag, 5)
    # Not a member: the project does not exist for bob.
    with pytest.raises(NotFoundError, match=r"records\[2\]: no project"):
        bob.create_records([*items[:2], {**items[2], "project": f"p{tag}"}, *items[3:]])
    # A reader of the project may not create into it.
    alice.set_member(f"p{tag}", "bob", "read")
    with pytest.raises(PermissionDeniedError, match=r"records\[0\]: write permission on project"):
        bob.create_records([{**item, "project": f"p{tag}"} for item in items])
    # Nor link into a collection he may only read.
    alice.grant(shelf["id"], "read", user="bob")
    with pytest.raises(PermissionDeniedError, match=r"records\[1\]"):
        bob.create_records([items[0], {**items[1], "collections": [shelf["id"]]}])
    assert bob.search(tags=[tag])["total"] == alice.search(tags=[tag])["total"] == 0
    # With write, the same batch goes in, and the project's other members see it.
    alice.set_member(f"p{tag}", "bob", "write")
    bob.create_records([{**item, "project": f"p{tag}"} for item in items])
    assert alice.search(tags=[tag], project=f"p{tag}")["total"] == 5


def test_oversized_batch_refused(store: RunningStore, alice: StoreClient, tag: str) -> None:
    limit = Limits().max_batch
    with pytest.raises(PayloadTooLargeError, match=f"the limit is {limit}"):
        alice.create_records([{"title": f"f{i}", "tags": [tag]} for i in range(limit + 1)])
    # A body over the byte limit is refused before it is read, whatever the count.
    with pytest.raises(PayloadTooLargeError):
        alice.create_records([{"title": "big", "description": "x" * 16000, "tags": [tag]}] * 40)
    with pytest.raises(InputError):
        alice.create_records([])
    # Not JSON records at all: a 4xx naming the field, never a 5xx.
    token = alice._http.headers["Authorization"]
    answer = httpx.post(
        f"{store.url}/api/records/batch", json={"records": [1]}, headers={"Authorization": token}
    )
    assert answer.status_code == 400 and "records.0" in answer.json()["detail"]
    assert alice.search(tags=[tag])["total"] == 0


def test_batch_counts_its_own_records_against_the_quota(admin: StoreClient, tag: str) -> None:
    token = admin.create_user(f"q{tag}")
    admin.set_allocation("local", user=f"q{tag}", max_bytes=10**6, max_records=3)
    with StoreClient(admin.url, token) as user:
        user.create_record("first", repository="local", tags=[tag])
        items = [{"title": f"f{i}", "repository": "local", "tags": [tag]} for i in range(3)]
        # Two fit, the third is one too many: the whole batch is refused, naming it.
        with pytest.raises(QuotaExceededError, match=r"records\[2\]: .*at most 3 records"):
            user.create_records(items)
        assert user.search(tags=[tag])["total"] == 1
        user.create_records(items[:2])
        assert user.search(tags=[tag])["total"] == 3
