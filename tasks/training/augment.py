"""On-the-fly augmentation of normalised patches: symmetry, contrast, background, noise.

Scale, rotation, blur, dose and contamination come from the twin's conditions already;
these add what the twin does not vary: the dihedral symmetries of the square grid, a
non-linear detector response (gamma), a slowly varying background (thickness, tails)
and extra white noise, then renormalise as inference does.
"""

from __future__ import annotations

import torch

from tasks.inference.resample import normalise


def augment(
    images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented copies of ``images`` (B, 1, S, S) and ``targets`` (B, C + 2, S, S), driven by ``gen``.

    The last two target channels are (row, col) offset vectors: the symmetries move them as
    maps and turn them as vectors.
    """
    b = images.shape[0]
    xs, ys = [], []
    rot = torch.randint(0, 4, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    for i in range(b):
        x, y = images[i], targets[i].float()
        for _ in range(int(rot[i])):
            # rot90 sends pixel (r, c) to (W-1-c, r): a vector (dr, dc) turns into (-dc, dr).
            x, y = torch.rot90(x, 1, (1, 2)), torch.rot90(y, 1, (1, 2))
            y = torch.cat([y[:-2], -y[-1:], y[-2:-1]])
        if flip[i]:
            x, y = x.flip(2), y.flip(2)
            y = torch.cat([y[:-1], -y[-1:]])
        xs.append(x)
        ys.append(y)
    x = torch.stack(xs)
    y = torch.stack(ys)
    # Gamma on the frame's range: HAADF detectors and abTEM's thickness response are not linear.
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    gamma = torch.exp(torch.empty(b, 1, 1, 1).uniform_(-0.4, 0.4, generator=gen))
    x = ((x - lo) / (hi - lo).clamp_min(1e-6)).pow(gamma)
    # A linear background ramp of random direction and strength (relative to the range).
    s = x.shape[-1]
    ramp = torch.linspace(-0.5, 0.5, s)
    angle = torch.rand(b, generator=gen) * 6.2832
    strength = torch.rand(b, generator=gen) * 0.4
    bg = (
        torch.cos(angle)[:, None, None] * ramp[None, :, None]
        + torch.sin(angle)[:, None, None] * ramp[None, None, :]
    )
    x = x + (strength[:, None, None] * bg)[:, None]
    noise = torch.rand(b, generator=gen) * 0.15 * (torch.rand(b, generator=gen) < 0.3)
    x = x + noise[:, None, None, None] * torch.randn(x.shape, generator=gen)
    return normalise(x), y
