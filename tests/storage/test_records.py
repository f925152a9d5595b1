"""Records over HTTP: CRUD, search, pagination, schemas, sizes, bad input, audit."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from scopeflow.errors import InputError, NotFoundError, ServiceError
from storage.federation.client import StoreClient
from storage.federation.embedded import RunningStore, free_port
from storage.federation.errors import (
    AuthenticationError,
    ConflictError,
    PayloadTooLargeError,
    QuerySyntaxError,
    QuotaExceededError,
    SchemaValidationError,
)


def test_crud_by_id_and_alias(alice: StoreClient, tag: str) -> None:
    rec = alice.create_record(
        "frames of run 7",
        alias=f"run-{tag}",
        tags=[tag, "stem"],
        metadata={"defocus": -3.5, "material": "MoS2"},
    )
    assert rec["id"].startswith("d/")
    assert alice.get(rec["id"]) == alice.get(f"run-{tag}") == alice.get(f"alice:run-{tag}")
    assert alice.get(rec["id"])["metadata"] == {"defocus": -3.5, "material": "MoS2"}

    updated = alice.update(rec["id"], title="frames of run 7 (cleaned)", metadata={"dose": 12.0}, tags=[tag])
    assert updated["title"] == "frames of run 7 (cleaned)"
    assert updated["metadata"] == {"defocus": -3.5, "material": "MoS2", "dose": 12.0}  # merged
    assert updated["tags"] == [tag]
    assert alice.search(tags=[tag], md="md.dose == 12")["total"] == 1

    with pytest.raises(ConflictError, match="already taken"):
        alice.create_record("dup", alias=f"run-{tag}")

    alice.delete(rec["id"])
    with pytest.raises(NotFoundError, match=rec["id"]):
        alice.get(rec["id"])


def test_search_criteria(alice: StoreClient, tag: str) -> None:
    a = alice.create_record(
        "MoS2 flake A", alias=f"flake-a-{tag}", tags=[tag], metadata={"drift_score": 0.5, "material": "MoS2"}
    )
    b = alice.create_record(
        "WS2 flake B",
        description="tilted",
        tags=[tag, "tilt"],
        metadata={"drift_score": 0.1, "material": "WS2"},
    )
    c = alice.create_record(
        "MoS2 flake C", tags=[tag], metadata={"drift_score": 0.9, "material": "MoS2", "elements": ["Mo", "S"]}
    )

    def ids(**criteria: object) -> set[str]:
        page = alice.search(tags=[tag], **criteria)
        assert page["total"] == len(page["items"])  # the count and the page agree
        return {r["id"] for r in page["items"]}

    assert ids(md='md.drift_score > 0.3 and md.material == "MoS2"') == {a["id"], c["id"]}
    assert ids(md='md.drift_score <= 0.1 or md.material in ["XX", "WS2"]') == {b["id"]}
    assert ids(md='not md.material == "MoS2"') == {b["id"]}
    assert ids(md='md.elements == "S"') == {c["id"]}  # a list means "contains"
    assert ids(md="exists md.elements") == {c["id"]}
    assert ids(md='md.material like "Mo*"') == {a["id"], c["id"]}
    assert ids(text="flake tilted") == {b["id"]}
    assert ids(text="mos2") == {a["id"], c["id"]}  # case-insensitive
    assert ids(alias=f"flake-*-{tag}") == {a["id"]}
    assert ids(id=a["id"]) == {a["id"]}
    assert a["id"] in ids(id=a["id"] + "*")
    assert a["id"] in ids(id=a["id"][:-1] + "?")  # a pattern no index range answers
    assert ids(md="md.drift_score > 0.2 and md.drift_score < 0.6") == {a["id"]}  # one range
    assert ids(owner="alice") == {a["id"], b["id"], c["id"]}
    now = dt.datetime.now(dt.UTC)
    assert ids(created_after=now - dt.timedelta(minutes=5)) == {a["id"], b["id"], c["id"]}
    assert ids(created_before=now - dt.timedelta(minutes=5)) == set()
    page = alice.search(tags=[tag], sort="title")
    assert [r["title"] for r in page["items"]] == ["MoS2 flake A", "MoS2 flake C", "WS2 flake B"]


def test_pagination_is_stable_and_complete(alice: StoreClient, tag: str) -> None:
    made = [alice.create_record(f"item {i:02d}", tags=[tag], metadata={"i": i})["id"] for i in range(23)]
    pages = [alice.search(tags=[tag], sort="id", offset=o, limit=10) for o in (0, 10, 20)]
    assert [len(p["items"]) for p in pages] == [10, 10, 3]
    assert all(p["total"] == 23 for p in pages)
    assert [r["id"] for p in pages for r in p["items"]] == made
    assert [r["id"] for r in alice.iter_search(page_size=7, tags=[tag], sort="-id")] == made[::-1]


def test_totals_past_count_limit_are_lower_bounds(alice: StoreClient, tag: str) -> None:
    for i in range(30):
        alice.create_record(f"{tag} item {i:02d}", tags=[tag], metadata={"i": i, "even": i % 2 == 0})

    def page(**criteria: object) -> tuple[int, bool, int]:
        got = alice.search(tags=[tag], **criteria)
        return got["total"], got["total_is_lower_bound"], len(got["items"])

    assert page(count_limit=10, limit=5) == (10, True, 5)
    assert page(count_limit=10, limit=5, offset=20) == (25, True, 5)  # what the page shows
    assert page(count_limit=10, limit=5, offset=28) == (30, False, 2)  # a short page is the end
    assert page(count_limit=0, limit=5) == (5, True, 5)  # at least what the page shows
    assert page(limit=5) == (30, False, 5)  # under the default limit
    assert alice.search(tags=[tag], exact_total=True, count_limit=3)["total"] == 30
    assert page(count_limit=None) == (30, False, 30)

    md = "md.i >= 10 and md.even == true"  # two terms: one drives, the other is probed
    for sort in ("-created", "title", "id", "-size"):
        capped = alice.search(tags=[tag], md=md, sort=sort, count_limit=3)
        exact = alice.search(tags=[tag], md=md, sort=sort, exact_total=True)
        assert (capped["total"], capped["total_is_lower_bound"]) == (10, False)  # short page
        assert (exact["total"], exact["total_is_lower_bound"]) == (10, False)
        assert [r["id"] for r in capped["items"]] == [r["id"] for r in exact["items"]]
        assert {r["metadata"]["i"] for r in exact["items"]} == {10, 12, 14, 16, 18, 20, 22, 24, 26, 28}
    walked = alice.search(tags=[tag], md=md, sort="title", count_limit=3, limit=4, offset=2)
    assert [r["metadata"]["i"] for r in walked["items"]] == [14, 16, 18, 20]
    assert (walked["total"], walked["total_is_lower_bound"]) == (6, True)
    assert [r["metadata"]["i"] for r in alice.iter_search(page_size=4, tags=[tag], md=md, sort="title")] == [
        10,
        12,
        14,
        16,
        18,
        20,
        22,
        24,
        26,
        28,
    ]


def test_metadata_terms_joined_by_and_count_each_record_once(alice: StoreClient, tag: str) -> None:
    a = alice.create_record("lists", tags=[tag], metadata={"vals": [1, 2, 3], "elements": ["Mo", "S", "S"]})
    b = alice.create_record("scalar", tags=[tag], metadata={"vals": 5, "elements": "W", "x": 1})
    for md, want in (
        ('md.vals > 0 and md.elements == "S"', {a["id"]}),  # several index rows per record
        ("md.vals > 0 and exists md.elements", {a["id"], b["id"]}),
        ('md.vals >= 1 and (md.elements == "Mo" or md.x == 1)', {a["id"], b["id"]}),
        ('md.vals > 2 and not md.elements == "W"', {a["id"]}),
        ('md.vals > 2 and md.vals < 3 and md.elements == "S"', set()),  # one value in range
    ):
        for count_limit in (0, None):
            page = alice.search(tags=[tag], md=md, count_limit=count_limit)
            assert {r["id"] for r in page["items"]} == want, md
            assert (page["total"], page["total_is_lower_bound"]) == (len(want), False), md


def test_text_search_follows_edits_and_keeps_like_semantics(alice: StoreClient, tag: str) -> None:
    rec = alice.create_record(f"Überraschung zebra{tag}", description="a 100% pure_sample")
    found = lambda text: [r["id"] for r in alice.search(text=text, owner="alice")["items"]]  # noqa: E731
    assert found(f"zebra{tag}") == [rec["id"]]  # through the trigram index
    assert found(f"ZEBRA{tag.upper()}") == [rec["id"]]  # ASCII case ignored
    assert found(f"Überraschung zebra{tag}") == [rec["id"]]
    assert found(f"zeb*{tag}") == [rec["id"]]  # a wildcard word: LIKE alone
    assert found(f"ze {tag}") == [rec["id"]]  # a short word: LIKE alone
    assert found(f"100% pure_sample zebra{tag}") == [rec["id"]]  # % and _ are plain characters
    assert found(f"pure%sample zebra{tag}") == []
    assert found(f'zebra{tag} "quoted"') == []
    alice.update(rec["id"], title=f"giraffe{tag}")
    assert found(f"zebra{tag}") == []
    assert found(f"giraffe{tag}") == [rec["id"]]
    alice.delete(rec["id"])
    assert found(f"giraffe{tag}") == []


def test_schema_rejection_names_the_field(alice: StoreClient, tag: str) -> None:
    alice.put_schema(
        f"scan/{tag}",
        {"type": "object", "properties": {"defocus": {"type": "number"}}, "required": ["defocus"]},
    )
    ok = alice.create_record("good", tags=[tag], metadata={"defocus": 1.5}, md_schema=f"scan/{tag}")
    assert ok["md_schema"] == f"scan/{tag}"
    with pytest.raises(SchemaValidationError, match=r"md\.defocus: \"far\" is not of type \"number\""):
        alice.create_record("bad", metadata={"defocus": "far"}, md_schema=f"scan/{tag}")
    with pytest.raises(SchemaValidationError, match='"defocus" is a required property'):
        alice.update(ok["id"], metadata={}, metadata_mode="replace")
    with pytest.raises(SchemaValidationError, match="invalid JSON Schema"):
        alice.put_schema(f"broken/{tag}", {"type": "no-such-type"})
    with pytest.raises(NotFoundError, match="no schema"):
        alice.create_record("x", md_schema="never/registered")


def test_oversized_metadata_and_bodies_are_refused(store: RunningStore, alice: StoreClient) -> None:
    with pytest.raises(PayloadTooLargeError, match=r"metadata is \d+ bytes of JSON; the limit is 16384"):
        alice.create_record("big", metadata={"blob": "x" * 20_000})
    r = httpx.post(
        f"{store.url}/api/records",
        content=b"{" + b" " * 300_000 + b"}",
        headers={"Authorization": f"Bearer {store.token}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert "limit for this endpoint is 262144 bytes" in r.json()["detail"]
    rec = alice.create_record("file holder", repository="local")
    with pytest.raises(PayloadTooLargeError, match="524288"):
        alice.put_file(rec["id"], "big.bin", b"\0" * 600_000)
    assert alice.get(rec["id"])["size"] == 0  # nothing recorded


def test_path_traversal_is_refused(store: RunningStore, alice: StoreClient) -> None:
    rec = alice.create_record("files", repository="local")
    n = rec["id"].removeprefix("d/")
    headers = {"Authorization": f"Bearer {alice._http.headers['Authorization'].split()[1]}"}
    for bad in ("..%2F..%2Fescape.txt", "a%2F..%2F..%2F..%2Fescape.txt", "%2Fetc%2Fpasswd"):
        r = httpx.put(f"{store.url}/api/records/{n}/files/{bad}", content=b"x", headers=headers)
        assert r.status_code == 400, (bad, r.text)
        assert "path.path: String should match pattern" in r.json()["detail"]
    with pytest.raises(InputError, match="path: String should match pattern"):
        alice.add_replica(rec["id"], "local", "../../elsewhere", [])
    with pytest.raises(InputError, match=r"contains '\.\.'"):
        alice.put_file(rec["id"], "../x", b"x")
    assert not any(store.store_dir.parent.rglob("escape.txt"))
    # A well-formed upload works and round-trips with its checksum.
    put = alice.put_file(rec["id"], "a/b.bin", b"hello")
    assert put["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert alice.get_file(rec["id"], "a/b.bin") == b"hello"


def test_bad_input_gets_clear_messages(store: RunningStore, alice: StoreClient) -> None:
    with pytest.raises(QuerySyntaxError, match="column 8"):
        alice.search(md="md.x > > 1")
    with pytest.raises(QuerySyntaxError, match="true/false can only be compared"):
        alice.search(md="md.flag > true")
    with pytest.raises(InputError, match=r"sort: .*\(created\|updated\|title\|id\|size\)"):
        alice.search(sort="colour")
    with pytest.raises(InputError, match="title"):
        alice.create_record("")
    with pytest.raises(InputError, match="alias: String should match pattern"):
        alice.create_record("x", alias="../x")
    with pytest.raises(InputError, match=r"tags\.0: String should match pattern"):
        alice.create_record("x", tags=["has space"])
    with pytest.raises(InputError, match=r"dependencies.0.id: String should match pattern"):
        alice.create_record("x", dependencies=[("der", "c/1")])
    with pytest.raises(AuthenticationError, match="unknown, expired or revoked token"):
        StoreClient(store.url, "sf_wrong").whoami()
    r = httpx.get(f"{store.url}/api/whoami")
    assert r.status_code == 401
    assert "Bearer" in r.json()["detail"]


def test_dead_server_gives_a_service_error() -> None:
    client = StoreClient(f"http://127.0.0.1:{free_port()}", "sf_x", timeout_s=2, retries=0)
    with pytest.raises(ServiceError, match=r"cannot reach the scopeflow store at http://127\.0\.0\.1:\d+"):
        client.get("d/1")


def test_writes_are_audited(admin: StoreClient, alice: StoreClient, tag: str) -> None:
    rec = alice.create_record("audited", tags=[tag])
    alice.update(rec["id"], title="audited twice")
    entries = admin.audit(target=rec["id"])
    assert [(e["user"], e["action"]) for e in entries] == [
        ("alice", "record.update"),
        ("alice", "record.create"),
    ]
    assert entries[0]["detail"] == {"fields": ["title"]}
    with pytest.raises(PermissionError, match="store admin"):
        alice.audit()


def test_quota_is_enforced(admin: StoreClient, tag: str) -> None:
    token = admin.create_user(f"q{tag}")
    admin.set_allocation("local", user=f"q{tag}", max_bytes=100, max_records=1)
    with StoreClient(admin.url, token) as user:
        rec = user.create_record("first", repository="local")
        with pytest.raises(InputError, match="at most 1 records"):
            user.create_record("second", repository="local")
        with pytest.raises(QuotaExceededError, match="would exceed the allocation of 100 bytes"):
            user.put_file(rec["id"], "a", b"x" * 101)
        # A 4xx (clients retry 5xx answers; a full allocation stays full) and nothing on disk.
        r = httpx.put(
            f"{admin.url}/api/records/{rec['id'].removeprefix('d/')}/files/a",
            content=b"x" * 101,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 403
        assert user.get(rec["id"])["size"] == 0
