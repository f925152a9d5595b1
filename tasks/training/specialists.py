"""Specialist members: an ensemble deliberately diverse across imaging-condition regimes.

After Ghosh et al. 2021 (ensembles against out-of-distribution drift, selecting networks
from the ensemble): member selection under drift can only help if some members are better
than others on the drifted frames. Ensembles of generalists (``train.train_ensemble``)
are not — at a dose of 4e4 e/Å² every member of v0002 loses the same F1 — so here each
member is trained for a **regime** of imaging conditions (``conditions.REGIMES``):

- ``reference``: the standard training ranges (``ConditionRanges``);
- ``low-dose``: dose log-uniform 1e4–3e5 e/Å², the rest standard;
- ``blur``: |defocus| 90–180 Å (either sign), the rest standard.

A specialist's training pool is three parts its regime's samples and one part standard
ones, so it stays competent on reference conditions and the full ensemble keeps its
in-distribution F1. The regimes are narrow on purpose: these small networks have little
capacity to spare, and a member trained for a wide regime (|defocus| 70–200 Å and source
sizes to 1 Å, half its pool) gained only +0.06 F1 at 130 Å over a reference member, where
one trained for 90–180 Å gains +0.29 (0.715 against 0.427, twin frames at 130 Å).

To save CPU the members start from a trained ensemble's members (an extra member is a
slightly perturbed copy) and are fine-tuned all at once in the fused
network, each on its own pool of one combined training set. The regime of each member is
recorded in ``EnsembleConfig.regimes``; the regimes' ranges go into the lineage.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift.regimes import RegimeStatistics, statistics_document
from tasks.drift.spectrum import image_stats
from tasks.inference.ensemble import Ensemble, EnsembleConfig, default_device
from tasks.inference.network import FusedUNet

from .conditions import DEFAULT_LAYOUT, ConditionRanges, Regime, sample_conditions
from .data import TrainingSet, concatenate, make_training_set
from .regime_thresholds import FRAMES as REGIME_FRAMES
from .regime_thresholds import SEED as REGIME_SEED
from .regime_thresholds import regime_thresholds, with_thresholds
from .train import Log, fit

STANDARD = "standard"  # the source name of the samples drawn from the standard ranges


@dataclass(frozen=True)
class SpecialiseConfig:
    """What ``specialise`` does. The defaults made the shipped v0004 (~5 min on 2 idle cores)
    and, from it, with frames without a crystal in the ranges, v0005 (47 min on 2 shared cores).

    ``layout`` has one regime per member of the result; member k starts from member
    ``k % K`` of the source ensemble (K members), perturbed when it is a repeat.
    """

    layout: tuple[Regime, ...] = DEFAULT_LAYOUT
    standard_samples: int = 800  # twin samples from the standard ranges (shared by all members)
    regime_samples: int = 800  # twin samples per non-standard regime
    patch: int = 64  # model px per side of a training patch
    steps: int = 2000
    batch: int = 16  # per member and step
    lr: float = 2e-3  # as the members' own training: 1e-3 for 400 steps barely moved them
    perturb: float = 0.05  # noise on a repeated member, relative to each tensor's std
    seed: int = 0
    threads: int = 2
    calibration_frames: int = 16  # held-out standard frames (160² px) for the threshold
    regime_threshold_frames: int = REGIME_FRAMES  # each drifted regime's frames for its own threshold

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, for the model's lineage (regimes by name; ranges are in ``regimes``)."""
        out = asdict(self)
        out["layout"] = [r.name for r in self.layout]
        return out


@dataclass
class SpecialiseResult:
    """The specialised ensemble and what to record with it."""

    ensemble: Ensemble
    lineage: dict[str, Any]
    metrics: dict[str, Any]


def combined_training_set(
    layout: tuple[Regime, ...],
    standard_samples: int,
    regime_samples: int,
    seed: int,
    *,
    patch: int = 64,
    model_pixel_size: float = 0.2,
    sigma: float = 1.2,
) -> tuple[TrainingSet, dict[str, torch.Tensor]]:
    """One training set: the standard samples, then each distinct non-standard regime's.

    Returns the set and the sample indices of each source (``"standard"`` and the regime
    names). Source j's samples use seed ``seed + j`` so that no two sources share a sample.
    """
    sources: list[tuple[str, ConditionRanges, int]] = [(STANDARD, ConditionRanges(), standard_samples)]
    for regime in layout:
        if not regime.is_standard and regime.name not in {s[0] for s in sources}:
            sources.append((regime.name, regime.ranges, regime_samples))
    parts = {
        name: make_training_set(
            n, seed + j, patch=patch, model_pixel_size=model_pixel_size, sigma=sigma, ranges=ranges
        )
        for j, (name, ranges, n) in enumerate(sources)
    }
    data, index = concatenate(parts)
    return data, index


def member_pools(
    layout: tuple[Regime, ...], index: dict[str, torch.Tensor], gens: list[torch.Generator]
) -> list[torch.Tensor]:
    """Sample indices each member trains on: its regime's samples plus standard ones.

    A specialist of share s gets all n of its regime's samples and n·(1 − s)/s standard
    ones (a subset of its own, drawn by its generator: members of one regime differ); a
    standard regime gets all standard samples.
    """
    standard = index[STANDARD]
    pools = []
    for regime, gen in zip(layout, gens, strict=True):
        if regime.is_standard:
            pools.append(standard.clone())
            continue
        own = index[regime.name]
        n_std = min(len(standard), round(len(own) * (1.0 - regime.share) / regime.share))
        pick = standard[torch.randperm(len(standard), generator=gen)[:n_std]]
        pools.append(torch.cat([own, pick]))
    return pools


def initial_members(source: Ensemble, members: int, perturb: float, seed: int) -> tuple[FusedUNet, list[str]]:
    """A fused network of ``members`` members from ``source``'s: member k is source member
    ``k % K``; a repeat gets Gaussian noise of ``perturb`` × each tensor's std, or it would
    stay identical to its original (same weights, same gradients up to the data order).
    Returns the network and where each member came from."""
    gen = torch.Generator().manual_seed(seed + 31)
    nets, origin = [], []
    for k in range(members):
        j = k % source.members
        net = copy.deepcopy(source.net.member(j)).float().cpu()
        origin.append(f"{source.version}#m{j}")
        if k >= source.members:
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(
                        torch.randn(p.shape, generator=gen)
                        * (perturb * float(p.std()) if p.numel() > 1 else 0.0)
                    )
            origin[-1] += f" + {perturb:g}·std noise"
        nets.append(net)
    return FusedUNet.stack(nets), origin


def specialise(
    source: Ensemble,
    config: SpecialiseConfig = SpecialiseConfig(),
    log: Log = print,
    device: torch.device | None = None,
) -> SpecialiseResult:
    """Fine-tune ``source``'s members into the regimes of ``config.layout``; recalibrate the
    threshold on standard conditions. Deterministic given ``config.seed`` on one device."""
    from .evaluation import calibrate_threshold  # the twin evaluation is only needed here

    device = device or default_device()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    cfg = source.config
    data, index = combined_training_set(
        config.layout,
        config.standard_samples,
        config.regime_samples,
        config.seed,
        patch=config.patch,
        model_pixel_size=cfg.model_pixel_size,
        sigma=cfg.sigma,
    )
    log(
        f"{len(data)} twin samples ({', '.join(f'{k} {len(v)}' for k, v in index.items())}) in {time.perf_counter() - t0:.0f} s"
    )
    k = len(config.layout)
    net, origin = initial_members(source, k, config.perturb, config.seed)
    gens = [torch.Generator().manual_seed(config.seed * 1000 + 1 + m) for m in range(k)]
    pools = member_pools(config.layout, index, gens)
    losses = fit(net, data, config.steps, config.batch, config.lr, gens, device, log, "specialists", pools)
    ens_cfg = EnsembleConfig(
        **{**cfg.as_dict(), "members": k, "regimes": tuple(r.name for r in config.layout)}
    )
    ensemble = Ensemble(net, ens_cfg, device=device)
    # Calibrated on standard conditions: the full ensemble's operating point is the reference.
    threshold, f1_val = calibrate_threshold(ensemble, seed=config.seed + 10_000, n=config.calibration_frames)
    ensemble.config = EnsembleConfig(**{**ens_cfg.as_dict(), "threshold": threshold})
    log(f"threshold {threshold:.2f}: validation F1 {f1_val:.4f}")
    metrics = {
        "final_loss": float(np.mean(losses[-50:])),
        "validation_f1": f1_val,
        "threshold": threshold,
        "train_seconds": time.perf_counter() - t0,
        "device": str(device),
    }
    lineage = {
        "specialised_from": source.version,
        "regimes": [r.as_dict() for r in config.layout],
        "member_init": origin,
        "pools": {
            "sizes": [len(p) for p in pools],
            "regime_share": [
                float(np.isin(p.numpy(), index[STANDARD].numpy(), invert=True).mean()) for p in pools
            ],
        },
        "training_data": data.lineage,
        "specialise_config": config.as_dict(),
        "torch": torch.__version__,
        "regime_statistics": regime_statistics(
            config.layout,
            seed=config.seed + 20_000,
            # Each drifted regime's members decode at the threshold best on its own validation frames.
            thresholds=regime_thresholds(
                ensemble, config.layout, seed=config.seed + REGIME_SEED, frames=config.regime_threshold_frames
            ),
        ),
    }
    return SpecialiseResult(ensemble, lineage, metrics)


def regime_statistics(
    layout: tuple[Regime, ...] | list[Regime],
    *,
    frames: int = 96,
    side: int = 128,
    seed: int = 0,
    thresholds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Spectrum signatures of twin frames drawn from each regime's training ranges (lattices and
    pixel sizes included), as stored with the model: member selection compares the frames with
    these at decision time instead of rendering twin frames then (``tasks.drift.regimes``).
    ``thresholds``: the regimes' decoder thresholds (``regime_thresholds``), stored with them."""
    out = {}
    for j, regime in enumerate(dict.fromkeys(layout)):
        rng = np.random.default_rng(seed + 7919 * j)
        images = []
        for i in range(frames):
            base = sample_conditions(rng, regime.ranges)
            image = DigitalTwin(seed + i, DriftSchedule(base=base), (side, side)).acquire(0).image
            images.append(image_stats(image, float(base["pixel_size"])))
        out[regime.name] = RegimeStatistics.measure(images, regime.is_standard)
    document = statistics_document(out)
    return document if thresholds is None else with_thresholds(document, thresholds)
