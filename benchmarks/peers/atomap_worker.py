"""atomap's documented pipeline on frames, run inside benchmarks/.venv-atomap only.

atomap is GPL-3: it is never imported by the project, only by this worker, which
``benchmarks/atomap_peer.py`` starts in a separate venv. The worker stays up (so the import
cost is paid once, as in a warm analysis session) and reads one request per line on stdin,
``{"image": "<frame.npy>", "pixel_size": <Å/px>, "out": "<rowcol.npy>"}``; it writes the found (row, column) positions
in px to
``out`` and answers one line ``RESULT {"seconds": ..., "n": ...}`` on stdout.

The pipeline is atomap 0.4's tutorial ("Finding the atom lattice", atomap.org): pick the
separation, ``get_atom_positions``, ``Sublattice``, ``find_nearest_neighbors``,
``refine_atom_positions_using_center_of_mass``, ``refine_atom_positions_using_2d_gaussian``.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
import time
import warnings

import numpy as np

warnings.simplefilter("ignore")  # hyperspy's deprecation chatter would bury the protocol on stderr

import atomap.api as am  # noqa: E402
import hyperspy.api as hs  # noqa: E402

BOND_A = 1.42  # Å: graphene's C–C bond length, the closest any two columns come


# The tutorial picks the separation by eye from ``get_feature_separation``'s plots; here it
# comes from physics, not from the frames. atomap keeps a pixel as a column only if it is the
# brightest in the (2·separation+1)² square around it (skimage's ``peak_local_max``). That square
# must not reach into a bonded neighbour's bright core (its tail there outshines a column a few %
# dimmer): every pixel of it must be nearer its own column than any neighbour 1.42 Å away,
# whatever the bond's direction. The worst direction is the diagonal, so the square's corner,
# separation·√2 away, must stay within half a bond: floor(14.2 px / 2 / √2) = 5 px.
# (A first derivation, floor(14.2 / √2) = 10 px, kept only the neighbours' centres out of the
# square and lost a quarter of the columns; see benchmarks/README.md.)
def separation(pixel_size: float) -> int:
    """atomap's ``separation`` in px for graphene at ``pixel_size`` Å/px (5 px at 0.1 Å/px)."""
    return math.floor(BOND_A / pixel_size / 2 / math.sqrt(2))


def locate(image: np.ndarray, pixel_size: float) -> np.ndarray:
    """(row, column) px of every column atomap finds and refines in ``image`` (atoms bright)."""
    signal = hs.signals.Signal2D(image)
    positions = am.get_atom_positions(signal, separation=separation(pixel_size))
    sublattice = am.Sublattice(positions, image=signal.data)
    sublattice.find_nearest_neighbors()
    # The tutorial's defaults (mask from the nearest-neighbour distance); only the progress bars
    # are off, which would flood the benchmark's log.
    sublattice.refine_atom_positions_using_center_of_mass(show_progressbar=False)
    sublattice.refine_atom_positions_using_2d_gaussian(show_progressbar=False)
    # atomap (like HyperSpy) is (x, y) = (column, row).
    return np.c_[sublattice.y_position, sublattice.x_position].astype(np.float64)


def main() -> None:
    print(
        "READY "
        + json.dumps(
            {
                "atomap": importlib.metadata.version("atomap"),
                "hyperspy": importlib.metadata.version("hyperspy"),
                "separation_px_at_0.1": separation(0.1),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        image = np.load(request["image"]).astype(np.float64)
        start = time.perf_counter()
        rowcol = locate(image, float(request["pixel_size"]))
        seconds = time.perf_counter() - start
        np.save(request["out"], rowcol)
        print("RESULT " + json.dumps({"seconds": seconds, "n": len(rowcol)}), flush=True)


if __name__ == "__main__":
    main()
