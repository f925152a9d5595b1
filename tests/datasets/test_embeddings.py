from pathlib import Path

import numpy as np

from storage.datasets import DatasetWriter
from storage.datasets.embeddings import EmbeddingWriter, read_embeddings
from tasks.acquisition.twin import DigitalTwin


def test_readers_see_only_committed_embeddings(tmp_path: Path) -> None:
    path = tmp_path / "run.zarr"
    twin = DigitalTwin(1, shape=(64, 64))
    DatasetWriter.open(path).append([twin.acquire(i) for i in range(4)])
    writer = EmbeddingWriter.open(path, "test-v1")
    writer.append([0, 1], np.ones((2, 8), np.float32))
    # A batch written but not committed (the writer killed before its commit).
    writer.table.append(
        {"embedded_frame": np.array([2, 3]), "embedding": np.ones((2, 8), np.float32)},
        dims={"embedding": ("feature",)},
    )
    frames, vectors = read_embeddings(path, "test-v1")
    assert frames.tolist() == [0, 1]
    assert vectors.shape == (2, 8)
    assert read_embeddings(path, "other-v1")[0].size == 0
