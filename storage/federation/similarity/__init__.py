"""Similarity search over frame embeddings: a vector index per embedder version beside the
catalog, filtered by the same ``Grants`` and search criteria as ``search``."""

from .index import VectorIndex, VectorIndexes

__all__ = ["VectorIndex", "VectorIndexes"]
