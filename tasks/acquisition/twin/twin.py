"""The digital twin: a HAADF-STEM built from software parts, implementing ``Instrument``."""

from __future__ import annotations

from typing import Any

import numpy as np

from scopeflow.frame import Frame, Truth

from .render import AMORPHOUS_WEIGHT, form_image, splat
from .scene import VACANCY, Scene, columns_in_window, contamination_points
from .schedule import DriftSchedule

PAD = 32  # px rendered around the frame so probe tails do not wrap around
DEFAULT_START = np.datetime64("2026-01-01T00:00:00", "ns")


class DigitalTwin:
    """A simulated STEM: frame ``i`` depends only on the seed, ``i`` and the schedule.

    Frames are ``shape`` pixels (rows, cols); conditions (pixel size Å/px, optics, dose
    e/Å², noise, drift, contamination, lattice) follow ``schedule``.
    """

    def __init__(
        self,
        seed: int = 0,
        schedule: DriftSchedule | None = None,
        shape: tuple[int, int] = (256, 256),
        name: str = "twin",
        start_time: np.datetime64 = DEFAULT_START,
    ) -> None:
        self.seed = int(seed)
        self.schedule = schedule or DriftSchedule()
        self.shape = (int(shape[0]), int(shape[1]))
        self.name = name
        self.start_time = np.datetime64(start_time, "ns")

    def conditions(self, index: int) -> dict[str, Any]:
        """Conditions of frame ``index`` per the schedule."""
        return self.schedule.at(index)

    def state(self) -> dict[str, Any]:
        """Settings that reproduce this twin's frames."""
        return {
            "name": self.name,
            "kind": "twin",
            "seed": self.seed,
            "shape": list(self.shape),
            "schedule": self.schedule.describe(),
            "base": dict(self.schedule.base),
        }

    def window(self, index: int, pad: int = 0) -> tuple[tuple[float, float], tuple[float, float]]:
        """Origin (x, y) and size (w, h) in Å of the sample area seen by frame ``index``."""
        c = self.conditions(index)
        p = c["pixel_size"]
        ox, oy = self.schedule.offset(index)
        ny, nx = self.shape
        return (ox - pad * p, oy - pad * p), ((nx + 2 * pad) * p, (ny + 2 * pad) * p)

    def scene(self, index: int, pad: int = 0) -> Scene:
        """Columns under frame ``index`` (vacancies included, as kind VACANCY)."""
        c = self.conditions(index)
        origin, size = self.window(index, pad)
        return columns_in_window(
            c["lattice"],
            origin,
            size,
            seed=self.seed,
            region=c["region"],
            vacancy_rate=c["vacancy_rate"],
            substitution_rate=c["substitution_rate"],
        )

    def contamination(self, index: int) -> np.ndarray:
        """Row, column (px of frame ``index``, (n, 2)) of the amorphous carbon atoms in it and in
        the margin rendered around it: the same atoms ``acquire`` puts in the frame."""
        origin, _ = self.window(index)
        junk = self._contamination(index, self._rng(index))
        return (junk[:, ::-1] - np.array(origin[::-1])) / float(self.conditions(index)["pixel_size"])

    def _rng(self, index: int) -> np.random.Generator:
        """Frame ``index``'s random draws: contamination first, then the noise."""
        return np.random.default_rng([self.seed, index, 0x5EED])

    def _contamination(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Amorphous atoms (x, y, Å) over frame ``index`` and its rendered margin."""
        c = self.conditions(index)
        origin, size = self.window(index, PAD)
        return contamination_points(
            origin, size, seed=self.seed, region=c["region"], coverage=c["contamination"], rng=rng
        )

    def acquire(self, index: int) -> Frame:
        """Simulate frame ``index``."""
        if index < 0:
            raise ValueError(f"frame index must be ≥ 0, got {index}")
        c = self.conditions(index)
        p = float(c["pixel_size"])
        rng = self._rng(index)
        origin, _ = self.window(index, PAD)
        scene = self.scene(index, PAD)
        present = scene.kind != VACANCY
        rowcol = (scene.xy[present][:, ::-1] - np.array(origin[::-1])) / p
        weight = scene.weight[present].astype(np.float64)
        padded = (self.shape[0] + 2 * PAD, self.shape[1] + 2 * PAD)
        obj = splat(padded, rowcol, weight)
        junk = self._contamination(index, rng)
        if len(junk):
            obj += splat(
                padded, (junk[:, ::-1] - np.array(origin[::-1])) / p, np.full(len(junk), AMORPHOUS_WEIGHT)
            )
        image = form_image(obj, p, c, rng, crop=PAD)
        truth_rc = rowcol - PAD
        ny, nx = self.shape
        inside = (
            (truth_rc[:, 0] >= -0.5)
            & (truth_rc[:, 0] < ny - 0.5)
            & (truth_rc[:, 1] >= -0.5)
            & (truth_rc[:, 1] < nx - 0.5)
        )
        truth = Truth(
            rowcol=truth_rc[inside].astype(np.float32),
            cls=scene.cls[present][inside],
            weight=scene.weight[present][inside],
        )
        time = self.start_time + np.timedelta64(round(index * c["frame_time"] * 1e9), "ns")
        return Frame(
            index=index, image=image, pixel_size=p, time=time, conditions=c, truth=truth, source=self.name
        )
