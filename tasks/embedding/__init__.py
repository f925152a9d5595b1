"""Frame embeddings for similarity search: a lattice descriptor invariant to pose, dose and noise."""

from .descriptor import DIM, EMBEDDER_VERSION, embed_frame, embed_frames

__all__ = ["DIM", "EMBEDDER_VERSION", "embed_frame", "embed_frames"]
