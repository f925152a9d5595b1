"""What the atom finders return: columns of one frame at sub-pixel precision.

It lives in the lowest layer because storage writes it (``storage.datasets.predictions``) and
tasks make it (``tasks.inference``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ``kind`` codes of a reported site: a column, a vacancy (a lattice site with no column,
#: reported in ``vacancies``), a substitution (a column whose height departs from its sublattice's).
KINDS = ("column", "vacancy", "substitution")


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

    After checking against the frame (``tasks.inference.verify``): ``votes`` (n,) the
    fraction of members that found the column; ``kind`` (n,) 0 column or 2 substitution
    (see ``KINDS``); ``sigma`` (n, 2) the position's standard error in px; ``confidence``
    (n,) the probability that the column is there; ``vacancies`` (m, 2) px with
    ``vacancy_confidence`` (m,); ``crystal`` whether the frame shows a lattice at all and
    ``trusted`` whether its columns can be taken as they are (expected false columns < 1 %).
    Unchecked atoms (a single network, the classical finder) have NaN ``sigma``.
    """

    rowcol: np.ndarray
    uncertainty: np.ndarray
    score: np.ndarray
    cls: np.ndarray
    position_std: np.ndarray | None = None
    votes: np.ndarray | None = None
    kind: np.ndarray | None = None
    sigma: np.ndarray | None = None
    confidence: np.ndarray | None = None
    vacancies: np.ndarray | None = None
    vacancy_confidence: np.ndarray | None = None
    crystal: bool = True
    trusted: bool = False

    def __post_init__(self) -> None:
        n = len(self.rowcol)
        defaults = {
            "position_std": np.zeros(n, np.float32),
            "votes": np.ones(n, np.float32),
            "kind": np.zeros(n, np.int8),
            "sigma": np.full((n, 2), np.nan, np.float32),
            "confidence": np.full(n, np.nan, np.float32),
            "vacancies": np.zeros((0, 2), np.float32),
            "vacancy_confidence": np.zeros(0, np.float32),
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.rowcol.shape[0])

    @classmethod
    def empty(cls, crystal: bool = True) -> Atoms:
        """No columns (``crystal`` False: the frame shows no lattice, so none were reported)."""
        return cls(
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int8),
            crystal=crystal,
        )

    def classified(self) -> bool:
        """Whether the finder assigned classes (the ``class`` CSV column exists)."""
        return bool(len(self.cls)) and bool((self.cls >= 0).all())
