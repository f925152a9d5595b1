"""Training the fused ensemble on twin data, after the ELIT workflow (Ghosh et al. 2021).

1. A **baseline** network (one member) is trained on the whole training set.
2. The **members** start from the baseline shrunk and perturbed towards a fresh random
   initialisation of their own (Ash & Adams' shrink-and-perturb: w = 0.6·w_base + 0.4·w_k),
   then train all at once in the fused network, each on its own bootstrap resample of the
   training set, data order and augmentation stream (member k's generator is seeded by
   (seed, k)): they agree where the data is clear and diverge where it is not — their
   spread is the uncertainty. Plain copies of the baseline would stay near-identical.
3. The peak threshold is calibrated on held-out twin frames.

Deterministic given ``TrainConfig.seed`` on one device and thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tasks.inference.ensemble import Ensemble, EnsembleConfig, default_device
from tasks.inference.network import DEFAULT_WIDTHS, FusedUNet

from .augment import augment
from .conditions import ConditionRanges
from .data import TrainingSet, make_training_set


@dataclass(frozen=True)
class TrainConfig:
    """What ``train_ensemble`` does; the defaults make the shipped ensemble (minutes on 2 cores)."""

    seed: int = 0
    members: int = 5
    widths: tuple[int, int, int] = DEFAULT_WIDTHS
    samples: int = 1500
    patch: int = 64  # model px per side of a training patch (12.8 Å at 0.2 Å/px)
    model_pixel_size: float = 0.2  # Å/px
    sigma: float = 1.2  # model px, target bump width
    batch: int = 32  # baseline batch; the fused members take batch // 2 each
    baseline_steps: int = 1000
    member_steps: int = 400
    lr: float = 3e-3
    member_lr: float = 2e-3
    threads: int = 2
    calibration_frames: int = 16  # held-out twin frames (160² px) for the threshold
    ranges: ConditionRanges = field(default_factory=ConditionRanges)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, for the model's lineage."""
        return asdict(self)


@dataclass
class TrainResult:
    """The trained ensemble, its baseline, and what to record with them."""

    ensemble: Ensemble
    baseline: Ensemble
    lineage: dict[str, Any]
    metrics: dict[str, Any]


Log = Callable[[str], None]
OFFSET_WEIGHT = 0.5  # L1 offset loss (px) against the heatmap's cross-entropy
SHRINK, PERTURB = 0.6, 0.4  # member init: SHRINK·baseline + PERTURB·fresh initialisation


# A member's pool: sample indices drawn in shuffled epochs, or strata ``[(indices, k), ...]``
# of which each batch takes k samples (the k's sum to the batch).
Pool = torch.Tensor | Sequence[tuple[torch.Tensor, int]]


def _step_batches(
    n: int, steps: int, batch: int, gen: torch.Generator, pool: Pool | None = None
) -> list[torch.Tensor]:
    """Index batches for ``steps`` steps: shuffled epochs over ``pool`` (default all ``n``);
    with strata, each stratum's own shuffled epochs fill its k places of every batch, so its
    share of each batch holds however long the training (not its share of the samples)."""
    if pool is None or isinstance(pool, torch.Tensor):
        strata = [(torch.arange(n) if pool is None else pool, batch)]
    else:
        strata = [(idx, k) for idx, k in pool if k > 0]
    if sum(k for _, k in strata) != batch:
        raise ValueError(f"strata take {sum(k for _, k in strata)} samples a batch, not {batch}")
    plans = []
    for idx, k in strata:
        m = len(idx)
        if m == 0:
            raise ValueError("a stratum with places in the batch holds no samples")
        order = torch.cat([idx[torch.randperm(m, generator=gen)] for _ in range(steps * k // m + 1)])
        plans.append(order[: steps * k].view(steps, k))
    return [torch.cat([plan[i] for plan in plans]) for i in range(steps)]


def fit(
    net: FusedUNet,
    data: TrainingSet,
    steps: int,
    batch: int,
    lr: float,
    gens: list[torch.Generator],
    device: torch.device,
    log: Log,
    label: str,
    pools: Sequence[Pool] | None = None,
) -> list[float]:
    """Adam with cosine decay; member k of ``net`` trains on batches drawn by ``gens[k]``
    from ``pools[k]`` (sample indices or strata, ``_step_batches``; all samples when None)."""
    net.train().to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=lr * 0.05)
    plans = [
        _step_batches(len(data), steps, batch, g, None if pools is None else pools[k])
        for k, g in enumerate(gens)
    ]
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        xs, ys = zip(
            *(
                augment(data.images[p[step]], data.targets[p[step]], g)
                for p, g in zip(plans, gens, strict=True)
            ),
            strict=True,
        )
        x = torch.cat(xs, dim=1).to(device)  # (B, K, S, S): member k sees its own batch
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.stack(ys, dim=1).to(device)  # (B, K, C, S, S)
        out = net.logits(x)
        n_cls = net.n_classes
        heat_loss = F.binary_cross_entropy_with_logits(out[:, :, :n_cls], y[:, :, :n_cls])
        # Offsets are learnt only near columns (NaN elsewhere), weighted by how near.
        target = y[:, :, n_cls:]
        known = torch.isfinite(target)
        weight = known * y[:, :, :n_cls].amax(dim=2, keepdim=True)
        off_err = (out[:, :, n_cls:] - torch.nan_to_num(target)).abs() * weight
        loss = heat_loss + OFFSET_WEIGHT * off_err.sum() / weight.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(
                f"{label} step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f} ({time.perf_counter() - t0:.0f} s)"
            )
    net.eval()
    return losses


def train_ensemble(
    config: TrainConfig = TrainConfig(),
    log: Log = print,
    device: torch.device | None = None,
    baseline: FusedUNet | None = None,
) -> TrainResult:
    """Train a baseline (or start from ``baseline``, a one-member network), then
    ``config.members`` members from it; calibrate; return both."""
    from .evaluation import calibrate_threshold  # the twin evaluation is only needed here

    device = device or default_device()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    data = make_training_set(
        config.samples,
        config.seed,
        patch=config.patch,
        model_pixel_size=config.model_pixel_size,
        sigma=config.sigma,
        ranges=config.ranges,
    )
    t_data = time.perf_counter() - t0
    log(f"{len(data)} twin samples in {t_data:.0f} s")
    if baseline is not None:
        if baseline.members != 1 or baseline.widths != tuple(config.widths):
            raise ValueError(f"baseline must be one member of widths {config.widths}")
        base_net, base_losses = baseline, [float("nan")]
        log("baseline given: training the members from it")
    else:
        base_net, base_losses = FusedUNet(1, config.widths, data.targets.shape[1] - 2), []
    base_gen = torch.Generator().manual_seed(config.seed)
    base_losses = base_losses or fit(
        base_net, data, config.baseline_steps, config.batch, config.lr, [base_gen], device, log, "baseline"
    )
    net = FusedUNet.stack([base_net] * config.members)
    torch.manual_seed(config.seed + 1)
    fresh = FusedUNet(config.members, config.widths, base_net.n_classes)
    with torch.no_grad():
        for p, q in zip(net.parameters(), fresh.parameters(), strict=True):
            p.mul_(SHRINK).add_(q, alpha=PERTURB)
    gens = [torch.Generator().manual_seed(config.seed * 1000 + 1 + k) for k in range(config.members)]
    pools = [torch.randint(len(data), (len(data),), generator=g) for g in gens]  # bootstrap resamples
    member_losses = fit(
        net,
        data,
        config.member_steps,
        max(1, config.batch // 2),
        config.member_lr,
        gens,
        device,
        log,
        "members",
        pools,
    )
    ens_cfg = EnsembleConfig(
        members=config.members,
        widths=config.widths,
        model_pixel_size=config.model_pixel_size,
        sigma=config.sigma,
    )
    ensemble = Ensemble(net, ens_cfg, device=device)
    baseline = Ensemble(base_net, EnsembleConfig(**{**ens_cfg.as_dict(), "members": 1}), device=device)
    threshold, f1_val = calibrate_threshold(ensemble, seed=config.seed + 10_000, n=config.calibration_frames)
    ensemble.config = EnsembleConfig(**{**ens_cfg.as_dict(), "threshold": threshold})
    baseline.config = EnsembleConfig(**{**baseline.config.as_dict(), "threshold": threshold})
    log(f"threshold {threshold:.2f}: validation F1 {f1_val:.4f}")
    metrics = {
        "baseline_final_loss": float(np.mean(base_losses[-50:])),
        "members_final_loss": float(np.mean(member_losses[-50:])),
        "validation_f1": f1_val,
        "threshold": threshold,
        "train_seconds": time.perf_counter() - t0,
        "device": str(device),
    }
    lineage = {"training_data": data.lineage, "train_config": config.as_dict(), "torch": torch.__version__}
    return TrainResult(ensemble, baseline, lineage, metrics)
