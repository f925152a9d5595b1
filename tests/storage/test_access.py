"""Permissions: private by default, grants inherited through collections, projects, admins."""

from __future__ import annotations

import pytest

from scopeflow.errors import NotFoundError
from storage.federation.client import StoreClient
from storage.federation.errors import PermissionDeniedError


def test_private_record_is_invisible_to_others(alice: StoreClient, bob: StoreClient, tag: str) -> None:
    rec = alice.create_record("alice's secret", alias=f"secret-{tag}", tags=[tag], metadata={"x": 1})
    with pytest.raises(NotFoundError, match="no record"):
        bob.get(rec["id"])
    with pytest.raises(NotFoundError):
        bob.get(f"alice:secret-{tag}")
    with pytest.raises(NotFoundError):
        bob.update(rec["id"], title="mine now")
    with pytest.raises(NotFoundError):
        bob.delete(rec["id"])
    with pytest.raises(NotFoundError):
        bob.add_dependency(rec["id"], "der", rec["id"])
    with pytest.raises(NotFoundError):  # cannot even depend on it
        bob.create_record("spy", dependencies=[("der", rec["id"])])
    with pytest.raises(NotFoundError):
        bob.replicas(rec["id"])
    assert bob.search(tags=[tag])["total"] == 0
    assert bob.search(md="md.x == 1", owner="alice")["total"] == 0
    assert bob.search(text="secret")["total"] == 0
    assert alice.get(rec["id"])["title"] == "alice's secret"  # unchanged


def test_capped_counts_never_include_unreadable_records(
    alice: StoreClient, bob: StoreClient, tag: str
) -> None:
    for i in range(6):
        alice.create_record(f"private {tag} {i}", tags=[tag], metadata={"x": i})
    mine = [bob.create_record(f"bob's {tag} {i}", tags=[tag], metadata={"x": i})["id"] for i in range(2)]
    for criteria in ({"tags": [tag]}, {"md": "md.x >= 0", "tags": [tag]}, {"text": f"{tag}"}):
        for count_limit in (0, 1, 5, None):
            page = bob.search(count_limit=count_limit, sort="title", **criteria)
            assert sorted(r["id"] for r in page["items"]) == sorted(mine)
            assert (page["total"], page["total_is_lower_bound"]) == (2, False)
            small = bob.search(count_limit=count_limit, limit=1, **criteria)
            assert small["total"] <= 2 and len(small["items"]) == 1
    assert alice.search(tags=[tag], count_limit=3, limit=2)["total_is_lower_bound"] is True  # alice: 6


def test_grants_inherit_down_the_collection_tree(alice: StoreClient, bob: StoreClient, tag: str) -> None:
    top = alice.create_collection("campaign")
    sub = alice.create_collection("run 1", parent=top["id"])
    rec = alice.create_record("frames", tags=[tag])
    other = alice.create_record("not shared", tags=[tag])
    alice.link(sub["id"], rec["id"])
    alice.grant(top["id"], "read", user="bob")

    assert bob.get(rec["id"])["title"] == "frames"
    assert [r["id"] for r in bob.search(tags=[tag])["items"]] == [rec["id"]]
    assert bob.search(collection=top["id"])["total"] == 1
    with pytest.raises(NotFoundError):
        bob.get(other["id"])
    with pytest.raises(PermissionDeniedError, match="write permission"):
        bob.update(rec["id"], title="edited by bob")

    alice.grant(sub["id"], "write", user="bob")
    assert bob.update(rec["id"], title="edited by bob")["title"] == "edited by bob"
    with pytest.raises(PermissionDeniedError, match="admin permission"):
        bob.delete(rec["id"])

    alice.grant(top["id"], "none", user="bob")
    alice.grant(sub["id"], "none", user="bob")
    with pytest.raises(NotFoundError):
        bob.get(rec["id"])


def test_record_in_two_collections_and_public_read(alice: StoreClient, bob: StoreClient, tag: str) -> None:
    a = alice.create_collection("A")
    b = alice.create_collection("B")
    rec = alice.create_record("shared twice", tags=[tag], collections=[a["id"], b["id"]])
    assert sorted(alice.get(rec["id"])["collections"]) == sorted([a["id"], b["id"]])
    alice.grant(b["id"], "read")  # every authenticated user
    assert bob.get(rec["id"])["id"] == rec["id"]
    with pytest.raises(NotFoundError):
        bob.get_collection(a["id"])
    assert bob.get_collection(b["id"])["n_records"] == 1


def test_project_members_share_project_records(alice: StoreClient, bob: StoreClient, tag: str) -> None:
    alice.create_project(f"p{tag}", "facility campaign")
    rec = alice.create_record("project data", tags=[tag], project=f"p{tag}")
    with pytest.raises(NotFoundError):
        bob.get(rec["id"])
    alice.set_member(f"p{tag}", "bob", "write")
    assert bob.update(rec["id"], description="checked")["description"] == "checked"
    with pytest.raises(PermissionDeniedError):
        bob.set_member(f"p{tag}", "bob", "admin")
    alice.set_member(f"p{tag}", "bob", "none")
    assert bob.search(tags=[tag])["total"] == 0


def test_admin_sees_everything_and_only_admins_manage(
    admin: StoreClient, alice: StoreClient, bob: StoreClient, tag: str
) -> None:
    rec = alice.create_record("visible to admins", tags=[tag])
    assert admin.get(rec["id"])["owner"] == "alice"
    with pytest.raises(PermissionError, match="store admin"):
        bob.create_user("mallory")
    with pytest.raises(PermissionError, match="store admin"):
        bob.create_repository("rogue", "local", "/tmp/rogue")
    alice.grant(rec["id"], "read")  # bob can read now (public grant) but not re-share
    with pytest.raises(PermissionDeniedError, match="admin permission"):
        bob.grant(rec["id"], "write", user="bob")


@pytest.mark.parametrize(
    "estimate_cap",
    [
        20_000,  # the store's cap: few rows, the smallest criterion collected
        1,  # every count past the cap: a term read within each route's index range
    ],
)
def test_metadata_search_admits_exactly_the_readable_records_whichever_it_starts_from(
    alice: StoreClient,
    bob: StoreClient,
    tag: str,
    estimate_cap: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from storage.federation.catalog import search as search_module

    alice.create_project(f"q{tag}")
    alice.set_member(f"q{tag}", "bob", "write")  # write: bob adds records of his own to it
    shelf = alice.create_collection(f"shelf {tag}")
    alice.grant(shelf["id"], "read", user="bob")
    # "probe.*" keys only this test writes; private records so that each term has more index
    # rows than bob may read (the readable ids are then the smallest criterion).
    alice.create_records(
        [{"title": f"private {i}", "metadata": {"probe": {"tag": tag, "x": i, "m": "a"}}} for i in range(300)]
    )
    readable: dict[str, dict[str, object]] = {}
    routes: dict[int, list[str]] = {}
    for i in range(36):
        md = {"probe": {"tag": tag, "x": i, "m": "a" if i % 2 else "b"}}
        route = i % 6 if i < 30 else 6
        if route == 0:
            rec = bob.create_record(f"own {i}", metadata=md)
        elif route == 1:
            rec = alice.create_record(f"project {i}", metadata=md, project=f"q{tag}")
        elif route == 4:
            rec = alice.create_record(f"shelved {i}", metadata=md, collections=[shelf["id"]])
        elif route == 6:  # bob's own, in the project: reached by two routes, counted once
            rec = bob.create_record(f"own in project {i}", metadata=md, project=f"q{tag}")
        else:
            rec = alice.create_record(f"granted {i}", metadata=md)
            if route in (2, 3):
                alice.grant(rec["id"], "read", user="bob" if route == 2 else None)
        if route != 5:
            readable[rec["id"]] = md["probe"]
        routes.setdefault(route, []).append(rec["id"])
    assert bob.search(limit=1, count_limit=None)["total"] < 300  # precondition of the middle case
    monkeypatch.setattr(search_module, "ESTIMATE_CAP", estimate_cap)
    cases = {
        f'md.probe.tag == "{tag}" and md.probe.x >= 3 and md.probe.m == "a"': lambda p: (
            p["x"] >= 3 and p["m"] == "a"
        ),
        f'md.probe.tag == "{tag}" and (md.probe.x < 5 or md.probe.m == "b")': lambda p: (
            p["x"] < 5 or p["m"] == "b"
        ),
    }

    def check() -> None:
        for expression, holds in cases.items():
            expected = sorted(rid for rid, probe in readable.items() if holds(probe))
            page = bob.search(md=expression, limit=100, count_limit=None)
            assert sorted(r["id"] for r in page["items"]) == expected
            assert (page["total"], page["total_is_lower_bound"]) == (len(expected), False)
            # Past a count limit: a lower bound, and the page still the newest matches.
            capped = bob.search(md=expression, limit=2, count_limit=3)
            assert (capped["total"], capped["total_is_lower_bound"]) == (3, True)
            assert [r["id"] for r in capped["items"]] == [r["id"] for r in page["items"][:2]]
            short = bob.search(md=expression, limit=100, count_limit=3)  # the page runs out
            assert (short["total"], short["total_is_lower_bound"]) == (len(expected), False)

    check()
    # Rights change after the metadata was indexed (its rows copy only the record's owner and
    # project, which never change): what was taken back must vanish, what was given appear.
    alice.set_member(f"q{tag}", "bob", "none")
    for rid in routes[1]:
        del readable[rid]
    alice.grant(routes[2][0], "none", user="bob")
    del readable[routes[2][0]]
    alice.unlink(shelf["id"], routes[4][0])
    del readable[routes[4][0]]
    alice.grant(routes[5][0], "read", user="bob")
    readable[routes[5][0]] = alice.get(routes[5][0])["metadata"]["probe"]
    # Metadata rewritten: the new index rows carry the owner and project as well.
    moved = {"tag": tag, "x": 100, "m": "a"}
    bob.update(routes[6][0], metadata={"probe": moved})
    readable[routes[6][0]] = moved
    check()
    alice.set_member(f"q{tag}", "bob", "read")  # the project again, through its index range
    for rid in routes[1]:
        readable[rid] = alice.get(rid)["metadata"]["probe"]
    alice.update(routes[1][0], metadata={"probe": moved})
    readable[routes[1][0]] = moved
    check()


@pytest.mark.parametrize("estimate_cap", [50, 1])  # the plan's counts decide alone / count on
def test_restricted_metadata_search_sorts_and_pages_only_readable_matches(
    alice: StoreClient, bob: StoreClient, tag: str, estimate_cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restricted user's matches collected within what they may read, sorted by each key and
    paged (on PostgreSQL: collected, counted and paged in one statement): every page is a slice
    of exactly the readable matches in order, and the totals count those alone."""
    from storage.federation.catalog import search as search_module

    alice.create_project(f"s{tag}")
    alice.set_member(f"s{tag}", "bob", "read")
    shelf = alice.create_collection(f"shelf s{tag}")
    alice.grant(shelf["id"], "read", user="bob")
    # Unreadable matches outnumber the readable ones and interleave with them in every order.
    alice.create_records(
        [{"title": f"{tag} {i:03d} private", "metadata": {"s": {"tag": tag, "x": i}}} for i in range(120)]
    )
    readable, own = set(), []
    for i in range(12):
        title, md = f"{tag} {i * 10 + 5:03d}", {"s": {"tag": tag, "x": i}}
        route = i % 5
        if route == 0:
            rec = bob.create_record(title, metadata=md)
            own.append(rec["id"])
        elif route == 1:
            rec = alice.create_record(title, metadata=md, project=f"s{tag}")
        elif route == 2:
            rec = alice.create_record(title, metadata=md, collections=[shelf["id"]])
        else:
            rec = alice.create_record(title, metadata=md)
            alice.grant(rec["id"], "read", user="bob" if route == 3 else None)
        readable.add(rec["id"])
    bob.update(own[0], title=f"{tag} 999 renamed")  # updated and title out of creation order
    monkeypatch.setattr(search_module, "ESTIMATE_CAP", estimate_cap)
    expression = f'md.s.tag == "{tag}" and md.s.x >= 0'
    for sort in ("-created", "created", "-updated", "title", "-title", "id"):
        every = bob.search(md=expression, sort=sort, limit=100, count_limit=None)
        assert {r["id"] for r in every["items"]} == readable
        assert (every["total"], every["total_is_lower_bound"]) == (len(readable), False)
        key, descending = sort.lstrip("-"), sort.startswith("-")
        field = (lambda r: int(r["id"].split("/")[1])) if key == "id" else (lambda r, k=key: r[k])
        ids = [r["id"] for r in every["items"]]
        assert ids == [r["id"] for r in sorted(every["items"], key=field, reverse=descending)]
        for offset in (0, 5, 10, 12, 20):
            page = bob.search(md=expression, sort=sort, offset=offset, limit=5, count_limit=None)
            assert [r["id"] for r in page["items"]] == ids[offset : offset + 5]
            assert page["total"] == len(readable)
        capped = bob.search(md=expression, sort=sort, limit=3, count_limit=4)
        assert [r["id"] for r in capped["items"]] == ids[:3]
        assert (capped["total"], capped["total_is_lower_bound"]) == (4, True)


def test_search_through_grants_and_links_follows_every_change(
    alice: StoreClient, bob: StoreClient, tag: str
) -> None:
    """The shared records' metadata index (kept by the database's triggers) answers exactly
    what the grants and links say after each change: a revoked grant, an unlinked record and
    another user's private record are never found; rewritten metadata is found by its new
    values only; a deleted record is gone."""
    shelf = alice.create_collection(f"shelf {tag}")
    inner = alice.create_collection(f"inner {tag}", parent=shelf["id"])
    alice.grant(shelf["id"], "read", user="bob")  # reaches the sub-collection's records too

    def md(x: int) -> dict[str, object]:
        return {"share": {"tag": tag, "x": x}}

    granted = alice.create_record("granted", metadata=md(1))
    public = alice.create_record("public", metadata=md(2))
    shelved = alice.create_record("shelved", metadata=md(3), collections=[inner["id"]])
    private = alice.create_record("private", metadata=md(4))
    alice.grant(granted["id"], "read", user="bob")
    alice.grant(public["id"], "read")
    expression = f'md.share.tag == "{tag}" and md.share.x >= 0'

    def found() -> set[str]:
        page = bob.search(md=expression, limit=100, count_limit=None)
        assert page["total"] == len(page["items"])
        return {r["id"] for r in page["items"]}

    assert found() == {granted["id"], public["id"], shelved["id"]}
    alice.update(granted["id"], metadata=md(-1))  # no longer matches
    alice.update(shelved["id"], metadata=md(30))
    assert found() == {public["id"], shelved["id"]}
    alice.update(granted["id"], metadata=md(10))
    assert found() == {granted["id"], public["id"], shelved["id"]}
    alice.grant(granted["id"], "write", user="bob")  # a grant changed, still read
    assert found() == {granted["id"], public["id"], shelved["id"]}
    alice.grant(granted["id"], "none", user="bob")
    alice.grant(public["id"], "none")
    assert found() == {shelved["id"]}
    alice.unlink(inner["id"], shelved["id"])
    assert found() == set()
    alice.link(shelf["id"], shelved["id"])
    alice.grant(private["id"], "read", user="bob")
    assert found() == {shelved["id"], private["id"]}
    alice.delete(shelved["id"])
    alice.grant(private["id"], "none", user="bob")
    assert found() == set()
    assert alice.search(md=expression, limit=100)["total"] == 3  # the owner still finds hers
