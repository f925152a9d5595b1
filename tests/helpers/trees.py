"""Small file trees to sync, push and attack."""

from __future__ import annotations

import random
from pathlib import Path


def make_tree(root: Path, n_files: int, size: int, seed: int = 0) -> dict[str, bytes]:
    """A Zarr-like tree of ``n_files`` chunk files of ``size`` bytes; returns path -> bytes."""
    rng = random.Random(seed)
    files = {"zarr.json": b'{"zarr_format": 3, "node_type": "group", "attributes": {"instrument": "twin"}}'}
    for i in range(n_files):
        files[f"frames/c/{i // 50}/{i % 50}"] = rng.randbytes(size)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files
