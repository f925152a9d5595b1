"""Client calls of similarity search, on a ``StoreClient``'s connection."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

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


def image_payload(image: np.ndarray, pixel_size: float) -> dict[str, Any]:
    """The ``image`` of a similarity query (for re-ranking): binned by the smallest integer
    factor that brings it to ≤ ``MAX_QUERY_SIDE`` px a side (pixel size scaled to match)."""
    from storage.federation.similarity.ops import MAX_QUERY_SIDE  # the server's modules, only here

    img = np.asarray(image, np.float32)
    b = max(1, math.ceil(max(img.shape) / MAX_QUERY_SIDE))
    h, w = (img.shape[0] // b) * b, (img.shape[1] // b) * b
    binned = img[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3)) if b > 1 else img
    return {
        "data": base64.b64encode(np.ascontiguousarray(binned, "<f4").tobytes()).decode(),
        "shape": list(binned.shape),
        "pixel_size": float(pixel_size) * b,
    }
