"""``StoreClient``: the store's HTTP API as Python methods (httpx).

Errors come back as the same classes the catalog raised (``NotFoundError``,
``PermissionDeniedError``, ``SchemaValidationError`` …, see ``errors.BY_STATUS``); an
unreachable server raises ``ServiceError`` with the URL and a hint, never a raw traceback.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from scopeflow import errors as project_errors
from scopeflow.errors import IntegrityError, ScopeflowError, ServiceError
from storage.federation import errors as federation_errors
from storage.federation.errors import BY_STATUS
from storage.federation.identifiers import safe_relative_path
from storage.federation.paths import read_token

#: Where ``scopeflow store serve`` listens unless told otherwise.
DEFAULT_URL = "http://127.0.0.1:8765"


def _ref(ref: str) -> str:
    """``d/12`` -> ``12`` for the URL path; aliases pass through, quoted."""
    ref = ref.strip()
    if ref[:2] in ("d/", "c/") and ref[2:].isdigit():
        ref = ref[2:]
    return quote(ref, safe=":")


class StoreClient:
    """A connection to one store as one user (a bearer token)."""

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, *, timeout_s: float = 30.0, retries: int = 2
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout_s,
            transport=httpx.HTTPTransport(retries=retries),  # retries connection failures only
        )

    @classmethod
    def from_env(cls, store_dir: Path | None = None) -> StoreClient:
        """Client from ``$SCOPEFLOW_STORE_URL`` and ``$SCOPEFLOW_STORE_TOKEN``.

        Without a token variable, the embedded store's token file (``<store dir>/token``) is read.
        """
        url = os.environ.get("SCOPEFLOW_STORE_URL", DEFAULT_URL)
        token = os.environ.get("SCOPEFLOW_STORE_TOKEN") or read_token(store_dir)
        return cls(url, token)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ServiceError(
                f"cannot reach the scopeflow store at {self.url} ({type(error).__name__}: {error}); "
                "is 'scopeflow store serve' running, and is SCOPEFLOW_STORE_URL right?"
            ) from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        return response.json() if response.content else None

    # -- records -------------------------------------------------------------------------------

    def create_record(
        self,
        title: str,
        *,
        alias: str | None = None,
        description: str = "",
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        md_schema: str | None = None,
        project: str | None = None,
        repository: str | None = None,
        collections: Iterable[str] = (),
        dependencies: Iterable[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        """Create a record; ``dependencies`` are ``(kind, id)`` pairs, kind der/comp/ver."""
        body = {
            "title": title,
            "alias": alias,
            "description": description,
            "tags": list(tags),
            "metadata": dict(metadata or {}),
            "md_schema": md_schema,
            "project": project,
            "repository": repository,
            "collections": list(collections),
            "dependencies": [{"kind": k, "id": i} for k, i in dependencies],
        }
        return self._json("POST", "/api/records", json=body)

    def create_records(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Create many records in one request and one transaction: all of them or, when one
        is refused, none (the error names its index, ``records[3]: ...``). Each mapping takes
        the keyword arguments of ``create_record`` (``dependencies`` as ``{"kind", "id"}``
        objects); at most the server's batch limit (1000 by default, 413 past it)."""
        return self._json("POST", "/api/records/batch", json={"records": [dict(r) for r in records]})["items"]

    def get(self, ref: str) -> dict[str, Any]:
        """A record by ``d/<n>``, alias or ``user:alias``."""
        return self._json("GET", f"/api/records/{_ref(ref)}")

    def update(self, ref: str, **fields: Any) -> dict[str, Any]:
        """Change fields (title, alias, description, tags, metadata, metadata_mode, md_schema)."""
        return self._json("PATCH", f"/api/records/{_ref(ref)}", json=fields)

    def delete(self, ref: str) -> None:
        """Delete a record (admin permission on it)."""
        self._call("DELETE", f"/api/records/{_ref(ref)}")

    def add_dependency(self, ref: str, kind: str, target: str) -> dict[str, Any]:
        """Add ``ref --kind--> target`` (der, comp or ver)."""
        return self._json("POST", f"/api/records/{_ref(ref)}/dependencies", json={"kind": kind, "id": target})

    def search(self, **criteria: Any) -> dict[str, Any]:
        """One page: ``{total, total_is_lower_bound, offset, limit, items}``; criteria as in
        ``api_models.SearchIn``. Matches are counted up to ``count_limit`` (default 500): past
        it ``total`` is a lower bound. ``count_limit=None`` is not sent (the server's default
        applies); pass ``exact_total=True`` to count every match."""
        if criteria.pop("exact_total", False):
            criteria.pop("count_limit", None)
            body = {k: v for k, v in criteria.items() if v is not None}
            body["count_limit"] = None
            return self._search(body)
        return self._search({k: v for k, v in criteria.items() if v is not None})

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("created_after", "created_before", "updated_after", "updated_before"):
            if key in body and hasattr(body[key], "isoformat"):
                body[key] = body[key].isoformat()
        return self._json("POST", "/api/search", json=body)

    def iter_search(self, page_size: int = 200, **criteria: Any) -> Iterator[dict[str, Any]]:
        """Every matching record, page after page (until a page comes back short)."""
        offset = 0
        while True:
            page = self.search(offset=offset, limit=page_size, **criteria)
            yield from page["items"]
            offset += len(page["items"])
            if len(page["items"]) < page_size or (
                offset >= page["total"] and not page.get("total_is_lower_bound")
            ):
                return

    def lineage(self, ref: str, depth: int = 10, direction: str = "both") -> dict[str, Any]:
        """``{root, nodes, edges}`` around a record."""
        return self._json(
            "GET", f"/api/records/{_ref(ref)}/lineage", params={"depth": depth, "direction": direction}
        )

    def replicas(self, ref: str, files: bool = True) -> list[dict[str, Any]]:
        """The replicas of a record, with manifests unless ``files=False``."""
        return self._json("GET", f"/api/records/{_ref(ref)}/replicas", params={"files": files})

    def add_replica(
        self, ref: str, repository: str, path: str, files: Iterable[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Record a replica under the record's folder; ``files`` (``{path, size, sha256}``) are
        checked by the server against the bytes it holds (local repositories)."""
        body = {"repository": repository, "path": path, "files": [dict(f) for f in files]}
        return self._json("POST", f"/api/records/{_ref(ref)}/replicas", json=body)

    def put_file(
        self, ref: str, path: str, data: bytes | Path, repository: str | None = None
    ) -> dict[str, Any]:
        """Upload one file of a record into a local repository (``path`` relative, no ``..``)."""
        path = safe_relative_path(path, "file path")
        params = {"repository": repository} if repository else None
        url = f"/api/records/{_ref(ref)}/files/{quote(path)}"
        if isinstance(data, Path):
            with open(data, "rb") as f:
                return self._json("PUT", url, content=f, params=params)
        return self._json("PUT", url, content=data, params=params)

    def get_file(self, ref: str, path: str, repository: str | None = None) -> bytes:
        """Download one file of a record, checked against the sha256 the store recorded for it.

        Raises IntegrityError when the bytes differ from the manifest (rot on disk, a change
        behind the store's back).
        """
        path = safe_relative_path(path, "file path")
        params = {"repository": repository} if repository else None
        response = self._call("GET", f"/api/records/{_ref(ref)}/files/{quote(path)}", params=params)
        expected = response.headers.get("X-Checksum-Sha256", "")
        actual = hashlib.sha256(response.content).hexdigest()
        if expected != actual:
            raise IntegrityError(
                f"{ref}: {path} came back with sha256 {actual}, but the store's manifest says "
                f"{expected or '(none)'}"
            )
        return response.content

    # -- collections --------------------------------------------------------------------------

    def create_collection(
        self,
        title: str,
        *,
        alias: str | None = None,
        description: str = "",
        parent: str | None = None,
        project: str | None = None,
    ) -> dict[str, Any]:
        """Create a collection, optionally under ``parent``."""
        body = {
            "title": title,
            "alias": alias,
            "description": description,
            "parent": parent,
            "project": project,
        }
        return self._json("POST", "/api/collections", json=body)

    def get_collection(self, ref: str) -> dict[str, Any]:
        """A collection by ``c/<n>`` or alias."""
        return self._json("GET", f"/api/collections/{_ref(ref)}")

    def link(self, collection: str, *records: str) -> dict[str, Any]:
        """Link records into a collection."""
        return self._json(
            "POST", f"/api/collections/{_ref(collection)}/link", json={"records": list(records)}
        )

    def unlink(self, collection: str, *records: str) -> dict[str, Any]:
        """Unlink records from a collection."""
        return self._json(
            "POST", f"/api/collections/{_ref(collection)}/unlink", json={"records": list(records)}
        )

    # -- administration -----------------------------------------------------------------------

    def health(self) -> bool:
        """True when the server answers its health probe."""
        return self._json("GET", "/api/health").get("status") == "ok"

    def whoami(self) -> dict[str, Any]:
        """``{name, is_admin}`` of the token's user."""
        return self._json("GET", "/api/whoami")

    def create_user(self, name: str, is_admin: bool = False) -> str:
        """Create a user (admin only) and return its first token."""
        return self._json("POST", "/api/users", json={"name": name, "is_admin": is_admin})["token"]

    def new_token(self, label: str = "", days: float = 90) -> dict[str, Any]:
        """A new token for the caller (``token`` is the secret, shown once; ``id`` revokes it)."""
        return self._json("POST", "/api/tokens", params={"label": label, "days": days})

    def tokens(self) -> list[dict[str, Any]]:
        """The caller's tokens: ids, labels, creation and expiry times (never the secrets)."""
        return self._json("GET", "/api/tokens")

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token of the caller's (a store admin: anyone's)."""
        self._call("DELETE", f"/api/tokens/{int(token_id)}")

    def put_schema(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Register a JSON Schema."""
        return self._json("POST", "/api/schemas", json={"name": name, "body": dict(body)})

    def get_schema(self, name: str) -> dict[str, Any]:
        """A registered JSON Schema."""
        return self._json("GET", f"/api/schemas/{quote(name)}")

    def create_project(self, name: str, title: str = "") -> dict[str, Any]:
        """Create a project owned by the caller."""
        return self._json("POST", "/api/projects", json={"name": name, "title": title})

    def set_member(self, project: str, user: str, level: str) -> dict[str, Any]:
        """Set a member's level (read, write, admin; none removes)."""
        return self._json(
            "POST",
            f"/api/projects/{quote(project.removeprefix('p/'))}/members",
            json={"user": user, "level": level},
        )

    def create_repository(
        self, name: str, kind: str, path: str, globus_collection: str | None = None, title: str = ""
    ) -> dict[str, Any]:
        """Register a repository (admin only)."""
        body = {
            "name": name,
            "kind": kind,
            "path": path,
            "globus_collection": globus_collection,
            "title": title,
        }
        return self._json("POST", "/api/repositories", json=body)

    def repositories(self) -> list[dict[str, Any]]:
        """Every repository."""
        return self._json("GET", "/api/repositories")

    def repository(self, name: str) -> dict[str, Any]:
        """One repository by name."""
        for repo in self.repositories():
            if repo["name"] == name:
                return repo
        from scopeflow.errors import NotFoundError

        raise NotFoundError(f"no repository {name!r}")

    def set_allocation(
        self,
        repository: str,
        *,
        max_bytes: int,
        max_records: int,
        user: str | None = None,
        project: str | None = None,
    ) -> dict[str, Any]:
        """Set a quota for a user or a project (admin only)."""
        body = {"user": user, "project": project, "max_bytes": max_bytes, "max_records": max_records}
        return self._json("POST", f"/api/repositories/{quote(repository)}/allocations", json=body)

    def grant(self, target: str, level: str, user: str | None = None) -> dict[str, Any]:
        """Give ``level`` on ``target`` (d/…, c/…, p/…) to ``user`` (None: every user)."""
        return self._json("POST", "/api/grants", json={"target": target, "user": user, "level": level})

    def audit(self, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest audit-log entries (admin only)."""
        params: dict[str, Any] = {"limit": limit}
        if target:
            params["target"] = target
        return self._json("GET", "/api/audit", params=params)


_BY_NAME: dict[str, type[Exception]] = {
    cls.__name__: cls
    for module in (federation_errors, project_errors)
    for cls in vars(module).values()
    if isinstance(cls, type) and issubclass(cls, ScopeflowError)
}


def _error_from(response: httpx.Response) -> Exception:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    detail = payload.get("detail") if isinstance(payload, dict) else None
    name = payload.get("error") if isinstance(payload, dict) else None
    detail = detail if isinstance(detail, str) else (response.text[:500] or response.reason_phrase)
    # The server names the class it raised; fall back to the status code's class.
    cls = _BY_NAME.get(name) if isinstance(name, str) else None
    cls = cls or BY_STATUS.get(response.status_code)
    if cls is None and response.status_code == 422:
        cls = BY_STATUS[400]
    if cls is None:
        return ServiceError(f"store answered {response.status_code} {response.reason_phrase}: {detail}")
    error = cls(detail)
    assert isinstance(error, ScopeflowError)
    return error
