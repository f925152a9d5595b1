"""The fused ensemble network: K small U-Nets evaluated as one, through grouped convolutions.

Every convolution holds the K members' kernels side by side (``groups=K``), so one call
runs all members on the same frames: the members never see each other's channels, and
one oneDNN kernel over K×c channels vectorises far better on a CPU than K kernels over c.

Layout per member (channels ``widths = (c1, c2, c3)``), at the model scale:

- space-to-depth by 2 (a 2×2 block of pixels becomes 4 channels), so the first level
  already works at half resolution (where thin convolutions are cheap);
- encoder: two 3×3 convs at c1 (1/2), a strided 3×3 conv and a 3×3 at c2 (1/4),
  a strided 3×3 and a dilated 3×3 at c3 (1/8): the receptive field spans ~10 Å at
  0.2 Å/px, enough to tell a lattice from amorphous contamination;
- decoder: nearest upsampling, a 1×1 projection added to the skip (additive skips need
  no channel interleaving across members), a 3×3 conv; then a 1×1 head giving
  4 × ``n_classes`` channels at 1/2, depth-to-space back to full resolution.

Output per member: a heatmap per class in [0, 1] (Gaussian bumps on the columns) and two
offset channels, the sub-pixel displacement (rows, cols; model px) from each pixel's centre
to the nearest column (CenterNet-style: peaks give the pixel, offsets the fraction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_WIDTHS = (12, 24, 32)
MULTIPLE = 8  # frame sides must be multiples of this (space-to-depth, then two strided convs)


class FusedUNet(nn.Module):
    """``members`` U-Nets in one module; ``forward`` maps frames to per-member heatmaps.

    Input (B, 1, H, W) — every member sees the same frame — or (B, K, H, W) — member k
    sees channel k (training feeds each member its own batch). H and W multiples of 8.
    Output (B, K, n_classes + 2, H, W): class probabilities, then row and column offsets (px).
    """

    def __init__(
        self, members: int = 5, widths: tuple[int, int, int] = DEFAULT_WIDTHS, n_classes: int = 3
    ) -> None:
        super().__init__()
        self.members = int(members)
        self.widths = tuple(int(w) for w in widths)
        self.n_classes = int(n_classes)
        self.outputs = self.n_classes + 2  # heatmaps, then (row, col) offsets
        c1, c2, c3 = self.widths
        self.e1a = self._conv(4, c1)
        self.e1b = self._conv(c1, c1)
        self.e2a = self._conv(c1, c2, stride=2)
        self.e2b = self._conv(c2, c2)
        self.e3a = self._conv(c2, c3, stride=2)
        self.e3b = self._conv(c3, c3, dilation=2)
        self.u2 = self._conv(c3, c2, kernel=1)
        self.d2 = self._conv(c2, c2)
        self.u1 = self._conv(c2, c1, kernel=1)
        self.d1 = self._conv(c1, c1)
        self.head = self._conv(c1, 4 * self.outputs, kernel=1)

    def _conv(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
        k = self.members
        conv = nn.Conv2d(
            k * cin,
            k * cout,
            kernel,
            stride=stride,
            padding=dilation * (kernel // 2),
            dilation=dilation,
            groups=k,
        )
        # He init per member: fan-in of one group, as nn.Conv2d already computes it.
        return conv

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, self.members):
            raise ValueError(f"expected 1 or {self.members} input channels, got {x.shape[1]}")
        x = F.pixel_unshuffle(x, 2)  # (B, C*4, H/2, W/2), channel c*4+j: grouped by member
        if x.shape[1] == 4 and self.members > 1:
            x = x.repeat(1, self.members, 1, 1)
        return x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Skip features at 1/2 and 1/4 and the bottleneck at 1/8 (channels grouped by member)."""
        x = self._stem(x)
        s1 = F.relu(self.e1b(F.relu(self.e1a(x))))
        s2 = F.relu(self.e2b(F.relu(self.e2a(s1))))
        b = F.relu(self.e3b(F.relu(self.e3a(s2))))
        return s1, s2, b

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs (B, K, n_classes + 2, H, W): heatmap logits, then offsets (px)."""
        return self.logits_and_features(x)[0]

    def logits_and_features(
        self, x: torch.Tensor, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs (B, K, n_classes + 2, H, W) and ``embed``'s features (B, K·c3), in one pass.

        ``out``: a tensor of the outputs' shape (contiguous in its last two dimensions: a
        slice of a larger batch along the members) to write the outputs into, and return.
        """
        n, _, h, w = x.shape
        s1, s2, b = self.encode(x)
        y = F.relu(self.u2(F.interpolate(b, scale_factor=2.0, mode="nearest")) + s2)
        y = F.relu(self.d2(y))
        y = F.relu(self.u1(F.interpolate(y, scale_factor=2.0, mode="nearest")) + s1)
        y = F.relu(self.d1(y))
        head = self.head(y)
        if out is None:
            y = F.pixel_shuffle(head, 2)  # channel k*outputs + output
            return y.reshape(n, self.members, self.outputs, h, w), b.mean(dim=(2, 3))
        # pixel_shuffle(head, 2) written into ``out`` as one strided copy: channel
        # ((k·outputs + o)·2 + a)·2 + b of pixel (i, j) is output o of member k at (2i + a,
        # 2j + b). The member loop's shuffles, reshapes and concatenation were three copies
        # (3–4 % of its time on one CPU thread; the fused pass's one shuffle is quicker as it is).
        # A bfloat16 head is converted whole first: the strided copy is float32's alone.
        shuffled = head.to(out.dtype).unflatten(1, (self.members, self.outputs, 2, 2))
        out.view(n, self.members, self.outputs, h // 2, 2, w // 2, 2).copy_(
            shuffled.permute(0, 1, 2, 5, 3, 6, 4)
        )
        return out, b.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmaps through a sigmoid, offsets as they are: (B, K, n_classes + 2, H, W)."""
        out = self.logits(x)
        return torch.cat([torch.sigmoid(out[:, :, : self.n_classes]), out[:, :, self.n_classes :]], dim=2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck features averaged over the frame: (B, K·c3), member-major."""
        return self.encode(x)[2].mean(dim=(2, 3))

    def member(self, k: int) -> FusedUNet:
        """Member ``k`` alone, as a one-member network with a copy of its weights."""
        if not 0 <= k < self.members:
            raise IndexError(f"member {k} of {self.members}")
        single = FusedUNet(1, self.widths, self.n_classes)
        state = {}
        for name, value in self.state_dict().items():
            rows = value.shape[0] // self.members
            state[name] = value[k * rows : (k + 1) * rows].clone()
        single.load_state_dict(state)
        return single

    def select(self, keep: list[int]) -> FusedUNet:
        """A fused network of the members in ``keep`` (in that order)."""
        out = FusedUNet(len(keep), self.widths, self.n_classes)
        state = {}
        for name, value in self.state_dict().items():
            rows = value.shape[0] // self.members
            state[name] = torch.cat([value[k * rows : (k + 1) * rows] for k in keep])
        out.load_state_dict(state)
        return out

    @classmethod
    def stack(cls, nets: list[FusedUNet]) -> FusedUNet:
        """One fused network from several (their members concatenated in order)."""
        first = nets[0]
        out = cls(sum(n.members for n in nets), first.widths, first.n_classes)
        out.load_state_dict(
            {name: torch.cat([n.state_dict()[name] for n in nets]) for name in first.state_dict()}
        )
        return out

    def parameters_per_member(self) -> int:
        """Trainable parameters of one member."""
        return sum(p.numel() for p in self.parameters()) // self.members
