"""What changed at a detection, by how much, in the units a microscopist uses.

The image-formation features of the frames since the change are compared with those before
it (or the reference's centre); a blur or contrast change is named a defocus when the probe's
transfer (``spectrum.fit_defocus``) explains it beyond the depth of focus and better than a
Gaussian envelope (``spectrum.fit_envelope``: a source or probe size change) does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np

from .calibration import Calibration
from .spectrum import (
    ImageStats,
    SpectrumReference,
    defocus_bound,
    depth_of_focus,
    envelope_fits_better,
    fit_defocus,
    fit_envelope,
    mass_dilution,
    ring_misfits,
)

IMAGE_DETECTORS = ("dose", "blur", "contrast", "reflections")
NETWORK_DETECTORS = ("embedding", "disagreement", "physics")
DETECTORS = IMAGE_DETECTORS + NETWORK_DETECTORS


def shape_of(s: ImageStats) -> tuple[int, int]:
    """The (square) frame shape behind a spectrum summary, px."""
    # Rings of one Fourier bin: the frame side is twice the Nyquist ring (square frames).
    side = round(2 * 0.5 / s.pixel_size / s.ring_k[1])
    return side, side


def probe_of(optics: Mapping[str, float]) -> dict[str, float]:
    """The probe's settings (``voltage_kv``, ``semiangle_mrad``, ``cs_mm``) from a monitor's ``optics``."""
    return {
        "voltage_kv": float(optics["voltage_kv"]),
        "semiangle_mrad": float(optics["semiangle_mrad"]),
        "cs_mm": float(optics.get("cs_mm", 0.0)),
    }


def _lattice_moved(spectrum: SpectrumReference, images: Sequence[ImageStats]) -> bool:
    """Whether the frames' reflections turned together against the reference's beyond their
    errors: the rotation (``SpectrumReference.rotation_spread``: the mean over reflections of
    each one's angle change) differs from the reference's by more than twice the two standard
    errors in quadrature. Dose, defocus, probe and source act on the spectrum alike in every
    direction: they can pull a reflection's centroid along |k| (a steeper transfer leans the
    peak inwards: the twin's 0.6 Å source moved the spacing +1 %) but never round the origin,
    so a rotation is the lattice's (a new region or grain, the sample or the scan rotated),
    even when every reflection stays inside the matching tolerance (one Fourier bin and a
    half, ~14° at the first order of graphene on 128² px frames at 0.1 Å/px). Each
    reflection's own wander (its lobe's overlap with the content in view) is a scatter across
    reflections, held by the errors."""
    measured = spectrum.rotation_spread(images)
    if measured is None or not np.isfinite(spectrum.rotation_scatter_deg):
        return False
    now, error = measured
    allowed = 2 * np.hypot(spectrum.rotation_scatter_deg, error)
    return bool(abs(now - spectrum.rotation_centre_deg) > allowed)


def estimate_error(att: Mapping[str, float]) -> float:
    """The ± (Å) of a named defocus (``attribute``'s ``defocus_err_A``): a reference taken at
    it carries it. Never 0 (0 stands for the operator's setting): at least half a candidate
    step of ``fit_defocus``."""
    err = float(att.get("defocus_err_A", float("nan")))
    return max(err, 0.5) if np.isfinite(err) else float("inf")


def _keep_for_the_record(att: dict[str, float]) -> None:
    """A defocus fit that is no estimate of the defocus: its reading kept as ``defocus_fit_A``,
    the estimate's keys dropped."""
    att["defocus_fit_A"] = att.pop("defocus_A")
    for key in ("defocus_change_A", "defocus_err_A", "defocus_bound_A"):
        att.pop(key, None)


def attribute(
    spectrum: SpectrumReference,
    cal: Calibration,
    scores: Mapping[str, float],
    images: Sequence[ImageStats],
    before: np.ndarray | None = None,
    *,
    optics: Mapping[str, float] | None = None,
    reference_defocus: float = 0.0,
    spectrum_defocus: float | None = None,
    focused: tuple[SpectrumReference, float] | None = None,
    spectrum_error: float = 0.0,
    dose_step: float | None = None,
) -> tuple[tuple[str, ...], dict[str, float], str, float | None]:
    """What changed on ``images`` against the frames ``before`` them (their mean features;
    default the calibration's centre), by how much, and in words; and the |defocus| (Å) the
    next reference is at when a defocus change was named (None otherwise).

    ``scores`` are the detectors' scores in units of their thresholds (> 1: fired);
    ``optics`` (``voltage_kv``, ``semiangle_mrad``, optional ``cs_mm``) lets a blur be named as
    a defocus, measured from ``reference_defocus`` (Å); ``spectrum_defocus`` is the |defocus|
    the ``spectrum`` reference was taken at (default ``reference_defocus``; they differ while a
    short reference after a detection is measured against the previous full one's spectrum).

    ``spectrum_error`` (Å) is the error of the |defocus| ``spectrum`` was taken at (0: the
    operator's setting; a detection's ± when it was estimated). It is propagated into the
    fitted |defocus| (the fit against ``spectrum`` taken at that defocus ± its error: half the
    spread of the two readings, in quadrature with the fit's own ±): where the reference's
    transfer is steep (far from focus) and the frames' flat (near focus) a few Å of the
    reference's become tens of Å of the frames'. ``focused`` (a spectrum and the |defocus|,
    Å, the operator set it at) is then measured against as well, and the reading with the
    smaller error is kept; an envelope named against ``spectrum`` must beat a defocus
    against ``focused`` too (both fitted there), and reflections new to ``spectrum`` but seen by
    ``focused`` are the object's own orders, not a new lattice. The twin's return from 130 Å
    to focus, against a reference at 130 Å estimated as 125 ± 17 Å, read 16 ± 11 Å (17 ± 11
    with the true 130 Å: the model misfits those frames 70-fold per ring and the flat likelihood near focus let its best point
    wander), and 0-11 Å against that stream's in-focus references; a reference at low dose
    (few rings), though, reads a strong defocus worse than the current one (a twin stream's
    104 Å against one at 4·10⁴ e/Å²: 272 ± 11 Å), hence the comparison of errors.

    ``dose_step``: the smallest dose ratio (or its inverse) the user asks to be told of; a
    fired dose under half of it (in ln) beside a named defocus, envelope or lattice is not
    named (None: every fired dose is).
    """
    defocus_next: float | None = None
    feats = np.array([[spectrum.features(s)[n] for n in IMAGE_DETECTORS] for s in images])
    with warnings.catch_warnings():
        # A feature no frame of the batch could measure stays NaN, and so does its attribution.
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(feats, axis=0)
    centre = dict(zip(DETECTORS, cal.centre if before is None else before, strict=True))
    att: dict[str, float] = {
        "dose_ratio": float(np.exp(med[0] - centre["dose"])),
        "blur_A2": float(med[1] - centre["blur"]),
        "contrast_ratio": float(np.exp(med[2] - centre["contrast"])),
    }
    att.update(spectrum.lattice_change(images))
    fired = {n for n, v in scores.items() if np.isfinite(v) and v > 1.0}
    changed: list[str] = []
    words: list[str] = []
    # New reflections mean another object: the rings' ratio to the reference's is then no
    # transfer. A rotation alone leaves every ring's power as it was (a ring is an average over
    # all directions), so the transfer fits still read the optics from it; and a transfer
    # change itself pulls each reflection's windowed centroid over its lobe's asymmetric 3×3
    # neighbourhood, not only along |k| (the twin's 0 → 130 Å steps read rotations of ±0.1°
    # against references whose reflections agreed to 0.02°: named "lattice" and no defocus).
    new_object = "reflections" in fired
    if new_object and focused is not None and focused[0] is not spectrum:
        # Which reference the reflections are new to: a reference taken out of focus misses
        # the orders its transfer hid, and a return to focus shows them again (the twin's
        # perovskite at 130 Å and back: "new reflections 30 %"). Reflections the focused
        # reference (the same object, at the operator's setting) saw are the object's own:
        # new only where their share of the power against it reaches that reference's
        # resolution (``SpectrumReference.share_resolution``: one typical reflection's share).
        known = focused[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            share = float(np.nanmedian([known.features(s)["reflections"] for s in images]))
        att["new_reflections_focused"] = share
        new_object = not share < known.share_resolution
    att["new_object"] = float(new_object)
    if new_object or _lattice_moved(spectrum, images):
        changed.append("lattice")
        words.append(
            f"lattice: spacing {100 * att['spacing']:+.0f} %, rotation {att['rotation_deg']:+.1f}°, "
            f"new reflections {100 * att['new_reflections']:.0f} %"
        )
    if "dose" in fired:
        changed.append("dose")
        words.append(f"dose ×{att['dose_ratio']:.2g}")
    # ``defocus``: the monitor's cumulative test against its first reference (``defocus_drift``).
    if fired & {"blur", "contrast", "defocus"}:
        if optics is not None:
            shape = shape_of(images[0])
            probe = probe_of(optics)
            taken = reference_defocus if spectrum_defocus is None else spectrum_defocus
            # Without a dose change, a rise of the mean counts is mass added to the object
            # (contamination), which dilutes the lattice's relative power (``mass_dilution``);
            # with one, the mean's change is the dose's.
            dilution = 1.0 if "dose" in fired else mass_dilution(float(np.exp(centre["dose"])), images)
            df, err, misfit = fit_defocus(
                spectrum,
                images,
                shape,
                **probe,
                reference_defocus=taken,
                dilution=dilution,
            )
            att["defocus_A"], att["defocus_err_A"] = df, err
            att["source_var_A2"], att["envelope_misfit"] = fit_envelope(
                spectrum,
                images,
                shape,
                **probe,
                reference_defocus=taken,
                dilution=dilution,
            )
            att["defocus_misfit"] = misfit

            @cache
            def at_focused() -> tuple[float, float, float]:
                # The frames' defocus fit against the focused reference (``focused`` is set
                # where it is called): the error comparison and the envelope's test both use it.
                assert focused is not None
                return fit_defocus(
                    focused[0], images, shape, **probe, reference_defocus=focused[1], dilution=dilution
                )

            if spectrum_error > 0 and np.isfinite(df):
                ends = [
                    fit_defocus(spectrum, images, shape, **probe, reference_defocus=d, dilution=dilution)[0]
                    for d in (max(taken - spectrum_error, 0.0), taken + spectrum_error)
                ]
                spread = abs(ends[1] - ends[0]) / 2 if np.all(np.isfinite(ends)) else float("inf")
                err = float(np.hypot(err, spread))
                if focused is not None:
                    kdf, kerr, _ = at_focused()
                    if np.isfinite(kdf) and kerr < err:
                        df, err = kdf, kerr
                att["defocus_A"], att["defocus_err_A"] = df, err
            att["defocus_change_A"] = df - reference_defocus
            if np.isfinite(df):
                # What the frames allow at best (Cramér–Rao, local to the estimate), beside what
                # the fit achieved. The fit's own error is its likelihood's spread over every
                # candidate (``fit_defocus``), so it holds on one frame too, and near focus,
                # where the transfer is even in defocus and the local bound is huge.
                att["defocus_bound_A"] = defocus_bound(spectrum, images, shape, **probe, defocus=df)
        change = att.get("defocus_change_A", float("nan"))
        # A defocus change is named when it is outside twice its error and beyond Rayleigh's
        # quarter-wave depth of focus λ/(4α²) (~20 Å at 60 kV, 25 mrad): a smaller one
        # leaves the probe as it was (and a dose drop's noise can fake that much).
        depth = 0.0
        if optics is not None:
            depth = depth_of_focus(float(optics["voltage_kv"]), float(optics["semiangle_mrad"]))
        # A changed lattice (a new region, a rotated grain) changes the rings' content, so
        # their ratio to the reference's is no longer the probe's transfer: the fitted defocus
        # then reads the new object, not the optics, and no defocus is named from it.
        resolved = not new_object and np.isfinite(change)
        # A source or probe size change is a Gaussian envelope on every frequency: it empties
        # the higher lattice orders first. A defocus (Cs = 0) lowers the middle of the band and
        # leaves the transfer near the aperture's cutoff 2α/λ: the higher orders stay. Of the
        # two one-parameter models (same rings and errors) the one that misfits less by more
        # than the χ²'s own noise names the change; a tie goes to the defocus, as before.
        envelope = "envelope_misfit" in att and envelope_fits_better(
            spectrum,
            images[0].pixel_size,
            att["defocus_misfit"],
            att["envelope_misfit"],
            ring_misfits(spectrum, images, shape, **probe, reference_defocus=taken, dilution=dilution),
        )
        if envelope and focused is not None and optics is not None and focused[0] is not spectrum:
            # Which reference a change is measured against: away from the operator's setting
            # the current reference is at a defocus that was itself a change, and a sharpening
            # envelope against it can mimic the transfer's rise on a return to focus (the
            # twin's 128 → 0 Å: χ² 11 against 81 for the best defocus, a reference at 130 Å
            # showing one lattice order). A source or probe size change must also explain the
            # frames against the focused reference, where the probe stayed at the current
            # defocus and the envelope changed: both hypotheses, one parameter each, are fitted
            # on that reference's rings and compared by the same rule.
            known, known_defocus = focused
            if abs(taken - known_defocus) > depth_of_focus(
                float(optics["voltage_kv"]), float(optics["semiangle_mrad"])
            ):
                kmisfit = at_focused()[2]
                _, kenvelope = fit_envelope(
                    known,
                    images,
                    shape,
                    **probe,
                    reference_defocus=known_defocus,
                    dilution=dilution,
                    defocus=taken,
                )
                att["focused_defocus_misfit"], att["focused_envelope_misfit"] = kmisfit, kenvelope
                envelope = envelope_fits_better(
                    known,
                    images[0].pixel_size,
                    kmisfit,
                    kenvelope,
                    ring_misfits(
                        known,
                        images,
                        shape,
                        **probe,
                        reference_defocus=known_defocus,
                        dilution=dilution,
                        defocus=taken,
                    ),
                )
        att["envelope_named"] = float(not new_object and envelope)
        if new_object and "defocus_A" in att:
            # The fit then read the new object, not the optics: it is kept for the record
            # (``defocus_fit_A``) but is no estimate of the defocus.
            _keep_for_the_record(att)
        if not new_object and envelope:
            # The envelope explains the spectrum better than any defocus: the defocus is then
            # estimated unchanged (as retraining's estimate decides, ``training.matching``), the
            # transfer's best fit kept for the record. (Reported as a change it had read the
            # twin's and MoS2's +0.3 Å source steps as 70 Å defocus changes.)
            att["defocus_fit_A"] = att.get("defocus_A", float("nan"))
            att["defocus_A"] = reference_defocus
            att["defocus_change_A"] = 0.0
            changed.append("blur")
            words.append(
                f"source/probe size: σ² {att['source_var_A2']:+.2f} Å² (a Gaussian envelope fits "
                "better than a defocus)"
            )
        elif resolved and abs(change) > max(2 * att["defocus_err_A"], depth):
            changed.append("defocus")
            defocus_next = att["defocus_A"]
            words.append(
                f"|defocus| {reference_defocus:.0f} → {att['defocus_A']:.0f} Å (±{att['defocus_err_A']:.0f})"
            )
        elif "blur" in fired:
            changed.append("blur")
            words.append(f"blur σ² {att['blur_A2']:+.2f} Å²")
        else:
            changed.append("contrast")
            words.append(f"contrast ×{att['contrast_ratio']:.2g}")
    if (
        "lattice" in changed
        and "defocus" not in changed
        and "defocus_change_A" in att
        and att.get("envelope_named", 0.0) == 0.0
    ):
        # A lattice that turned, with no defocus named: the fit is kept for the record
        # (``defocus_fit_A``) as for a new object, not reported as an estimate (a new
        # region of the twin's graphene, rotated 0.7°, read 20 Å for an unchanged focus).
        _keep_for_the_record(att)
    if (
        dose_step is not None
        and "dose" in changed
        and {"defocus", "lattice", "blur"} & set(changed)
        and abs(np.log(att["dose_ratio"])) < 0.5 * np.log(dose_step)
    ):
        # The counts' detector is as fine as the Poisson noise allows: at 2·10⁷ e/Å² a change
        # of the probe alone moves the mean counts by 0.1 %, which fires it (twin returns to
        # focus read "dose ×1; |defocus| …"). Beside a change of the optics or the object, a
        # dose ratio under half the smallest step the user asks to be told of (in ln, the
        # cumulative dose test's floor, ``ReferenceKeeper.dose_step``) is that change's, not
        # the source's: kept in ``dose_ratio``, not named. Alone, it is still named.
        i = changed.index("dose")
        del changed[i], words[i]
    network = sorted(fired & set(NETWORK_DETECTORS))
    if network:
        changed.append("network")
        words.append("the network's view changed too (" + ", ".join(network) + ")")
    return tuple(changed), att, "; ".join(words), defocus_next
