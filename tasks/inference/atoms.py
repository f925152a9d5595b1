"""What the atom finders return: columns of one frame at sub-pixel precision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Atoms:
    """Atom columns found in one frame.

    ``rowcol`` (n, 2) float32 in pixels of the *input* frame (row, column; pixel centres at
    integers); ``uncertainty`` (n,) the standard deviation of the members' votes for the
    column (0: every member finds it, 0.5: they split evenly; 0 for a single network or
    the classical finder); ``score`` (n,) the mean heatmap (or normalised
    intensity) at the column; ``cls`` (n,) int8 intensity class (0 light, 1 medium,
    2 heavy) or -1 where the finder does not classify; ``position_std`` (n,) the members'
    spread of the column's position in Å (0 where there is one network).
    """

    rowcol: np.ndarray
    uncertainty: np.ndarray
    score: np.ndarray
    cls: np.ndarray
    position_std: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.position_std is None:
            object.__setattr__(self, "position_std", np.zeros(len(self.rowcol), np.float32))

    def __len__(self) -> int:
        return int(self.rowcol.shape[0])

    @classmethod
    def empty(cls) -> Atoms:
        """No columns."""
        return cls(
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int8),
        )

    def classified(self) -> bool:
        """Whether the finder assigned classes (the ``class`` CSV column exists)."""
        return bool(len(self.cls)) and bool((self.cls >= 0).all())
