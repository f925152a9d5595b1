"""The descriptor is blind to how a lattice lies on the pixel grid."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.embedding.descriptor import describe

PIXEL = 0.1  # Å/px: binned 4x, the coarsest tile spectrum the pipeline sees
SIDE = 165  # px: the size of a rotated copy's crop in the invariance benchmark


def _mos2_like(angle_deg: float, origin: tuple[float, float]) -> np.ndarray:
    """A noise-free honeycomb (a = 3.16 Å, two sites of unequal weight) rendered directly at
    ``angle_deg``: no resampling, so only the lattice's orientation to the pixels changes."""
    a, sigma = 3.16, 0.45
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    basis = rot @ np.array([[a, a / 2], [0.0, a * np.sqrt(3) / 2]])
    span = SIDE * PIXEL
    n = int(span / a) + 4
    ij = np.stack(np.meshgrid(np.arange(-2 * n, 2 * n), np.arange(-2 * n, 2 * n)), -1).reshape(-1, 2)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] * PIXEL
    img = np.zeros((SIDE, SIDE))
    for offset, weight in (((0.0, 0.0), 1.0), ((1 / 3, 1 / 3), 0.6)):
        pos = (ij + offset) @ basis.T + origin
        pos = pos[np.all((pos > -2) & (pos < span + 2), axis=1)]
        for x0, y0 in pos:
            img += weight * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return (20 + 200 * img).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("angle", [15.0, 37.0, 45.0])
def test_a_turned_lattice_keeps_its_spectral_blocks(angle: float) -> None:
    source = describe(_mos2_like(0.0, (0.3, 0.7)), PIXEL)
    turned = describe(_mos2_like(angle, (0.9, 1.3)), PIXEL)
    for block in ("radial", "angular"):
        # Frames of one pristine twin region differ by ~0.01-0.02 (unit vectors): a turn must
        # move the descriptor less than that, or a rotated copy lands in another region.
        # Sampling the tile spectrum every whole bin moved it by 0.02-0.08.
        assert np.linalg.norm(_unit(source[block]) - _unit(turned[block])) < 0.01, block


def test_crops_describe_the_part_of_a_frame_a_copy_shows() -> None:
    from tasks.acquisition.twin import DigitalTwin, DriftSchedule
    from tasks.embedding import N_CROPS, embed_frame, embed_views
    from tasks.embedding.descriptor import crop_boxes

    def frame(lattice: str) -> tuple[np.ndarray, float]:
        f = DigitalTwin(seed=5, schedule=DriftSchedule((), {"lattice": lattice})).acquire(0)
        return f.image.astype(np.float32), f.pixel_size

    image, p = frame("graphene")
    mos2, p2 = frame("mos2")
    assert p2 == p
    top, left, side = crop_boxes(image.shape)[0]
    image[top : top + side, left : left + side] = mos2[top : top + side, left : left + side]
    views = embed_views(image, p)
    assert views.shape == (1 + N_CROPS, len(embed_frame(image, p)))
    assert np.array_equal(views[0], embed_frame(image, p))  # the frame's own vector is unchanged
    # Each crop's row, from the frame's tiles, is what describing the crop alone gives.
    for row, (r, c, s) in zip(views[1:], crop_boxes(image.shape), strict=True):
        assert float(row @ embed_frame(image[r : r + s, c : c + s], p)) > 0.97
    # A turned, re-noised copy of the MoS2 part: its crop is its nearest row, well before the frame.
    rng = np.random.default_rng(0)
    copy = rng.poisson(np.clip(np.rot90(image[top : top + side, left : left + side]), 0, None) * 0.5)
    sims = views @ embed_frame(copy.astype(np.float32), p)
    assert int(np.argmax(sims)) == 1 and sims[1] > sims[0] + 0.02, sims
