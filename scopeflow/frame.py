"""One acquired frame and its ground truth: the record every layer passes around.

It lives in the lowest layer because storage writes frames (``storage.datasets``) and tasks make
them (instruments, the twin, the folder watcher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Truth:
    """Ground truth of one frame, known only for simulated frames.

    ``rowcol`` holds the atom columns' positions in pixels of the frame (row, column),
    ``cls`` their intensity class (0 light, 1 medium, 2 heavy) and ``weight`` the
    column's Z-contrast weight (sum of Z^1.7 over the atoms in the column).
    """

    rowcol: np.ndarray  # (n, 2) float32, pixels
    cls: np.ndarray  # (n,) int8
    weight: np.ndarray  # (n,) float32


@dataclass(frozen=True)
class Frame:
    """One acquired image with the conditions it was taken under.

    ``image`` is 2-D float32 in detector counts; ``pixel_size`` in Å/px; ``time`` a UTC
    ``numpy.datetime64``; ``conditions`` maps condition names to numbers or short strings.
    """

    index: int
    image: np.ndarray
    pixel_size: float
    time: np.datetime64
    conditions: dict[str, Any] = field(default_factory=dict)
    truth: Truth | None = None
    source: str = ""
