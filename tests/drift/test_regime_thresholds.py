"""A regime's own decoder threshold: stored with its statistics, applied when the edge selects it.

The shipped specialist ensemble (v0005) stores, for its low-dose and blur regimes, the heatmap
threshold their members do best at on validation frames of each regime's own conditions
(``tasks.training.regime_thresholds``); manifests made before (v0003, v0004) store none, and
their regimes decode at the model's threshold. That the edge applies it when it selects the
regime is in ``test_regime_selection.py`` (it shares that test's drifting stream).
"""

from __future__ import annotations

import numpy as np
import pytest

from scopeflow.errors import InputError
from storage.models import ModelRegistry
from tasks.drift.regimes import RegimeStatistics, RegimeVote, read_statistics, statistics_document
from tasks.drift.selection import select_regime


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return ModelRegistry(tmp_path_factory.mktemp("registry"))  # empty: the shipped versions


def test_the_shipped_drifted_regimes_store_their_own_threshold(registry, ensemble):
    stats = read_statistics(registry.regime_statistics(ensemble.version))
    assert stats["reference"].threshold is None  # the model's own, chosen on the standard ranges
    for name in ("low-dose", "blur"):
        assert stats[name].threshold is not None and 0.0 < stats[name].threshold < 1.0
    # Chosen on each regime's own validation frames: lower than the standard ranges' (weaker heatmaps).
    assert stats["low-dose"].threshold < ensemble.config.threshold
    document = registry.regime_statistics(ensemble.version)
    assert document["threshold_calibration"]["source"].startswith("twin frames drawn from each regime")


def test_manifests_without_thresholds_still_load_and_decode_at_the_models(registry):
    stats = read_statistics(registry.regime_statistics("v0004-61616231"))
    assert set(stats) == {"reference", "low-dose", "blur"}
    assert all(r.threshold is None for r in stats.values())
    vote = RegimeVote("low-dose", {"reference": 0.0, "low-dose": 1.0, "blur": 0.0})
    chosen = select_regime(
        ("reference", "low-dose", "blur"),
        vote,
        ["reference"],
        thresholds={n: r.threshold for n, r in stats.items()},
    )
    assert chosen is not None and chosen.members == (1,) and chosen.threshold is None


def test_a_threshold_round_trips_and_a_bad_one_is_refused():
    r = RegimeStatistics(np.zeros(3), np.eye(3), 10, False, threshold=0.1)
    doc = statistics_document({"low-dose": r}, {"source": "test"})
    back = read_statistics(doc)["low-dose"]
    assert back.threshold == 0.1 and doc["threshold_calibration"] == {"source": "test"}
    assert "threshold" not in RegimeStatistics(np.zeros(3), np.eye(3), 10, True).as_dict()
    doc["regimes"]["low-dose"]["threshold"] = 1.5
    with pytest.raises(InputError, match="threshold"):
        read_statistics(doc)
