from tasks.drift.physics import frame_proxies, median_proxies
from tasks.training.evaluation import condition_frames
from tasks.training.retrain import _sample_lattice


def _proxies(ensemble, frames):
    p = frames[0].pixel_size
    found = ensemble.locate([f.image for f in frames], [p] * len(frames))
    return median_proxies(
        [frame_proxies(a.rowcol, f.image.shape, p) for a, f in zip(found, frames, strict=True)]
    )


def test_retraining_renders_the_lattice_the_drifted_frames_show(ensemble):
    # Validating a candidate on the lattice seen before the drift would judge it on the wrong
    # sample when the drift is a new lattice region; an imaging drift keeps the old one.
    production = ensemble
    before = _proxies(production, condition_frames("before", {}, n=4, seed=3, shape=(128, 128)))
    for changes, expected in (({"lattice": "mos2"}, "mos2"), ({"dose": 1e5}, "graphene")):
        drifted = condition_frames("after", changes, n=4, seed=4, shape=(128, 128))
        p = drifted[0].pixel_size
        images = [f.image for f in drifted]
        found = production.locate(images, [p] * len(images))
        lattice, proxies = _sample_lattice(found, images, p, before)
        assert lattice == expected
        assert (proxies == before) == (expected == "graphene")


def test_crystal_free_frames_have_no_columns_and_leave_other_draws_alone() -> None:
    from dataclasses import replace

    import numpy as np

    from tasks.training.conditions import ConditionRanges, sample_conditions
    from tasks.training.synthesis import render_sample

    plain = sample_conditions(np.random.default_rng(5), ConditionRanges())
    free = sample_conditions(
        np.random.default_rng(5), replace(ConditionRanges(), crystal_free_probability=1.0)
    )
    assert free["vacancy_rate"] == 1.0
    assert {k: v for k, v in free.items() if k != "vacancy_rate"} == {
        k: v for k, v in plain.items() if k != "vacancy_rate"
    }
    sample = render_sample(free, 3, 48, 0.2)
    assert len(sample.rowcol) == 0
    assert np.isfinite(sample.image).all()
