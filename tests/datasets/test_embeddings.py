from pathlib import Path

import numpy as np

from storage.datasets import DatasetWriter
from storage.datasets.embeddings import EmbeddingWriter, read_embeddings
from storage.datasets.tables import committed_shapes
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


def test_an_embeddings_commit_publishes_no_other_writers_batch(tmp_path: Path) -> None:
    # The embeddings writer stays open across batches and publishes only its own columns: the
    # frames table's batch in flight (appended, not committed) must stay invisible to readers.
    path = tmp_path / "run.zarr"
    twin = DigitalTwin(1, shape=(64, 64))
    frames = DatasetWriter.open(path)
    frames.append([twin.acquire(i) for i in range(4)])
    writer = EmbeddingWriter.open(path, "test-v1")
    writer.append([0, 1], np.ones((2, 8), np.float32))
    frames.frames.append({"frames": np.zeros((2, 64, 64), np.float32)})  # no commit
    writer.append([2, 3], np.ones((2, 8), np.float32))
    assert read_embeddings(path, "test-v1")[0].tolist() == [0, 1, 2, 3]
    assert committed_shapes(path)["frames"][0] == 4
