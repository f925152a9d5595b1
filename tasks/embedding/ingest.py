"""Embeddings as frames arrive: appended to the dataset beside the frames, and sent to the store."""

from __future__ import annotations

import base64
import io
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from storage.datasets.dataset import open_dataset
from storage.datasets.embeddings import EmbeddingWriter, read_crop_embeddings, read_embeddings

from .descriptor import EMBEDDER_VERSION, embed_views_of

THUMBNAIL_PX = 64


class AppendedEmbedder:
    """Embeds frames just appended to a dataset and stores them beside the frames.

    The embeddings table is opened (and a batch a killed writer left is trimmed) once, at the
    first batch, and held across batches: reopening it repaired and consolidated the whole
    dataset every batch, ~55 ms of a 4-frame batch's latency (benchmarks/loop.py, 2026-11-30).
    One per writer of the dataset (``for_writer``)."""

    _by_writer: ClassVar[weakref.WeakKeyDictionary[Any, AppendedEmbedder]] = weakref.WeakKeyDictionary()

    def __init__(self, dataset: str | Path) -> None:
        self.dataset = Path(dataset)
        self._writer: EmbeddingWriter | None = None

    @classmethod
    def for_writer(cls, writer: Any) -> AppendedEmbedder:
        """The embedder of the dataset a ``DatasetWriter`` appends to, living as long as it."""
        embedder = cls._by_writer.get(writer)
        if embedder is None:
            embedder = cls._by_writer[writer] = cls(writer.path)
        return embedder

    def __call__(self, first: int, images: Sequence[np.ndarray], pixel_sizes: Sequence[float]) -> int:
        """Embed frames at positions ``first``… (pixel sizes in Å) and commit them; returns how many."""
        if not len(images):
            return 0
        views = embed_views_of(list(images), list(pixel_sizes))
        if self._writer is None:
            self._writer = EmbeddingWriter.open(self.dataset, EMBEDDER_VERSION)
        return self._writer.append(list(range(first, first + len(images))), views[:, 0], views[:, 1:])


def embed_missing(dataset: str | Path, batch: int = 64) -> int:
    """Embed every frame of the dataset that has no embedding of this version yet; returns how many."""
    writer = EmbeddingWriter.open(dataset, EMBEDDER_VERSION)
    done = set(writer.done().tolist())
    ds = open_dataset(dataset)
    todo = [i for i in range(ds.sizes.get("frame", 0)) if i not in done]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        images = ds["frames"].isel(frame=chunk).values
        sizes = ds["pixel_size"].isel(frame=chunk).values
        views = embed_views_of(list(images), [float(p) for p in sizes])
        writer.append(chunk, views[:, 0], views[:, 1:])
    return len(todo)


def thumbnail_png(image: np.ndarray, size: int = THUMBNAIL_PX) -> bytes:
    """A ``size``² grey PNG of a frame (1-99 % intensity stretch), for the map's hover."""
    from PIL import Image

    img = np.asarray(image, np.float32)
    lo, hi = np.percentile(img, (1, 99))
    scaled = np.clip((img - lo) / max(float(hi - lo), 1e-12), 0, 1)
    pil = Image.fromarray((scaled * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    pil.save(out, format="PNG", optimize=True)
    return out.getvalue()


def upload_payload(dataset: str | Path, frames: Sequence[int] | None = None) -> dict[str, Any]:
    """The body of ``PUT /api/records/<id>/embeddings`` for the dataset's stored embeddings."""
    positions, vectors = read_embeddings(dataset, EMBEDDER_VERSION)
    crop_positions, crops = read_crop_embeddings(dataset, EMBEDDER_VERSION)
    if frames is not None:
        keep = np.isin(positions, np.asarray(frames))
        positions, vectors = positions[keep], vectors[keep]
        crops = crops[keep] if len(crop_positions) else crops
    ds = open_dataset(dataset)
    thumbs = [
        base64.b64encode(thumbnail_png(ds["frames"].isel(frame=int(i)).values)).decode() for i in positions
    ]
    return {
        "embedder": EMBEDDER_VERSION,
        "frames": [int(i) for i in positions],
        "vectors": base64.b64encode(np.ascontiguousarray(vectors, "<f4").tobytes()).decode(),
        "thumbnails": thumbs,
        **(
            {
                "crops": base64.b64encode(np.ascontiguousarray(crops, "<f4").tobytes()).decode(),
                "crops_per_frame": int(crops.shape[1]),
            }
            if len(crop_positions) and crops.shape[1]
            else {}
        ),
    }


#: Frames per embeddings upload: with thumbnails (~5 KiB a frame) and nine crops' vectors
#: (~6.4 KiB a frame in base64) well under the store's default 4 MiB body limit.
UPLOAD_FRAMES = 200


def send_to_store(client: Any, dataset: str | Path, record: str) -> int:
    """Send the dataset's stored embeddings (with thumbnails) to ``record``; returns how many."""
    from storage.federation.similarity.client import put_embeddings

    positions, _ = read_embeddings(dataset, EMBEDDER_VERSION)
    sent = 0
    for start in range(0, len(positions), UPLOAD_FRAMES):
        out = put_embeddings(
            client, record, upload_payload(dataset, positions[start : start + UPLOAD_FRAMES])
        )
        sent += int(out["frames"])
    return sent


def missing_frames(dataset: str | Path) -> list[int]:
    """Frame positions of the dataset without an embedding of this version."""
    positions, _ = read_embeddings(dataset, EMBEDDER_VERSION)
    done = set(positions.tolist())
    n = int(open_dataset(dataset).sizes.get("frame", 0))
    return [i for i in range(n) if i not in done]


def embed_block(frames: np.ndarray, pixel_sizes: np.ndarray) -> np.ndarray:
    """Descriptors (n, 1 + crops, d) of a block of frames, each frame's own first, then its
    crops' (runs on a dask worker: data in, data out)."""
    return embed_views_of(list(np.asarray(frames)), [float(p) for p in pixel_sizes])
