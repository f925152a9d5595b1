"""Hostile input gets a 4xx that names the rule, never a 5xx, and leaves nothing committed.

Every case here answered 500 before (issue 14); ``BAD_INPUTS`` is the list the security
benchmark counts.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from storage.federation.client import StoreClient
from storage.federation.embedded import RunningStore
from storage.federation.errors import ConflictError, PermissionDeniedError, SchemaValidationError


def _deep(n: int) -> str:
    return '{"a":' * n + "1" + "}" * n


#: (name, method, path, raw JSON body or None, status, words the answer must hold).
BAD_INPUTS: list[tuple[str, str, str, str | None, int, str]] = [
    ("nan", "POST", "/api/records", '{"title": "x", "metadata": {"v": NaN}}', 400, "NaN and Infinity"),
    (
        "infinity",
        "POST",
        "/api/records",
        '{"title": "x", "metadata": {"v": -Infinity}}',
        400,
        "NaN and Infinity",
    ),
    ("1e999", "POST", "/api/records", '{"title": "x", "metadata": {"v": 1e999}}', 400, "NaN and Infinity"),
    (
        "huge int",
        "POST",
        "/api/records",
        '{"title": "x", "metadata": {"v": 1' + "0" * 400 + "}}",
        400,
        "beyond ±1e308",
    ),
    (
        "lone surrogate",
        "POST",
        "/api/records",
        '{"title": "x", "metadata": {"v": "\\ud800"}}',
        400,
        "surrogate",
    ),
    ("surrogate key", "POST", "/api/records", '{"title": "x", "metadata": {"\\udfff": 1}}', 400, "surrogate"),
    ("surrogate title", "POST", "/api/records", '{"title": "\\ud83d"}', 400, "surrogate"),
    ("nul in text", "POST", "/api/records", '{"title": "a\\u0000b"}', 400, "NUL"),
    (
        "deep metadata",
        "POST",
        "/api/records",
        '{"title": "x", "metadata": ' + _deep(900) + "}",
        400,
        "nested deeper",
    ),
    (
        "deep schema",
        "POST",
        "/api/schemas",
        '{"name": "deep", "body": ' + _deep(200) + "}",
        400,
        "nested deeper",
    ),
    ("nan in schema", "POST", "/api/schemas", '{"name": "n", "body": {"maximum": NaN}}', 400, "NaN"),
    (
        "unresolvable ref",
        "POST",
        "/api/schemas",
        '{"name": "r", "body": {"$ref": "#/$defs/none"}}',
        422,
        "unusable",
    ),
    (
        "not x500",
        "POST",
        "/api/search",
        json.dumps({"md": "not " * 500 + "md.x == 1"}),
        400,
        "nests deeper than 32",
    ),
    (
        "in x1000",
        "POST",
        "/api/search",
        json.dumps({"md": "md.x in [" + ",".join(map(str, range(1000))) + "]"}),
        400,
        "limit is 100",
    ),
    (
        "and x64",
        "POST",
        "/api/search",
        json.dumps({"md": " and ".join(f"md.k{i} == 1" for i in range(64))}),
        400,
        "more than 32",
    ),
    ("19-digit id", "POST", "/api/search", json.dumps({"id": "d/9999999999999999999"}), 400, "id"),
    (
        "year 1 at +14",
        "POST",
        "/api/search",
        json.dumps({"created_after": "0001-01-01T00:00:00+14:00"}),
        400,
        "out of range",
    ),
    (
        "year 9999 at -14",
        "POST",
        "/api/search",
        json.dumps({"updated_before": "9999-12-31T23:59:59-14:00"}),
        400,
        "out of range",
    ),
    ("nul in search", "POST", "/api/search", json.dumps({"text": "a\u0000b"}), 400, "NUL"),
    ("12-digit id", "GET", "/api/records/999999999999", None, 404, "no record"),
    ("12-digit collection", "GET", "/api/collections/999999999999", None, 404, "no collection"),
    (
        "huge quota",
        "POST",
        "/api/repositories/local/allocations",
        '{"user": "x", "max_bytes": 1, "max_records": 9999999999}',
        400,
        "max_records",
    ),
    ("superscript id", "GET", "/api/records/%C2%B3", None, 400, "should match pattern"),
    ("superscript delete", "DELETE", "/api/records/%C2%B9", None, 400, "should match pattern"),
    ("superscript replicas", "GET", "/api/records/%C2%B3/replicas", None, 400, "should match pattern"),
    ("superscript upload", "PUT", "/api/records/%C2%B3/files/a", "x", 400, "should match pattern"),
    ("superscript collection", "GET", "/api/collections/%C2%B2", None, 400, "should match pattern"),
    ("arabic digits", "GET", "/api/records/%D9%A3", None, 400, "should match pattern"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "status", "words"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_hostile_input_gets_a_4xx_naming_the_rule(
    store: RunningStore, name: str, method: str, path: str, body: str | None, status: int, words: str
) -> None:
    headers = {"Authorization": f"Bearer {store.token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=store.url, headers=headers) as http:
        r = http.request(method, path, content=body)
        assert r.status_code == status, (name, r.text)
        assert words in r.json()["detail"], r.json()
        assert http.get("/api/health").status_code == 200  # same connection, still served


def test_search_pages_stay_readable_for_everyone(store: RunningStore, alice: StoreClient, tag: str) -> None:
    alice.create_record("fine", tags=[tag], metadata={"v": 2**62, "s": "é", "deep": {"a": {"b": [1, 2]}}})
    page = alice.search(tags=[tag])
    assert page["items"][0]["metadata"]["v"] == 2**62
    assert alice.search(md=" and ".join(f"md.k{i} == 1" for i in range(32)))["total"] == 0  # at the limit


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that notes every request: the store must never call it."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"secret": "internal document", "type": "string"}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    thread.join()


def test_remote_refs_are_never_fetched(alice: StoreClient, tag: str, listener: tuple[str, list[str]]) -> None:
    url, hits = listener
    for body in (
        {"$ref": f"{url}/schema.json"},
        {"properties": {"x": {"$ref": f"{url}/x.json"}}},
        {"$defs": {"a": {"$dynamicRef": f"{url}/d.json"}}},
    ):
        with pytest.raises(SchemaValidationError, match="only references inside the schema") as info:
            alice.put_schema(f"ssrf/{tag}/{len(hits)}{hash(json.dumps(body)) % 1000}", body)
        assert "internal document" not in str(info.value)
    time.sleep(0.1)
    assert hits == []


def test_a_catastrophic_pattern_is_bounded_and_holds_no_lock(
    alice: StoreClient, bob: StoreClient, tag: str
) -> None:
    alice.put_schema(f"redos/{tag}", {"properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}})
    t0 = time.perf_counter()
    with pytest.raises(SchemaValidationError, match="does not match"):
        alice.create_record("x", metadata={"a": "a" * 5000 + "!"}, md_schema=f"redos/{tag}")
    # Linear time: thousands of characters in far less than the 11 s that 26 took with backtracking.
    assert bob.create_record("another writer", tags=[tag])["id"]
    assert time.perf_counter() - t0 < 5.0
    with pytest.raises(SchemaValidationError, match="regex"):
        alice.put_schema(f"backref/{tag}", {"properties": {"a": {"pattern": "(a)\\1"}}})


def test_project_schema_names_are_reserved(alice: StoreClient, admin: StoreClient, tag: str) -> None:
    from storage.provenance import SCHEMAS, record_dataset

    with pytest.raises(PermissionDeniedError, match="the project's own"):
        alice.put_schema(f"scopeflow/new-{tag}", {"type": "object"})
    with pytest.raises(ConflictError, match="taken by a different schema"):
        alice.put_schema("scopeflow/dataset-1", {"type": "object"})
    assert (
        alice.put_schema("scopeflow/dataset-1", SCHEMAS["scopeflow/dataset-1"])["name"]
        == "scopeflow/dataset-1"
    )
    alice.put_schema(f"mine/{tag}", {"type": "object"})
    with pytest.raises(ConflictError, match="taken by a different schema"):
        admin.put_schema(f"mine/{tag}", {"type": "array"})
    assert record_dataset(alice, "/nonexistent/run.zarr").startswith(
        "d/"
    )  # the owner's records still validate


def test_an_unexpected_error_keeps_the_connection(tmp_path: object) -> None:
    """A bug answers a JSON 500 and the keep-alive connection serves the next request."""
    import socket

    import uvicorn

    from storage.federation.embedded import free_port
    from storage.federation.server.app import UnexpectedErrorMiddleware

    async def broken(scope: dict, receive: object, send: object) -> None:
        if scope["type"] == "lifespan":
            return
        raise RuntimeError("a bug")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            UnexpectedErrorMiddleware(broken),
            host="127.0.0.1",
            port=port,
            log_level="critical",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            answers = []
            for _ in range(2):
                conn.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while b"InternalError" not in data:
                    chunk = conn.recv(4096)
                    assert chunk, "the server closed the connection"
                    data += chunk
                answers.append(data)
        assert all(a.startswith(b"HTTP/1.1 500") for a in answers)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
