"""Store operations of similarity search, as functions of a catalog context (``Ctx``).

Filters are the search's own: ``search.conditions`` turns the criteria and the caller's
``Grants`` into one WHERE clause, so a frame of a record the caller may not read is never a
candidate, and a record named as the query is not-found unless readable.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select

from scopeflow.errors import InputError, NotFoundError
from storage.federation.access import Level
from storage.federation.api_models import SearchIn
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.lookup import resolve_record
from storage.federation.catalog.record_json import record_dicts
from storage.federation.catalog.replicas import default_replica_path
from storage.federation.catalog.search import conditions
from storage.federation.identifiers import format_id
from storage.federation.models import FrameEmbedding, Record, Replica, Repository
from storage.federation.similarity import rerank as second_stage
from storage.federation.similarity.index import VectorIndex

#: Largest descriptor accepted, in values, and most frames per upload.
MAX_DIM = 4096
MAX_FRAMES = 10_000
MAX_THUMBNAIL_BYTES = 64 * 1024
#: Most crops per frame an upload may add as rows of the index.
MAX_CROPS = 16
#: Most candidates one query may re-rank (each costs a frame read and ~20-60 ms of CPU).
MAX_RERANK = 200
#: Largest query image sent for re-ranking, px a side (the client bins larger ones): 512²
#: float32 in base64 is 1.4 MB, inside the store's request body limit.
MAX_QUERY_SIDE = 512
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_vectors(text: str, n: int) -> np.ndarray:
    """Base64 of ``n`` float32 vectors (little-endian, row-major) to an (n, d) unit-length array."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("vectors: not valid base64") from None
    if n < 1 or len(raw) % (4 * n):
        raise InputError(f"vectors: {len(raw)} bytes do not hold {n} float32 vectors")
    dim = len(raw) // (4 * n)
    if not 1 <= dim <= MAX_DIM:
        raise InputError(f"vectors of {dim} values; at most {MAX_DIM}")
    vectors = np.frombuffer(raw, "<f4").reshape(n, dim).astype(np.float32)
    if not np.isfinite(vectors).all():
        raise InputError("vectors hold NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError("a vector of zeros has no direction")
    return vectors / norms


def put_embeddings(
    ctx: Ctx,
    ref: str,
    embedder: str,
    frames: list[int],
    vectors: str,
    thumbnails: list[str | None] | None,
    crops: str | None = None,
    crops_per_frame: int | None = None,
) -> dict[str, Any]:
    """Store (replacing every view of them) the embeddings of frames of one record, and with
    ``crops`` those of ``crops_per_frame`` crops of each frame (views 1…, frame by frame);
    needs write permission."""
    record = resolve_record(ctx, ref, Level.WRITE)
    if not frames or len(frames) > MAX_FRAMES:
        raise InputError(f"1 to {MAX_FRAMES} frames per upload, got {len(frames)}")
    if len(set(frames)) != len(frames) or min(frames) < 0:
        raise InputError("frames must be distinct and ≥ 0")
    matrix = decode_vectors(vectors, len(frames))
    if (crops is None) != (crops_per_frame is None):
        raise InputError("crops and crops_per_frame go together")
    crop_rows = np.zeros((len(frames), 0, matrix.shape[1]), np.float32)
    if crops is not None and crops_per_frame is not None:
        if not 1 <= crops_per_frame <= MAX_CROPS:
            raise InputError(f"1 to {MAX_CROPS} crops per frame, got {crops_per_frame}")
        flat = decode_vectors(crops, len(frames) * crops_per_frame)
        if flat.shape[1] != matrix.shape[1]:
            raise InputError(f"crops' vectors of {flat.shape[1]} values, the frames' of {matrix.shape[1]}")
        crop_rows = flat.reshape(len(frames), crops_per_frame, -1)
    held = ctx.session.scalar(
        select(func.length(FrameEmbedding.vector)).where(FrameEmbedding.embedder == embedder).limit(1)
    )
    if held is not None and held != 4 * matrix.shape[1]:
        # One index per embedder: vectors of another length would be skipped by every query.
        raise InputError(
            f"embedder {embedder} holds vectors of {held // 4} values, these have {matrix.shape[1]}"
        )
    thumbs: list[bytes | None] = [None] * len(frames)
    if thumbnails is not None:
        if len(thumbnails) != len(frames):
            raise InputError(f"{len(thumbnails)} thumbnails for {len(frames)} frames")
        for i, text in enumerate(thumbnails):
            if text is None:
                continue
            try:
                png = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise InputError(f"thumbnail {i}: not valid base64") from None
            if not png.startswith(PNG_MAGIC) or len(png) > MAX_THUMBNAIL_BYTES:
                raise InputError(f"thumbnail {i}: a PNG of at most {MAX_THUMBNAIL_BYTES} bytes is needed")
            thumbs[i] = png
    ctx.session.execute(
        delete(FrameEmbedding).where(
            FrameEmbedding.record_id == record.id,
            FrameEmbedding.embedder == embedder,
            FrameEmbedding.frame.in_(frames),
        )
    )
    # Rows frame by frame, the frame's own first: the index reads them in id order.
    ctx.session.add_all(
        FrameEmbedding(
            record_id=record.id,
            embedder=embedder,
            frame=int(f),
            view=view,
            vector=vec.tobytes(),
            thumbnail=t if view == 0 else None,
        )
        for f, v, t, c in zip(frames, matrix, thumbs, crop_rows, strict=True)
        for view, vec in enumerate([v, *c])
    )
    ctx.audit("embeddings.put", format_id("d", record.id), embedder=embedder, frames=len(frames))
    return {
        "id": format_id("d", record.id),
        "embedder": embedder,
        "frames": len(frames),
        "crops": len(frames) * crop_rows.shape[1],
        "dim": matrix.shape[1],
    }


def allowed_records(ctx: Ctx, criteria: SearchIn) -> np.ndarray:
    """Ids of the records the caller may read that meet every criterion (search's own filter)."""
    ids = ctx.session.scalars(select(Record.id).where(*conditions(ctx, criteria))).all()
    return np.asarray(ids, np.int64)


def query_vector(ctx: Ctx, index: VectorIndex, record_ref: str, frame: int) -> np.ndarray:
    """The stored vector of a frame of a record the caller may read."""
    record = resolve_record(ctx, record_ref, Level.READ)
    vec = index.vector_of(record.id, frame)
    if vec is None:
        raise NotFoundError(f"no {index.embedder} embedding of frame {frame} of d/{record.id}")
    return vec


def decode_image(data: str, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
    """Base64 of a float32 image (little-endian, row-major) of ``shape`` px, checked; at most
    ``MAX_QUERY_SIDE`` px a side before and after resampling to the re-ranking's pixel size
    (a hostile pixel size could otherwise ask for a huge resampled image)."""
    h, w = shape
    if not (second_stage.MIN_SIDE <= h <= MAX_QUERY_SIDE and second_stage.MIN_SIDE <= w <= MAX_QUERY_SIDE):
        raise InputError(f"a query image of {h}×{w} px; {second_stage.MIN_SIDE}-{MAX_QUERY_SIDE} px a side")
    if max(h, w) * pixel_size / second_stage.WORK_PX > 2 * MAX_QUERY_SIDE:
        raise InputError(
            f"a query image {max(h, w) * pixel_size:.0f} Å wide; re-ranking compares fields up to "
            f"{2 * MAX_QUERY_SIDE * second_stage.WORK_PX:.0f} Å"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("image: not valid base64") from None
    if len(raw) != 4 * h * w:
        raise InputError(f"image: {len(raw)} bytes do not hold {h}×{w} float32 values")
    image = np.frombuffer(raw, "<f4").reshape(h, w).astype(np.float32)
    if not np.isfinite(image).all():
        raise InputError("image: NaN or infinite values")
    return image


def dataset_of(ctx: Ctx, record_id: int) -> Path | None:
    """The record's dataset in a local repository (its first local replica), or None.

    Only the record's own folder (``records/<n>``) is trusted, as for file downloads: a
    replica path that leaves it is not read."""
    rows = ctx.session.execute(
        select(Repository.path, Replica.path)
        .join(Replica, Replica.repository_id == Repository.id)
        .where(Replica.record_id == record_id, Repository.kind == "local")
        .order_by(Replica.id)
    ).all()
    for root_text, rel in rows:
        root = Path(root_text).resolve()
        path = (root / rel).resolve()
        if path.is_relative_to(root / default_replica_path(record_id)) and (path / "zarr.json").exists():
            return path
    return None


def read_frames(ctx: Ctx, wanted: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[np.ndarray, float]]:
    """Frames (and pixel sizes, Å/px) of records' datasets, read the way the store reads
    datasets (``open_dataset``: committed frames only), one read per record. A frame the store
    holds no local copy of, or that is not committed, is left out."""
    from storage.datasets.dataset import open_dataset

    by_record: dict[int, list[int]] = {}
    for rid, frame in wanted:
        by_record.setdefault(rid, []).append(frame)
    out: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
    for rid, frames in by_record.items():
        path = dataset_of(ctx, rid)
        if path is None:
            continue
        try:
            ds = open_dataset(path)
            n = int(ds.sizes.get("frame", 0)) if "frames" in ds else 0
            present = sorted({f for f in frames if f < n})
            if not present:
                continue
            images = ds["frames"].isel(frame=present).values
            sizes = ds["pixel_size"].isel(frame=present).values
        except Exception:  # a broken copy (truncated chunk, bad codec) is left uncompared: never a 5xx
            continue
        for f, image, size in zip(present, images, sizes, strict=True):
            out[(rid, f)] = (image, float(size))
    return out


def rerank_hits(
    ctx: Ctx, hits: list[tuple[int, int, float]], query: tuple[np.ndarray, float] | None, count: int
) -> tuple[list[tuple[int, int, float]], dict[tuple[int, int], float]]:
    """The first ``count`` hits ordered by how well the query registers onto each
    (``rerank.match``), the others after them in the index's order. Only frames of the hits
    are read, and every hit is a frame the caller may read (the index's filter)."""
    if query is None or count < 1:
        return hits, {}
    prepared = second_stage.prepare(*query)
    frames = read_frames(ctx, [(rid, frame) for rid, frame, _ in hits[:count]])
    scores = {
        key: second_stage.match(prepared, second_stage.prepare(*got, mirror=False))
        for key, got in frames.items()
    }
    # Frames whose data the store cannot read keep their index order, after the compared ones.
    head = sorted((h for h in hits[:count] if (h[0], h[1]) in scores), key=lambda h: -scores[(h[0], h[1])])
    rest = [h for h in hits[:count] if (h[0], h[1]) not in scores] + hits[count:]
    return head + rest, scores


def similar(
    ctx: Ctx,
    index: VectorIndex,
    criteria: SearchIn,
    k: int,
    vector: np.ndarray | None = None,
    record_ref: str | None = None,
    frame: int | None = None,
    rerank: int = 0,
    image: tuple[np.ndarray, float] | None = None,
) -> dict[str, Any]:
    """The ``k`` frames nearest the query that the caller may read and that meet ``criteria``.

    ``rerank`` > 0: the index's first ``rerank`` frames are re-ranked by registering the query
    frame (``image``, or the record's frame) onto each (``rerank.py``), and the first ``k`` of
    that order returned; items then carry ``match``, the registered frames' normalised
    cross-correlation (None for a frame whose data the store holds no local copy of)."""
    with index.lock:
        index.catch_up(ctx.session)
        query_id = None
        if vector is None:
            if record_ref is None or frame is None:
                raise InputError("give a vector, or a record and a frame")
            vector = query_vector(ctx, index, record_ref, frame)
            query_id = resolve_record(ctx, record_ref, Level.READ).id
        allowed = allowed_records(ctx, criteria)
        hits = index.search(vector, max(k, rerank), allowed)
    scores: dict[tuple[int, int], float] = {}
    if rerank > 0:
        if image is None and query_id is not None and frame is not None:
            image = read_frames(ctx, [(query_id, frame)]).get((query_id, frame))
        hits, scores = rerank_hits(ctx, hits, image, rerank)
    hits = hits[:k]
    records = {
        r.id: r for r in ctx.session.scalars(select(Record).where(Record.id.in_({h[0] for h in hits})))
    }
    dicts = {int(d["id"].split("/")[1]): d for d in record_dicts(ctx, list(records.values()))}
    items = [
        {
            "id": format_id("d", rid),
            "frame": frame_,
            "distance": round(dist, 6),
            "title": dicts[rid]["title"],
            "metadata": dicts[rid]["metadata"],
            **({"match": _rounded(scores.get((rid, frame_)))} if rerank > 0 else {}),
        }
        for rid, frame_, dist in hits
        if rid in dicts
    ]
    out = {"embedder": index.embedder, "k": k, "indexed": len(index), "items": items}
    if rerank > 0:
        out["reranked"] = len(scores)
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def thumbnail(ctx: Ctx, ref: str, embedder: str, frame: int) -> bytes:
    """The PNG thumbnail of a frame of a record the caller may read."""
    record = resolve_record(ctx, ref, Level.READ)
    png = ctx.session.scalar(
        select(FrameEmbedding.thumbnail).where(
            FrameEmbedding.record_id == record.id,
            FrameEmbedding.embedder == embedder,
            FrameEmbedding.frame == frame,
            FrameEmbedding.view == 0,
        )
    )
    if png is None:
        raise NotFoundError(f"no thumbnail of frame {frame} of d/{record.id}")
    return png
