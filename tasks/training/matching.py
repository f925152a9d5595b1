"""Twin conditions that reproduce drifted frames, estimated from the frames alone (no labels).

Retraining renders twin frames that look like what the microscope now shows, so it needs the
conditions in the twin's terms. They are read from the frames' Fourier spectra with the same
image-formation physics the twin renders with (``tasks.drift.spectrum``) rather than by
matching summary statistics over a grid of rendered candidates — that matched a frame at
130 Å defocus as 80 Å plus contamination 0.5, because blur and amorphous carbon both lower
the same few numbers:

- dose: counts per Å² as Poisson statistics give them (mean² / noise variance, free of the
  detector gain), against the same measure on twin frames of the lattice at a known dose —
  what the network sees is the signal-to-noise ratio, and that is what the twin must match;
- defocus: the probe transfer |OTF(df)|² that turns the reference frames' signal profile
  into the drifted frames' (``fit_defocus``), named only when it moved beyond twice its
  error and beyond the depth of focus — otherwise the reference's;
- source size: when a Gaussian envelope (``fit_envelope``) explains the spectrum better than
  any defocus, the source's σ² changes by its Δσ² (σ² adds for Gaussians);
- contamination: the reference's. Amorphous carbon is the sample, not the optics; the
  statistics tried could not tell it from a region's own content (see ``estimate_conditions``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tasks.acquisition.twin import DEFAULT_CONDITIONS, LATTICES, DigitalTwin, DriftSchedule
from tasks.drift.spectrum import (
    ImageStats,
    SpectrumReference,
    depth_of_focus,
    envelope_fits_better,
    fit_defocus,
    fit_envelope,
    image_stats,
    signature,
)

CALIBRATION_DOSE = 1e6  # e/Å²: any dose with a clear noise floor; counts per Å² scale linearly with it
RENDERS = 2  # twin frames per candidate (their median): the frames' own spread is larger


def lattice_columns(name: str) -> tuple[float, float]:
    """What lattice ``name`` implies for its columns: nearest spacing (Å) and density (columns/Å²)."""
    lat = LATTICES[name]
    return lat.min_separation, len(lat.sites) / abs(np.linalg.det(lat.vectors()))


def lattice_from_columns(nn_distance: float, density: float) -> str:
    """The twin lattice whose column spacing (Å) and density (columns/Å²) are nearest.

    Spacing counts double: a network under drift invents or misses a few columns, which moves
    the density, while the median nearest-neighbour spacing holds.
    """

    def mismatch(name: str) -> float:
        spacing, implied = lattice_columns(name)
        return 2.0 * abs(np.log(nn_distance / spacing)) + abs(np.log(density / implied))

    return min(LATTICES, key=mismatch)


def _render(conditions: Mapping[str, Any], side: int, seed: int) -> list[np.ndarray]:
    twin = DigitalTwin(seed=seed, schedule=DriftSchedule(base=dict(conditions)), shape=(side, side))
    return [twin.acquire(i).image for i in range(RENDERS)]


def _counts_per_area(stats: Sequence[ImageStats]) -> float:
    """Median Poisson counts per Å² (mean² / noise variance; ``spectrum.signature``) of frames' spectra."""
    return float(np.median([10 ** signature(s)[0] for s in stats]))


def _robust_mean(values: np.ndarray) -> tuple[float, float]:
    """Median and its standard error from the robust spread (1.4826 × MAD / √n); nan error for one value."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    centre = float(np.median(v))
    if len(v) < 2:
        return centre, float("nan")
    return centre, 1.4826 * float(np.median(np.abs(v - centre))) / np.sqrt(len(v))


def estimate_conditions(
    frames: Sequence[np.ndarray],
    pixel_size: float,
    lattice: str,
    *,
    reference_frames: Sequence[np.ndarray] | None = None,
    reference: Mapping[str, Any] | None = None,
    optics: Mapping[str, float] | None = None,
    side: int = 128,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Twin conditions (dose e/Å², defocus Å, source size Å, contamination) of ``frames``
    (``pixel_size`` Å/px, of the twin lattice ``lattice``), with the physics of the module's
    docstring.

    ``reference_frames`` were taken at the ``reference`` conditions (default the twin's; their
    ``defocus`` is where the operator focused, their ``source_size`` the instrument's): the
    defocus and source size are measured as changes from them. Without reference frames (the
    sample itself changed, so spectra no longer compare) those stay the reference's.
    ``optics`` (``voltage_kv``, ``semiangle_mrad``, ``cs_mm``) as the instrument recorded them
    override the reference's. Returns the conditions (every twin condition) and, per
    condition, how it was reached (with its ± where measured).
    """
    base: dict[str, Any] = {**DEFAULT_CONDITIONS, **dict(reference or {}), **dict(optics or {})}
    base.update(lattice=lattice, pixel_size=float(pixel_size))
    stats = [image_stats(f, pixel_size) for f in frames]
    note: dict[str, str] = {}

    # Dose: counts per Å² are dose × the detector's share (the lattice's) plus background and
    # read noise, so one rendered calibration gives the scale, and a second render at the
    # estimate corrects what read noise bends at low counts.
    measured = _counts_per_area(stats)
    dose = CALIBRATION_DOSE
    for _ in range(2):
        renders = _render({**base, "dose": dose, "contamination": 0.0}, side, seed)
        rendered = _counts_per_area([image_stats(r, pixel_size) for r in renders])
        dose *= measured / max(rendered, 1e-12)
    note["dose"] = "Poisson counts per Å² against the twin's"

    defocus = abs(float(base["defocus"]))
    source = float(base["source_size"])
    if reference_frames is not None and len(reference_frames) and len(frames):
        spec = SpectrumReference.fit([image_stats(f, pixel_size) for f in reference_frames])
        probe = {
            "voltage_kv": float(base["voltage_kv"]),
            "semiangle_mrad": float(base["semiangle_mrad"]),
            "cs_mm": float(base["cs_mm"]),
        }
        shape = (int(np.shape(frames[0])[0]), int(np.shape(frames[0])[1]))
        df, err, df_misfit = fit_defocus(spec, stats, shape, **probe, reference_defocus=defocus)
        var, envelope_misfit = fit_envelope(spec, stats, shape, **probe, reference_defocus=defocus)
        # Rayleigh's quarter-wave depth of focus: a smaller change leaves the probe as it was.
        depth = depth_of_focus(probe["voltage_kv"], probe["semiangle_mrad"])
        # As the drift attribution decides (``tasks.drift.attribution``): a Gaussian envelope
        # that fits the spectrum better than any defocus is a source (or probe) size change,
        # kept when it is beyond twice its standard error over the frames.
        if envelope_fits_better(spec, pixel_size, df_misfit, envelope_misfit):
            _, var_err = _robust_mean(
                np.array(
                    [fit_envelope(spec, [s], shape, **probe, reference_defocus=defocus)[0] for s in stats]
                )
            )
            if np.isfinite(var_err) and abs(var) > 2.0 * var_err:
                source = float(np.sqrt(max(source**2 + var, 0.0)))
                note["source_size"] = f"a Gaussian envelope fits best: σ² {var:+.3f} ± {var_err:.3f} Å²"
            note["defocus"] = "unchanged: a Gaussian envelope explains the spectrum better"
        elif np.isfinite(df) and abs(df - defocus) > max(2.0 * (err if np.isfinite(err) else 0.0), depth):
            defocus = float(df)
            note["defocus"] = f"probe transfer fitted to the spectrum: {df:.0f} ± {err:.0f} Å"
        else:
            note["defocus"] = "unchanged within its error and the depth of focus"
    conditions = {**base, "dose": float(dose), "defocus": defocus, "source_size": source}

    # Contamination is not estimated: the frame statistics tried (contrast, the shares of
    # lattice-fringe and of low-frequency power, against the reference frames and rendered
    # twin pairs of several regions) told a sample's own content from amorphous carbon in 9–12
    # of 27 known twin cases (benchmarks/conditions.py), no better than keeping the reference's.
    conditions["contamination"] = float(base["contamination"])
    note["contamination"] = "the reference's (not measurable from the spectrum here)"
    return conditions, note
