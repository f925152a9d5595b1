"""Selection with real specialist networks: the frames vote for their regime, its members take over.

The shipped production ensemble is deliberately diverse (``storage/default_models``: members
0–1 reference, 2–3 low dose, 4–5 strong defocus), with the spectrum signatures of each regime's
training frames stored beside its manifest. The vote compares the frames with those: no twin
frame is rendered at decision time. Nothing here reads the twin's truth until the last
assertion, which checks that the choice pays: F1 against truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from storage.models import ModelRegistry
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.drift.adaptive import AdaptiveEnsemble
from tasks.drift.monitor import DriftMonitor
from tasks.drift.regimes import read_statistics, regime_vote
from tasks.drift.spectrum import image_stats
from tasks.inference.metrics import evaluate
from tasks.training.evaluation import condition_frames


@pytest.fixture(scope="module")
def statistics(tmp_path_factory):
    registry = ModelRegistry(tmp_path_factory.mktemp("registry"))
    return read_statistics(registry.regime_statistics("production"))


@pytest.mark.parametrize(
    ("changes", "regime"),
    [
        ({}, "reference"),
        ({"dose": 4e4}, "low-dose"),
        ({"defocus": 130.0}, "blur"),
        ({"defocus": -110.0}, "blur"),
    ],
)
def test_frames_vote_for_the_regime_they_were_imaged_in(statistics, changes, regime):
    frames = condition_frames("vote", changes, n=8, seed=77, shape=(128, 128))
    vote = regime_vote([image_stats(f.image, f.pixel_size) for f in frames], statistics)
    assert vote.regime == regime, vote.shares
    assert abs(sum(vote.shares.values()) - 1.0) < 1e-9


def test_a_vote_needs_regimes_and_frames(statistics):
    with pytest.raises(ValueError, match="no regimes"):
        regime_vote([image_stats(np.ones((32, 32)), 0.12)], {})
    with pytest.raises(ValueError, match="no frames"):
        regime_vote([], statistics)


@pytest.fixture(scope="module")
def production(ensemble):
    assert len(set(ensemble.config.regimes)) == 3, "the shipped ensemble should be the specialist one"
    return ensemble


@pytest.mark.parametrize(("change", "regime"), [("defocus=130", "blur"), ("dose=4e4", "low-dose")])
def test_on_drift_the_members_trained_for_the_new_conditions_take_over(production, change, regime):
    twin = DigitalTwin(seed=5, schedule=DriftSchedule.parse(f"{change}@44"), shape=(128, 128))
    registry = ModelRegistry()
    stats = read_statistics(registry.regime_statistics(production.version))
    adaptive = AdaptiveEnsemble(
        production, DriftMonitor(1000.0, reference_frames=32), regime_statistics=stats
    )
    chosen = None
    for start in range(0, 80, 8):
        shots = [twin.acquire(i) for i in range(start, start + 8)]
        outcome = adaptive.process([s.image for s in shots], [s.pixel_size for s in shots], start)
        if outcome.selection is not None:
            chosen = outcome
            break
    # The change lands mid-batch (frames 40-47): the choice must rest on the frames after it.
    assert chosen is not None and chosen.start >= 40, "the change at frame 44 should be detected"
    assert chosen.selection.regime is not None and chosen.selection.regime.regime == regime
    assert {production.config.regimes[k] for k in chosen.members} == {regime}
    # The regime's own decoder threshold, where it stores one (v0005: low-dose 0.15), goes with them.
    own = stats[regime].threshold
    assert chosen.selection.threshold == own == adaptive.threshold
    assert adaptive.active.config.threshold == (own if own is not None else production.config.threshold)
    if own is not None and own != production.config.threshold:
        shots = [twin.acquire(i) for i in range(80, 84)]
        images, p = [s.image for s in shots], shots[0].pixel_size
        at_own = production.select(list(chosen.members), threshold=own).locate(images, p)
        at_model = production.select(list(chosen.members)).locate(images, p)
        assert [len(a) for a in adaptive.active.locate(images, p)] == [len(a) for a in at_own]
        assert sum(map(len, at_own)) != sum(map(len, at_model))

    if regime == "blur":  # the strong-defocus pair finds columns the full ensemble misses
        frames = [twin.acquire(i) for i in range(48, 56)]
        p = frames[0].pixel_size
        truth = [f.truth.rowcol for f in frames]
        images = [f.image for f in frames]
        full = evaluate([a.rowcol for a in production.locate(images, p)], truth, p).f1
        pair = evaluate([a.rowcol for a in adaptive.active.locate(images, p)], truth, p).f1
        assert pair > full + 0.1, (pair, full)

    adaptive.use(production, stats)  # a new production starts again at its own threshold
    assert adaptive.threshold is None and adaptive.active.config.threshold == production.config.threshold
