"""The benchmark probes of issue 18's invariance (``benchmarks/similarity_constellation.py``,
``benchmarks/similarity_fingerprint.py``): their scores must tell a copy's source frame from
another frame of the same lattice, or their figures mean nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from tasks.acquisition.twin import DigitalTwin, DriftSchedule

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import similarity_constellation as constellation
import similarity_fingerprint as fingerprint

from storage.federation.similarity.rerank import prepare


def _frame(region: int, index: int) -> tuple[np.ndarray, float]:
    base = {"lattice": "graphene", "region": region, "dose": 5e6, "substitution_rate": 0.06, "drift_x": 7.3}
    frame = DigitalTwin(seed=41, schedule=DriftSchedule((), base)).acquire(index)
    return frame.image.astype(np.float32), float(frame.pixel_size)


def _copy(image: np.ndarray, seed: int) -> np.ndarray:
    """Turned 37°, mirrored, cropped to the central 150², re-noised at half the dose."""
    rng = np.random.default_rng(seed)
    turned = ndimage.rotate(image, 37, reshape=False, order=3)[53:203, 53:203][:, ::-1]
    return rng.poisson(np.clip(turned, 0, None) * 0.5).astype(np.float32)


def test_constellation_and_noise_scores_single_out_the_source() -> None:
    source, px = _frame(1, 0)
    other, other_px = _frame(2, 0)  # the same lattice and dopants elsewhere on another sample
    query = _copy(source, 3)
    q_xy, q_sign = constellation.distinctive_points(query, px)
    assert len(q_xy) >= constellation.MIN_POINTS, "dopants at 5e6 e/Å² make a constellation"
    on_source = constellation.inliers(q_xy, q_sign, *constellation.distinctive_points(source, px))
    on_other = constellation.inliers(q_xy, q_sign, *constellation.distinctive_points(other, other_px))
    assert on_source >= on_other + constellation.MARGIN

    qp, sp, op = prepare(query, px), prepare(source, px, mirror=False), prepare(other, other_px, mirror=False)
    qr = fingerprint.residual(qp.image)
    z_source = fingerprint.fingerprint(qp, qr, sp, fingerprint.residual(sp.image))
    z_other = fingerprint.fingerprint(qp, qr, op, fingerprint.residual(op.image))
    assert z_source > 2 * z_other
