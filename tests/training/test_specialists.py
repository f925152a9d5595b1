"""Specialist members: pools follow the regimes, and the regime names travel with the model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from scopeflow.errors import InputError
from storage.models import DEFAULT_MODELS_DIR, ModelRegistry
from tasks.drift.regimes import read_statistics
from tasks.inference.ensemble import Ensemble, EnsembleConfig
from tasks.inference.network import FusedUNet
from tasks.inference.registry import load_ensemble, save_ensemble
from tasks.training.conditions import BLUR, DEFAULT_LAYOUT, LOW_DOSE, REFERENCE, ConditionRanges, Regime
from tasks.training.regime_thresholds import GRID
from tasks.training.regime_thresholds import main as threshold_cli
from tasks.training.specialists import (
    STANDARD,
    SpecialiseConfig,
    combined_training_set,
    member_pools,
    specialise,
)

CPU = torch.device("cpu")
WIDTHS = (4, 8, 8)


def tiny_ensemble(members: int = 2, regimes: tuple[str, ...] = ()) -> Ensemble:
    torch.manual_seed(0)
    cfg = EnsembleConfig(members=members, widths=WIDTHS, regimes=regimes)
    return Ensemble(FusedUNet(members, WIDTHS), cfg, device=CPU)


def test_default_regimes_cover_what_they_name() -> None:
    std = ConditionRanges()
    assert REFERENCE.is_standard and not LOW_DOSE.is_standard and not BLUR.is_standard
    assert LOW_DOSE.ranges.dose == (1e4, 3e5) and replace(LOW_DOSE.ranges, dose=std.dose) == std
    assert replace(BLUR.ranges, defocus=std.defocus) == std
    # Regimes beyond the standard ranges, not overlapping them: the frames' vote tells them apart.
    assert BLUR.ranges.defocus[0] >= std.defocus[1] and LOW_DOSE.ranges.dose[0] < std.dose[0]
    assert [r.name for r in DEFAULT_LAYOUT] == [
        "reference",
        "reference",
        "low-dose",
        "low-dose",
        "blur",
        "blur",
    ]
    with pytest.raises(ValueError, match="share"):
        Regime("none", share=0.0)


def test_member_pools_respect_regimes() -> None:
    index = {STANDARD: torch.arange(0, 20), "low-dose": torch.arange(20, 30), "blur": torch.arange(30, 40)}
    gens = [torch.Generator().manual_seed(k) for k in range(len(DEFAULT_LAYOUT))]
    pools = member_pools(DEFAULT_LAYOUT, index, gens)
    for regime, pool in zip(DEFAULT_LAYOUT, pools, strict=True):
        own = set(index[regime.name].tolist()) if not regime.is_standard else set()
        std = set(index[STANDARD].tolist())
        assert set(pool.tolist()) <= own | std  # never another regime's samples
        if regime.is_standard:
            assert sorted(pool.tolist()) == sorted(std)
        else:
            assert own <= set(pool.tolist())  # every sample of its regime
            assert sum(i in own for i in pool.tolist()) == round(len(pool) * regime.share)
            assert len(set(pool.tolist())) == len(pool)  # no repeats
    # Two members of one regime draw different standard parts (they stay diverse).
    assert not torch.equal(pools[2], pools[3])


def test_combined_training_set_draws_each_regime_from_its_ranges() -> None:
    data, index = combined_training_set(DEFAULT_LAYOUT, 3, 2, seed=5, patch=32)
    assert len(data) == 3 + 2 + 2
    assert {k: v.tolist() for k, v in index.items()} == {
        STANDARD: [0, 1, 2],
        "low-dose": [3, 4],
        "blur": [5, 6],
    }
    sources = data.lineage["sources"]
    assert tuple(sources["low-dose"]["condition_ranges"]["dose"]) == (1e4, 3e5)
    assert tuple(sources[STANDARD]["condition_ranges"]["defocus"]) == ConditionRanges().defocus


def test_regimes_round_trip_through_the_registry_select_and_member(tmp_path: Path) -> None:
    names = ("reference", "low-dose", "blur")
    ens = tiny_ensemble(3, names)
    registry = ModelRegistry(tmp_path / "registry", fallback=None)
    version = save_ensemble(registry, ens)
    assert registry.manifest(version)["config"]["regimes"] == list(names)
    loaded = load_ensemble(version, registry, device=CPU)
    assert loaded.config == ens.config and loaded.config.regimes == names
    pair = loaded.select([2, 0])
    assert pair.members == 2 and pair.config.regimes == ("blur", "reference")
    assert loaded.member(1).config.regimes == ("low-dose",)
    # Generalists keep an empty list through selection.
    assert tiny_ensemble(3).select([0, 1]).config.regimes == ()
    with pytest.raises(InputError, match="regime names"):
        EnsembleConfig(members=2, regimes=("reference",))


def test_old_config_without_regimes_loads() -> None:
    old = {"members": 2, "widths": [4, 8, 8], "class_names": ["light", "medium", "heavy"], "threshold": 0.3}
    assert EnsembleConfig.from_dict(old).regimes == ()
    shipped = json.loads((DEFAULT_MODELS_DIR / "v0002-178464be" / "manifest.json").read_text())
    assert "regimes" not in shipped["config"]
    assert EnsembleConfig.from_dict(shipped["config"]).regimes == ()
    ens = load_ensemble("v0002-178464be", ModelRegistry(Path("/nonexistent-registry")), device=CPU)
    assert ens.config.regimes == () and ens.select([0, 1]).config.regimes == ()


def test_tiny_specialisation_records_the_regimes() -> None:
    layout = (REFERENCE, LOW_DOSE, BLUR)
    config = SpecialiseConfig(
        layout=layout,
        standard_samples=4,
        regime_samples=3,
        patch=32,
        steps=2,
        batch=2,
        calibration_frames=1,
        regime_threshold_frames=1,
    )
    source = tiny_ensemble(2)
    result = specialise(source, config, log=lambda _: None, device=CPU)
    assert result.ensemble.members == 3
    assert result.ensemble.config.regimes == ("reference", "low-dose", "blur")
    assert [r["name"] for r in result.lineage["regimes"]] == ["reference", "low-dose", "blur"]
    assert result.lineage["regimes"][1]["ranges"]["dose"] == (1e4, 3e5)
    assert result.lineage["pools"]["regime_share"] == [0.0, 0.75, 0.75]
    # Member 2 repeats source member 0, perturbed; members 0 and 1 start from their own.
    assert result.lineage["member_init"][2].startswith(f"{source.version}#m0 +")
    assert 0.0 <= result.metrics["validation_f1"] <= 1.0
    # Each drifted regime's members get a threshold of their own, stored with its statistics.
    stored = read_statistics(result.lineage["regime_statistics"])
    assert stored["reference"].threshold is None
    assert {stored["low-dose"].threshold, stored["blur"].threshold} <= {None, *GRID}
    assert result.lineage["regime_statistics"]["threshold_calibration"]["frames_per_regime"] == 1


def test_regimes_come_back_from_a_lineage_and_a_bad_manifest_is_refused(tmp_path: Path, capsys) -> None:
    for regime in DEFAULT_LAYOUT:
        assert Regime.from_dict(json.loads(json.dumps(regime.as_dict()))) == regime
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps({"version": "v0001-00000000", "lineage": {}}))
    assert threshold_cli([str(bad)]) == 2
    assert "not a specialist ensemble's manifest" in capsys.readouterr().err


def test_fine_tuning_a_specialist_ensemble_replays_each_members_regime() -> None:
    from tasks.training.finetune import fine_tune, lr_for, pseudo_labels

    production = tiny_ensemble(3, ("reference", "low-dose", "blur"))
    before = [p.detach().clone() for p in production.net.parameters()]
    empty = pseudo_labels(production, [], 0.12, 32, seed=0)
    conditions = {"lattice": "mos2", "pixel_size": 0.12, "dose": 5e6, "defocus": 0.0}
    tuned, lineage = fine_tune(
        production, empty, conditions, twin_samples=4, replay_samples=2, steps=2, patch=32, log=lambda _: None
    )
    assert tuned.config == production.config  # regimes and threshold unchanged
    assert lineage["steps"] == 2 and lineage["twin"]["samples"] == 4 and lineage["lr"] == lr_for(2)
    assert lineage["member_regimes"] == ["reference", "low-dose", "blur"]
    replay = lineage["replay"]
    assert set(replay) == {"reference", "low-dose", "blur"}
    assert tuple(replay["blur"]["condition_ranges"]["defocus"]) == BLUR.ranges.defocus
    assert tuple(replay["low-dose"]["condition_ranges"]["dose"]) == LOW_DOSE.ranges.dose
    assert replay["reference"]["condition_ranges"] == ConditionRanges().as_dict()
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.net.parameters(), strict=True))
    # Production itself is untouched: retraining works on a copy.
    assert all(torch.equal(a, b) for a, b in zip(before, production.net.parameters(), strict=True))
