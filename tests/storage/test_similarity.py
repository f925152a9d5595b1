"""Similarity search against the real store on loopback: access control, filters, the CLI,
the map's projection, and an index rebuilt from the catalog."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from storage.datasets import DatasetWriter
from storage.datasets.embeddings import read_crop_embeddings, read_embeddings
from storage.federation.client import StoreClient
from storage.federation.embedded import RunningStore
from storage.federation.similarity import VectorIndexes
from storage.federation.similarity.client import project, put_embeddings, similar
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.embedding import DIM, EMBEDDER_VERSION, N_CROPS, embed_frame
from tasks.embedding.ingest import embed_missing, upload_payload

N = 4


def _dataset(root: Path, lattice: str, seed: int) -> Path:
    path = root / f"{lattice}-{seed}.zarr"
    twin = DigitalTwin(seed=seed, schedule=DriftSchedule((), {"lattice": lattice, "drift_x": 5.0}))
    writer = DatasetWriter.open(path, twin.state())
    writer.append([twin.acquire(i) for i in range(N)])
    assert embed_missing(path) == N
    assert embed_missing(path) == 0  # nothing left to do
    return path


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory, alice: StoreClient, bob: StoreClient, compiled_map: None
) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sim")
    out = {}
    for who, client, lattice, seed in (
        ("alice_graphene", alice, "graphene", 1),
        ("alice_mos2", alice, "mos2", 2),
        ("bob_graphene", bob, "graphene", 3),
    ):
        path = _dataset(root, lattice, seed)
        rec = client.create_record(f"{who} run", metadata={"lattice": lattice})
        put_embeddings(client, rec["id"], upload_payload(path))
        out[who] = rec["id"]
        out[who + "_path"] = str(path)
    return out


def _query_image(lattice: str) -> tuple[np.ndarray, float]:
    """A frame nobody stored: another place of the sample, rotated and mirrored."""
    frame = DigitalTwin(seed=9, schedule=DriftSchedule((), {"lattice": lattice})).acquire(7)
    return ndimage.rotate(frame.image, 33, reshape=False, order=3)[40:216, 40:216][:, ::-1], frame.pixel_size


def test_dataset_holds_embeddings_tagged_with_the_embedder(archive: dict[str, str]) -> None:
    frames, vectors = read_embeddings(archive["alice_graphene_path"], EMBEDDER_VERSION)
    assert frames.tolist() == list(range(N))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    frames, crops = read_crop_embeddings(archive["alice_graphene_path"], EMBEDDER_VERSION)
    assert frames.tolist() == list(range(N)) and crops.shape == (N, N_CROPS, DIM)


def test_a_crop_row_finds_its_frame_once_and_only_for_readers(
    archive: dict[str, str], alice: StoreClient, bob: StoreClient
) -> None:
    _, crops = read_crop_embeddings(archive["alice_mos2_path"], EMBEDDER_VERSION)
    _, own = read_embeddings(archive["alice_mos2_path"], EMBEDDER_VERSION)
    query = crops[2, 4]  # the middle crop of frame 2: what a copy of that part looks like
    hits = similar(alice, embedder=EMBEDDER_VERSION, vector=query.tolist(), k=N)["items"]
    # Found by its crop's row (distance ~0, nearer than its own vector), and once: hits are frames.
    assert (hits[0]["id"], hits[0]["frame"]) == (archive["alice_mos2"], 2) and hits[0]["distance"] < 1e-5
    # The frame's own vector is far farther (5e-4 with lattice-polar-v4): the hit is the crop row.
    assert 1 - float(own[2] @ query) > 1e-4
    assert len({(h["id"], h["frame"]) for h in hits}) == len(hits) == N
    # Bob may not read alice's MoS2 (nor her graphene): no row of it, crop or frame, reaches him.
    found = {h["id"] for h in similar(bob, embedder=EMBEDDER_VERSION, vector=query.tolist(), k=50)["items"]}
    assert archive["bob_graphene"] in found and not found & {archive["alice_mos2"], archive["alice_graphene"]}


def test_similar_finds_the_same_lattice_and_only_readable_frames(
    archive: dict[str, str], alice: StoreClient, bob: StoreClient
) -> None:
    image, p = _query_image("graphene")
    vector = embed_frame(image, p).tolist()
    hits = similar(alice, embedder=EMBEDDER_VERSION, vector=vector, k=N)["items"]
    assert [h["id"] for h in hits] == [archive["alice_graphene"]] * N  # never bob's graphene
    hits = similar(bob, embedder=EMBEDDER_VERSION, vector=vector, k=20)["items"]
    found = {h["id"] for h in hits}
    assert archive["bob_graphene"] in found and archive["alice_graphene"] not in found  # not his to find
    # A metadata filter combines with the similarity: only MoS2 frames, however far.
    hits = similar(alice, embedder=EMBEDDER_VERSION, vector=vector, k=20, md='md.lattice == "mos2"')["items"]
    assert len(hits) == N and {h["id"] for h in hits} == {archive["alice_mos2"]}
    assert all(h["metadata"] == {"lattice": "mos2"} for h in hits)


def test_record_query_needs_read_permission(
    archive: dict[str, str], alice: StoreClient, bob: StoreClient
) -> None:
    from scopeflow.errors import NotFoundError

    with pytest.raises(NotFoundError):
        similar(bob, embedder=EMBEDDER_VERSION, record=archive["alice_mos2"], frame=0, k=3)
    hits = similar(alice, embedder=EMBEDDER_VERSION, record=archive["alice_mos2"], frame=0, k=3)["items"]
    assert hits[0]["id"] == archive["alice_mos2"] and hits[0]["frame"] == 0 and hits[0]["distance"] < 1e-5
    alice.grant(archive["alice_mos2"], "read", user="bob")
    hits = similar(bob, embedder=EMBEDDER_VERSION, record=archive["alice_mos2"], frame=0, k=3)["items"]
    assert hits[0]["id"] == archive["alice_mos2"]


def test_bad_queries_are_input_errors(archive: dict[str, str], alice: StoreClient) -> None:
    from scopeflow.errors import InputError

    with pytest.raises(InputError):
        similar(alice, embedder=EMBEDDER_VERSION, vector=[0.0] * 3, k=3)
    with pytest.raises(InputError):
        similar(alice, embedder=EMBEDDER_VERSION, vector=[1.0, 2.0], k=3)  # wrong length
    with pytest.raises(InputError):
        put_embeddings(alice, archive["alice_mos2"], {"embedder": "x", "frames": [0], "vectors": "!!"})


def test_cli_embed_sends_a_dataset(archive: dict[str, str], store: RunningStore, tmp_path: Path) -> None:
    from flows.cli import app

    path = _dataset(tmp_path, "perovskite", 4)
    rec = StoreClient(store.url, store.token).create_record(
        "perovskite run", metadata={"lattice": "perovskite"}
    )
    env = {"SCOPEFLOW_STORE_URL": store.url, "SCOPEFLOW_STORE_TOKEN": store.token}
    out = CliRunner().invoke(app, ["store", "embed", str(path), "--record", rec["id"]], env=env)
    assert out.exit_code == 0, out.output
    hits = similar(
        StoreClient(store.url, store.token), embedder=EMBEDDER_VERSION, record=rec["id"], frame=2, k=N
    )
    assert {h["id"] for h in hits["items"]} == {rec["id"]}
    out = CliRunner().invoke(
        app, ["store", "embed", str(tmp_path / "nothing"), "--record", rec["id"]], env=env
    )
    assert out.exit_code == 2


def test_cli_similar_by_image_and_by_record(
    archive: dict[str, str], store: RunningStore, alice: StoreClient, tmp_path: Path
) -> None:
    from flows.cli import app

    image, p = _query_image("mos2")
    np.save(tmp_path / "q.npy", image)
    env = {
        "SCOPEFLOW_STORE_URL": store.url,
        "SCOPEFLOW_STORE_TOKEN": alice._http.headers["Authorization"][7:],
    }
    out = CliRunner().invoke(
        app, ["store", "similar", str(tmp_path / "q.npy"), "--pixel-size", str(p), "-k", "2"], env=env
    )
    assert out.exit_code == 0, out.output
    assert [line.split("\t")[0] for line in out.stdout.splitlines()] == [archive["alice_mos2"]] * 2
    out = CliRunner().invoke(
        app, ["store", "similar", archive["alice_graphene"], "--frame", "1", "--json"], env=env
    )
    assert out.exit_code == 0, out.output
    assert '"frame": 1' in out.stdout
    out = CliRunner().invoke(app, ["store", "similar", str(tmp_path / "missing.tif")], env=env)
    assert out.exit_code == 2 and "no such image" in " ".join(out.output.split())


def test_map_projects_readable_frames_and_reprojects_a_selection(
    archive: dict[str, str], bob: StoreClient, alice: StoreClient
) -> None:
    points = project(bob, embedder=EMBEDDER_VERSION)["points"]
    ids = {pt["id"] for pt in points}
    assert archive["bob_graphene"] in ids and archive["alice_graphene"] not in ids
    # One point per frame, not one per row (a frame's crops are rows of the index too).
    assert len({(pt["id"], pt["frame"]) for pt in points}) == len(points)
    assert sum(pt["id"] == archive["bob_graphene"] for pt in points) == N
    assert all(0.0 <= pt["x"] <= 1.0 and 0.0 <= pt["y"] <= 1.0 for pt in points)
    chosen = [[pt["id"], pt["frame"]] for pt in points[:3]]
    again = project(bob, embedder=EMBEDDER_VERSION, selection=chosen)["points"]
    assert sorted([pt["id"], pt["frame"]] for pt in again) == sorted(chosen)
    # A selection naming frames bob may not read projects nothing of them.
    sneaky = project(bob, embedder=EMBEDDER_VERSION, selection=[[archive["alice_graphene"], 0]])["points"]
    assert sneaky == []


def test_index_is_rebuilt_from_the_catalog_when_lost(archive: dict[str, str], store: RunningStore) -> None:
    from storage.federation.catalog import Catalog
    from storage.federation.database import Database
    from storage.federation.paths import store_paths

    db_path = store_paths(store.store_dir)[0]
    directory = db_path.parent / "vectors"
    db = Database(store.database_url or f"sqlite:///{db_path}")
    try:
        cat = Catalog(db)
        with db.reading() as session:
            first = VectorIndexes(directory).get(EMBEDDER_VERSION)
            first.catch_up(session)
            first.save()
            lost = directory.parent / "vectors-lost"
            shutil.move(directory, lost)
            rebuilt = VectorIndexes(directory).get(EMBEDDER_VERSION)
            assert rebuilt.catch_up(session) == len(first)
        assert np.array_equal(rebuilt.vectors, first.vectors)
        # Crop rows too, each naming its frame.
        assert np.array_equal(rebuilt.view, first.view) and int(first.view.max()) == N_CROPS
        assert np.array_equal(rebuilt.frame, first.frame)
        assert not (directory / f"{EMBEDDER_VERSION}.npz").exists()  # a query's catch-up writes nothing
        rebuilt.maintain(db.reading)
        assert (directory / f"{EMBEDDER_VERSION}.npz").exists()  # saved again, by the maintenance
        with db.reading() as session:
            loaded = VectorIndexes(directory).get(EMBEDDER_VERSION)
            assert loaded.catch_up(session) == 0  # read from its files, nothing new
        assert np.array_equal(loaded.vectors, first.vectors) and len(loaded) == len(first)
        assert np.array_equal(loaded.view, first.view)
        assert loaded.search(first.vectors[0], 1, None)[0][:2] == (int(first.record[0]), int(first.frame[0]))
        (directory / f"{EMBEDDER_VERSION}.faiss").write_bytes(b"garbage")
        with db.reading() as session:
            again = VectorIndexes(directory).get(EMBEDDER_VERSION)
            assert again.catch_up(session) == len(first)  # unreadable files: rebuilt, not trusted
        del cat
    finally:
        db.dispose()


def test_map_page_loads_selects_reprojects_and_opens_a_record(
    archive: dict[str, str], store: RunningStore, alice: StoreClient
) -> None:
    import os

    from tests.ops.browser import Browser, find_chromium

    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium: scripts/install-browser.sh should have installed it")
        pytest.skip("no Chromium (run scripts/install-browser.sh)")
    token = alice._http.headers["Authorization"][7:]
    with Browser(binary) as browser:
        browser.open(f"{store.url}/map#token={token}")  # the default embedder: the current one
        browser.wait_for_text("Load map")
        assert browser.click_text("Load map")
        browser.wait_for_text(f"{2 * N} frames")  # alice's two runs, not bob's
        legend = browser.wait_for_text("graphene", "mos2")
        assert "perovskite" not in legend  # the admin's run is not hers
        # A box over the left half of the canvas, as a drag would draw it.
        selected = browser.evaluate(
            """(() => { const c = document.getElementById('map'); const r = c.getBoundingClientRect();
            const ev = (type, x, y) => c.dispatchEvent(new MouseEvent(type, {clientX: r.left + x, clientY: r.top + y,
              buttons: type === 'mouseup' ? 0 : 1, bubbles: true}));
            ev('mousedown', 0, 0); ev('mousemove', r.width / 2, r.height); ev('mouseup', r.width / 2, r.height);
            return document.getElementById('status').textContent; })()"""
        )
        n_selected = int(selected.split()[0])
        assert 0 < n_selected <= 2 * N, selected
        assert browser.click_text("Re-project selection")
        browser.wait_for_text(f"{n_selected} frames")
        assert int(browser.evaluate("document.body.dataset.points")) == n_selected
        # Click the first point: its record link appears; hovering shows its thumbnail.
        link = browser.evaluate(
            """(async () => { const c = document.getElementById('map'); const r = c.getBoundingClientRect();
            const p = points[0]; const x = 10 + p.x * (c.clientWidth - 20), y = 10 + p.y * (c.clientHeight - 20);
            const ev = (type) => c.dispatchEvent(new MouseEvent(type, {clientX: r.left + x, clientY: r.top + y,
              buttons: type === 'mousedown' ? 1 : 0, bubbles: true}));
            ev('mousedown'); ev('mouseup'); ev('mousemove');
            for (let i = 0; i < 50 && !document.getElementById('thumb').naturalWidth; i++)
              await new Promise((ok) => setTimeout(ok, 100));
            const a = document.getElementById('record');
            return [a.textContent, a.getAttribute('href'), document.getElementById('thumb').naturalWidth]; })()"""
        )
        text, href, thumb_px = link
        assert text.split()[0] in {archive["alice_graphene"], archive["alice_mos2"]}
        assert href.startswith("/api/records/") and thumb_px == 64
        record = alice._json("GET", href)
        assert record["id"] == text.split()[0]


def test_graph_search_honours_the_filter_and_finds_the_exact_neighbours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from storage.federation.similarity import index as index_module

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    record = np.arange(3000) // 100 + 1  # 30 records of 100 frames
    ix = index_module.VectorIndex("t")
    ix.add(np.arange(3000) + 1, record, np.arange(3000) % 100, vectors)
    allowed = np.array([2, 7, 11, 20, 29])
    monkeypatch.setattr(index_module, "EXACT_BELOW", 0)  # the inverted file, not the exact scan
    assert ix.reorganise() and ix.lists
    graph = [ix.search(v, 5, allowed) for v in vectors[:50]]
    monkeypatch.setattr(index_module, "EXACT_BELOW", 10**9)
    exact = [ix.search(v, 5, allowed) for v in vectors[:50]]
    assert all(h[0] in allowed for hits in graph for h in hits)
    found = np.mean(
        [len({h[:2] for h in g} & {h[:2] for h in e}) / 5 for g, e in zip(graph, exact, strict=True)]
    )
    assert found >= 0.95


def test_a_filter_far_from_the_query_still_gets_the_nearest_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.federation.similarity import index as index_module

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2, 16))
    vectors = np.concatenate([c + 0.05 * rng.normal(size=(1500, 16)) for c in centres]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    record = np.arange(3000) // 100 + 1  # records 1-15 in the first cluster, 16-30 in the second
    ix = index_module.VectorIndex("t")
    ix.add(np.arange(3000) + 1, record, np.arange(3000) % 100, vectors)
    far = np.arange(16, 31)
    monkeypatch.setattr(index_module, "EXACT_BELOW", 0)
    assert ix.reorganise() and ix.lists
    hits = ix.search(vectors[0], 5, far)  # a query of the first cluster, filtered to the second
    sims = vectors[1500:] @ vectors[0]
    best = {(int(record[1500 + i]), int((1500 + i) % 100)) for i in np.argsort(-sims)[:5]}
    assert {h[:2] for h in hits} == best


def _payload(vectors: np.ndarray) -> dict[str, object]:
    import base64

    return {
        "frames": list(range(len(vectors))),
        "vectors": base64.b64encode(vectors.astype("<f4").tobytes()).decode(),
    }


def test_the_probe_of_the_lists_never_returns_a_row_of_a_record_not_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forbidden rows nearest the query, in the same lists as the allowed ones: the inverted
    file's filtered probe (a bitmap of allowed positions) returns the exact answer among the
    allowed rows and nothing else, as the exact scan does."""
    from storage.federation.similarity import index as index_module

    rng = np.random.default_rng(2)
    base = rng.normal(size=(200, 16))
    # Each base vector is a frame of record 1-10 (forbidden) and, further out, of 11-20.
    near = base[np.arange(2000) % 200] + 0.01 * rng.normal(size=(2000, 16))
    far = base[np.arange(2000) % 200] + 0.2 * rng.normal(size=(2000, 16))
    vectors = np.concatenate([near, far]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    record = np.arange(4000) // 200 + 1
    ix = index_module.VectorIndex("t")
    ix.add(np.arange(4000) + 1, record, np.arange(4000) % 200, vectors)
    allowed = np.arange(11, 21)
    monkeypatch.setattr(index_module, "EXACT_BELOW", 0)
    assert ix.reorganise() and ix.lists
    probed = [ix.search(v, 10, allowed) for v in vectors[:40]]
    monkeypatch.setattr(index_module, "EXACT_BELOW", 10**9)
    exact = [ix.search(v, 10, allowed) for v in vectors[:40]]
    assert all(len(hits) == 10 and all(h[0] in allowed for h in hits) for hits in probed)
    found = np.mean(
        [len({h[:2] for h in p} & {h[:2] for h in e}) / 10 for p, e in zip(probed, exact, strict=True)]
    )
    assert found >= 0.95


def test_rows_added_after_the_lists_are_found_by_a_filtered_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows that arrive after the lists were built (a query's catch-up) join the lists and the
    query's tables at once: a filter to their record finds them, and only them."""
    from storage.federation.similarity import index as index_module

    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ix = index_module.VectorIndex("t")
    ix.add(np.arange(2000) + 1, np.arange(2000) // 100 + 1, np.arange(2000) % 100, vectors[:2000])
    monkeypatch.setattr(index_module, "EXACT_BELOW", 0)
    assert ix.reorganise() and ix.lists
    ix.search(vectors[0], 5, np.array([1]))  # the tables exist before the new rows come
    for start in (2000, 2500):  # two uploads of record 21, then of record 22
        ix.add(
            np.arange(start, start + 500) + 1,
            np.full(500, 21 + (start - 2000) // 500),
            np.arange(500),
            vectors[start : start + 500],
        )
    for record, lo in ((21, 2000), (22, 2500)):
        for v in vectors[lo : lo + 20]:
            hits = ix.search(v, 5, np.array([record, 99]))
            sims = vectors[lo : lo + 500] @ v
            assert [h[:2] for h in hits] == [(record, int(i)) for i in np.argsort(-sims)[:5]]


def test_frames_uploaded_twice_still_give_k_distinct_frames() -> None:
    """A frame's rows are bounded by its views for the rows a query asks for; a frame whose
    rows were uploaded several times holds more, and the query asks again for more rows
    rather than return fewer than k frames."""
    from storage.federation.similarity import index as index_module

    rng = np.random.default_rng(3)
    own = rng.normal(size=(30, 8)).astype(np.float32)
    q = own[0] / np.linalg.norm(own[0])
    # Frame 0 of record 1 uploaded five times (2 views each), near the query; 29 other frames.
    vectors = np.concatenate([np.repeat(own[:1], 10, 0) + 0.01 * rng.normal(size=(10, 8)), own[1:]])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    frame = np.concatenate([np.zeros(10, int), np.arange(1, 30)])
    view = np.concatenate([np.tile([0, 1], 5), np.zeros(29, int)])
    ix = index_module.VectorIndex("t")
    ix.add(np.arange(39) + 1, np.ones(39, int), frame, vectors, view)
    hits = ix.search(q, 5, np.array([1]))
    assert len(hits) == 5 and len({h[1] for h in hits}) == 5 and hits[0][1] == 0
    best = [int(f) for f in np.argsort(-(own / np.linalg.norm(own, axis=1, keepdims=True)) @ q)[:5]]
    assert [h[1] for h in hits] == best


def test_embedders_with_dotted_names_keep_their_own_index(
    archive: dict[str, str], alice: StoreClient, bob: StoreClient, tmp_path: Path
) -> None:
    from scopeflow.errors import InputError

    rng = np.random.default_rng(5)
    mine, theirs = rng.normal(size=(3, 8)), rng.normal(size=(3, 12))
    put_embeddings(alice, archive["alice_mos2"], {"embedder": "probe.a", **_payload(mine)})
    assert len(similar(alice, embedder="probe.a", vector=mine[0].tolist(), k=3)["items"]) == 3
    # Another embedder whose name differs only after a dot, with vectors of another length: its
    # own index (one file per name), not the first one's saved files.
    put_embeddings(bob, archive["bob_graphene"], {"embedder": "probe.b", **_payload(theirs)})
    hits = similar(bob, embedder="probe.b", vector=theirs[1].tolist(), k=5)["items"]
    assert [(h["id"], h["frame"]) for h in hits][:1] == [(archive["bob_graphene"], 1)] and len(hits) == 3
    for name in ("probe.a", "probe.b", ".", ".."):
        paths = VectorIndexes(tmp_path).get(name)._paths()
        assert paths is not None and all(path.parent == tmp_path for path in paths)
    # A later upload of another length to the same embedder is refused, so it cannot stop the
    # queries of everybody else.
    with pytest.raises(InputError, match="holds vectors of 8"):
        put_embeddings(bob, archive["bob_graphene"], {"embedder": "probe.a", **_payload(theirs)})
    assert len(similar(alice, embedder="probe.a", vector=mine[0].tolist(), k=3)["items"]) == 3


def test_a_large_map_places_the_unfitted_frames_beside_their_own_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scipy.spatial import cKDTree

    from storage.federation.similarity import map_view

    monkeypatch.setattr(map_view, "FIT_SAMPLE", 150)  # the sample path, at a test's size
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 16))
    label = np.repeat(np.arange(3), 300)
    vectors = (centres[label] + 0.15 * rng.normal(size=(900, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    xy = map_view.layout(vectors)
    assert xy.shape == (900, 2) and np.isfinite(xy).all() and xy.min() >= 0 and xy.max() <= 1
    _, near = cKDTree(xy).query(xy, k=6)
    assert (label[near[:, 1:]] == label[:, None]).mean() >= 0.95


def test_lists_are_built_and_measured_out_of_the_query_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from storage.federation.similarity import index as index_module

    rng = np.random.default_rng(2)
    base = rng.normal(size=(100, 16))
    # 50 copies of each of 100 frames, spread as far as the frames lie apart: the ten nearest
    # of a query straddle several lists.
    vectors = (np.repeat(base, 50, axis=0) + rng.normal(size=(5000, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = (base[:40].repeat(2, axis=0) + rng.normal(size=(80, 16))).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    monkeypatch.setattr(index_module, "EXACT_BELOW", 1000)
    built = []
    real_build = index_module._build

    def build(snapshot: np.ndarray) -> object:
        built.append(len(snapshot))
        return real_build(snapshot)

    monkeypatch.setattr(index_module, "_build", build)
    ix = index_module.VectorIndex("t", tmp_path)

    def recall() -> float:
        found = []
        for q in queries:
            exact = set((np.argsort(-(vectors[: len(ix)] @ q))[:10] + 1).tolist())
            found.append(len(exact & {h[0] for h in ix.search(q, 10, None)}) / 10)
        return float(np.mean(found))

    for start in range(0, 5000, 500):  # rows arriving as a query's catch-up adds them
        ix.add(
            np.arange(start, start + 500) + 1,
            np.arange(start, start + 500) + 1,
            np.zeros(500, np.int32),
            vectors[start : start + 500],
        )
        assert recall() == 1.0  # exact until the lists exist
    assert (
        built == [] and ix.lists == 0 and not list(tmp_path.iterdir())
    )  # queries built nothing, wrote nothing
    assert ix.due() and ix.reorganise() and built == [5000]
    assert ix.lists == index_module.n_lists(5000) and 1 <= ix.nprobe < ix.lists
    assert ix.recall >= index_module.TARGET_RECALL and recall() >= 0.95
    assert not ix.due() and not ix.reorganise() and built == [5000]  # not again until it doubles
    # Fewer lists scanned than measured lose recall: the measurement is what holds it.
    measured, ix.nprobe = ix.nprobe, 1
    assert recall() < index_module.TARGET_RECALL
    ix.nprobe = measured
    again = index_module.VectorIndex("t", tmp_path)
    again._load()
    assert again.nprobe == measured and again.lists == ix.lists and len(again) == 5000
    assert np.array_equal(again.vectors, ix.vectors)


def test_an_upload_saves_the_index_in_the_background(
    archive: dict[str, str], alice: StoreClient, store: RunningStore
) -> None:
    import time

    from storage.federation.paths import store_paths

    if store.database_url:
        pytest.skip("a store on PostgreSQL keeps its vector index in memory, no files")
    directory = store_paths(store.store_dir)[0].parent / "vectors"
    rng = np.random.default_rng(8)
    put_embeddings(
        alice, archive["alice_mos2"], {"embedder": "probe.bg", **_payload(rng.normal(size=(5, 6)))}
    )
    # No query has asked for this embedder: its index files come from the store's maintenance.
    deadline = time.monotonic() + 30
    while not (directory / "probe.bg.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with np.load(directory / "probe.bg.npz") as z:
        assert len(z["rows"]) == 5


def _copy(image: np.ndarray, seed: int) -> np.ndarray:
    """A copy as ``benchmarks/similarity.py`` makes one: turned 37°, mirrored, cropped to the
    central 150², re-noised at half the dose."""
    rng = np.random.default_rng(seed)
    turned = ndimage.rotate(image.astype(np.float32), 37, reshape=False, order=3)[53:203, 53:203][:, ::-1]
    return rng.poisson(np.clip(turned, 0, None) * 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory, alice: StoreClient, bob: StoreClient) -> dict[str, object]:
    """One graphene dataset pushed twice into the local repository: alice's record and bob's
    (alice may not read his), each with the frames' own embeddings."""
    from storage.federation.push import push_dataset

    root = tmp_path_factory.mktemp("held")
    out: dict[str, object] = {}
    for who, client in (("alice", alice), ("bob", bob)):
        path = root / who / "graphene.zarr"
        path.parent.mkdir()
        twin = DigitalTwin(seed=21, schedule=DriftSchedule((), {"lattice": "graphene", "drift_x": 9.0}))
        writer = DatasetWriter.open(path, twin.state())
        frames = [twin.acquire(i) for i in range(N)]
        writer.append(frames)
        embed_missing(path)
        rec = client.create_record(f"{who} held run", metadata={"lattice": "graphene", "held": 1})
        push_dataset(client, path, record=rec["id"], state_dir=root / who / "state")
        put_embeddings(client, rec["id"], upload_payload(path))
        out[who] = rec["id"]
        out["frames"] = frames
    return out


def test_reranking_puts_the_source_frame_first_and_reads_only_readable_frames(
    held: dict[str, object], alice: StoreClient
) -> None:
    from storage.federation.similarity.client import image_payload

    frames = held["frames"]
    assert isinstance(frames, list)
    source = frames[2]
    query = _copy(source.image, 5)
    # The vector of another frame of the run: the index puts that frame first, with no doubt.
    decoy = embed_frame(frames[0].image, frames[0].pixel_size).tolist()
    ask = {"embedder": EMBEDDER_VERSION, "vector": decoy, "k": N, "md": "md.held == 1"}
    plain = similar(alice, **ask)["items"]
    assert (plain[0]["id"], plain[0]["frame"]) == (held["alice"], 0) and "match" not in plain[0]
    answer = similar(alice, **ask, rerank=N, image=image_payload(query, source.pixel_size))
    items = answer["items"]
    assert (items[0]["id"], items[0]["frame"]) == (held["alice"], 2)
    assert items[0]["match"] > max(i["match"] or 0.0 for i in items[1:])
    # Bob's copy of the same data is never a candidate, so never read or scored for alice.
    assert all(i["id"] != held["bob"] for i in items)
    assert answer["reranked"] == sum(i["match"] is not None for i in items) == N


def test_a_record_query_reranks_with_the_frame_read_from_its_dataset(
    held: dict[str, object], alice: StoreClient, bob: StoreClient
) -> None:
    from scopeflow.errors import InputError, NotFoundError

    items = similar(alice, embedder=EMBEDDER_VERSION, record=held["alice"], frame=3, k=3, rerank=N)["items"]
    assert (items[0]["id"], items[0]["frame"]) == (held["alice"], 3) and items[0]["match"] > 0.99
    with pytest.raises(NotFoundError):  # bob may not read alice's record, so not rerank against it
        similar(bob, embedder=EMBEDDER_VERSION, record=held["alice"], frame=3, k=3, rerank=N)
    with pytest.raises(InputError):
        similar(
            alice,
            embedder=EMBEDDER_VERSION,
            vector=[1.0] * 133,
            k=3,
            rerank=5,
            image={"data": "AAAA", "shape": [64, 64], "pixel_size": 0.1},
        )
    with pytest.raises(InputError):  # nothing to compare the candidates with
        similar(alice, embedder=EMBEDDER_VERSION, vector=[1.0] * 133, k=3, rerank=5)


def test_cli_similar_reranks_an_image_by_default(
    held: dict[str, object], store: RunningStore, alice: StoreClient, tmp_path: Path
) -> None:
    from flows.cli import app

    frames = held["frames"]
    assert isinstance(frames, list)
    np.save(tmp_path / "copy.npy", _copy(frames[1].image, 6))
    env = {
        "SCOPEFLOW_STORE_URL": store.url,
        "SCOPEFLOW_STORE_TOKEN": alice._http.headers["Authorization"][7:],
    }
    args = ["store", "similar", str(tmp_path / "copy.npy"), "--pixel-size", str(frames[1].pixel_size)]
    out = CliRunner().invoke(app, [*args, "-k", "1", "--md", "md.held == 1"], env=env)
    assert out.exit_code == 0, out.output
    rid, frame, _, match = out.stdout.splitlines()[0].split("\t")[:4]
    assert (rid, frame) == (held["alice"], "1") and float(match) > 0.5


def test_a_broken_copy_is_left_uncompared_not_a_server_error(
    tmp_path: Path, store: RunningStore, alice: StoreClient
) -> None:
    """A candidate whose stored frames no longer decode (a truncated or overwritten chunk) keeps
    the index's order, unscored: the query still answers."""
    from storage.federation.push import push_dataset
    from storage.federation.similarity.client import image_payload

    path = tmp_path / "broken.zarr"
    twin = DigitalTwin(seed=4, schedule=DriftSchedule((), {"lattice": "graphene"}))
    frames = [twin.acquire(i) for i in range(3)]
    DatasetWriter.open(path, twin.state()).append(frames)
    embed_missing(path)
    rec = alice.create_record("broken copy", metadata={"broken": 1})
    push_dataset(alice, path, record=rec["id"], state_dir=tmp_path / "state")
    put_embeddings(alice, rec["id"], upload_payload(path))
    copies = [p for p in store.store_dir.rglob("broken.zarr") if p.parent.parent.name == "records"]
    assert copies
    for chunk in (
        p for c in copies for p in (c / "frames").rglob("*") if p.is_file() and p.name != "zarr.json"
    ):
        chunk.write_bytes(b"not a chunk")
    vector = embed_frame(frames[0].image, frames[0].pixel_size).tolist()
    answer = similar(
        alice,
        embedder=EMBEDDER_VERSION,
        vector=vector,
        k=3,
        md="md.broken == 1",
        rerank=3,
        image=image_payload(frames[0].image[64:192, 64:192], frames[0].pixel_size),
    )
    assert [i["id"] for i in answer["items"]] == [rec["id"]] * 3
    assert answer["reranked"] == 0 and all(i["match"] is None for i in answer["items"])
