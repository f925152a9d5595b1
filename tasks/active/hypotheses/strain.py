"""Three laws of the plasmon energy against position (x, y Å from the survey's centre).

The bulk plasmon's energy follows the valence-electron density (E_p ∝ √n), so strain shifts
it: under compression it rises, under tension it falls. Which strain field a sample holds is
the hypothesis: a uniform gradient (bending), a point-like inclusion (a misfitting cluster or
a bubble: a bump that decays with distance), or a domain wall (two strain states joined over
a width). Priors: the offset within 1 eV of the nominal plasmon; shifts of up to ~1 eV
(a few % strain × dE/dε ≈ 1.5 E_p); positions within the ~40 Å field of view.
"""

from __future__ import annotations

import torch

from ..structured import Hypothesis, Parameter


def _gradient(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return p["e0"] + p["gx"] * x[..., 0] + p["gy"] * x[..., 1]


def _inclusion(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    r2 = (x[..., 0] - p["x0"]) ** 2 + (x[..., 1] - p["y0"]) ** 2
    return p["e0"] + p["a"] * torch.exp(-r2 / (2 * p["w"] ** 2))


def _wall(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    # (kx, ky) is the wall's normal over its width (1/Å); c its offset from the centre (in widths).
    return p["e0"] + p["a"] * torch.tanh(p["kx"] * x[..., 0] + p["ky"] * x[..., 1] - p["c"])


def hypotheses(nominal: float) -> list[Hypothesis]:
    """The three strain laws for a plasmon expected at ``nominal`` eV."""
    e0 = Parameter("e0", nominal, 1.0, "eV")
    return [
        Hypothesis(
            "gradient",
            (e0, Parameter("gx", 0.0, 0.05, "eV/Å"), Parameter("gy", 0.0, 0.05, "eV/Å")),
            _gradient,
            "uniform strain gradient (bending): E = e0 + gx·x + gy·y",
        ),
        Hypothesis(
            "inclusion",
            (
                e0,
                Parameter("a", 0.0, 1.0, "eV"),
                Parameter("x0", 0.0, 10.0, "Å"),
                Parameter("y0", 0.0, 10.0, "Å"),
                Parameter("w", 1.8, 0.6, "Å", log=True),  # median e^1.8 ≈ 6 Å
            ),
            _inclusion,
            "point-like inclusion: E = e0 + a·exp(−r²/2w²) around (x0, y0)",
        ),
        Hypothesis(
            "wall",
            (
                e0,
                Parameter("a", 0.0, 1.0, "eV"),
                Parameter("kx", 0.0, 0.3, "1/Å"),
                Parameter("ky", 0.0, 0.3, "1/Å"),
                Parameter("c", 0.0, 2.0, ""),
            ),
            _wall,
            "domain wall: E = e0 + a·tanh(kx·x + ky·y − c)",
        ),
    ]
