"""Client calls of similarity search, on a ``StoreClient``'s connection."""

from __future__ import annotations

from typing import Any

from storage.federation.client import StoreClient, _ref


def put_embeddings(client: StoreClient, ref: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Store embeddings of frames of a record (``payload`` as ``tasks.embedding.upload_payload``)."""
    return client._json("PUT", f"/api/records/{_ref(ref)}/embeddings", json=payload)


def similar(client: StoreClient, **query: Any) -> dict[str, Any]:
    """Nearest frames: ``embedder``, ``k``, ``vector`` or ``record`` + ``frame``, search criteria."""
    return client._json("POST", "/api/similar", json={k: v for k, v in query.items() if v not in (None, [])})


def project(client: StoreClient, **query: Any) -> dict[str, Any]:
    """Map coordinates of the frames the criteria (or ``selection``) pick."""
    return client._json("POST", "/api/map", json={k: v for k, v in query.items() if v not in (None, [])})
