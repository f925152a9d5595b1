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
