"""Zarr v3 array metadata as the specification spells it: a new array's ``zarr.json``
(``array_metadata``, as zarr-python's ``create_array`` writes it), and the chunk encoder,
decoder and fill value an existing one describes (``encoder``, ``decoder``, ``fill_from_json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec, ZstdCodec

# Blosc's shuffle names in the Zarr v3 spec, as numcodecs numbers them.
SHUFFLES: dict[str, int] = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def fill_from_json(value: Any, dtype: np.dtype) -> Any:
    """A fill value as the spec writes it in JSON (NaN and infinities as strings) for ``dtype``."""
    if dtype.kind == "O":
        if not isinstance(value, str):
            raise ValueError(f"fill value {value!r} of a string array")
        return value
    if isinstance(value, str):
        return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}[value]
    return value


def decoder(codecs: list[dict[str, Any]]) -> Callable[[Any], Any]:
    """Bytes of a chunk encoded with ``codecs`` (``bytes``, then blosc or zstd), decoded back to
    raw little-endian bytes (``ChunkFiles.from_metadata`` accepted the chain)."""
    import numcodecs

    if len(codecs) == 1:
        return bytes
    name = codecs[1]["name"]
    codec = numcodecs.Blosc() if name == "blosc" else numcodecs.Zstd()
    return codec.decode


def encoder(meta: dict[str, Any], ndim: int) -> Callable[[np.ndarray], bytes] | None:
    """The chunk encoder that the array's codecs (spec JSON) describe, if this module writes them."""
    import numcodecs
    from numcodecs.vlen import VLenUTF8

    codecs = meta.get("codecs") or []
    if not codecs or len(codecs) > 2:
        return None
    first = codecs[0]
    config = first.get("configuration") or {}
    serialise: Callable[[np.ndarray], Any]
    if meta.get("data_type") == "string":
        if first.get("name") != "vlen-utf8" or ndim != 1:
            return None
        vlen = VLenUTF8()

        def serialise(rows: np.ndarray) -> Any:
            return vlen.encode(np.asarray(rows, dtype=object).ravel())

    else:
        try:
            dtype = np.dtype(meta.get("data_type"))
        except TypeError:
            return None
        little = dtype.newbyteorder("<")
        if first.get("name") != "bytes" or dtype.kind not in "biuf":
            return None
        if dtype.itemsize > 1 and config.get("endian") != "little":
            return None

        def serialise(rows: np.ndarray) -> Any:
            return np.ascontiguousarray(rows, dtype=little)

    if len(codecs) == 1:
        return lambda rows: bytes(memoryview(serialise(rows)).cast("B"))
    second = codecs[1]
    cfg = second.get("configuration") or {}
    compressor: Any
    if second.get("name") == "blosc":
        compressor = numcodecs.Blosc(
            cname=cfg["cname"],
            clevel=int(cfg["clevel"]),
            shuffle=SHUFFLES[cfg["shuffle"]],
            blocksize=int(cfg["blocksize"]),
            typesize=int(cfg["typesize"]),
        )
    elif second.get("name") == "zstd":
        compressor = numcodecs.Zstd(level=int(cfg["level"]), checksum=bool(cfg.get("checksum", False)))
    else:
        return None
    return lambda rows: compressor.encode(serialise(rows))


def _codecs_json(dt: np.dtype | None, string: bool, compressor: Any) -> list[dict[str, Any]] | None:
    """The codecs of a chunk (serialiser, then ``compressor``) as the spec spells them."""
    codecs: list[dict[str, Any]] = (
        [{"name": "vlen-utf8", "configuration": {}}]
        if string or dt is None
        else [
            {"name": "bytes"}
            if dt.itemsize == 1
            else {"name": "bytes", "configuration": {"endian": "little"}}
        ]
    )
    if compressor == "auto":
        codecs.append({"name": "zstd", "configuration": {"level": 0, "checksum": False}})
    elif isinstance(compressor, ZstdCodec):
        codecs.append(
            {"name": "zstd", "configuration": {"level": compressor.level, "checksum": compressor.checksum}}
        )
    elif isinstance(compressor, BloscCodec) and compressor.shuffle is not None and dt is not None:
        config = compressor.to_dict()["configuration"]
        codecs.append({"name": "blosc", "configuration": {**config, "typesize": dt.itemsize}})
    elif compressor is not None:
        return None
    return codecs


def array_metadata(
    *,
    shape: tuple[int, ...],
    dtype: Any,
    chunks: tuple[int, ...],
    fill_value: Any,
    dimension_names: tuple[str, ...],
    attributes: dict[str, Any],
    compressors: Any,
    chunk_key_encoding: dict[str, str],
    serializer: Any = "auto",
) -> dict[str, Any] | None:
    """The ``zarr.json`` of a new array as the Zarr v3 spec writes it (and zarr-python's
    ``create_array`` with these arguments: tests/datasets/test_direct_chunks.py compares them),
    or None for what this does not spell out (then zarr creates the array)."""
    string = dtype is str
    dt = None if string else np.dtype(dtype)
    if dt is not None and (dt.kind not in "biuf" or dt.byteorder == ">"):
        return None
    if isinstance(serializer, ShardingCodec):
        # Rows as inner chunks of shards, the index first and without a checksum: appending a row
        # writes its bytes at the shard's end and its own index entry, nothing a reader has read.
        inner = [c for c in serializer.codecs if not isinstance(c, BytesCodec)]
        inner_codecs = _codecs_json(dt, string, inner[0] if len(inner) == 1 else None if not inner else 0)
        if (
            compressors is not None
            or inner_codecs is None
            or str(serializer.index_location.value) != "start"
            or list(serializer.index_codecs) != [BytesCodec()]
            or list(serializer.chunk_shape) != [1, *chunks[1:]]
        ):
            return None
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(serializer.chunk_shape),
                    "codecs": inner_codecs,
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_location": "start",
                },
            }
        ]
    elif serializer != "auto":
        return None
    else:
        codecs = _codecs_json(dt, string, compressors)
        if codecs is None:
            return None
    if string:
        fill: Any = str(fill_value)
    elif isinstance(fill_value, float) and not np.isfinite(fill_value):
        fill = "NaN" if np.isnan(fill_value) else "Infinity" if fill_value > 0 else "-Infinity"
    else:
        fill = bool(fill_value) if dt.kind == "b" else fill_value
    return {
        "shape": list(shape),
        "data_type": "string" if string else dt.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {
            "name": chunk_key_encoding["name"],
            "configuration": {"separator": chunk_key_encoding["separator"]},
        },
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": list(dimension_names),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }
