"""Eight writers at once against one SQLite catalog lose nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from storage.federation.client import StoreClient
from storage.federation.embedded import RunningStore

WRITERS = 8
PER_WRITER = 15


def test_eight_concurrent_writers_lose_nothing(store: RunningStore, alice: StoreClient, tag: str) -> None:
    token = alice._http.headers["Authorization"].split()[1]
    collection = alice.create_collection("concurrent")["id"]

    def writer(w: int) -> list[str]:
        with StoreClient(store.url, token) as client:
            ids = []
            for i in range(PER_WRITER):
                rec = client.create_record(
                    f"w{w} r{i}", tags=[tag], metadata={"writer": w, "i": i}, collections=[collection]
                )
                client.update(rec["id"], metadata={"touched": True})
                ids.append(rec["id"])
            return ids

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(writer, range(WRITERS)))
    made = [i for ids in results for i in ids]
    assert len(made) == len(set(made)) == WRITERS * PER_WRITER
    found = {r["id"] for r in alice.iter_search(page_size=100, tags=[tag])}
    assert found == set(made)
    assert alice.search(tags=[tag], md="md.touched == true")["total"] == WRITERS * PER_WRITER
    assert alice.get_collection(collection)["n_records"] == WRITERS * PER_WRITER
    for w in range(WRITERS):
        assert alice.search(tags=[tag], md=f"md.writer == {w}")["total"] == PER_WRITER
