"""Frame embeddings for similarity search: a lattice descriptor invariant to pose, dose and noise."""

from .descriptor import DIM, EMBEDDER_VERSION, N_CROPS, embed_frame, embed_frames, embed_views, embed_views_of

__all__ = [
    "DIM",
    "EMBEDDER_VERSION",
    "N_CROPS",
    "embed_frame",
    "embed_frames",
    "embed_views",
    "embed_views_of",
]
