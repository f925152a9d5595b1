"""What the drift monitor keeps of a frame (``Observation``), and its stored form: a run of
observations as arrays (``pack``) and back (``unpack``), for the monitor state a dataset keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .physics import Proxies
from .spectrum import PEAKS, ImageStats


@dataclass(frozen=True)
class Observation:
    """What the monitor keeps of one frame: encoder embedding (d,), mean per-atom uncertainty,
    physics proxies of its columns and its spectrum summary."""

    embedding: np.ndarray
    uncertainty: float
    proxies: Proxies
    image: ImageStats


def pack(obs: Sequence[Observation]) -> dict[str, np.ndarray]:
    if not obs:
        return {}
    return {
        "embedding": np.stack([o.embedding for o in obs]),
        "uncertainty": np.array([o.uncertainty for o in obs]),
        "proxies": np.array(
            [[o.proxies.density, o.proxies.nn_distance, o.proxies.irregularity] for o in obs]
        ),
        "image": np.stack([o.image.as_row() for o in obs]),
        "ring_bins": obs[0].image.ring_bins,
        "ring_k": obs[0].image.ring_k,
    }


def unpack(arrays: Mapping[str, np.ndarray]) -> list[Observation]:
    if "embedding" not in arrays:
        return []
    ring_k, ring_bins = np.asarray(arrays["ring_k"]), np.asarray(arrays["ring_bins"])
    r = len(ring_k)
    out = []
    for e, u, p, row in zip(
        arrays["embedding"], arrays["uncertainty"], arrays["proxies"], arrays["image"], strict=True
    ):
        image = ImageStats(
            float(row[0]),
            float(row[1]),
            row[3 : 3 + r],
            ring_k,
            row[3 + r :].reshape(PEAKS, 3),
            float(row[2]),
            ring_bins,
        )
        out.append(Observation(np.asarray(e), float(u), Proxies(*map(float, p)), image))
    return out
