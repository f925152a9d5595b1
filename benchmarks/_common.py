"""Shared by the benchmark scripts: machine facts and writing results."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, cores, threads, Python."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
    }


def write_result(name: str, figures: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine facts and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), **figures}
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(json.dumps(payload, indent=2, default=float))
    return path


def peer_venv(venv: Path, pins: tuple[str, ...], package: str, fail: Callable[[str], NoReturn]) -> Path:
    """The python of a benchmark-only venv at ``venv`` (a GPL-3 peer or simulator, never a
    dependency of the project), created and given ``pins`` when missing or pinned otherwise;
    ``fail`` reports a failure in one line. Progress is printed one line per package."""
    python = venv / "bin" / "python"
    stamp = venv / "scopeflow-pins.txt"
    if python.exists() and stamp.exists() and stamp.read_text().split() == list(pins):
        return python
    tag = f"[{package} venv]"
    print(f"{tag} creating {venv} (benchmark only; {package} is GPL-3)", flush=True)
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True
    )
    if made.returncode != 0:
        fail(f"could not create {venv}: {(made.stderr.strip().splitlines() or ['?'])[-1]}")
    print(f"{tag} installing {' '.join(pins)} (one-off, a few minutes) ...", flush=True)
    pip = subprocess.Popen(
        [str(python), "-m", "pip", "install", "--progress-bar", "off", *pins],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert pip.stdout is not None
    last = ""
    for line in pip.stdout:
        line = line.rstrip()
        if line.startswith(("Collecting", "Installing collected", "Successfully installed")):
            # Progress: one line per package resolved, then the install itself.
            print(f"{tag} {line[:160]}", flush=True)
        if line.startswith("ERROR"):
            last = line
    if pip.wait() != 0:
        fail(f"cannot install {package} into {venv} (pip exit {pip.returncode}): {last or 'see pip output'}")
    stamp.write_text("\n".join(pins) + "\n")
    print(f"{tag} ready", flush=True)
    return python
