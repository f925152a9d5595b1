"""Moving dataset directories between repositories, checksum-verified and incremental.

``sync_directory(src, dest, backend)`` is the engine; backends: ``LocalBackend`` (copy between
directories) and ``GlobusBackend`` (``globus_sdk.TransferClient``). See ``protocol.py``.
"""

from storage.transfer.local import LocalBackend
from storage.transfer.manifest import FileEntry, build_manifest, sha256_file
from storage.transfer.protocol import TransferBackend, TransferError
from storage.transfer.state import SyncState
from storage.transfer.sync import SyncReport, sync_directory

__all__ = [
    "FileEntry",
    "LocalBackend",
    "SyncReport",
    "SyncState",
    "TransferBackend",
    "TransferError",
    "build_manifest",
    "sha256_file",
    "sync_directory",
]
