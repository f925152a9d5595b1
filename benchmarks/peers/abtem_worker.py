"""Noise-free HAADF frames of materials the twin and the drift streams never saw, by abTEM.

Runs ONLY in ``benchmarks/.venv-abtem`` (abTEM is GPL-3 and never a dependency of the project);
``benchmarks/drift_unseen.py`` starts it once and caches what it writes. The settings follow
../shared/data/abtem-graphene (its README): 60 kV, 25 mrad, Cs 0, annular detector 70–200 mrad,
Kirkland potentials in 1 Å slices, the probe scanned at Nyquist and Fourier-interpolated to
0.1 Å/px. The graphene frames' 0.35 Å source blur is NOT applied here: the benchmark applies
every source size itself (so that a source-size step is the same operation as the base blur).
The potential is sampled at 0.07 Å instead of 0.05 Å to keep this within minutes on 2 cores:
its antialiasing aperture (2/3 of 1/(2·0.07 Å) = 4.8 Å⁻¹, 232 mrad at 60 kV) still passes the
whole detector (200 mrad).

Usage: ``python abtem_worker.py OUT_DIR`` → OUT_DIR/{material}_df{0,40,80}.npy (fraction of the
probe's intensity on the detector per pixel) and OUT_DIR/index.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import abtem
import numpy as np
from ase.build import graphene, mx2

PIXEL = 0.1  # Å/px, as the graphene frames
DEFOCI = (0.0, 40.0, 80.0)  # Å


def mos2():
    """2H-MoS2 monolayer, 6 × 4 orthogonal cells (~19 × 22 Å), one S and one Mo vacancy."""
    atoms = abtem.orthogonalize_cell(mx2(formula="MoS2", kind="2H", a=3.18, thickness=3.19, vacuum=2.0))
    atoms *= (6, 4, 1)
    mo = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "Mo"]
    s = [i for i, x in enumerate(atoms.get_chemical_symbols()) if x == "S"]
    del atoms[sorted([mo[len(mo) // 3], s[2 * len(s) // 3]], reverse=True)]
    return atoms


def hbn():
    """Hexagonal BN monolayer, 8 × 5 orthogonal cells (~20 × 22 Å), one B and one N vacancy."""
    atoms = graphene(formula="BN", a=2.504, vacuum=2.0)
    atoms = abtem.orthogonalize_cell(atoms)
    atoms *= (8, 5, 1)
    b = [i for i, x in enumerate(atoms.get_chemical_symbols()) if x == "B"]
    n = [i for i, x in enumerate(atoms.get_chemical_symbols()) if x == "N"]
    del atoms[sorted([b[len(b) // 4], n[3 * len(n) // 4]], reverse=True)]
    return atoms


MATERIALS = {"mos2": mos2, "hbn": hbn}


def frame(atoms, defocus: float) -> tuple[np.ndarray, float]:
    """HAADF image at ``defocus`` (Å), interpolated to ~0.1 Å/px; and its exact pixel size."""
    potential = abtem.Potential(
        atoms, sampling=0.07, slice_thickness=1.0, projection="infinite", parametrization="kirkland"
    )
    probe = abtem.Probe(energy=60e3, semiangle_cutoff=25.0, defocus=defocus, Cs=0.0)
    probe.grid.match(potential)
    detector = abtem.AnnularDetector(inner=70.0, outer=200.0)
    scan = abtem.GridScan(start=(0, 0), end=potential.extent, sampling=probe.aperture.nyquist_sampling)
    image = probe.scan(potential, scan=scan, detectors=detector).compute(progress_bar=False)
    extent = potential.extent
    gpts = (round(extent[0] / PIXEL), round(extent[1] / PIXEL))
    image = image.interpolate(gpts=gpts)
    # abTEM's axes are (x, y); rows of our frames are y.
    return np.asarray(image.array, dtype=np.float32).T, float(extent[0] / gpts[0])


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    abtem.config.set({"device": "cpu", "fft": "fftw"})
    index: dict = {"abtem": abtem.__version__, "materials": {}}
    for name, build in MATERIALS.items():
        atoms = build()
        entry = {"atoms": len(atoms), "formula": atoms.get_chemical_formula(), "frames": {}}
        for df in DEFOCI:
            t0 = time.perf_counter()
            img, p = frame(atoms, df)
            np.save(out / f"{name}_df{df:.0f}.npy", img)
            entry["frames"][f"{df:.0f}"] = f"{name}_df{df:.0f}.npy"
            entry["pixel_size_A"] = p
            print(
                f"[abtem] {name} df {df:.0f} Å: {img.shape} in {time.perf_counter() - t0:.0f} s", flush=True
            )
        index["materials"][name] = entry
    (out / "index.json").write_text(json.dumps(index, indent=1))


if __name__ == "__main__":
    main()
