"""Sync benchmark: throughput against ``cp -r`` of the same tree, and a no-op re-sync.

Writes ``benchmarks/results/sync.json``. Run: ``PYTHONPATH=. python benchmarks/sync.py``.
Both copies read a warm page cache (the tree was just written), so the ratio compares the
work each does per byte: ``cp`` copies; sync copies, hashes the source, and reads the
destination back to hash it again (two sha256 passes over every byte). Runs alternate, and
CPU seconds are reported next to wall seconds. The issue's comparator is ``cp -r`` followed by
``sha256sum`` of every destination file (the same guarantee with standard tools); the ratio to
bare ``cp -r`` is reported as well. On a shared machine the wall-clock ratio swings with the
load, while CPU seconds do not. ``sha256_floor_seconds`` is the least wall time the two
sha256 passes alone need with every core hashing (measured sha256 rate per core x cores);
``ratio_bound_idle_machine`` is the ratio if cp ran on one idle core and sync spread its CPU
seconds over every core without loss (an upper bound for this tree on this machine).
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import write_result

from storage.transfer import LocalBackend, sync_directory


def _tree(root: Path, n: int, size: int) -> int:
    block = os.urandom(size)
    for i in range(n):
        path = root / "frames" / "c" / str(i // 100) / str(i % 100)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Distinct bytes per file without paying for os.urandom on every one.
        path.write_bytes(i.to_bytes(8, "little") + block[8:])
    return n * size


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def sha256_rate() -> float:
    """sha256 bytes per CPU second on one core."""
    block, digest = memoryview(os.urandom(1 << 20)), hashlib.sha256()
    t = time.thread_time()
    for _ in range(256):
        digest.update(block)
    return 256 * len(block) / (time.thread_time() - t)


def throughput(work: Path, n_files: int = 160, size: int = 1 << 20, repeats: int = 7) -> dict[str, float]:
    """Median seconds (wall and CPU) of ``cp -r`` and of a first sync of the same tree, and ratios."""
    src = work / "big"
    total = _tree(src, n_files, size)
    cp_s, sync_s, cp_cpu, sync_cpu, cp_sum_s = [], [], [], [], []
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    for r in range(repeats):
        dest = work / f"cp{r}"
        c, t = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
        cp_s.append(time.perf_counter() - t)
        cp_cpu.append(_cpu(resource.RUSAGE_CHILDREN) - c)
        shutil.rmtree(dest)
        # The same guarantee with standard tools: copy, then sha256sum every destination file.
        dest = work / f"cpsum{r}"
        t = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
        subprocess.run(["sha256sum", *files], cwd=dest, check=True, stdout=subprocess.DEVNULL)
        cp_sum_s.append(time.perf_counter() - t)
        shutil.rmtree(dest)
        dest = work / f"sync{r}"
        c = _cpu(resource.RUSAGE_SELF)
        report = sync_directory(src, dest, LocalBackend(), state_dir=work / f"state{r}")
        sync_cpu.append(_cpu(resource.RUSAGE_SELF) - c)
        sync_s.append(report.seconds)
        assert report.bytes_sent == total
        shutil.rmtree(dest)
    cp, sync, cp_sum = statistics.median(cp_s), statistics.median(sync_s), statistics.median(cp_sum_s)
    rate = sha256_rate()
    cores = os.cpu_count() or 1
    return {
        "files": n_files,
        "bytes": total,
        "cp_seconds": cp,
        "sync_seconds": sync,
        "cp_MB_per_s": total / cp / 1e6,
        "sync_MB_per_s": total / sync / 1e6,
        "ratio_sync_over_cp": cp / sync,
        "cp_sha256sum_seconds": cp_sum,
        "ratio_sync_over_cp_sha256sum": cp_sum / sync,
        "ratio_best_of_runs": min(cp_s) / min(sync_s),
        "goal_ratio": 0.8,
        "cp_cpu_seconds": statistics.median(cp_cpu),
        "sync_cpu_seconds": statistics.median(sync_cpu),
        "sha256_MB_per_cpu_s": rate / 1e6,
        "sha256_floor_seconds": 2 * total / rate / cores,
        "ratio_of_cpu_seconds": statistics.median(cp_cpu) / statistics.median(sync_cpu),
        "ratio_bound_idle_machine": statistics.median(cp_cpu) / (statistics.median(sync_cpu) / cores),
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
            "throughput": throughput(work),
            "noop_resync": noop_resync(work),
        }
    write_result("sync", result)


if __name__ == "__main__":
    main()
