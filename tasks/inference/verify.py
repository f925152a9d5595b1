"""What the network proposes, checked against the frame: real columns, vacancies, substitutions, trust.

The ensemble's members learnt the twin's lattices so well that they complete them: every
member puts a column on a vacant site of graphene, with full agreement, and ~100 columns
on a frame of pure noise. Agreement among members cannot reveal a prior they share. So each
proposal is measured on the frame itself (``refine.fit_columns``) and judged by physics:

1. **Is there a crystal?** Bragg reflections in the power spectrum that the proposed columns
   carry (``lattice``). Noise, vacuum and amorphous film have none: their proposals are
   dropped and the frame is marked as holding no crystal. A frame too faint to show its
   lattice alone is judged with the spectra of its call's frames and of the run's recent
   ones (``pooled``, ``CheckContext``), so that the answer does not depend on how many
   frames a call holds.
2. **Is there a column at each site?** Its height above the local background is compared
   with two hypotheses of equal spread: a column of the frame's lightest sublattice (the
   median height there) or nothing (height 0). The spread is the height's standard error
   plus the sublattice's own scatter of heights (so noise-free frames are not judged with a
   zero spread); the prior share of occupied sites is fitted to the frame (EM on the
   two-component mixture). The posterior of "present" is the column's probability; its
   Bernoulli standard deviation, together with the members' votes, is the reported
   ``uncertainty``. Sites the lattice predicts but no member proposed are measured the same
   way: an empty site is a **vacancy**, a proposal found empty as well. A height that rejects
   "nothing here" at the frame-wide level is a column whatever the two-hypothesis test says (a
   column lighter than its site's species, e.g. one S of an S2 pair, lies between the two); a
   vacancy must be predicted by at least two columns that are there. The lattice's columns
   just beyond the frame's edge are fitted too (one shared height per species), so that
   their tails are not taken for a column on an edge site; a site within one column width
   of the edge shows too little of itself to judge, and is not called.
3. **Does a column match its sublattice?** A height away from its sublattice's median by
   more than the frame-wide significance level allows is a **substitution**.

The significance level is ``alpha``, the expected number of false calls per frame (default
0.01), Bonferroni-corrected for the number of sites tested: a statistic, not a tuning.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import expit, ndtr, ndtri

from scopeflow.atoms import Atoms

from .kernels import kernels
from .lattice import (
    TOLERANCE,
    SiteLattice,
    averaged_reflections,
    beyond_edge,
    carried_reflections,
    empty_sites,
    independent,
    noise_limited,
    periodic_power,
    predicted_by,
    site_lattice,
    translation_hits,
)
from .refine import fit_columns, joint_heights, one_blas_thread

ALPHA = 0.01  # expected false calls (columns off the lattice, substitutions) per frame
TRUST_FALSE_FRACTION = 0.01  # a frame is trusted when its expected false columns are under 1 %
_MAD = 1.4826  # median absolute deviation → standard deviation, for Gaussian scatter


def verify(image: np.ndarray, atoms: Atoms, alpha: float = ALPHA) -> Atoms:
    """``atoms`` proposed for ``image`` (H, W), checked against it (see the module docstring).

    Positions (px of ``image``) become the inverse-variance mean of the network's and the
    fit's, each weighed by its scatter about the lattice (``_combine``).
    """
    return verify_with_spectrum(image, atoms, alpha)[0]


def verify_with_spectrum(
    image: np.ndarray, atoms: Atoms, alpha: float = ALPHA
) -> tuple[Atoms, np.ndarray | None]:
    """``verify``, and the frame's ``periodic_power`` that it took (None: it took none, the
    frame had no proposal or is under 16 px), for ``pooled`` to keep rather than take again."""
    image = np.asarray(image, np.float64)
    shape = (int(image.shape[0]), int(image.shape[1]))
    if len(atoms) == 0:
        return Atoms.empty(crystal=False), None
    power = periodic_power(image) if min(shape) >= 16 else None
    # ``bragg_reflections`` of the frame, from the spectrum kept.
    reflections = np.zeros((0, 2)) if power is None else averaged_reflections([power], shape)
    return _verified(image, atoms, alpha, shape, power, reflections), power


def _verified(
    image: np.ndarray,
    atoms: Atoms,
    alpha: float,
    shape: tuple[int, int],
    power: np.ndarray | None,
    reflections: np.ndarray,
) -> Atoms:
    """``verify``'s check, given the frame's spectrum (if taken) and its reflections."""
    carried = carried_reflections(atoms.rowcol, reflections)
    if not independent(carried):
        if (independent(reflections) or len(carried)) and noise_limited(image, power):
            # A crystal the network's columns do not follow (strong defocus, a lattice it was
            # not trained for), or one whose second direction is lost in the noise (a small
            # frame at low dose: 128² px at 4·10⁴ e/Å² shows one reflection of graphene's
            # three above the whole-spectrum threshold, and the columns carry it): the frame
            # cannot confirm the columns one by one, nor deny the crystal; report them as
            # unconfirmed. Noise passes that threshold with probability alpha per frame, and
            # the columns must carry the reflection too.
            return _unconfirmed(atoms)
        return Atoms.empty(crystal=False)
    lattice = site_lattice(atoms.rowcol, shape, atoms.cls)
    sites, support = empty_sites(atoms.rowcol, lattice, shape)
    # A site predicted by one column alone may be the edge of the crystal; two agree on a hole.
    sites = sites[support >= 2]
    n = len(atoms)
    # The columns just beyond the frame's edge are in the fit too (their tails fall inside it,
    # and would be taken for a column on a vacant edge site). Out to 1.5 spacings: a resolved
    # column's width is under half a spacing, and its tails end at 3 widths.
    outside = beyond_edge(atoms.rowcol, lattice, shape, reach=1.5 * lattice.separation)
    z_star = float(-ndtri(alpha / max(1, n + len(sites))))  # the normal's upper quantile (norm.isf)
    fit = fit_columns(
        image, np.concatenate([atoms.rowcol, sites]), separation=lattice.separation, beyond=outside
    )
    height, se = fit.amplitude.astype(np.float64), fit.amplitude_se.astype(np.float64)
    if lattice.found:
        net_prediction = _lattice_prediction(np.asarray(atoms.rowcol, np.float64), lattice)
        estimates = [
            _weighed(np.asarray(atoms.rowcol, np.float64), net_prediction),
            _weighed(np.asarray(fit.rowcol[:n], np.float64), None, lattice),
        ]
        rowcol, sigma = _combine(estimates)
        # Heights are measured at the proposals (a vacant site must not be moved onto its
        # neighbours' tails). But a certain column whose reported position lies significantly
        # away from its proposal is measured again where it is: a heavy column modelled
        # 1.5 px off leaves a residual as large as a light neighbour's whole height.
        shift = np.hypot(*((rowcol - atoms.rowcol) / np.maximum(sigma, 1e-9)).T)
        moved = (height[:n] > z_star * se[:n]) & (shift > z_star)
        if moved.any():
            at = np.concatenate([np.where(moved[:, None], fit.rowcol[:n], atoms.rowcol), sites])
            again = joint_heights(image, at, fit.width, lattice.separation, outside)
            height, se = again["height"], again["height_se"]
    else:
        rowcol, sigma = atoms.rowcol, np.full((n, 2), np.nan, np.float32)
    cls = atoms.cls.astype(np.int64)
    sub = np.concatenate([lattice.sublattice, np.full(len(sites), -2)])
    on = sub[:n] >= 0
    # Each species' height: the median over the columns of its class on sites of its class
    # (a site's class is the one most common at its translation neighbours), so that a few
    # stray or misclassified proposals do not make a species of their own. Medians are robust
    # to the few vacancies; keeping only significant columns would bias them upwards at low dose.
    expected = lattice.expected_class
    regular = on & (cls == expected)
    members = regular if regular.sum() >= 3 else (on if on.sum() >= 3 else np.ones(n, bool))
    levels, spreads = {}, {}
    for c in np.unique(cls[members]):
        in_class = members & (cls == c)
        h = height[:n][in_class]
        # A class whose median height is not significantly above nothing is no species: the
        # network names the sites it fills (vacant S2 sites of MoS2, say) a class of their own.
        # Its columns are weighed against the lightest species there is. (The median of m
        # heights has a standard error of ~1.25 se / √m.)
        median_se = 1.2533 * np.median(se[:n][in_class]) / np.sqrt(max(len(h), 1))
        level = float(np.median(h)) if len(h) else np.nan
        if len(h) >= 3 and level > z_star * median_se:
            levels[int(c)] = level
            spreads[int(c)] = _MAD * float(np.median(np.abs(h - levels[int(c)])))
    if not levels:
        # The frame shows a crystal but its columns cannot be measured one by one (too blurred
        # or too few counts): report the network's columns as unconfirmed.
        return _unconfirmed(atoms)
    lightest = min(levels, key=levels.__getitem__)
    # A column is weighed against its own site's species; an empty site (whose species the
    # lattice's translations may mix) and a site of unknown species against the lightest.
    site_class = np.concatenate([expected, np.full(len(sites), -1)])
    ref = _per_class(levels, site_class, levels[lightest])
    tau = _per_class(spreads, site_class, spreads[lightest])
    llr = (height * ref - 0.5 * ref**2) / np.maximum(se**2 + tau**2, 1e-30)
    p_present = expit(llr + _log_prior_odds(llr))
    # "Nothing here" rejected at the frame-wide level wins over the two-hypothesis test: a
    # column lighter than its site's species (one S left of an S2 pair, a lighter dopant) lies
    # between the two hypotheses, and is a column, not a vacancy. The sublattice's scatter
    # ``tau`` is in the spread so that a noise-free frame's misfit is not taken for a column.
    z_absent = height / np.sqrt(se**2 + tau**2 + 1e-30)
    p_present = np.maximum(p_present, 1.0 - np.minimum(1.0, ndtr(-z_absent) * len(fit)))
    # A column whose centre lies within one width of the frame's edge shows less than its
    # core to the fit: the fit cannot judge it; the members' vote stands.
    positions = np.concatenate([atoms.rowcol, sites]).astype(np.float64)
    margin = fit.width if np.isfinite(fit.width) else 0.0
    near_edge = ((positions < margin) | (positions > np.array(shape) - 1 - margin)).any(axis=1)
    p_present = np.where(near_edge, np.concatenate([atoms.votes, np.ones(len(sites))]), p_present)
    if lattice.found:
        # Off the lattice (an adatom, or a false column): only a significant peak is a column.
        p_present = np.where((sub == -1) & (height <= z_star * se), 0.0, p_present)

    q = p_present[:n]
    if lattice.found:
        # A proposal on the frame's edge whose lattice neighbours put its centre outside the
        # frame is the mirror image the network's padding made of a column beyond the edge.
        predicted, counts = net_prediction
        beyond = (counts >= 2) & ((predicted < -0.5) | (predicted > np.array(shape) - 0.5)).any(axis=1)
        q = np.where(beyond, 0.0, q)
    keep = q >= 0.5
    vacant = np.concatenate([(~keep) & on & (p_present[:n] < 0.5), p_present[n:] < 0.5]) & lattice.found
    # A vacancy is a site that columns which are really there predict: a site predicted only
    # by proposals found empty (a row of the network's false columns at the frame's edge
    # forms a "sublattice" of its own) is no site of this crystal. Two, as for empty sites.
    vacant[vacant] = predicted_by(positions[vacant], atoms.rowcol[keep], lattice) >= 2
    # Within a width of the edge the fit cannot judge a site (above): a proposal the members
    # voted down there is dropped, but it is no evidence of a vacancy either way.
    vacant &= ~near_edge
    # A vacancy is a lattice site: where its neighbours put it, not where the network put a
    # column that is not there (that can be pixels off, most of all at the frame's edge).
    site_rc = positions.copy()
    if lattice.found:
        placed = net_prediction[1] >= 2
        site_rc[:n][placed] = net_prediction[0][placed]
    vacancy_rc = site_rc[vacant].astype(np.float32)
    vacancy_conf = (1.0 - p_present[vacant]).astype(np.float32)

    # A substitution: a column of another class than its sublattice's, whose height departs
    # from that class's by more than the frame-wide significance level allows.
    level = _per_class(levels, expected, np.nan)
    spread = _per_class(spreads, expected, np.nan)
    z_sub = np.abs(height[:n] - level) / np.sqrt(se[:n] ** 2 + spread**2 + 1e-30)
    substituted = on & (expected >= 0) & (expected != cls) & np.isfinite(z_sub) & (z_sub > z_star)
    kind = np.where(substituted, 2, 0).astype(np.int8)
    if lattice.found:
        # The reported positions take in the deblended fit too (``refine.deblended_positions``):
        # it is not pulled by the neighbours' tails, where the matched filter is. (The decisions
        # above keep the two-estimator positions they were made with.)
        rowcol, sigma = _combine(
            [*estimates, _weighed(np.asarray(fit.deblended[:n], np.float64), None, lattice)], lattice
        )
    keep &= ~_duplicates(rowcol, q, keep, 0.5 * lattice.separation)
    expected_false = float((1.0 - q[keep]).sum())
    trusted = lattice.found and bool(keep.any()) and expected_false <= TRUST_FALSE_FRACTION * keep.sum()
    return Atoms(
        rowcol=rowcol[keep],
        # The larger of the two doubts: the members' split vote, the frame's evidence.
        uncertainty=np.maximum(atoms.uncertainty[keep], np.sqrt(q[keep] * (1.0 - q[keep]))).astype(
            np.float32
        ),
        score=atoms.score[keep],
        cls=atoms.cls[keep],
        position_std=atoms.position_std[keep],
        votes=atoms.votes[keep],
        kind=kind[keep],
        sigma=sigma[keep],
        confidence=q[keep].astype(np.float32),
        vacancies=vacancy_rc,
        vacancy_confidence=vacancy_conf,
        crystal=True,
        trusted=trusted,
    )


def verify_many(
    images: Sequence[np.ndarray],
    proposals: Sequence[Atoms],
    workers: int = 1,
    alpha: float = ALPHA,
    context: CheckContext | None = None,
    pixel_size: float = float("nan"),
) -> list[Atoms]:
    """``verify`` of each frame of ``images`` with its ``proposals``, ``workers`` frames at a time.

    Frames are checked in threads: the check spends most of its time in numpy, scipy and
    BLAS calls that release the GIL. BLAS runs on one thread throughout (``joint_heights``
    solves a few hundred unknowns, too small to split), so ``workers`` threads use
    ``workers`` cores. The results are those of ``verify`` frame by frame, except for frames
    whose own spectrum shows no crystal, which the batch's frames together may, with the
    run's recent frames of ``context`` (at ``pixel_size`` Å/px) if given (``pooled``).
    """
    if len(images) != len(proposals):
        raise ValueError(f"verify_many got {len(images)} frames and {len(proposals)} proposals")
    with one_blas_thread():
        if workers <= 1 or len(images) <= 1:
            done = [verify_with_spectrum(img, a, alpha) for img, a in zip(images, proposals, strict=True)]
        else:
            with ThreadPoolExecutor(min(workers, len(images)), thread_name_prefix="verify") as pool:
                done = list(
                    pool.map(
                        lambda pair: verify_with_spectrum(*pair, alpha), zip(images, proposals, strict=True)
                    )
                )
    checked = [a for a, _ in done]
    return pooled(images, proposals, checked, context, pixel_size, [power for _, power in done])


# Frames of a run a ``CheckContext`` holds per shape and pixel size: the edge's default batch
# (``EdgeSettings.batch_size``), the pool a batch gave before the context existed. 128² twin
# frames at 4·10⁴ e/Å² pooled 16 at a time scored F1 0.76-0.78 (``benchmarks/check_batch.py``,
# 8 and 24 a call, 2026-11-30), so more frames buy little; fewer let the crystal of a regime
# the drift monitor has not reported yet (it decides within a batch or so) linger a shorter time.
CONTEXT_FRAMES = 16
# Shapes and pixel sizes a ``CheckContext`` holds frames of, the least recently checked dropped
# first: a memory bound (4 × 16 spectra), not a statistic. A run alternating a survey and a
# detail scan keeps both; a zoom through many pixel sizes keeps the last few.
CONTEXT_KEYS = 4
# The largest side (px) of the spectra the pooled test averages: a frame up to this on each
# side is pooled as its whole spectrum (its own test's); a larger one as the mean of its tiles'
# spectra, each tile at most this on a side (Bartlett's method: the noise of the mean of as
# many exponentials, ``averaged_reflections``' ``tiles``). A memory bound, not a statistic: a
# spectrum is then at most 256 × 129 float64 (264 kB), a full context (4 × 16) 17 MB, whatever
# the frames' size. A tile of 256 px still holds the 4 cycles the test asks of a period
# (``lattice.LOW_FREQUENCY_CYCLES``) up to 64 px: graphene's 2.13 Å reflections at the
# ensemble's finest 0.05 Å/px (43 px), perovskite's 3.9 Å cell from 0.061 Å/px (its 1.95 Å
# second order below). The twin's and the benchmarks' frames (128², 256²) are pooled whole.
POOL_SIDE = 256
CONTEXT_SCHEMA = 1  # of ``CheckContext.state``


def _tiling(shape: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The tile shape (px) a frame of ``shape`` is pooled at (``POOL_SIDE``) and the tiles per
    axis: as few as keep each side within ``POOL_SIDE``, as large as fit (the remainder, under
    one pixel per tile, left out)."""
    counts = (-(-int(shape[0]) // POOL_SIDE), -(-int(shape[1]) // POOL_SIDE))
    return (int(shape[0]) // counts[0], int(shape[1]) // counts[1]), counts


def pool_spectrum(image: np.ndarray, power: np.ndarray | None = None) -> np.ndarray:
    """What the pooled test keeps of a frame (H, W): its ``periodic_power`` (``power`` if
    already taken: kept, not copied) when both sides are within ``POOL_SIDE`` px, else the mean
    of its tiles' (``_tiling``)."""
    (th, tw), (ny, nx) = _tiling(np.shape(image))
    if ny * nx == 1:
        return power if power is not None else periodic_power(np.asarray(image, np.float64))
    total = np.zeros((th, tw // 2 + 1))
    for i in range(ny):
        for j in range(nx):
            total += periodic_power(
                np.asarray(image[i * th : (i + 1) * th, j * tw : (j + 1) * tw], np.float64)
            )
    return total / (ny * nx)


def _tile_columns(rowcol: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The columns (n, 2) px of the tile (``_tiling``) of a frame of ``shape`` that holds most of
    them, for ``carried_reflections``: a reflection measured on a tile's grid is known to a
    fraction of the tile's cycle, and its phase would wander across the whole frame. All of
    them when the frame is pooled whole."""
    (th, tw), (ny, nx) = _tiling(shape)
    rowcol = np.asarray(rowcol, np.float64).reshape(-1, 2)
    if ny * nx == 1 or len(rowcol) == 0:
        return rowcol
    cell = np.floor(rowcol / np.array([th, tw], float)).astype(np.int64)
    inside = (cell[:, 0] >= 0) & (cell[:, 0] < ny) & (cell[:, 1] >= 0) & (cell[:, 1] < nx)
    if not inside.any():
        return rowcol[:0]
    flat = cell[:, 0] * nx + cell[:, 1]
    best = int(np.argmax(np.bincount(flat[inside], minlength=ny * nx)))
    return rowcol[inside & (flat == best)]


def _fingerprint(image: np.ndarray) -> bytes:
    """A fingerprint of a frame's pixels: its shape and 16 evenly spaced rows (as float32, so
    that a frame read again from a dataset, or stacked by the ensemble, gives the same). Two
    distinct frames of counts never share it, and a shared one could only leave a frame out of
    the pool (less evidence, never more). Reads 16 rows, copies none of a float32 frame."""
    image = np.asarray(image)
    h = int(image.shape[0])
    digest = hashlib.blake2b(repr(tuple(image.shape)).encode(), digest_size=16)
    for r in np.unique(np.linspace(0, h - 1, min(h, 16)).round().astype(np.int64)):
        digest.update(np.ascontiguousarray(image[r], np.float32))
    return digest.digest()


class _Seen:
    """One frame a ``CheckContext`` holds: a fingerprint of its pixels (``_fingerprint``), its
    ``pool_spectrum``, and the id its caller named it by (``CheckContext.name``), if any."""

    __slots__ = ("digest", "source", "spectrum")

    def __init__(self, digest: bytes, spectrum: np.ndarray, source: int | None = None) -> None:
        self.digest = digest
        self.spectrum = spectrum
        self.source = source


Key = tuple[tuple[int, ...], float]  # a frame's shape (px) and pixel size (Å/px)


class CheckContext:
    """What the check carries from one call into the next within a run: the spectra of the last
    ``frames`` frames of each shape and pixel size (of the last ``CONTEXT_KEYS`` checked). A
    small frame at very low dose seldom shows its lattice alone and was reported "no crystal"
    unless its call held other frames of the crystal: the answer depended on how many frames a
    call held. With a context, ``pooled`` judges each frame with the ``frames`` − 1 frames of
    the run before it, wherever the calls' boundaries fall: once the run holds that many, a
    call of one frame gets the answer of a batch of 24.

    It holds no frame: per frame its fingerprint and what the pooled test averages
    (``pool_spectrum``: at most ``POOL_SIDE``² / 2 float64, 264 kB; ``nbytes``). The pooled
    threshold assumes the pooled frames' noise independent: a frame seen again (a batch retried
    after a failure, a frame checked twice) is held once (by its fingerprint). Frames are held
    whatever their answer (choosing the confirmed ones would pool noise picked for passing).
    ``clear`` when the conditions change (the edge does on each drift detection, then ``add``s
    the frames since the first alarm): another sample's or lattice's spectrum must not confirm
    this one's frames. ``state`` and ``restore`` carry it across a restart (the edge loop keeps
    it with the drift monitor's state). One run's, used by one thread at a time."""

    def __init__(self, frames: int = CONTEXT_FRAMES) -> None:
        if frames < 1:
            raise ValueError(f"a CheckContext holds at least one frame, got {frames}")
        self.frames = frames
        self._recent: dict[Key, deque[_Seen]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._recent.values())

    @property
    def nbytes(self) -> int:
        """Bytes of the spectra and fingerprints held."""
        return sum(s.spectrum.nbytes + len(s.digest) for q in self._recent.values() for s in q)

    def clear(self) -> None:
        """Forget every frame (the conditions changed)."""
        self._recent.clear()

    def add(
        self, images: Sequence[np.ndarray], pixel_sizes: Sequence[float], ids: Sequence[int] | None = None
    ) -> None:
        """Hold ``images`` (at ``pixel_sizes`` Å/px; named ``ids``, as ``name``) as frames of the
        run checked last (the frames since a change, kept after ``clear``)."""
        names: Sequence[int | None] = [None] * len(images) if ids is None else [int(i) for i in ids]
        groups: dict[Key, list[_Seen]] = {}
        for img, p, source in zip(images, pixel_sizes, names, strict=True):
            seen = _Seen(_fingerprint(img), pool_spectrum(img), source)
            groups.setdefault((np.shape(img), float(p)), []).append(seen)
        for key, seen in groups.items():
            self.exchange(key, seen)

    def name(self, images: Sequence[np.ndarray], ids: Sequence[int]) -> None:
        """Name the frames held that are among ``images`` by ``ids`` (their positions in the
        run's dataset, say), for ``state``: a restarted run reads them again by these."""
        by_digest = {_fingerprint(img): int(i) for img, i in zip(images, ids, strict=True)}
        for q in self._recent.values():
            for s in q:
                s.source = by_digest.get(s.digest, s.source)

    def exchange(self, key: Key, seen: list[_Seen]) -> list[_Seen]:
        """The frames held for ``key`` that are not among ``seen``; ``seen`` held from now on."""
        recent = self._recent.pop(key, None) or deque(maxlen=self.frames)
        self._recent[key] = recent  # the most recently checked last
        while len(self._recent) > CONTEXT_KEYS:
            del self._recent[next(iter(self._recent))]
        new = {s.digest for s in seen}
        earlier = [s for s in recent if s.digest not in new]
        recent.clear()
        recent.extend([*earlier, *seen])  # the oldest fall out past ``frames``
        return earlier

    def state(self) -> dict[str, object]:
        """What ``restore`` needs to hold these frames again, as JSON: per shape and pixel size
        (the least recently checked first) the ids of its frames (``name``, oldest first) and
        their fingerprints. A frame never named is left out. A few kB, not the spectra (MBs,
        rewritten with every batch's state): ``restore`` takes them again from the frames."""
        keys = []
        for (shape, p), q in self._recent.items():
            named = [s for s in q if s.source is not None]
            keys.append(
                {
                    "shape": [int(n) for n in shape],
                    "pixel_size": float(p) if np.isfinite(p) else None,
                    "ids": [int(s.source) for s in named if s.source is not None],
                    "fingerprints": [s.digest.hex() for s in named],
                }
            )
        return {"schema": CONTEXT_SCHEMA, "frames": self.frames, "keys": keys}

    def restore(self, state: Mapping[str, object], read: Callable[[list[int]], Sequence[np.ndarray]]) -> None:
        """Hold the frames of a ``state()`` again, in place of what is held; ``read(ids)``: their
        pixels. ValueError (nothing held then) when the state is malformed or a frame read is
        not the one named (its fingerprint differs): the caller starts empty."""
        self.clear()
        recent: dict[Key, deque[_Seen]] = {}
        try:
            if state.get("schema") != CONTEXT_SCHEMA:
                raise ValueError(f"schema {state.get('schema')!r} is not {CONTEXT_SCHEMA}")
            # Only what a context holds is read back (the last keys, the last frames of each):
            # a damaged state naming many frames must not make a resume read them all.
            for entry in list(state["keys"])[-CONTEXT_KEYS:]:  # type: ignore[call-overload]
                shape = tuple(int(n) for n in entry["shape"])
                p = float("nan") if entry["pixel_size"] is None else float(entry["pixel_size"])
                ids = [int(i) for i in entry["ids"]]
                digests = [bytes.fromhex(f) for f in entry["fingerprints"]]
                if len(ids) != len(digests):
                    raise ValueError(f"{len(ids)} ids but {len(digests)} fingerprints")
                ids, digests = ids[-self.frames :], digests[-self.frames :]
                images = list(read(ids)) if ids else []
                q: deque[_Seen] = deque(maxlen=self.frames)
                for img, digest, source in zip(images, digests, ids, strict=True):
                    if np.shape(img) != shape or _fingerprint(img) != digest:
                        raise ValueError(f"frame {source} is not the frame the context held")
                    q.append(_Seen(digest, pool_spectrum(img), source))
                recent[(shape, p)] = q
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
            raise ValueError(f"a stored check context that cannot be restored: {e}") from e
        while len(recent) > CONTEXT_KEYS:
            del recent[next(iter(recent))]
        self._recent = recent


def pooled(
    images: Sequence[np.ndarray],
    proposals: Sequence[Atoms],
    checked: list[Atoms],
    context: CheckContext | None = None,
    pixel_size: float = float("nan"),
    spectra: Sequence[np.ndarray | None] | None = None,
) -> list[Atoms]:
    """Frames whose own spectrum showed no crystal, looked at again with other frames of their
    shape (``averaged_reflections``): a small frame at low dose (128² px at 4·10⁴ e/Å²) may show
    none of its lattice's reflections above the whole-spectrum threshold, while 16 frames of
    the same sample do. Without ``context``, the call's frames of its shape together; with
    one, the frame and the ``context.frames`` − 1 frames of the run before it (those ``context``
    holds at ``pixel_size`` Å/px, then the call's, in order), so that the answer does not depend
    on how the run is cut into calls; while the run holds fewer, the first ``context.frames``
    the call has. A frame whose proposed columns carry two independent pooled reflections
    keeps them unconfirmed (the pool shows the crystal; this frame alone cannot confirm its
    columns one by one). Noise frames pooled stay noise (the threshold is the pooled noise's),
    and a hallucinated lattice carries a real one's reflections only by chance
    (``carried_reflections``' alpha). Frames over ``POOL_SIDE`` px are pooled as their tiles
    (``pool_spectrum``), their columns in one tile. ``spectra``: per frame the
    ``periodic_power`` ``verify_with_spectrum`` took, or None. The call's frames join ``context``."""
    lost = {
        i
        for i, (a, p) in enumerate(zip(checked, proposals, strict=True))
        if len(a) == 0 and not a.crystal and len(p) > 0
    }
    if context is None and (not lost or len(images) < 2):
        return checked
    own = list(spectra) if spectra is not None else [None] * len(images)
    out = list(checked)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(np.shape(img), []).append(i)
    for shape, members in by_shape.items():
        if context is None and lost.isdisjoint(members):
            continue
        frames = [_Seen(_fingerprint(images[i]), pool_spectrum(images[i], own[i])) for i in members]
        seen = list({s.digest: s for s in frames}.values())  # a frame twice in the call: once
        earlier = [] if context is None else context.exchange((shape, float(pixel_size)), seen)
        run = [*earlier, *seen]
        at = {s.digest: len(earlier) + k for k, s in enumerate(seen)}
        window = len(run) if context is None else context.frames
        tile, counts = _tiling(shape)
        found: dict[tuple[int, int], np.ndarray] = {}
        for i, frame in zip(members, frames, strict=True):
            if i not in lost:
                continue
            k = at[frame.digest]
            pool = (max(0, k - window + 1), max(k + 1, min(window, len(run))))
            if pool[1] - pool[0] < 2:
                continue
            if pool not in found:
                found[pool] = averaged_reflections(
                    [s.spectrum for s in run[pool[0] : pool[1]]], tile, tiles=counts[0] * counts[1]
                )
            if (
                independent(found[pool])
                and independent(carried_reflections(_tile_columns(proposals[i].rowcol, shape), found[pool]))
                and noise_limited(images[i], own[i])
            ):
                out[i] = _unconfirmed(proposals[i])
    return out


def _per_class(values: dict[int, float], classes: np.ndarray, default: float) -> np.ndarray:
    """``values[c]`` for each class ``c`` of ``classes`` (n,), ``default`` where it has none."""
    classes = np.asarray(classes, np.int64)
    top = max(int(classes.max(initial=-1)), max(values, default=-1)) + 1
    table = np.full(top + 1, default, np.float64)  # entry 0 for class −1, c + 1 for class c
    for c, v in values.items():
        table[c + 1] = v
    return table[np.clip(classes, -1, top - 1) + 1]


def _duplicates(rowcol: np.ndarray, q: np.ndarray, keep: np.ndarray, radius: float) -> np.ndarray:
    """Columns kept that sit within ``radius`` px of a more probable kept column: two proposals
    refined onto one column (no lattice has two columns closer than half its spacing)."""
    out = np.zeros(len(rowcol), bool)
    if not np.isfinite(radius) or keep.sum() < 2:
        return out
    idx = np.flatnonzero(keep)
    tree = cKDTree(rowcol[idx])
    for a, b in tree.query_pairs(radius):
        i, j = idx[a], idx[b]
        out[j if q[i] >= q[j] else i] = True
    return out


def _unconfirmed(atoms: Atoms) -> Atoms:
    """The network's columns on a crystal the frame cannot confirm column by column: untrusted,
    each with at least even doubt (the frame's evidence says neither yes nor no)."""
    doubt = np.maximum(atoms.uncertainty, 0.5).astype(np.float32)
    return Atoms(**{**_fields(atoms), "uncertainty": doubt, "crystal": True, "trusted": False})


def _fields(atoms: Atoms) -> dict:
    """The dataclass fields of ``atoms`` as keyword arguments."""
    return {name: getattr(atoms, name) for name in atoms.__dataclass_fields__}


def _log_prior_odds(llr: np.ndarray, iterations: int = 20) -> float:
    """Log odds that a lattice site holds a column, fitted to the frame (EM on the mixture).

    Vacancies are rare in most crystals and common in some; the frame says which. The
    fraction is kept within (1/(n+1), n/(n+1)): one site either way stays possible.
    """
    n = len(llr)
    if n == 0:
        return 0.0
    pi = kernels().prior_fraction(
        np.ascontiguousarray(llr, np.float64), iterations, 1.0 / (n + 1), n / (n + 1.0)
    )
    return float(np.log(pi / (1 - pi)))


def _weighed(
    x: np.ndarray, prediction: tuple[np.ndarray, np.ndarray] | None, lattice: SiteLattice | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A position estimate (n, 2) px with its weight per axis (1 / its scatter about the
    lattice; ``prediction``: ``_lattice_prediction`` of ``x`` if already made)."""
    if prediction is None:
        assert lattice is not None
        prediction = _lattice_prediction(x, lattice)
    return x, 1.0 / _lattice_scatter(x, *prediction)


def _combine(
    estimates: list[tuple[np.ndarray, np.ndarray]], lattice: SiteLattice | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance mean of position estimates (``_weighed``: the network's, the matched
    filter's, the deblended fit's), and its standard error (px).

    No estimator's error is known beforehand (a fit's own standard error misses its model
    error; the network reports none), so each is measured on the frame: the scatter of its
    positions about where the lattice puts them (the mean of ``x_j − t`` over the column's
    lattice neighbours ``j``). That scatter also holds the lattice's real distortion, the same
    for every estimator, so it weighs them fairly and bounds the error from above. (Two
    measured estimates share the frame's noise; the standard error treats them as
    independent, and so is a lower bound where both carry weight.)

    Given ``lattice``, the reported error is at least the mean's own scatter about the
    lattice, measured the same way: where the estimators err together (blur or a tail pulls
    every one of them the same way) the inverse-variance formula is far too small. The share
    of true columns within 2σ on both axes (0.91 expected) went from 0.52-0.89 to 0.88-0.98
    on the noisy abTEM frames, from 0.77-0.83 to 0.89-0.94 on the twin's standard frames
    (2026-11-30). An error every column shares (a blur's pull, a model's bias on noise-free
    frames) stays unseen: the lattice moves with it.
    """
    total = sum(w for _, w in estimates)
    x = sum(x * w for x, w in estimates) / total
    sigma = np.broadcast_to(np.sqrt(1.0 / total), x.shape)
    if lattice is not None:
        sigma = np.maximum(sigma, np.sqrt(_lattice_scatter(x, *_lattice_prediction(x, lattice))))
    return x.astype(np.float32), sigma.astype(np.float32)


def _lattice_prediction(x: np.ndarray, lattice: SiteLattice) -> tuple[np.ndarray, np.ndarray]:
    """Where the lattice puts each column (mean of ``x_j − t`` over its lattice neighbours),
    and how many neighbours that rests on."""
    hit, j = translation_hits(x, x, lattice.vectors, TOLERANCE * lattice.separation)
    source = np.broadcast_to(np.arange(len(x)), hit.shape)[hit]  # k-major: sums in vector order
    moved = x[j[hit]] - np.broadcast_to(lattice.vectors[:, None], (*hit.shape, 2))[hit]
    sums = np.stack([np.bincount(source, weights=moved[:, a], minlength=len(x)) for a in range(2)], 1)
    counts = np.bincount(source, minlength=len(x)).astype(np.float64)
    return sums / np.maximum(counts, 1)[:, None], counts


def _lattice_scatter(x: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Robust variance per axis (px²) of positions about their lattice prediction
    (``_lattice_prediction``: where the lattice puts them, and on how many neighbours)."""
    have = counts >= 2
    if have.sum() < 3:
        return np.full(2, 1.0)
    k = counts[have][:, None]
    resid = x[have] - predicted[have]
    # The prediction averages k neighbours' errors: the residual's variance is (1 + 1/k)× the
    # estimator's. Median of a χ²₁ variable is 0.455 of its mean.
    return np.maximum(np.median(resid**2 / (1.0 + 1.0 / k), axis=0) / 0.455, 1e-6)
