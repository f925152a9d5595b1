"""The ensemble atom finder: frames in, atom columns with per-atom uncertainty out.

``Ensemble`` wraps a ``FusedUNet`` with what is needed to use it on real frames: the
model's pixel size (frames are resampled to it and coordinates mapped back), the peak
threshold and spacing, the class names, and the version it was loaded as. How the members'
network runs (one fused pass, a loop, ONNX Runtime) is measured per device and batch shape
(``execution``); the mean heatmap finds the columns, the members' spread at a column is
its uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from scopeflow.atoms import Atoms
from scopeflow.errors import InputError

from .execution import Execution
from .network import DEFAULT_WIDTHS, FusedUNet
from .peaks import local_maxima
from .refine import one_blas_thread
from .resample import Scaling, check_pixel_size, scaling_for, to_model_scale
from .verify import CheckContext, pooled, verify_many, verify_with_spectrum

BORDER = 4  # model px mirrored around each frame: columns on the edge are found whole
MAX_OFFSET = 1.5  # model px: an offset beyond this belongs to another pixel's column
BATCH = 16  # frames per forward pass: bounds memory (~40 MB per 256² frame for K=5)
# A checked batch's network runs in this many parts, each part's frames checked beside the
# next part's network (``Ensemble._checked``). Only the first part's network and the last
# frames' checks run alone; a part of 4 of 16 frames (168² model px) costs the network no
# more per frame than the whole batch (1 thread, 2026-11-30).
PIPELINE_PARTS = 4


@dataclass(frozen=True)
class EnsembleConfig:
    """Architecture and decoding settings, stored beside the weights.

    ``model_pixel_size`` Å/px the network works at; ``threshold`` on the mean heatmap (0–1)
    for a column; ``min_distance`` Å between two reported columns; ``sigma`` (model px) of
    the Gaussian bumps it was trained to draw. ``regimes`` names the imaging-condition regime
    each member was trained for (one per member, e.g. ``("reference", "low-dose", ...)``;
    empty for ensembles of generalists and for manifests written before the field existed).
    """

    members: int = 5
    widths: tuple[int, int, int] = DEFAULT_WIDTHS
    class_names: tuple[str, ...] = ("light", "medium", "heavy")
    model_pixel_size: float = 0.2
    threshold: float = 0.4
    min_distance: float = 0.9
    sigma: float = 1.2
    regimes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A regime list that does not match the members would silently mislabel a selection.
        if self.regimes and len(self.regimes) != self.members:
            raise InputError(f"{len(self.regimes)} regime names for {self.members} members: {self.regimes}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleConfig:
        """Inverse of ``as_dict`` (unknown keys refused: a config from a newer layout)."""
        known = set(cls.__dataclass_fields__)
        extra = set(data) - known
        if extra:
            raise InputError(f"unknown ensemble config keys: {sorted(extra)}")
        data = dict(data)
        for key in ("widths", "class_names", "regimes"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass
class Maps:
    """Network outputs of a batch at the model scale.

    ``members`` (B, K, C + 2, h, w): per member, C class heatmaps in [0, 1] then the row and
    column offsets (model px) to the nearest column; ``mean`` the average over members.
    """

    members: torch.Tensor
    scaling: Scaling

    @property
    def mean(self) -> torch.Tensor:
        return self.members.mean(dim=1)

    @property
    def heat(self) -> torch.Tensor:
        """Per member, the probability of a column (of its most likely class) at each pixel, (B, K, h, w)."""
        return self.members[:, :, :-2].amax(dim=2)

    @property
    def variance(self) -> torch.Tensor:
        """Per-pixel variance over members of the any-class heatmap, (B, h, w)."""
        return self.heat.var(dim=1, unbiased=False)


@dataclass(frozen=True)
class _Pass:
    """The network's outputs for one group of frames (one shape and pixel size): their
    positions in the call, the frames, the logits (B, K, C + 2, h, w) and the features."""

    index: list[int]
    stack: np.ndarray
    raw: torch.Tensor
    scaling: Scaling
    features: np.ndarray


@dataclass(frozen=True)
class Outputs:
    """One pass of the network over ``n`` frames (``Ensemble.outputs``)."""

    n: int
    parts: list[_Pass]


def _check_frame(img: np.ndarray, i: int) -> None:
    if img.ndim != 2:
        raise InputError(f"frame {i}: expected a 2-D image, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise InputError(f"frame {i}: contains NaN or infinite values")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Ensemble:
    """A fused ensemble ready for inference (eval mode, channels-last, on ``device``).

    ``check`` (default True): every frame's proposals are checked against the frame itself
    (``tasks.inference.verify``: crystal or not, vacancies, substitutions, positions refined on
    the input frame, calibrated uncertainty); False gives the network's raw decoding.
    ``execution`` how the network runs (``tasks.inference.execution``): ``"auto"`` (default)
    the fastest exact path on this device, measured on the first batch of each shape; or a
    path's name (``"fused"``, ``"loop"``, ``"onnx"``, ``"bf16"``, ...).
    """

    net: FusedUNet
    config: EnsembleConfig
    version: str = "unregistered"
    device: torch.device = field(default_factory=default_device)
    check: bool = True
    execution: str = "auto"

    def __post_init__(self) -> None:
        self.net = self.net.to(self.device).eval()
        if self.device.type == "cpu":
            # oneDNN's NHWC kernels are ~2× faster than NCHW for these thin convolutions.
            self.net = self.net.to(memory_format=torch.channels_last)
        self._runner = Execution(self.net, self.device, self.execution)

    @property
    def runner(self) -> Execution:
        """The network's execution (rebuilt if ``net`` or ``execution`` was reassigned)."""
        if self._runner.net is not self.net or self._runner.path != self.execution:
            self._runner = Execution(self.net, self.device, self.execution)
        return self._runner

    @property
    def members(self) -> int:
        return self.net.members

    # ------------------------------------------------------------------ inputs
    def _batches(self, frames: np.ndarray | Sequence[np.ndarray], pixel_size: float | Sequence[float]):
        """Validated (indices, stacked frames, pixel size) groups of equal shape and pixel size."""
        if isinstance(frames, np.ndarray) and frames.ndim == 2:
            frames = frames[None]
        frames = list(frames)
        sizes = [pixel_size] * len(frames) if np.isscalar(pixel_size) else list(pixel_size)
        if len(sizes) != len(frames):
            raise InputError(f"{len(frames)} frames but {len(sizes)} pixel sizes")
        groups: dict[tuple, list[int]] = {}
        for i, (img, p) in enumerate(zip(frames, sizes, strict=True)):
            img = np.asarray(img)
            _check_frame(img, i)
            groups.setdefault((img.shape, check_pixel_size(p)), []).append(i)
        for (_shape, p), idx in groups.items():
            for start in range(0, len(idx), BATCH):
                chunk = idx[start : start + BATCH]
                yield chunk, np.stack([np.asarray(frames[i], np.float32) for i in chunk]), p

    def _prepare(self, stack: np.ndarray, pixel_size: float) -> tuple[torch.Tensor, Scaling]:
        scaling = scaling_for(stack.shape[1:], pixel_size, self.config.model_pixel_size)
        x = torch.from_numpy(stack)[:, None].to(self.device)
        x = to_model_scale(x, scaling, border=BORDER)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, scaling

    # ------------------------------------------------------------------ outputs
    @torch.inference_mode()
    def maps(self, frames: np.ndarray, pixel_size: float) -> Maps:
        """Heatmaps of frames (B, H, W) of one shape and pixel size (Å/px), at the model scale."""
        stack = np.asarray(frames, np.float32)
        stack = stack[None] if stack.ndim == 2 else stack
        for i, img in enumerate(stack):
            _check_frame(img, i)
        x, scaling = self._prepare(stack, check_pixel_size(pixel_size))
        h, w = scaling.model_shape
        raw = self.runner(x)[0][..., BORDER : BORDER + h, BORDER : BORDER + w].float()
        n_cls = self.net.n_classes
        return Maps(torch.cat([torch.sigmoid(raw[:, :, :n_cls]), raw[:, :, n_cls:]], dim=2), scaling)

    def locate(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        pixel_size: float | Sequence[float],
        context: CheckContext | None = None,
    ) -> list[Atoms]:
        """Atom columns of each frame (2-D counts; pixel sizes in Å/px), in input pixels.
        ``context``: the run's recent frames, carried from call to call (``verify.CheckContext``)."""
        return self.analyse(frames, pixel_size, context)[0]

    @torch.inference_mode()
    def analyse(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        pixel_size: float | Sequence[float],
        context: CheckContext | None = None,
    ) -> tuple[list[Atoms], np.ndarray]:
        """Atoms of each frame and its encoder features (n, K·c3), from one pass of the network;
        ``context`` as for ``locate``."""
        n = 1 if isinstance(frames, np.ndarray) and frames.ndim == 2 else len(frames)
        out: list[Atoms] = [Atoms.empty()] * n
        features = np.zeros((n, self.members * self.config.widths[2]), np.float32)
        for idx, stack, p in self._batches(frames, pixel_size):
            x, scaling = self._prepare(stack, p)
            path = self.runner.chosen(x) if self.check and torch.get_num_threads() >= 2 else None
            if path is None or self.runner.runner(path) is None:
                # Unchecked, on one thread, or the first batch of its shape (the trial's).
                part = self._pass(idx, stack, x, scaling)
                self._atoms_into(out, part, None, context, p)
                features[idx] = part.features
                continue
            checked, features[idx] = self._checked(stack, x, scaling, path, context, p)
            for i, atoms in zip(idx, checked, strict=True):
                out[i] = atoms
        return out, features

    def _checked(
        self,
        stack: np.ndarray,
        x: torch.Tensor,
        scaling: Scaling,
        path: str,
        context: CheckContext | None,
        pixel_size: float,
    ) -> tuple[list[Atoms], np.ndarray]:
        """Checked atoms and features of ``stack`` (B, H, W), the network and the check side by side.

        ``x`` is the batch at the model's scale, ``path`` the network's path chosen for its
        shape (``Execution.chosen``): every part runs on it (at the part's thread count), so that a batch's frames come from
        the one path chosen for the batch (paths differ by float round-off), and the trial,
        made on a whole batch, is not made again for a part's shape.
        The network runs on the batch in ``PIPELINE_PARTS`` parts; each part's frames are
        checked (``verify``) in worker threads while the network runs on the next part, on
        half the threads torch may use (the first part on all of them: nothing is checked
        yet). Once the network is done, this thread checks the frames no worker has started,
        last first. Both halves of the work cost about the same per frame on a CPU (the
        network on one thread 9–12 ms, the check 9–10 ms, 2026-11-30), so both cores stay
        busy; run one after the other, the check's threads spend much of their time waiting
        on each other's GIL-held Python, and the cores idle. The network's outputs do not
        depend on its batch size or thread count (equal to the bit), so the atoms are those
        of ``verify_many`` over the whole batch, which pools the batch's frames at the end
        (``verify.pooled``) as it does. torch's thread count is the process's: it is lowered for
        the later parts and restored before this returns (torch run meanwhile from another
        thread runs on fewer threads).
        """
        threads = torch.get_num_threads()
        cpu = self.device.type == "cpu"
        beside = max(1, threads // 2) if cpu else threads  # the network's threads beside a check
        step = -(-len(stack) // PIPELINE_PARTS)
        n_cls = self.net.n_classes
        h, w = scaling.model_shape
        proposals: list[Atoms] = []
        features: list[np.ndarray] = []
        # BLAS on one thread throughout (``verify_many``); the limit is process-wide, so it is
        # entered once around every thread that fits.
        with (
            one_blas_thread(),
            ThreadPoolExecutor(threads - beside if cpu else threads, thread_name_prefix="verify") as pool,
        ):
            pending = []
            try:
                for start in range(0, len(stack), step):
                    part = stack[start : start + step]
                    run = self.runner.runner(path)
                    assert run is not None  # it ran the batch's shape at the full thread count
                    raw, feats = run(x[start : start + step])
                    raw = raw[..., BORDER : BORDER + h, BORDER : BORDER + w]
                    atoms = self._decode(raw[:, :, :n_cls], raw[:, :, n_cls:], scaling, logits=True)
                    pending.extend(
                        pool.submit(verify_with_spectrum, img, a) for img, a in zip(part, atoms, strict=True)
                    )
                    proposals.extend(atoms)
                    features.append(feats.float().cpu().numpy())
                    torch.set_num_threads(beside)
            finally:
                torch.set_num_threads(threads)
            done: list[tuple[Atoms, np.ndarray | None] | None] = [None] * len(stack)
            for i in reversed(range(len(stack))):
                if pending[i].cancel():
                    done[i] = verify_with_spectrum(stack[i], proposals[i])
            results = [c if c is not None else f.result() for c, f in zip(done, pending, strict=True)]
        # The spectra the check took go to ``pooled``, which keeps them rather than take them again.
        checked, spectra = [a for a, _ in results], [power for _, power in results]
        return pooled(stack, proposals, checked, context, pixel_size, spectra), np.concatenate(features)

    @torch.inference_mode()
    def outputs(
        self, frames: np.ndarray | Sequence[np.ndarray], pixel_size: float | Sequence[float]
    ) -> Outputs:
        """One pass of the network over ``frames``, kept so that several subsets of members
        can be decoded from it (``atoms_of``) without running the network again."""
        n = 1 if isinstance(frames, np.ndarray) and frames.ndim == 2 else len(frames)
        return Outputs(n, list(self._passes(frames, pixel_size)))

    def atoms_of(
        self, outputs: Outputs, members: Sequence[int] | None = None, threshold: float | None = None
    ) -> list[Atoms]:
        """Atoms of each frame as the ``members`` (all: None) alone find them: the columns
        ``select(members, threshold=threshold).locate`` finds (to the network's float tolerance),
        decoded from ``outputs`` at ``threshold`` (default the config's)."""
        if members is not None and (not members or any(not 0 <= k < self.members for k in members)):
            raise InputError(f"atoms_of needs member indices in 0..{self.members - 1}, got {list(members)}")
        out: list[Atoms] = [Atoms.empty()] * outputs.n
        for part in outputs.parts:
            self._atoms_into(out, part, members, threshold=threshold)
        return out

    def _passes(self, frames: np.ndarray | Sequence[np.ndarray], pixel_size: float | Sequence[float]):
        for idx, stack, p in self._batches(frames, pixel_size):
            yield self._pass(idx, stack, *self._prepare(stack, p))

    def _pass(self, idx: list[int], stack: np.ndarray, x: torch.Tensor, scaling: Scaling) -> _Pass:
        h, w = scaling.model_shape
        raw, feats = self.runner(x)
        crop = (..., slice(BORDER, BORDER + h), slice(BORDER, BORDER + w))
        return _Pass(idx, stack, raw[crop], scaling, feats.float().cpu().numpy())

    def _atoms_into(
        self,
        out: list[Atoms],
        part: _Pass,
        members: Sequence[int] | None,
        context: CheckContext | None = None,
        pixel_size: float = float("nan"),
        threshold: float | None = None,
    ) -> None:
        raw = part.raw if members is None else part.raw[:, list(members)]
        n_cls = self.net.n_classes
        # Logits, not probabilities: _decode applies the sigmoid only where it must.
        decoded = self._decode(raw[:, :, :n_cls], raw[:, :, n_cls:], part.scaling, threshold, logits=True)
        if self.check:
            # As many frames checked at once as torch may use threads (the user's thread cap):
            # the network has finished with the cores by now.
            decoded = verify_many(
                part.stack, decoded, workers=torch.get_num_threads(), context=context, pixel_size=pixel_size
            )
        for i, atoms in zip(part.index, decoded, strict=True):
            out[i] = atoms

    def decode(self, maps: Maps, threshold: float | None = None) -> list[Atoms]:
        """Atoms from network outputs (at ``threshold``, default the config's), in input px.

        A column sits at a local maximum of the members' mean heatmap; its position is that
        pixel plus the members' mean offset there, mapped back to the input frame. Its
        uncertainty is the standard deviation of the members' votes (0: all members find
        it, 0.5: they split evenly); the members' spread of positions is ``position_std`` (Å).
        """
        return self._decode(maps.members[:, :, :-2], maps.members[:, :, -2:], maps.scaling, threshold)

    def _decode(
        self,
        probs: torch.Tensor,
        offsets: torch.Tensor,
        scaling: Scaling,
        threshold: float | None = None,
        logits: bool = False,
    ) -> list[Atoms]:
        """``probs`` (B, K, C, h, w) class probabilities (or logits), ``offsets`` (B, K, 2, h, w) in model px."""
        cfg = self.config
        # A column of any class: the most likely class's probability (one class is on at a column).
        per_member = probs.amax(dim=2)  # (B, K, h, w)
        if logits:
            per_member = torch.sigmoid(per_member)
        heat = per_member.mean(dim=1)
        radius = max(1, int(cfg.min_distance / cfg.model_pixel_size))
        idx = local_maxima(heat, cfg.threshold if threshold is None else threshold, radius)
        b, r, c = idx[:, 0], idx[:, 1], idx[:, 2]
        shifts = offsets[b, :, :, r, c].float().clamp(-MAX_OFFSET, MAX_OFFSET)  # (n, K, 2)
        rowcol = idx[:, 1:].to(shifts.dtype) + shifts.mean(dim=1)
        if probs.shape[1] > 1 and len(b):
            # Each member votes for the column if its own heatmap passes the threshold within
            # one pixel of it; the votes' standard deviation is the column's uncertainty. (The
            # spread of the members' peak heights is no guide: it is as large on familiar frames.)
            # Each member's maximum over the 3×3 pixels around each column, gathered there alone
            # (pooling the whole (B, K, h, w) maps cost ~2 ms a frame); indices clamped to the
            # map repeat an edge pixel, which leaves a maximum as it is.
            h, w = per_member.shape[-2:]
            step = torch.arange(-1, 2, device=r.device)
            rows = (r[:, None] + step).clamp(0, h - 1)[:, :, None]
            cols = (c[:, None] + step).clamp(0, w - 1)[:, None, :]
            local = per_member[b[:, None, None], :, rows, cols].amax(dim=(1, 2))  # (n, K)
            votes = (local > (cfg.threshold if threshold is None else threshold)).float().mean(dim=1)
            spread = (votes * (1.0 - votes)).sqrt()
            position_std = shifts.var(dim=1, unbiased=False).sum(dim=1).sqrt() * cfg.model_pixel_size
        else:
            spread = torch.zeros(len(b), dtype=heat.dtype, device=heat.device)
            votes = torch.ones_like(spread)
            position_std = spread
        score = heat[b, r, c]
        cls = probs[b, :, :, r, c].mean(dim=1).argmax(dim=1) if len(b) else torch.zeros_like(b)
        b_np = b.cpu().numpy()
        rc = scaling.to_input(rowcol.cpu().numpy())
        # A column belongs to the frame if its centre is on one of its pixels (as in the truth).
        inside = ((rc > -0.5) & (rc < np.array(scaling.shape) - 0.5)).all(axis=1)
        spread_np, pos_np, score_np, cls_np, votes_np = (
            t.cpu().numpy() for t in (spread, position_std, score, cls, votes)
        )
        atoms = []
        for i in range(probs.shape[0]):
            sel = (b_np == i) & inside
            atoms.append(
                Atoms(
                    rowcol=rc[sel],
                    uncertainty=spread_np[sel].astype(np.float32),
                    score=score_np[sel].astype(np.float32),
                    cls=cls_np[sel].astype(np.int8),
                    position_std=pos_np[sel].astype(np.float32),
                    votes=votes_np[sel].astype(np.float32),
                )
            )
        return atoms

    @torch.inference_mode()
    def embed(
        self, frames: np.ndarray | Sequence[np.ndarray], pixel_size: float | Sequence[float]
    ) -> np.ndarray:
        """Encoder features per frame, (n, K·c3): the bottleneck of every member averaged over
        the frame (member-major). Drift detectors compare their distribution over time."""
        n = 1 if isinstance(frames, np.ndarray) and frames.ndim == 2 else len(frames)
        out = np.zeros((n, self.members * self.config.widths[2]), np.float32)
        for idx, stack, p in self._batches(frames, pixel_size):
            x, _ = self._prepare(stack, p)
            out[idx] = self.net.embed(x).float().cpu().numpy()
        return out

    def member(self, k: int) -> Ensemble:
        """Member ``k`` alone, as a one-member ensemble (for per-member loops and selection)."""
        return Ensemble(
            self.net.member(k),
            self._config_for([k]),
            f"{self.version}#m{k}",
            self.device,
            self.check,
            self.execution,
        )

    def select(self, keep: Sequence[int], threshold: float | None = None) -> Ensemble:
        """The members in ``keep`` as a fused ensemble (drift-aware member selection), decoding
        at ``threshold`` (default the config's: a regime's members may store their own)."""
        keep = list(keep)
        if not keep or any(not 0 <= k < self.members for k in keep):
            raise InputError(f"select needs member indices in 0..{self.members - 1}, got {keep}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise InputError(f"a heatmap threshold must be in (0, 1), got {threshold}")
        config = self._config_for(keep)
        return Ensemble(
            self.net.select(keep),
            config if threshold is None else replace(config, threshold=float(threshold)),
            f"{self.version}[{','.join(map(str, keep))}]",
            self.device,
            self.check,
            self.execution,
        )

    def _config_for(self, keep: Sequence[int]) -> EnsembleConfig:
        """The config of the members in ``keep``: each keeps its regime name."""
        regimes = tuple(self.config.regimes[k] for k in keep) if self.config.regimes else ()
        return EnsembleConfig(**{**self.config.as_dict(), "members": len(keep), "regimes": regimes})

    # ------------------------------------------------------------------ persistence
    def tensors(self) -> dict[str, torch.Tensor]:
        """Weights as a flat dict of contiguous CPU tensors (for safetensors)."""
        return {k: v.detach().to("cpu").contiguous() for k, v in self.net.state_dict().items()}

    @classmethod
    def from_tensors(
        cls,
        tensors: dict[str, torch.Tensor],
        config: EnsembleConfig,
        version: str = "unregistered",
        device: torch.device | None = None,
        execution: str = "auto",
    ) -> Ensemble:
        """An ensemble from saved weights and its config (``execution`` as in the class)."""
        net = FusedUNet(config.members, config.widths, len(config.class_names))
        net.load_state_dict(tensors)
        return cls(net, config, version, device or default_device(), execution=execution)
