"""The reference a ``DriftMonitor`` decides against: taken from quiet frames, grown and
calibrated, and taken anew after a detection.

The first ``reference_frames`` frames are the reference, widened while the stream stays quiet
(2× and 4× as many frames: a short reference sees little of a stationary stream's slow
wander). Thresholds come from the reference and the ERT alone (``calibration.calibrate``:
block bootstrap, joint over the detectors).

After a detection the monitor is not blind for a whole reference: the frames of the alarm's
batch after the first alarm start the new reference, and decisions resume as soon as it holds
``MIN_REFERENCE`` frames (the fewest the bootstrap can use; usually after one more batch), then
it grows to ``reference_frames`` and beyond as at the start. Until it reaches
``reference_frames`` each image detector's threshold, in the feature's physical units, is the
larger of the short reference's and the last full reference's: the short one measures the new
conditions' noise, the full one the sample's slow wander that a short reference cannot see,
and a threshold no lower than either keeps the run length of whichever is valid. The short
reference's features are measured against the full one's spectrum (a spectrum fitted to 16
frames fits them better than the next ones), and before it is used it is tested for a change
inside it by the full reference's standard (``calibration.change_inside``): a second change
within its frames is reported where it happened instead of becoming part of the reference.

Where the optics are known, physics bounds the blur and contrast thresholds (in their units): no
lower than the change a defocus of one depth of focus makes to the reference's spectrum, and, for
a grown reference's contrast, no higher than twice that defocus's (or the first full reference's
threshold). The dose threshold is never lower than an earlier full reference's. ``_calibrate``
says why.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import t as student_t

from .attribution import DETECTORS, IMAGE_DETECTORS, attribute, estimate_error, probe_of, shape_of
from .calibration import MIN_REFERENCE, Calibration, calibrate, change_inside
from .observation import Observation
from .physics import Proxies, median_proxies, proxy_score
from .spectrum import (
    ImageStats,
    SpectrumReference,
    depth_of_focus,
    envelope_error,
    fit_defocus,
    mass_dilution,
)

REFERENCE_GROWTH = (1, 2, 4)  # calibrate at these multiples of ``reference_frames``
BANDWIDTH = 3.0  # embedding kernel width as a multiple of the reference's median distance


@dataclass(frozen=True)
class Reference:
    """What a calibration fixed: the spectrum reference, median proxies, the embedding kernel
    (reference embeddings, γ, mean cross-block similarity), the thresholds, and the |defocus|
    (Å) the spectrum reference was taken at."""

    spectrum: SpectrumReference
    proxies: Proxies
    embeddings: np.ndarray
    gamma: float
    self_similarity: float
    calibration: Calibration
    defocus: float = 0.0


# The cumulative tests against the anchor (``ReferenceKeeper.anchor_drift``), in this order:
# |defocus| (Å), dose (ln mean counts) and the source/probe size (Δσ² of a Gaussian envelope, Å²).
CUMULATIVE = ("defocus", "dose_drift", "source_drift")


@dataclass(frozen=True)
class Anchor:
    """The first full reference since the last re-reference, kept while the reference grows
    (``ReferenceKeeper.anchor_drift``): its spectrum, the |defocus| (Å) it was taken at, its
    frames' median image features (``IMAGE_DETECTORS``, against its own spectrum), their mean
    ln counts, and per cumulative test (``CUMULATIVE``) the scatter (RMS, the test's units) of
    the estimate on ``blocks`` blocks of its own frames, each held out of the spectrum and the
    mean it is measured against."""

    spectrum: SpectrumReference
    defocus: float
    centre: np.ndarray
    scatter: np.ndarray
    blocks: int = 0  # held-out blocks the scatter was measured on (its degrees of freedom)
    dose: float = 0.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


@dataclass
class ReferenceKeeper:
    """The reference, its calibration and the frames it is taken from, for ``DriftMonitor``
    (settings: ``ert`` and ``window`` in frames; ``optics`` as there)."""

    ert: float = 1000.0
    window: int = 10
    reference_frames: int = 64
    seed: int = 0
    optics: Mapping[str, float] | None = None
    # The smallest dose ratio (or its inverse) the user asks to be told of: the issue's ×3 / ×0.3.
    # The cumulative dose test's floor is half of it in ln (``anchor_drift``).
    dose_step: float = 3.0
    # |Defocus| (Å) of the current reference: 0 at the start (the operator focused), then what
    # the last detection estimated, so a return to focus is measured as the change it is.
    reference_defocus: float = field(default=0.0, init=False)
    _defocus_next: float | None = field(default=None, init=False, repr=False)
    # The error (Å) of ``reference_defocus`` (0: the operator's setting; a detection's ± once
    # it is that detection's estimate), the next one's, and the spectrum and |defocus| (Å) of
    # the last full reference taken at the operator's setting since the lattice last changed:
    # while the current reference's defocus is an estimate, a defocus is also measured against
    # that one (``attribution.attribute``'s ``focused``).
    reference_defocus_err: float = field(default=0.0, init=False)
    _defocus_next_err: float = field(default=0.0, init=False, repr=False)
    focused: tuple[SpectrumReference, float] | None = field(default=None, init=False, repr=False)
    # Thresholds (feature units, len(IMAGE_DETECTORS)) and per-frame scales of the last
    # reference of at least ``reference_frames`` frames, kept through a re-reference until the
    # new one is as long.
    floor: np.ndarray | None = field(default=None, init=False, repr=False)
    floor_scale: np.ndarray | None = field(default=None, init=False, repr=False)
    # Thresholds (feature units, len(IMAGE_DETECTORS)) of the first reference of at least
    # ``reference_frames`` frames since the last re-reference: what its growth may widen.
    grown_from: np.ndarray | None = field(default=None, init=False, repr=False)
    # The largest dose threshold (ln counts; NaN for the other detectors) of the
    # full references since the monitor started: a floor for every later one.
    memory: np.ndarray | None = field(default=None, init=False, repr=False)
    # That reference's spectrum and the |defocus| (Å) it was taken at: the image features of a
    # short reference are measured against it, out of sample (a spectrum fitted to 16 frames
    # fits those frames better than the next ones, and their spread would look too small).
    carried: tuple[SpectrumReference, float] | None = field(default=None, init=False, repr=False)
    carried_err: float = field(default=0.0, init=False, repr=False)  # its |defocus|'s ± (Å)
    # The first full reference since the last re-reference (``anchor_drift``), and the
    # frames the window and look-back hold (their spectra are what it is tested on).
    anchor: Anchor | None = field(default=None, init=False, repr=False)
    recent_obs: deque = field(default_factory=deque, init=False, repr=False)
    # The frames after the last alarm, which start the next reference.
    _since_alarm: list[Observation] | None = field(default=None, init=False, repr=False)
    reference: Reference | None = field(default=None, init=False)
    frames_seen: int = field(default=0, init=False)
    calibrated_on: int = field(default=0, init=False)
    # Quiet frames since the last re-reference, time order; and the last ``window`` frames.
    history: list[Observation] = field(default_factory=list, init=False, repr=False)
    recent: deque = field(default_factory=deque, init=False, repr=False)
    # A calibration running in a worker thread (see ``_grow``), adopted before the next batch.
    _pending: _Background | None = field(default=None, init=False, repr=False)

    @property
    def calibrated(self) -> bool:
        """Whether the detectors hold a reference (False while one is being collected)."""
        return self.reference is not None

    @property
    def reference_proxies(self) -> Proxies | None:
        """Median physics proxies of the reference frames."""
        return None if self.reference is None else self.reference.proxies

    @property
    def _checkpoints(self) -> tuple[int, ...]:
        full = tuple(self.reference_frames * m for m in REFERENCE_GROWTH)
        # After a detection the thresholds are floored by the last full reference's and the
        # features measured against its spectrum, so the shortest reference the bootstrap
        # accepts is safe to decide on (benchmarks/README.md, drift_detection: the false-alarm
        # rate did not rise measurably).
        return ((MIN_REFERENCE,) if self.floor is not None and full[0] > MIN_REFERENCE else ()) + full

    def frames_to_calibrate(self) -> int:
        """Quiet frames still needed before decisions start (0 when calibrated)."""
        return 0 if self.calibrated else max(0, self._checkpoints[0] - len(self.history))

    def rereference(self) -> None:
        """Take a new reference: the frames after the last alarm and those that follow become it.
        After a detection decisions resume at ``MIN_REFERENCE`` frames under the last full
        reference's thresholds (see the module's docstring); otherwise (a new model, a fresh
        start) after ``reference_frames``."""
        self._pending = None  # a calibration of the forgotten reference is never adopted
        if self._since_alarm is None:
            self.floor, self.carried, self.memory = None, None, None
            # A fresh start (a new model, a new session): the operator's setting again.
            self.focused, self.reference_defocus_err = None, 0.0
        elif self.reference is not None and self.calibrated_on >= self.reference_frames:
            cal = self.reference.calibration
            m = len(IMAGE_DETECTORS)
            self.floor = cal.threshold[:m] * cal.scale[:m]
            self.floor_scale = cal.scale[:m].copy()
            self.carried = (self.reference.spectrum, self.reference.defocus)
            self.carried_err = self.reference_defocus_err
        # (A detection on a short reference keeps the floor it was deciding under.)
        self.reference = None
        self.grown_from = None
        self.anchor = None
        self.history = list(self._since_alarm or [])
        self._since_alarm = None
        self.recent.clear()
        self.recent_obs.clear()
        self.calibrated_on = 0
        if self._defocus_next is not None:
            self.reference_defocus, self._defocus_next = self._defocus_next, None
            self.reference_defocus_err = self._defocus_next_err

    # --- features --------------------------------------------------------------------------

    def _novelty(self, ref: Reference, embedding: np.ndarray) -> float:
        x = np.asarray(embedding, dtype=np.float64).reshape(1, -1)
        similarity = float(np.exp(-ref.gamma * _sq_dists(ref.embeddings, x)).mean())
        return 1.0 - similarity / ref.self_similarity

    def features(self, ref: Reference, obs: Observation) -> np.ndarray:
        """One frame's features (len(DETECTORS),) against ``ref``."""
        image = ref.spectrum.features(obs.image)
        return np.array(
            [
                *(image[name] for name in IMAGE_DETECTORS),
                self._novelty(ref, obs.embedding),
                obs.uncertainty,
                proxy_score(obs.proxies, ref.proxies),
            ]
        )

    def _calibrate(self) -> None:
        obs = self.history
        short = self.floor is not None and len(obs) < self.reference_frames
        if short and self.carried is not None:
            spectrum, spectrum_defocus = self.carried
        else:
            spectrum, spectrum_defocus = SpectrumReference.fit([o.image for o in obs]), self.reference_defocus
        proxies = median_proxies([o.proxies for o in obs])
        emb = np.stack([np.asarray(o.embedding, dtype=np.float64).ravel() for o in obs])
        d2 = _sq_dists(emb, emb)
        median = float(np.median(d2[d2 > 0])) if (d2 > 0).any() else 1.0
        gamma = 1.0 / max(BANDWIDTH**2 * median, 1e-12)
        k = np.exp(-gamma * d2)
        # Novelty of a reference frame is measured against the other blocks of ``window``
        # frames only: its neighbours in time are near copies and would make it look familiar.
        block = np.arange(len(emb)) // self.window
        other = block[:, None] != block[None, :]
        self_similarity = float(k[other].mean()) if other.any() else 1.0
        novelty = 1.0 - (k * other).sum(1) / np.maximum(other.sum(1), 1) / self_similarity
        partial = Reference(spectrum, proxies, emb, gamma, self_similarity, None, spectrum_defocus)  # type: ignore[arg-type]
        feats = np.stack([self.features(partial, o) for o in obs])
        feats[:, DETECTORS.index("embedding")] = novelty
        # Smallest meaningful change per feature (its scale where the reference never varied):
        # one just-detectable reflection's share for ``reflections``; float precision elsewhere.
        resolution = np.array([spectrum.share_resolution if n == "reflections" else 1e-12 for n in DETECTORS])
        # Compare the window with the window before it: wander slower than two windows (a
        # defect drifting into view, contamination growing) cannot reach an alarm, while a step
        # shows in full and a ramp shows as its change over one window.
        lookback = self.window
        # The image-formation detectors decide, jointly calibrated to the ERT. The network's
        # detectors are calibrated to the same ERT on their own and reported beside them, but do
        # not decide: their per-frame values follow the lattice's phase against the pixel grid
        # and the content in view over longer than a reference (in the benchmark 19 of 27 false
        # alarms came from them when they decided, benchmarks/README.md).
        parts = [
            calibrate(
                feats[:, cols],
                tuple(DETECTORS[c] for c in cols),
                ert=self.ert,
                window=self.window,
                lookback=lookback,
                seed=self.seed,
                resolution=resolution[cols],
            )
            for cols in (list(range(len(IMAGE_DETECTORS))), list(range(len(IMAGE_DETECTORS), len(DETECTORS))))
        ]
        scale = np.concatenate([c.scale for c in parts])
        threshold = np.concatenate([c.threshold for c in parts])
        m = len(IMAGE_DETECTORS)
        if self.optics is not None:
            # The smallest blur or contrast change worth an alarm is the one a defocus change of
            # one depth of focus makes (``spectrum.depth_of_focus``: a smaller one leaves the
            # probe as it was, and attribution names no defocus below it). Slow changes of the
            # content in view (contamination, a drifting sample's defects) move these features
            # by more than their frame-to-frame scatter over the look-back, which a reference of
            # 64 frames cannot see; below this size they are not changes of the imaging.
            # A grown reference may widen the contrast threshold to what its longer stretch shows, but not
            # beyond the change of twice that defocus (Rayleigh's quarter wave of wavefront
            # error at the aperture edge): the block bootstrap of a reference spanning a slow
            # wander mixes its distant levels, and on the twin's standard stream a reference
            # grown to 263 frames at 130 Å (contamination growing) set the contrast threshold at
            # 8.0 in ln units and missed the return to focus (+2.0).
            probe = probe_of(self.optics)
            s0 = obs[0].image
            depth = depth_of_focus(probe["voltage_kv"], probe["semiangle_mrad"])
            response = [
                spectrum.defocus_response(
                    shape_of(s0), s0.pixel_size, **probe, defocus=spectrum_defocus, change=change
                )
                for change in (depth, 2.0 * depth)
            ]
            grown = self.grown_from is not None
            for j, name in enumerate(IMAGE_DETECTORS):
                low, high = response[0][name], response[1][name]
                if name not in ("blur", "contrast") or not np.isfinite(low):
                    continue
                threshold[j] = max(threshold[j], low / scale[j])
                # (Contrast only: near focus a defocus barely changes the blur's Gaussian
                # equivalent, so twice the depth of focus caps it below its own noise.)
                # Nor below the first full reference's: that one measured the frames' own noise.
                if grown and name == "contrast" and np.isfinite(high):
                    cap = max(low, high, float(self.grown_from[j]))  # type: ignore[index]
                    threshold[j] = min(threshold[j], cap / scale[j])
        # The mean counts follow the sample's brightness as well as the dose: how far they
        # wander without a change of the dose is the sample's and the scan's, best measured by
        # the longest stretches seen. A reference taken on a calmer stretch (twin, source-size
        # steps: a 78-frame reference put the dose threshold at 0.2 % while the counts then
        # drifted 1 % in 40 frames) would take the next wander for a change, and each
        # re-reference after that alarm again (16 alarms): so the dose threshold, in ln counts
        # whatever the conditions, is never lower than an earlier full reference's. (Not the
        # reflections': at low dose weak reflections flicker, and their threshold there says
        # nothing about a higher dose.)
        steady = np.array([n == "dose" for n in IMAGE_DETECTORS])
        if self.memory is not None:
            threshold[:m] = np.where(steady, np.fmax(threshold[:m], self.memory / scale[:m]), threshold[:m])
        if not short and len(obs) >= self.reference_frames:
            seen = np.where(steady, threshold[:m] * scale[:m], np.nan)
            self.memory = seen if self.memory is None else np.fmax(self.memory, seen)
        if short:
            threshold[:m] = np.fmax(threshold[:m], self.floor / scale[:m])
        elif len(obs) >= self.reference_frames:
            self.floor, self.carried = None, None
            if self.reference_defocus_err == 0.0:
                self.focused = (spectrum, spectrum_defocus)
            if self.grown_from is None:
                self.grown_from = threshold[:m] * scale[:m]
        cal = Calibration(
            DETECTORS,
            np.concatenate([c.centre for c in parts]),
            scale,
            threshold,
            max(c.block for c in parts),
            self.window,
            lookback,
            parts[0].simulated_ert,
        )
        self.reference = Reference(spectrum, proxies, emb, gamma, self_similarity, cal, spectrum_defocus)
        self.calibrated_on = len(obs)
        if (
            self.anchor is None
            and self.optics is not None
            and not short
            and len(obs) >= self.reference_frames
        ):
            first = obs[: self.reference_frames]
            self.anchor = self._anchor(spectrum if len(obs) == len(first) else None, first, spectrum_defocus)
        # Prime the window and look-back with the end of the reference.
        span = self.window + lookback
        self.recent = deque(feats[-span:], maxlen=span)
        self.recent_obs = deque(obs[-span:], maxlen=span)

    def _anchor(self, spectrum: SpectrumReference | None, obs: list[Observation], defocus: float) -> Anchor:
        """The anchor of a full reference's first ``reference_frames`` frames (``spectrum``: their
        fitted spectrum when at hand). Its scatter is measured out of sample: each block of
        frames against the spectrum (and mean counts) of the other frames, so the wander of the
        content in view within the reference counts, as it will against later frames. The blocks
        are one window long: twice as many as of the tested length (the scatter's degrees of
        freedom set the quantile), each noisier than the tested stretch, so the scatter errs
        towards no alarm."""
        images = [o.image for o in obs]
        spectrum = SpectrumReference.fit(images) if spectrum is None else spectrum
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = np.nanmedian(
                np.array([[spectrum.features(s)[n] for n in IMAGE_DETECTORS] for s in images]), axis=0
            )
        span = self.window
        deviations = []
        for a in range(0, len(images) - span + 1, span):
            rest = images[:a] + images[a + span :]
            held_out = SpectrumReference.fit(rest)
            rest_dose = _ln_counts(rest)[0]
            estimate, _ = self._estimates(held_out, images[a : a + span], defocus, rest_dose)
            deviations.append(estimate - np.array([defocus, rest_dose, 0.0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            dev = np.array(deviations).reshape(-1, len(CUMULATIVE))
            scatter = np.sqrt(np.nanmean(np.square(dev), axis=0))
            # A test's degrees of freedom: the blocks it could be measured on (the fewest).
            blocks = int(np.isfinite(dev).sum(axis=0).min()) if len(dev) else 0
        return Anchor(spectrum, defocus, centre, scatter, blocks, _ln_counts(images)[0])

    def _estimates(
        self, spectrum: SpectrumReference, images: Sequence[ImageStats], defocus: float, ln_counts: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per cumulative test (``CUMULATIVE``), the estimate from ``images`` against
        ``spectrum`` (taken at |defocus| ``defocus`` Å, mean ln counts ``ln_counts``) and its
        standard error: |defocus| (Å, ``fit_defocus``), mean ln counts, and the Gaussian
        envelope's Δσ² (Å², ``envelope_error``). The defocus fit profiles
        out a rise of the mean as mass in view (``mass_dilution``): a dose change large enough
        to matter is the dose test's to see, so here the mean's rise is taken as contamination
        (the twin's contamination growing to 10 % read 0 → 22 Å without it)."""
        probe = probe_of(self.optics or {})
        shape = shape_of(images[0])
        dilution = mass_dilution(float(np.exp(ln_counts)), images)
        df, err, _ = fit_defocus(
            spectrum, images, shape, **probe, reference_defocus=defocus, dilution=dilution
        )
        dose, dose_err = _ln_counts(images)
        # The envelope without the object's change profiled out (as attribution fits it): the
        # free diffuse term there also takes up part of a blur, and this test then saw the
        # slow defocus ramp of tests/drift/test_defocus_drift.py only after the window
        # detectors did; a change no envelope explains gets a wide error instead
        # (``envelope_error``'s Birge scaling), which kept contamination from firing it.
        source, error = envelope_error(spectrum, images)
        return np.array([df, dose, source]), np.array([err, dose_err, error])

    def anchor_drift(self, images: Sequence[ImageStats], frames: int) -> tuple[np.ndarray, np.ndarray]:
        """The cumulative tests against the anchor (``CUMULATIVE``): each change of ``images``
        (the latest frames) from the anchor — |defocus| (Å), ln dose ratio, source/probe size
        Δσ² (Å²) — and that change as a multiple of its threshold (> 1: a change), for tests
        made every ``frames`` frames. NaN where there is no anchor or a fit finds nothing.

        The window-against-look-back statistics absorb a change slower than their threshold per
        look-back (``Calibration.absorbed_rate``), and a growing reference takes such a ramp into
        itself (the held-out MoS2 defocus ramp 0 → 80 Å over 100 frames: 0.95 of the contrast's
        threshold at 32 Å, then frames at 0–45 Å became the reference; a dose ramp ×1 → ×0.3 over
        150 frames moves ln counts 0.08 a window). Against the anchor the change is cumulative,
        so no ramp is absorbed; and each fitted quantity is one of the imaging's own, which the
        content in view, contamination and the scan shift little (the twin's contamination
        moved the contrast +0.6 ln over 250 frames, the fitted |defocus| ≤ 15 Å, ln counts
        ≤ 0.04 over 2000 frames).

        Each threshold is the larger of a physical floor and z standard errors — the fit's own
        error and the anchor's held-out scatter in quadrature, z the two-sided Student's t
        quantile (the scatter's degrees of freedom) of one false alarm per ERT for all the tests
        together at one test per ``frames`` frames (``_tails``: a Bonferroni split over the tests
        that the floor does not already decide). The floors:
        - defocus: the depth of focus (a smaller change leaves the probe as it was;
          attribution names no defocus below it);
        - source/probe size: the blur variance that change of defocus makes, the per-axis
          variance r²/4 of its disc of confusion r = α·λ/(4α²): λ²/(64α²) (0.06 Å² at 60 kV,
          25 mrad; the issue's +0.3 Å on a 0.35 Å source is 0.33 Å²);
        - dose: half the smallest dose change the user asks to be told of (``dose_step``, in
          ln: the geometric midpoint between no change and it), so that a ramp is named on its
          way there and a sample's slow brightness wander (a few %) is not a dose change.
        """
        anchor = self.anchor
        nan = np.full(len(CUMULATIVE), np.nan)
        if anchor is None or self.optics is None or not images or not anchor.blocks:
            # (No held-out block of the anchor could be fitted: its scatter is unknown, and
            # without it no threshold; a reference with too little signal to fit.)
            return nan, nan
        estimate, err = self._estimates(anchor.spectrum, images, anchor.defocus, anchor.dose)
        change = estimate - np.array([anchor.defocus, anchor.dose, 0.0])
        probe = probe_of(self.optics)
        depth = depth_of_focus(probe["voltage_kv"], probe["semiangle_mrad"])
        alpha = probe["semiangle_mrad"] * 1e-3
        floor = np.array([depth, 0.5 * np.log(self.dose_step), (alpha * depth) ** 2 / 4.0])
        # The scatter is measured on a few held-out blocks (``blocks`` degrees of freedom): the
        # quantile is Student's t, not the normal one, for a spread known that poorly (on the
        # twin a 64-frame anchor's three blocks gave 8 Å while its later stationary blocks read
        # 24 Å from focus, 3 σ under the normal quantile, within t's).
        se = np.hypot(err, anchor.scatter)
        tail = self._tails(floor / se, anchor.blocks, min(1.0, frames / self.ert))
        z = student_t.isf(tail / 2.0, anchor.blocks)
        threshold = np.maximum(floor, z * se)  # (NaN: no test)
        return change, np.abs(change) / threshold

    @staticmethod
    def _tails(floor_z: np.ndarray, dof: int, alpha: float) -> np.ndarray:
        """Two-sided false-alarm probabilities per test, summing to at most ``alpha`` (one false
        alarm per ERT for all the tests together, by the union bound): a test whose physical
        floor lies ``floor_z`` standard errors out already alarms less often than an equal share
        (the dose floor at ×1.7 is ~100 errors out): it keeps that probability, and the rest is
        shared equally by the others (a Bonferroni split that spends no share on a test the
        floor decides). NaN for a test without an error."""
        at_floor = 2.0 * student_t.sf(np.where(np.isfinite(floor_z), floor_z, np.inf), dof)
        tails = np.full(len(floor_z), np.nan)
        todo = np.isfinite(floor_z)
        budget = alpha
        while todo.any():
            share = budget / todo.sum()
            bound = todo & (at_floor <= share)
            if not bound.any():
                tails[todo] = share
                break
            tails[bound] = at_floor[bound]
            budget -= float(at_floor[bound].sum())
            todo &= ~bound
        return np.minimum(tails, 1.0)

    def _change_in_reference(
        self, end: int, rest: list[Observation]
    ) -> tuple[dict[str, float], int, tuple[str, ...], dict[str, float], str] | None:
        """A short reference just taken after a detection, tested for a change inside it by the
        last full reference's standard (``calibration.change_inside``): a second change soon
        after the first must not become part of the reference that should reveal it. ``end``:
        the frame after the reference; ``rest``: the batch's frames after it. Returns the detection's
        (scores, first alarm, changed, attribution, summary) or None."""
        if self.floor is None or self.floor_scale is None or self.carried is None or self.reference is None:
            return None
        if self.calibrated_on >= self.reference_frames:
            return None
        m = len(IMAGE_DETECTORS)
        spectrum = self.carried[0]
        # The frames after the reference are scanned too: a change in its last frames is then
        # placed where it is, not at the last split the shortest segment allows.
        frames = self.history + rest
        feats = np.array([[spectrum.features(o.image)[n] for n in IMAGE_DETECTORS] for o in frames])
        cal = self.reference.calibration
        found = change_inside(
            feats, self.floor / self.floor_scale, self.floor_scale, window=cal.window, lookback=cal.lookback
        )
        if found is None:
            return None
        t, ratio = found
        first_alarm = end - len(self.history) + t
        after = frames[t:]
        self._since_alarm = after[:MIN_REFERENCE]
        scores = dict.fromkeys(DETECTORS, float("nan"))
        scores.update(zip(IMAGE_DETECTORS, map(float, ratio), strict=True))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            before = np.concatenate([np.nanmean(feats[:t], axis=0), np.full(len(DETECTORS) - m, np.nan)])
        changed, attribution, summary = self.attribute(scores, [o.image for o in after], before)
        return scores, first_alarm, changed, attribution, summary

    def _grow(self, batch: list[Observation]) -> list[Observation]:
        """Add quiet frames to the reference; calibrate when it reaches the next checkpoint. A
        first calibration takes exactly its checkpoint's frames: the batch's frames beyond it
        are returned, to be decided on at once (a change there must not hide in the reference)."""
        if len(self.history) >= self._checkpoints[-1]:
            return []
        self.history.extend(batch)
        crossed = [c for c in self._checkpoints if self.calibrated_on < c <= len(self.history)]
        if not crossed or len(self.history) < MIN_REFERENCE:
            return []
        if self.reference is None:
            rest = self.history[crossed[0] :]
            del self.history[crossed[0] :]
            if not rest and self.floor is None:
                # The batch ends at the checkpoint and no frame of it is left to decide: the
                # first calibration runs in the background too (``settle`` adopts it before the
                # next batch is decided, as below). Not after a detection: the short reference
                # is tested for a change inside it at once (``_change_in_reference``).
                self._pending = _Background(self)
                return []
            # Otherwise in place: the batch's frames beyond the reference are decided at once
            # (a change there must not hide in the reference).
            self._calibrate()
            return rest
        # A growth calibration, off the batch's critical path: the block bootstrap (~0.3 s) runs
        # in a worker thread while the loop commits this batch and infers the next; ``settle``
        # adopts it before that batch is decided, so every decision is the one a calibration in
        # place would give (and a resumed run recomputes it from the committed reference frames).
        self._pending = _Background(self)
        return []

    @property
    def calibrating(self) -> bool:
        """Whether a calibration is running in the background (adopted by ``settle``)."""
        return self._pending is not None

    def settle(self) -> None:
        """Adopt the calibration running in the background, waiting for it if need be (its
        error, if it failed, is raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            done = pending.result()
            self.reference, self.calibrated_on, self.recent = done.reference, done.calibrated_on, done.recent
            self.anchor, self.recent_obs = done.anchor, done.recent_obs
            # A full reference reached retires the last full one's floor (``_calibrate``).
            self.floor, self.floor_scale, self.carried = done.floor, done.floor_scale, done.carried
            self.grown_from, self.memory, self.focused = done.grown_from, done.memory, done.focused

    # --- attribution -----------------------------------------------------------------------

    def attribute(
        self, scores: Mapping[str, float], images: Sequence[ImageStats], before: np.ndarray | None = None
    ) -> tuple[tuple[str, ...], dict[str, float], str]:
        """What changed on ``images`` against the frames ``before`` them (``attribution``); a
        named defocus becomes the next reference's."""
        ref = self.reference
        assert ref is not None
        changed, att, words, defocus_next = self._attribute_against(
            ref.spectrum, ref.defocus, scores, images, before
        )
        self._after_detection(changed, att, defocus_next)
        return changed, att, words

    def _after_detection(
        self, changed: Sequence[str], att: Mapping[str, float], defocus_next: float | None
    ) -> None:
        """What a detection's attribution leaves for the next reference: a named |defocus|
        (``_carry_defocus``), and no focused reference once the object is another."""
        if defocus_next is not None:
            self._carry_defocus(defocus_next, att)
        if "lattice" in changed and att.get("new_object", 0.0) > 0.0:
            # Another object: its spectrum no longer shows this one (a rotation alone, or the
            # object's own orders seen again, leaves what the focused reference is compared by).
            self.focused = None

    def _carry_defocus(self, defocus: float, att: Mapping[str, float]) -> None:
        """Make a named |defocus| (Å) the next reference's, with its error (``estimate_error``);
        within the depth of focus of the operator's setting (``focused``) it is that setting,
        error 0: the probe is then as it was there (Rayleigh's λ/(4α²), the rule that names a
        defocus change), and a chain of estimates ends instead of carrying a few Å of noise
        into the thresholds and readings after it (the held-out MoS2's return to focus read
        6 ± 2 Å against its focused reference, and the reference at 6 Å raised a false blur
        alarm 95 frames later)."""
        self._defocus_next, self._defocus_next_err = defocus, estimate_error(att)
        if self.focused is not None and self.optics is not None:
            probe = probe_of(self.optics)
            if abs(defocus - self.focused[1]) < depth_of_focus(probe["voltage_kv"], probe["semiangle_mrad"]):
                self._defocus_next, self._defocus_next_err = self.focused[1], 0.0

    def _attribute_against(
        self,
        spectrum: SpectrumReference,
        spectrum_defocus: float,
        scores: Mapping[str, float],
        images: Sequence[ImageStats],
        before: np.ndarray | None,
    ) -> tuple[tuple[str, ...], dict[str, float], str, float | None]:
        """``attribution.attribute`` of ``images`` against ``spectrum`` (taken at
        ``spectrum_defocus``, Å) under this reference's calibration; changes no state."""
        assert self.reference is not None
        return attribute(
            spectrum,
            self.reference.calibration,
            scores,
            images,
            before,
            optics=self.optics,
            reference_defocus=self.reference_defocus,
            spectrum_defocus=spectrum_defocus,
            focused=self.focused,
            # (A short reference's spectrum is the last full one's, at that one's defocus.)
            spectrum_error=self.carried_err
            if self.carried is not None and spectrum is self.carried[0]
            else self.reference_defocus_err,
            dose_step=self.dose_step,
        )


def _ln_counts(images: Sequence[ImageStats]) -> tuple[float, float]:
    """Mean ln mean counts of frames and its standard error (ln units; NaN for one frame)."""
    ln = np.log(np.maximum([s.mean for s in images], 1e-12))
    se = float(ln.std(ddof=1) / np.sqrt(len(ln))) if len(ln) > 1 else float("nan")
    return float(ln.mean()), se


class _Background:
    """``DriftMonitor._calibrate`` of a monitor's current reference frames, in a worker thread.

    It runs on a shallow copy with its own list of the frames: ``_calibrate`` only reads them
    and assigns new objects, so the monitor goes on observing while it runs.
    """

    def __init__(self, monitor: ReferenceKeeper) -> None:
        self._copy = copy.copy(monitor)
        self._copy.history = list(monitor.history)
        self._copy._pending = None
        self._error: BaseException | None = None
        # A daemon: pure computation that holds nothing, so an exiting process need not wait.
        self._thread = threading.Thread(target=self._run, name="drift-calibration", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._copy._calibrate()
        except BaseException as exc:  # handed to the thread that adopts it
            self._error = exc

    def result(self) -> ReferenceKeeper:
        """The calibrated copy (waits for it); re-raises what the calibration raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._copy
