"""Per-batch drift decisions from detectors on the image formation and on the network's view.

Seven per-frame features are watched, each as the mean over the last ``window`` frames
against a reference:

- on the image formation (``spectrum``: FFT of the frame, no network): ``dose`` (ln mean
  counts), ``blur`` (change of the Gaussian-equivalent blur variance, Å², from the shape of
  the signal spectrum), ``contrast`` (ln signal amplitude change with the noise floor and the
  dose taken out), ``reflections`` (share of the lattice reflection power at new positions);
- on the network's view: ``embedding`` (kernel novelty of the encoder features),
  ``disagreement`` (mean per-atom ensemble spread), ``physics`` (column density and spacing
  against the reference's).

The image-formation detectors decide; the network's are calibrated and reported beside them
(in every decision's scores, and in a detection's attribution when they fired too) but cannot
raise an alarm on their own.

A detection carries its attribution: what changed, by how much, in physical units.

The reference the detectors are measured against (the first ``reference_frames`` quiet frames,
widened while the stream stays quiet; its thresholds from the reference and the ERT alone; the
short one taken after a detection) is kept by ``reference.ReferenceKeeper``, which
``DriftMonitor`` extends; that module's docstring says how and why. Changes slower than the
window statistics see (ramps of defocus, dose, source size) are caught by cumulative tests
against the first full reference since the last re-reference (``ReferenceKeeper.anchor_drift``).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scopeflow.errors import InputError

from .attribution import DETECTORS, IMAGE_DETECTORS
from .calibration import MIN_REFERENCE
from .observation import Observation, pack, unpack
from .physics import Proxies, proxy_score
from .reference import CUMULATIVE, ReferenceKeeper
from .spectrum import SpectrumReference, image_stats

SCHEMA = 1  # version of the monitor state stored with a dataset's decisions


@dataclass(frozen=True)
class Decision:
    """What the monitor concluded about frames ``frame_start``..``frame_end`` (inclusive).

    ``scores``: each detector's statistic as a multiple of its threshold (> 1 fired), with the
    cumulative tests' (``reference.CUMULATIVE``: ``defocus``, ``dose_drift``, ``source_drift``)
    where the optics are known.
    ``changed``: the conditions named as changed (``dose``, ``defocus``, ``blur``,
    ``contrast``, ``lattice``, ``network``); ``attribution`` the estimates behind them
    (``dose_ratio``, ``defocus_A`` (|defocus| now), ``defocus_change_A``, ``defocus_err_A``,
    ``defocus_bound_A``, ``blur_A2``, ``contrast_ratio``,
    ``source_var_A2`` (Δσ² of a Gaussian envelope, Å²) with the two models' misfits
    ``envelope_misfit`` and ``defocus_misfit``, ``spacing_change``, ``rotation_deg``,
    ``new_reflections``); ``summary`` says it in words.
    """

    frame_start: int
    frame_end: int
    detected: bool
    scores: dict[str, float]
    first_alarm: int | None = None
    changed: tuple[str, ...] = ()
    attribution: dict[str, float] = field(default_factory=dict)
    summary: str = ""

    def fired(self) -> list[str]:
        """Names of the detectors over their threshold."""
        return [k for k, v in self.scores.items() if np.isfinite(v) and v > 1.0]


@dataclass
class DriftMonitor(ReferenceKeeper):
    """Online drift detection; ``ert`` and ``window`` in frames. ``optics`` (``voltage_kv``,
    ``semiangle_mrad``, optional ``cs_mm``) lets a blur be named as a defocus in Å."""

    def observe(
        self,
        frame_start: int,
        embeddings: np.ndarray,
        uncertainty: np.ndarray,
        proxies: Sequence[Proxies],
        frames: Sequence[np.ndarray],
        pixel_sizes: Sequence[float],
    ) -> Decision:
        """Feed one batch: per-frame embeddings (k, d), mean per-atom uncertainty (k,), proxies,
        the frames themselves (counts) and their pixel sizes (Å/px)."""
        k = len(frames)
        if not (len(embeddings) == len(uncertainty) == len(proxies) == k == len(pixel_sizes)):
            raise InputError("a batch needs one embedding, uncertainty, proxies and pixel size per frame")
        batch = [
            Observation(np.asarray(e, dtype=np.float64).ravel(), float(u), p, image_stats(f, s))
            for e, u, p, f, s in zip(embeddings, uncertainty, proxies, frames, pixel_sizes, strict=True)
        ]
        return self.observe_observations(frame_start, batch)

    def observe_observations(self, frame_start: int, batch: list[Observation]) -> Decision:
        """Decide about a batch already summarised (see ``observe``)."""
        k = len(batch)
        self.settle()
        self.frames_seen = max(self.frames_seen, frame_start + k)
        todo = batch
        if self.reference is None:
            todo = self._grow(batch)
            if self.reference is None:
                return Decision(
                    frame_start, frame_start + k - 1, False, dict.fromkeys(DETECTORS, float("nan"))
                )
            inside = self._change_in_reference(frame_start + k - len(todo), todo)
            if inside is not None:
                return Decision(frame_start, frame_start + k - 1, True, *inside)
        # The frames of this batch still to decide on: all of them, or those beyond a reference
        # just calibrated (its last frames are the batch's first).
        offset = k - len(todo)
        ref = self.reference
        cal = ref.calibration
        best = np.zeros(len(DETECTORS))
        first_alarm = None
        for i, obs in enumerate(todo):
            self.recent.append(self.features(ref, obs))
            self.recent_obs.append(obs)
            ratio = cal.statistics(np.stack(self.recent)) / cal.threshold
            best = np.fmax(best, ratio)
            deciding = ratio[: len(IMAGE_DETECTORS)]
            if first_alarm is None and np.nanmax(np.where(np.isfinite(deciding), deciding, 0.0)) > 1.0:
                first_alarm = frame_start + offset + i
                # What the frames looked like before: the look-back the alarm compared with.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    before = np.nanmean(np.stack(self.recent)[: -cal.window], axis=0)
        scores = {name: float(v) for name, v in zip(DETECTORS, best, strict=True)}
        if first_alarm is None:
            drift = self._anchor_drift(frame_start, batch, offset, scores)
            if drift is not None:
                return drift
            self._grow(todo)
            return Decision(frame_start, frame_start + k - 1, False, scores)
        # The frames after the alarm are under the new conditions: they start the next
        # reference (at most its shortest length, so that the frames after are decided on).
        self._since_alarm = batch[first_alarm - frame_start + 1 :][:MIN_REFERENCE]
        since = [o.image for o in batch[first_alarm - frame_start :]]
        changed, attribution, summary = self.attribute(scores, since, before)
        return Decision(
            frame_start, frame_start + k - 1, True, scores, first_alarm, changed, attribution, summary
        )

    def _anchor_drift(
        self, frame_start: int, batch: list[Observation], offset: int, scores: dict[str, float]
    ) -> Decision | None:
        """The cumulative tests against the anchor (``ReferenceKeeper.anchor_drift``: defocus,
        dose, source/probe size), once per batch on the window and look-back's frames; their
        scores join ``scores`` (``CUMULATIVE``). A detection (the change named by the attribution
        against the anchor as what a test that fired stands for) or None. The first alarm is the
        first frame of the batch whose window and look-back already hold the change."""
        k = len(batch)
        if self.optics is None:
            return None  # no defocus can be fitted, and no score is reported
        if self.anchor is None or len(self.recent_obs) < self.recent_obs.maxlen:
            scores.update(dict.fromkeys(CUMULATIVE, float("nan")))
            return None
        frames = list(self.recent_obs)
        _, ratio = self.anchor_drift([o.image for o in frames], k)
        scores.update(zip(CUMULATIVE, map(float, ratio), strict=True))
        fired = ratio > 1.0
        if not fired.any():
            return None
        anchor = self.anchor
        before = np.concatenate([anchor.centre, np.full(len(DETECTORS) - len(anchor.centre), np.nan)])
        # The attribution fits what a fired test stands for: a dose change as the dose
        # detector's, a source/probe size change as the blur detector's (the envelope and the
        # defocus fitted side by side), a defocus as itself.
        seen = dict(scores)
        for test, detector in (("dose_drift", "dose"), ("source_drift", "blur")):
            if scores[test] > 1.0:
                seen[detector] = max(scores[test], np.nan_to_num(scores[detector]))
        changed, attribution, words, defocus_next = self._attribute_against(
            anchor.spectrum, anchor.defocus, seen, [o.image for o in frames], before
        )
        # A source/probe size change is named where the Gaussian envelope explains the spectrum
        # better than a defocus (as the attribution decided it, ``envelope_named``), or as a
        # defocus where the probe's transfer does: a blur neither model explains is not one.
        envelope = attribution.get("envelope_named", 0.0) > 0.0
        named = {
            "defocus": "defocus" in changed,
            "dose_drift": "dose" in changed,
            "source_drift": "defocus" in changed or ("blur" in changed and envelope),
        }
        if not any(named[t] for t, f in zip(CUMULATIVE, fired, strict=True) if f):
            # The anchor's fits found a change the attribution, with the envelope, the defocus
            # and the lattice beside each other, does not name as the test's: not a change of the
            # imaging the test watches (a new lattice reads as a defocus or an envelope).
            return None
        # Where in the batch the change first reached the threshold (only after an alarm: one
        # fit a batch otherwise).
        span = len(frames)
        first = k - 1
        for i in range(offset, k - 1):
            cut = span - (k - 1 - i)  # the frames held up to the batch's frame i
            if cut < self.window:
                continue  # (a batch longer than the look-back: too few of them held)
            if (self.anchor_drift([o.image for o in frames[:cut]], k)[1][fired] > 1.0).any():
                first = i
                break
        self._after_detection(changed, attribution, defocus_next)
        self._since_alarm = batch[first + 1 :][:MIN_REFERENCE]
        summary = words + " (cumulative, against the first reference)"
        return Decision(
            frame_start, frame_start + k - 1, True, scores, frame_start + first, changed, attribution, summary
        )

    def physics_shift(self, proxies: Sequence[Proxies]) -> float:
        """The physics detector's statistic for frames with these proxies, as a multiple of its
        threshold (≤ 1: the columns look like the reference lattice)."""
        if self.reference is None:
            return float("nan")
        cal = self.reference.calibration
        j = DETECTORS.index("physics")
        scores = np.array([proxy_score(p, self.reference.proxies) for p in proxies])
        return float(abs(np.nanmean(scores) - cal.centre[j]) / cal.scale[j] / cal.threshold[j])

    # --- persistence -----------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(attrs, arrays): everything a later run needs to continue this monitor, readable:
        settings and the calibration as JSON attrs; the reference frames' and the window's
        observations as arrays (``history_*``, ``recent_*``)."""
        attrs: dict[str, Any] = {
            "schema": SCHEMA,
            "ert": self.ert,
            "window": self.window,
            "reference_frames": self.reference_frames,
            "seed": self.seed,
            "frames_seen": self.frames_seen,
            "calibrated_on": self.calibrated_on,
            "reference_defocus_A": self.reference_defocus,
            # Its ± (0: the operator's setting; None: an estimate of unknown error).
            "reference_defocus_err_A": (
                float(self.reference_defocus_err) if np.isfinite(self.reference_defocus_err) else None
            ),
            # The calibration's physical bounds depend on the optics: a resumed monitor must
            # recalibrate with the same ones before the dataset's are read again.
            "optics": None if self.optics is None else {k: float(v) for k, v in self.optics.items()},
            "floor": None if self.floor is None else [float(v) for v in self.floor],
            "floor_scale": None if self.floor_scale is None else [float(v) for v in self.floor_scale],
            "grown_from": None if self.grown_from is None else [float(v) for v in self.grown_from],
            "memory": None
            if self.memory is None
            else [None if np.isnan(v) else float(v) for v in self.memory],
            "carried": _spectrum_attrs(self.carried),
            "carried_defocus_err_A": float(self.carried_err) if np.isfinite(self.carried_err) else None,
            "focused": _spectrum_attrs(self.focused),
            "calibration": None if self.reference is None else self.reference.calibration.as_dict(),
            "recent_frames": len(self.recent),
            # The reference frames are all stored: a resumed run recalibrates on them.
            "calibration_pending": self.calibrating,
        }
        arrays = {f"history_{k}": v for k, v in pack(self.history).items()}
        arrays.update(_spectrum_arrays("carried", self.carried))
        arrays.update(_spectrum_arrays("focused", self.focused))
        arrays["recent_features"] = np.stack(self.recent) if self.recent else np.empty((0, len(DETECTORS)))
        # The frames the cumulative tests fit (the window and look-back's).
        arrays.update({f"recentobs_{k}": v for k, v in pack(list(self.recent_obs)).items()})
        return attrs, arrays

    def restore(self, attrs: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Continue from a stored ``state()`` (same settings): re-fit the reference from the
        stored frames exactly as it was fitted, then refill the window."""
        if int(attrs.get("schema", -1)) != SCHEMA:
            raise InputError(
                f"monitor state schema {attrs.get('schema')!r} is not {SCHEMA}: re-run from the start"
            )
        self.rereference()
        history = unpack(
            {k.removeprefix("history_"): v for k, v in arrays.items() if k.startswith("history_")}
        )
        self.frames_seen = int(attrs.get("frames_seen", 0))
        self.reference_defocus = float(attrs.get("reference_defocus_A", 0.0))
        err = attrs.get("reference_defocus_err_A", 0.0)
        self.reference_defocus_err = float("inf") if err is None else float(err)
        if self.optics is None and attrs.get("optics") is not None:
            self.optics = {k: float(v) for k, v in attrs["optics"].items()}
        floor = attrs.get("floor")
        self.floor = None if floor is None else np.asarray(floor, dtype=np.float64)
        grown_from = attrs.get("grown_from")
        floor_scale = attrs.get("floor_scale")
        self.floor_scale = None if floor_scale is None else np.asarray(floor_scale, dtype=np.float64)
        self.grown_from = None if grown_from is None else np.asarray(grown_from, dtype=np.float64)
        memory = attrs.get("memory")
        self.memory = (
            None if memory is None else np.array([np.nan if v is None else v for v in memory], float)
        )
        self.carried = _spectrum_from("carried", attrs.get("carried"), arrays)
        err = attrs.get("carried_defocus_err_A", 0.0)
        self.carried_err = float("inf") if err is None else float(err)
        # (States stored before the focused reference was kept measure from the current one.)
        self.focused = _spectrum_from("focused", attrs.get("focused"), arrays)
        on = int(attrs.get("calibrated_on", 0))
        if attrs.get("calibration_pending"):
            # Stored between the batch that completed a checkpoint and the adoption of its
            # calibration: the same calibration, on the same frames, before the next batch.
            self.history = history
            self._calibrate()
            return
        if on:
            self.history = history[:on]
            self._calibrate()
        self.history = history
        recent = np.asarray(arrays.get("recent_features", np.empty((0, len(DETECTORS)))))
        if self.reference is not None:
            cal = self.reference.calibration
            self.recent = deque(list(recent), maxlen=cal.window + cal.lookback)
            stored = unpack(
                {k.removeprefix("recentobs_"): v for k, v in arrays.items() if k.startswith("recentobs_")}
            )
            self.recent_obs = deque(stored, maxlen=cal.window + cal.lookback)


def _spectrum_attrs(pair: tuple[SpectrumReference, float] | None) -> dict[str, float] | None:
    """The JSON attrs of a stored (spectrum, |defocus| Å) pair (``DriftMonitor.state``)."""
    if pair is None:
        return None
    spectrum, defocus = pair
    return {
        "k_info": spectrum.k_info,
        "tolerance": spectrum.tolerance,
        "share_resolution": spectrum.share_resolution,
        "rotation_centre_deg": spectrum.rotation_centre_deg,
        "rotation_scatter_deg": spectrum.rotation_scatter_deg,
        "defocus_A": defocus,
    }


def _spectrum_arrays(prefix: str, pair: tuple[SpectrumReference, float] | None) -> dict[str, np.ndarray]:
    """The arrays of a stored (spectrum, |defocus|) pair, named ``{prefix}_{field}``."""
    if pair is None:
        return {}
    spectrum = pair[0]
    names = ("profile", "band", "reflections", "ring_k", "ring_bins", "signal", "signal_se")
    return {
        f"{prefix}_{name}": np.asarray(getattr(spectrum, name), dtype=np.float64)
        for name in names
        if getattr(spectrum, name) is not None
    }


def _spectrum_from(
    prefix: str, entry: Mapping[str, Any] | None, arrays: Mapping[str, np.ndarray]
) -> tuple[SpectrumReference, float] | None:
    """A (spectrum, |defocus| Å) pair back from ``_spectrum_attrs`` and ``_spectrum_arrays``."""
    if entry is None:
        return None
    spectrum = SpectrumReference(
        np.asarray(arrays[f"{prefix}_profile"]),
        np.asarray(arrays[f"{prefix}_band"]) > 0,
        float(entry["k_info"]),
        np.asarray(arrays[f"{prefix}_reflections"]).reshape(-1, 2),
        float(entry["tolerance"]),
        np.asarray(arrays[f"{prefix}_ring_k"]),
        np.asarray(arrays[f"{prefix}_ring_bins"]),
        float(entry["share_resolution"]),
        # States stored before the rotation's spread was kept name no rotation from it.
        float(entry.get("rotation_centre_deg", 0.0)),
        float(entry.get("rotation_scatter_deg", float("nan"))),
        # States stored before the mean signal was kept fit against the profile.
        None if f"{prefix}_signal" not in arrays else np.asarray(arrays[f"{prefix}_signal"]),
        None if f"{prefix}_signal_se" not in arrays else np.asarray(arrays[f"{prefix}_signal_se"]),
    )
    return spectrum, float(entry["defocus_A"])
