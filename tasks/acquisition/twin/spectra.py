"""The twin's point-measurement channel: an EELS-like low-loss spectrum under a parked probe.

A spectrum is a sum of peaks on a power-law background. What the probe sees is summarised
by probe-weighted sums over the atom columns within the signal's delocalisation length
(Gaussian of ``delocalisation`` Å around the probe):

- ``mass``: present columns (the bulk plasmon's intensity);
- ``dopants``: substituted columns (a dopant band at the lattice's ``dopant_ev``);
- ``vacancies`` and ``edges``: missing columns and the under-coordinated columns around
  them (a mid-gap defect/edge-state peak at ``defect_ev``; vacancies also red-shift the plasmon);
- ``strain``: a smooth field fixed in the sample (hashed from the seed; ±``strain_amplitude``),
  blue-shifting the plasmon under compression. Strain is invisible in HAADF: a nuisance a
  patch-based model cannot explain, as real samples have.

Peak energies in eV, intensities in counts per measurement; noise is Poisson at the dose of
one measurement. ``expected`` gives the noiseless spectra: the truth the benchmarks score against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from scopeflow.errors import InputError

from ..instrument import Spectra
from .lattices import get_lattice
from .scene import NORMAL, SUBSTITUTED, VACANCY, hash_uniform
from .twin import DigitalTwin


@dataclass(frozen=True)
class PeakSet:
    """Where a material's low-loss features sit, eV, and how wide they are (FWHM, eV)."""

    plasmon_ev: float
    plasmon_fwhm: float
    interband_ev: float  # a reference peak set by the host alone (π-like)
    dopant_ev: float
    defect_ev: float


# Low-loss landmarks per lattice (after the π/π+σ plasmons of graphene, MoS2's A/B excitons
# and bulk plasmon, SrTiO3's interband and bulk plasmon); dopant and defect bands are placed
# in clear parts of each spectrum so the scalarizers can separate them.
PEAKS: dict[str, PeakSet] = {
    "graphene": PeakSet(plasmon_ev=15.0, plasmon_fwhm=4.0, interband_ev=5.0, dopant_ev=9.5, defect_ev=2.5),
    "mos2": PeakSet(plasmon_ev=23.0, plasmon_fwhm=5.0, interband_ev=8.5, dopant_ev=13.5, defect_ev=1.6),
    "perovskite": PeakSet(plasmon_ev=28.0, plasmon_fwhm=6.0, interband_ev=6.0, dopant_ev=16.0, defect_ev=3.5),
}


@dataclass(frozen=True)
class LocalStructure:
    """Probe-weighted structure under each probe position (dimensionless column counts)."""

    mass: np.ndarray
    dopants: np.ndarray
    vacancies: np.ndarray
    edges: np.ndarray
    strain: np.ndarray  # fractional lattice strain, + tensile


class SpectrumChannel:
    """Point spectroscopy on the sample area of one twin frame (the survey image): a
    ``Spectrometer``.

    Positions are (row, col) in pixels of frame ``frame``; a measurement integrates
    ``dwell`` s at beam current ``current_pa`` pA, after ``settle`` s of beam move. The
    spectrum's electron count scales with the dwell, so shorter dwells are noisier.
    ``strain_law`` (sample x, y Å → fractional strain), if given, replaces the hashed strain
    domains: a scene whose strain follows a known law, for testing hypotheses about it.
    """

    def __init__(
        self,
        twin: DigitalTwin,
        frame: int = 0,
        *,
        energy: np.ndarray | None = None,
        delocalisation: float = 1.2,
        dwell: float = 0.05,
        settle: float = 0.01,
        current_pa: float = 20.0,
        strain_amplitude: float = 0.02,
        seed: int | None = None,
        strain_law: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if dwell <= 0 or delocalisation <= 0:
            raise InputError(f"dwell ({dwell} s) and delocalisation ({delocalisation} Å) must be > 0")
        self.twin = twin
        self.frame = int(frame)
        self.energy = np.linspace(1.0, 40.0, 240) if energy is None else np.asarray(energy, dtype=np.float64)
        self.delocalisation = float(delocalisation)
        self.dwell = float(dwell)
        self.settle = float(settle)
        self.current_pa = float(current_pa)
        self.strain_amplitude = float(strain_amplitude)
        self.strain_law = strain_law
        self.conditions = twin.conditions(self.frame)
        self.pixel_size = float(self.conditions["pixel_size"])
        self.peaks = PEAKS[self.conditions["lattice"]]
        self._rng = np.random.default_rng([twin.seed if seed is None else seed, self.frame, 0x5BEC])
        pad = int(np.ceil(4 * self.delocalisation / self.pixel_size))
        (self._ox, self._oy), _ = twin.window(self.frame)
        scene = twin.scene(self.frame, pad=pad)
        self._tree = cKDTree(scene.xy)
        self._kind = scene.kind
        lattice = get_lattice(scene.lattice)
        self._edge = self._under_coordinated(scene.xy, scene.kind, 1.2 * lattice.min_separation)
        # Probe-weighted column count over a perfect host: the plasmon's reference intensity.
        density = len(lattice.sites) / abs(np.linalg.det(lattice.vectors()))
        self._pristine_mass = density * 2.0 * np.pi * self.delocalisation**2

    def _under_coordinated(self, xy: np.ndarray, kind: np.ndarray, reach: float) -> np.ndarray:
        # A present column with a missing neighbour: the rim of a hole, where edge states live.
        vac = np.flatnonzero(kind == VACANCY)
        edge = np.zeros(len(xy), dtype=bool)
        if len(vac):
            for near in self._tree.query_ball_point(xy[vac], reach):
                edge[near] = True
        return edge & (kind != VACANCY)

    def sample_xy(self, rowcol: np.ndarray) -> np.ndarray:
        """Sample coordinates (x, y, Å) of frame positions (row, col, px)."""
        rc = np.atleast_2d(np.asarray(rowcol, dtype=np.float64))
        return np.stack(
            [self._ox + rc[:, 1] * self.pixel_size, self._oy + rc[:, 0] * self.pixel_size], axis=1
        )

    def structure(self, rowcol: np.ndarray) -> LocalStructure:
        """Probe-weighted local structure at each position (row, col px)."""
        xy = self.sample_xy(rowcol)
        n = len(xy)
        sums = {k: np.zeros(n) for k in ("mass", "dopants", "vacancies", "edges")}
        s = self.delocalisation
        for i, near in enumerate(self._tree.query_ball_point(xy, 4.0 * s)):
            if not near:
                continue
            near = np.asarray(near)
            d2 = np.sum((self._tree.data[near] - xy[i]) ** 2, axis=1)
            g = np.exp(-d2 / (2.0 * s * s))
            kind = self._kind[near]
            sums["mass"][i] = g[kind != VACANCY].sum()
            sums["dopants"][i] = g[kind == SUBSTITUTED].sum()
            sums["vacancies"][i] = g[kind == VACANCY].sum()
            sums["edges"][i] = g[self._edge[near] & (kind == NORMAL)].sum()
        return LocalStructure(strain=self.strain(xy), **sums)

    def strain(self, xy: np.ndarray) -> np.ndarray:
        """Smooth strain field at sample points (x, y, Å): ``strain_law``, or a few Gaussian
        domains fixed by the seed."""
        if self.strain_law is not None:
            return np.asarray(self.strain_law(np.asarray(xy, dtype=np.float64)), dtype=np.float64)
        seed, region = self.twin.seed, int(self.conditions["region"])
        out = np.zeros(len(xy))
        for k in range(6):
            u = hash_uniform(seed, region, 0x57A1, k, np.arange(4))
            centre = np.array([self._ox, self._oy]) + (u[:2] - 0.25) * 80.0
            width = 8.0 + 12.0 * u[2]
            sign = 1.0 if u[3] < 0.5 else -1.0
            out += sign * np.exp(-np.sum((xy - centre) ** 2, axis=1) / (2.0 * width**2))
        return self.strain_amplitude * np.tanh(out)

    def electrons(self) -> float:
        """Electrons in one measurement (beam current × dwell)."""
        return self.current_pa * 1e-12 * self.dwell / 1.602e-19

    def expected(self, rowcol: np.ndarray) -> np.ndarray:
        """Noiseless spectra (n, n_e) in counts at positions (row, col px): the truth."""
        st = self.structure(rowcol)
        p = self.peaks
        e = self.energy[None, :]
        mass = st.mass[:, None] / self._pristine_mass  # ~1 over pristine host
        dop = st.dopants[:, None]
        defect = (st.vacancies + 0.5 * st.edges)[:, None]
        # Plasmon: red-shifted by missing mass, blue-shifted by compression (E_p ∝ sqrt(density)).
        shift = -0.06 * st.vacancies[:, None] - 1.5 * st.strain[:, None]
        e_p = p.plasmon_ev * (1.0 + shift)
        sig_p = p.plasmon_fwhm / 2.355
        shape = (
            1.0 * mass * np.exp(-((e - e_p) ** 2) / (2 * sig_p**2))
            + 0.35 * mass * np.exp(-((e - p.interband_ev) ** 2) / (2 * 0.8**2))
            + 0.45 * dop * np.exp(-((e - p.dopant_ev) ** 2) / (2 * 0.6**2))
            + 0.30 * defect * np.exp(-((e - p.defect_ev) ** 2) / (2 * 0.5**2))
            + 0.25 * (e / self.energy[0]) ** -2.5  # zero-loss tail and single-particle background
        )
        # Fraction of the beam scattered into the low-loss window per energy channel.
        per_channel = 5e-5 * (self.energy[1] - self.energy[0]) if len(self.energy) > 1 else 5e-5
        return (self.electrons() * per_channel * shape).astype(np.float64)

    def measure(self, rowcol: np.ndarray) -> Spectra:
        """Spectra with Poisson noise at positions (row, col px), with their cost."""
        rc = np.atleast_2d(np.asarray(rowcol, dtype=np.float64))
        ny, nx = self.twin.shape
        if len(rc) and ((rc < 0).any() or (rc[:, 0] > ny - 1).any() or (rc[:, 1] > nx - 1).any()):
            raise InputError(f"probe positions must lie inside the {ny}×{nx} px frame")
        lam = self.expected(rc)
        counts = self._rng.poisson(lam).astype(np.float32)
        n = len(rc)
        probe_area = np.pi * self.delocalisation**2  # Å², the area that receives the dose
        return Spectra(
            rowcol=rc,
            energy=self.energy.copy(),
            counts=counts,
            seconds=np.full(n, self.dwell + self.settle),
            dose=np.full(n, self.electrons() / probe_area),
        )

    def state(self) -> dict[str, float | int | str]:
        """Settings that reproduce this channel's measurements (for provenance)."""
        return {
            "kind": "twin-eels",
            "frame": self.frame,
            "lattice": str(self.conditions["lattice"]),
            "delocalisation_A": self.delocalisation,
            "dwell_s": self.dwell,
            "settle_s": self.settle,
            "current_pA": self.current_pa,
            "strain_amplitude": self.strain_amplitude,
            "strain_law": "domains"
            if self.strain_law is None
            else getattr(self.strain_law, "__name__", "custom"),
            "energy_min_eV": float(self.energy[0]),
            "energy_max_eV": float(self.energy[-1]),
            "n_energy": len(self.energy),
        }
