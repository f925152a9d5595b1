import numpy as np
import pytest

from scopeflow.errors import InputError
from tasks.acquisition.twin import DigitalTwin, DriftSchedule


def test_frame_depends_only_on_seed_index_and_schedule():
    schedule = "defocus=50@3,dose=1e5@5~4"
    a = DigitalTwin(seed=3, schedule=DriftSchedule.parse(schedule), shape=(96, 96))
    b = DigitalTwin(seed=3, schedule=DriftSchedule.parse(schedule), shape=(96, 96))
    later_first = b.acquire(7)  # out of order: no hidden state between frames
    assert np.array_equal(a.acquire(7).image, later_first.image)
    assert np.array_equal(a.acquire(7).truth.rowcol, later_first.truth.rowcol)
    assert not np.array_equal(a.acquire(7).image, DigitalTwin(seed=4, shape=(96, 96)).acquire(7).image)


@pytest.mark.parametrize("lattice", ["graphene", "mos2", "perovskite"])
def test_bright_spots_where_truth_says(lattice):
    twin = DigitalTwin(
        seed=1, schedule=DriftSchedule(base={"lattice": lattice, "jitter": 0.0}), shape=(128, 128)
    )
    frame = twin.acquire(0)
    rc = np.round(frame.truth.rowcol).astype(int)
    rc = rc[(rc >= 0).all(axis=1) & (rc < 128).all(axis=1)]
    at_atoms = frame.image[rc[:, 0], rc[:, 1]].mean()
    rng = np.random.default_rng(0)
    at_random = frame.image[rng.integers(0, 128, 500), rng.integers(0, 128, 500)].mean()
    assert len(rc) > 50
    assert at_atoms > 1.3 * at_random


def test_heavy_columns_brighter_than_light_ones():
    twin = DigitalTwin(
        seed=2, schedule=DriftSchedule(base={"lattice": "mos2", "jitter": 0.0}), shape=(128, 128)
    )
    frame = twin.acquire(0)
    rc = np.round(frame.truth.rowcol).astype(int).clip(0, 127)
    values = frame.image[rc[:, 0], rc[:, 1]]
    assert values[frame.truth.cls == 2].mean() > 1.5 * values[frame.truth.cls == 1].mean()


def test_contamination_names_the_amorphous_atoms_rendered_in_the_frame():
    # Vacuum under the contamination, so that only its atoms make contrast.
    base = {"contamination": 0.8, "vacancy_rate": 1.0, "dose": 1e9, "jitter": 0.0}
    twin = DigitalTwin(seed=6, schedule=DriftSchedule(base=base), shape=(128, 128))
    frame = twin.acquire(2)
    rc = np.round(twin.contamination(2)).astype(int)
    rc = rc[(rc >= 3).all(axis=1) & (rc < 125).all(axis=1)]
    at_atoms = frame.image[rc[:, 0], rc[:, 1]].mean()
    beside = frame.image[rc[:, 0] + 3, rc[:, 1] - 3].mean()  # 0.5 Å away, in the same patches
    assert len(rc) > 20
    assert at_atoms > 1.5 * frame.image.mean()
    assert at_atoms > 1.15 * beside
    assert np.array_equal(twin.contamination(2), twin.contamination(2))
    assert len(DigitalTwin(seed=6, shape=(128, 128)).contamination(2)) == 0


def test_defects_are_fixed_in_the_sample():
    twin = DigitalTwin(seed=5, schedule=DriftSchedule(base={"vacancy_rate": 0.05}), shape=(96, 96))
    a, b = twin.scene(0), twin.scene(1)  # the field of view drifts a little between frames
    vac_a = {tuple(np.round(p, 3)) for p in a.xy[a.kind == 2]}
    vac_b = {tuple(np.round(p, 3)) for p in b.xy[b.kind == 2]}
    shared_window = vac_a & vac_b
    assert len(shared_window) >= 0.8 * min(len(vac_a), len(vac_b)) > 0


def test_schedule_ramps_and_jumps():
    s = DriftSchedule.parse("defocus=60@10,dose=1e4@20~10,lattice=mos2@30")
    assert s.at(9)["defocus"] == 0 and s.at(10)["defocus"] == 60
    assert s.at(25)["dose"] == pytest.approx(np.sqrt(5e6 * 1e4), rel=1e-6)  # log-linear halfway
    assert s.at(29)["lattice"] == "graphene" and s.at(30)["lattice"] == "mos2"
    assert DriftSchedule.parse(s.describe()).at(25) == s.at(25)


@pytest.mark.parametrize("text", ["defocus=60", "nonsense=1@3", "lattice=gold@4", "dose=abc@2"])
def test_bad_schedules_are_refused_clearly(text):
    with pytest.raises(InputError):
        DriftSchedule.parse(text)
