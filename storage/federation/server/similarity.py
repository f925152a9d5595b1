"""Routes of similarity search: frame embeddings in, nearest frames and a 2-D map out."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import Field

from scopeflow.errors import InputError
from storage.federation.access import Principal
from storage.federation.api_models import SearchIn, _Body
from storage.federation.catalog import Catalog
from storage.federation.identifiers import RECORD_REF_PATTERN
from storage.federation.server.deps import ERRORS, RecordRef, catalog, principal
from storage.federation.similarity import VectorIndexes, map_view, ops

router = APIRouter(responses=ERRORS)
_lock = threading.Lock()

EMBEDDER_PATTERN = r"^[A-Za-z0-9._-]+$"
EmbedderName = Field(min_length=1, max_length=64, pattern=EMBEDDER_PATTERN)


class EmbeddingsIn(_Body):
    """Embeddings of frames of one record: float32 vectors, base64, row-major."""

    embedder: str = EmbedderName
    frames: list[int] = Field(min_length=1, max_length=ops.MAX_FRAMES)
    vectors: str = Field(min_length=1, max_length=ops.MAX_FRAMES * ops.MAX_DIM * 6)
    thumbnails: list[str | None] | None = None
    #: Crops' vectors (``crops_per_frame`` per frame, frame by frame, each of the vectors'
    #: length): more rows of the index, each pointing at its frame.
    crops: str | None = Field(
        default=None, min_length=1, max_length=ops.MAX_FRAMES * ops.MAX_DIM * 6 * ops.MAX_CROPS
    )
    crops_per_frame: int | None = Field(default=None, ge=1, le=ops.MAX_CROPS)


class QueryImage(_Body):
    """The query frame itself, for re-ranking: float32 pixels (base64, little-endian, row-major)."""

    data: str = Field(min_length=1, max_length=ops.MAX_QUERY_SIDE**2 * 6)
    shape: tuple[int, int]
    pixel_size: float = Field(gt=0, le=2.0)


class SimilarIn(SearchIn):
    """A similarity query: a vector, or a record and frame; the search criteria filter.

    ``rerank``: how many of the index's nearest frames to re-rank by registering the query
    frame onto each (a record's frame is read from its dataset; a vector query sends ``image``)."""

    embedder: str = EmbedderName
    k: int = Field(default=10, ge=1, le=1000)
    vector: list[float] | None = Field(default=None, max_length=ops.MAX_DIM)
    record: str | None = Field(default=None, max_length=200, pattern=RECORD_REF_PATTERN)
    frame: int | None = Field(default=None, ge=0)
    rerank: int = Field(default=0, ge=0, le=ops.MAX_RERANK)
    image: QueryImage | None = None


class MapIn(SearchIn):
    """Frames to project: those the criteria select, or a selection of (record id, frame)."""

    embedder: str = EmbedderName
    selection: list[tuple[str, int]] | None = Field(default=None, max_length=map_view.MAX_POINTS)
    max_points: int = Field(default=map_view.MAX_POINTS, ge=10, le=map_view.MAX_POINTS)


def indexes(request: Request) -> VectorIndexes:
    """The app's vector indexes, beside a SQLite catalog file (memory only for PostgreSQL)."""
    state = request.app.state
    with _lock:
        if getattr(state, "vector_indexes", None) is None:
            cat: Catalog = state.catalog
            url = cat.db.url
            directory = Path(url.removeprefix("sqlite:///")).parent / "vectors" if cat.db.is_sqlite else None
            state.vector_indexes = VectorIndexes(directory, cat.db.reading)
        return state.vector_indexes


@router.put("/api/records/{ref}/embeddings")
def put_embeddings(
    ref: RecordRef,
    body: EmbeddingsIn,
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
    ix: VectorIndexes = Depends(indexes),
) -> Any:
    out = c.write(
        p,
        lambda ctx: ops.put_embeddings(
            ctx,
            ref,
            body.embedder,
            body.frames,
            body.vectors,
            body.thumbnails,
            crops=body.crops,
            crops_per_frame=body.crops_per_frame,
        ),
    )
    # The index takes the new rows, rebuilds its lists when it has doubled and saves its
    # files in a thread of its own: neither this request nor any query waits for that.
    ix.get(body.embedder).maintain_soon(c.db.reading)
    return out


@router.post("/api/similar")
def similar(
    body: SimilarIn,
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
    ix: VectorIndexes = Depends(indexes),
) -> Any:
    """The ``k`` frames nearest the query among those the caller may read and the criteria select."""
    if (body.vector is None) == (body.record is None):
        raise InputError("give either a vector or a record (with a frame)")
    if body.record is not None and body.frame is None:
        raise InputError("a record query needs a frame")
    vector = None if body.vector is None else np.asarray(body.vector, np.float32)
    if vector is not None and (not np.isfinite(vector).all() or not np.any(vector)):
        raise InputError("the query vector must be finite and not all zeros")
    if body.image is not None and body.record is not None:
        raise InputError("a record query's frame is read from its dataset; send no image with it")
    if body.rerank and body.vector is not None and body.image is None:
        raise InputError("re-ranking compares frames: send the query's image with its vector")
    image = None
    if body.image is not None:
        img = body.image
        image = (ops.decode_image(img.data, img.shape, img.pixel_size), img.pixel_size)
    index = ix.get(body.embedder)
    return c.read(
        p,
        lambda ctx: ops.similar(
            ctx, index, body, body.k, vector, body.record, body.frame, rerank=body.rerank, image=image
        ),
    )


@router.get("/api/records/{ref}/embeddings/{embedder}/{frame}/thumbnail.png")
def thumbnail(
    ref: RecordRef,
    embedder: Annotated[str, PathParam(min_length=1, max_length=64, pattern=EMBEDDER_PATTERN)],
    frame: Annotated[int, PathParam(ge=0)],
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
) -> Response:
    png = c.read(p, lambda ctx: ops.thumbnail(ctx, ref, embedder, frame))
    return Response(png, media_type="image/png")


@router.post("/api/map")
def project(
    body: MapIn,
    p: Principal = Depends(principal),
    c: Catalog = Depends(catalog),
    ix: VectorIndexes = Depends(indexes),
) -> Any:
    """2-D UMAP coordinates of the selected frames the caller may read."""
    index = ix.get(body.embedder)
    return c.read(p, lambda ctx: map_view.project(ctx, index, body, body.selection, body.max_points))


@router.get("/map", response_class=HTMLResponse)
def map_page() -> HTMLResponse:
    """The map page (its script asks for the token and calls ``/api/map``)."""
    return HTMLResponse(map_view.PAGE)
