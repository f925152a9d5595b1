"""A local model registry: immutable versions, movable aliases, checksummed weights.

Layout under the registry root::

    versions/<version>/weights.safetensors   the tensors (no pickle)
    versions/<version>/manifest.json         config, lineage, metrics, sha256 of the weights
    aliases/<alias>.json                     {"version": ..., "previous": [...], "updated": ...}

A version is written into a private staging directory and renamed into ``versions/`` in
one step, so a reader either finds it whole or not at all; it is never modified after.
An alias is a small JSON file replaced atomically (temporary file, fsync, rename); its
``previous`` list is what ``rollback`` returns to. Writers of aliases serialise on a lock
file; readers never lock. Weights are verified against their recorded sha256 on every
load and refused (``IntegrityError``) when they differ.

When the registry holds no ``production`` alias, or a version asked for is not in it, the
read-only ``fallback`` directory (the ensemble shipped with scopeflow) is consulted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from scopeflow.config import default_registry_dir
from scopeflow.errors import InputError, IntegrityError, NotFoundError, StorageError

SCHEMA_VERSION = 1
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
REGIME_STATISTICS = "regime_statistics.json"  # beside a manifest that predates them
ALIASES = ("production", "candidate")
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "default_models"
_VERSION_RE = re.compile(r"^v(\d{4,})-[0-9a-f]{8}$")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ModelRegistry:
    """Versions and aliases under ``root`` (default ``$SCOPEFLOW_REGISTRY`` or ``$SCOPEFLOW_HOME/models``)."""

    def __init__(
        self, root: str | Path | None = None, fallback: str | Path | None = DEFAULT_MODELS_DIR
    ) -> None:
        self.root = Path(root) if root is not None else default_registry_dir()
        self.fallback = Path(fallback) if fallback is not None else None

    # ------------------------------------------------------------------ paths
    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def aliases_dir(self) -> Path:
        return self.root / "aliases"

    def _ensure(self) -> None:
        try:
            for d in (self.versions_dir, self.aliases_dir, self.root / ".staging"):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the model registry at {self.root}: {exc.strerror or exc}"
            ) from exc

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self._ensure()
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ versions
    def register(
        self,
        tensors: dict[str, torch.Tensor],
        config: dict[str, Any],
        *,
        kind: str,
        lineage: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        parent: str | None = None,
    ) -> str:
        """Store a new immutable version; returns its name ``v<NNNN>-<sha8>``."""
        data = save_safetensors(tensors, metadata={"kind": kind, "schema": str(SCHEMA_VERSION)})
        digest = sha256_bytes(data)
        self._ensure()
        staging = Path(tempfile.mkdtemp(dir=self.root / ".staging"))
        try:
            (staging / WEIGHTS).write_bytes(data)
            while True:
                # Numbered after the shipped versions too: one number names one version, whichever
                # registry holds it (``models list`` shows both).
                number = 1 + max(
                    (int(m.group(1)) for v in self.versions() if (m := _VERSION_RE.match(v))),
                    default=0,
                )
                version = f"v{number:04d}-{digest[:8]}"
                manifest = {
                    "schema": SCHEMA_VERSION,
                    "version": version,
                    "kind": kind,
                    "created": dt.datetime.now(dt.UTC).isoformat(),
                    "parent": parent,
                    "config": config,
                    "lineage": lineage or {},
                    "metrics": metrics or {},
                    "weights": {"file": WEIGHTS, "sha256": digest, "bytes": len(data)},
                }
                (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
                for name in (WEIGHTS, MANIFEST):
                    with open(staging / name, "rb") as fh:
                        os.fsync(fh.fileno())
                try:
                    # The commit: one rename; fails if another writer took this number first.
                    os.rename(staging, self.versions_dir / version)
                    return version
                except OSError:
                    if not (self.versions_dir / version).exists():
                        raise
        except OSError as exc:
            raise StorageError(
                f"cannot write a model version under {self.root}: {exc.strerror or exc}"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _local_versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / MANIFEST).is_file())

    def _fallback_versions(self) -> list[str]:
        if self.fallback is None or not self.fallback.is_dir():
            return []
        return sorted(p.name for p in self.fallback.iterdir() if (p / MANIFEST).is_file())

    def versions(self) -> list[str]:
        """Every version this registry can load (its own, then the shipped ones)."""
        return self._local_versions() + [
            v for v in self._fallback_versions() if v not in self._local_versions()
        ]

    def _version_dir(self, version: str) -> Path:
        local = self.versions_dir / version
        if (local / MANIFEST).is_file():
            return local
        if self.fallback is not None and (self.fallback / version / MANIFEST).is_file():
            return self.fallback / version
        known = ", ".join(self.versions()) or "none"
        raise NotFoundError(f"unknown model version {version!r} in registry {self.root} (known: {known})")

    # ------------------------------------------------------------------ aliases
    def _alias_file(self, alias: str) -> Path:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", alias):
            raise InputError(f"bad alias name {alias!r}")
        return self.aliases_dir / f"{alias}.json"

    def _read_alias(self, alias: str) -> dict[str, Any] | None:
        path = self._alias_file(alias)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"alias file {path} is not valid JSON: {exc}") from exc

    def alias(self, alias: str) -> str | None:
        """The version ``alias`` points to in this registry (None if unset)."""
        record = self._read_alias(alias)
        return None if record is None else str(record["version"])

    def _write_alias(self, alias: str, version: str, previous: list[str]) -> None:
        record = {"version": version, "previous": previous, "updated": dt.datetime.now(dt.UTC).isoformat()}
        _atomic_write(self._alias_file(alias), json.dumps(record, indent=1).encode())

    def promote(self, version: str, alias: str = "production") -> str | None:
        """Point ``alias`` at ``version`` (which must load cleanly); returns the version it replaced."""
        version = self.resolve(version)
        self.load(version)  # refuse to promote weights that fail their checksum
        with self._lock():
            record = self._read_alias(alias)
            old = None if record is None else record["version"]
            previous = [] if record is None else [*record.get("previous", []), old]
            if old == version:
                return old
            self._write_alias(alias, version, previous[-50:])
            return old

    def rollback(self, alias: str = "production") -> str:
        """Point ``alias`` back at the version it held before; returns that version."""
        with self._lock():
            record = self._read_alias(alias)
            if record is None or not record.get("previous"):
                raise NotFoundError(f"alias {alias!r} in {self.root} has no earlier version to roll back to")
            *rest, back = record["previous"]
            self._write_alias(alias, back, rest)
            return back

    # ------------------------------------------------------------------ reading
    def resolve(self, ref: str) -> str:
        """The version named by ``ref``: an alias, a version name, or ``default`` (the shipped one)."""
        if ref in ALIASES or (self.aliases_dir / f"{ref}.json").is_file():
            version = self.alias(ref)
            if version is not None:
                return version
            if ref == "production":
                return self.resolve("default")
            raise NotFoundError(f"alias {ref!r} is not set in registry {self.root}")
        if ref == "default":
            shipped = self._fallback_versions()
            if not shipped:
                raise NotFoundError(
                    f"no default model shipped in {self.fallback} and none promoted in {self.root}"
                )
            return shipped[-1]
        self._version_dir(ref)
        return ref

    def regime_statistics(self, ref: str) -> dict[str, Any] | None:
        """The stored signatures of the regimes' training frames of version ``ref``: from its
        manifest's lineage, or from ``regime_statistics.json`` beside a manifest made before
        they were recorded (None when neither has them)."""
        version = self.resolve(ref)
        stored = self.manifest(version).get("lineage", {}).get("regime_statistics")
        if stored is not None:
            return stored
        path = self._version_dir(version) / REGIME_STATISTICS
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"{path} is not valid JSON: {exc}") from exc

    def manifest(self, ref: str) -> dict[str, Any]:
        """The manifest of the version ``ref`` names."""
        path = self._version_dir(self.resolve(ref)) / MANIFEST
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"manifest {path} is not valid JSON: {exc}") from exc

    def load(self, ref: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Weights and manifest of the version ``ref`` names, after checking the weights' sha256."""
        version = self.resolve(ref)
        directory = self._version_dir(version)
        manifest = self.manifest(version)
        data = (directory / manifest["weights"]["file"]).read_bytes()
        digest = sha256_bytes(data)
        if digest != manifest["weights"]["sha256"]:
            raise IntegrityError(
                f"weights of model {version} ({directory / WEIGHTS}) are corrupted: sha256 {digest[:12]}… "
                f"differs from the recorded {manifest['weights']['sha256'][:12]}…; refusing to load them"
            )
        try:
            tensors = load_safetensors(data)
        except SafetensorError as exc:
            raise IntegrityError(f"weights of model {version} cannot be read: {exc}") from exc
        return tensors, manifest
