"""Sync benchmark: throughput against ``cp -r`` of the same tree, and a no-op re-sync.

Writes ``benchmarks/results/sync.json``. Run: ``PYTHONPATH=. python benchmarks/sync.py``.
Both copies read a warm page cache (the tree was just written), so the ratio compares the
work each does per byte: ``cp`` copies; sync copies, hashes the source, and reads the
destination back to hash it again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from storage.transfer import LocalBackend, sync_directory

OUT = Path(__file__).parent / "results" / "sync.json"


def _tree(root: Path, n: int, size: int) -> int:
    block = os.urandom(size)
    for i in range(n):
        path = root / "frames" / "c" / str(i // 100) / str(i % 100)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Distinct bytes per file without paying for os.urandom on every one.
        path.write_bytes(i.to_bytes(8, "little") + block[8:])
    return n * size


def throughput(work: Path, n_files: int = 160, size: int = 1 << 20, repeats: int = 5) -> dict[str, float]:
    """Median seconds of ``cp -r`` and of a first sync of the same tree, and the ratio."""
    src = work / "big"
    total = _tree(src, n_files, size)
    cp_s, sync_s = [], []
    for r in range(repeats):
        dest = work / f"cp{r}"
        t = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
        cp_s.append(time.perf_counter() - t)
        shutil.rmtree(dest)
        dest = work / f"sync{r}"
        report = sync_directory(src, dest, LocalBackend(), state_dir=work / f"state{r}")
        sync_s.append(report.seconds)
        assert report.bytes_sent == total
        shutil.rmtree(dest)
    cp, sync = statistics.median(cp_s), statistics.median(sync_s)
    return {
        "files": n_files,
        "bytes": total,
        "cp_seconds": cp,
        "sync_seconds": sync,
        "cp_MB_per_s": total / cp / 1e6,
        "sync_MB_per_s": total / sync / 1e6,
        "ratio_sync_over_cp": cp / sync,
        "goal_ratio": 0.8,
    }


def noop_resync(work: Path, n_files: int = 10_000, size: int = 1024) -> dict[str, float]:
    """A second sync of a 10 000-chunk dataset: bytes moved and seconds."""
    src, dest = work / "chunks", work / "chunks-dest"
    _tree(src, n_files, size)
    first = sync_directory(src, dest, LocalBackend(), state_dir=work / "state-noop")
    again = sync_directory(src, dest, LocalBackend(), state_dir=work / "state-noop")
    return {
        "files": n_files,
        "first_sync_seconds": first.seconds,
        "noop_files_sent": again.files_sent,
        "noop_bytes_moved": again.bytes_sent,
        "noop_seconds": again.seconds,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sf-bench-sync-") as tmp:
        work = Path(tmp)
        result = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "throughput": throughput(work),
            "noop_resync": noop_resync(work),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
