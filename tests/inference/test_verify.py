"""Columns checked against the frame: vacancies left empty and reported, nothing in noise,
positions and standard errors from the input frame, defects in the CSV and the dataset."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.cluster.hierarchy import fclusterdata
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from flows.cli import app
from scopeflow.atoms import Atoms
from storage.datasets.handle import open_predictions
from storage.datasets.predictions import read_atoms, read_predictions
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.acquisition.twin.scene import VACANCY
from tasks.inference.lattice import (
    averaged_reflections,
    bragg_reflections,
    carried_reflections,
    independent,
    pooled_reflections,
    site_lattice,
)
from tasks.inference.metrics import evaluate, match
from tasks.inference.refine import fit_columns, joint_heights
from tasks.inference.verify import CheckContext, pooled

ABTEM = Path(__file__).resolve().parents[3] / "shared" / "data" / "abtem-graphene"
runner = CliRunner()


def abtem_vacancies(truth: np.ndarray) -> np.ndarray:
    """Sites of the abTEM graphene frame with no atom, away from its border: 1.42 Å (14.2 px)
    from three atoms (a hexagon's centre is 1.42 Å from six)."""
    tree = cKDTree(truth)
    grid = np.stack(np.meshgrid(np.arange(20, 226, 0.5), np.arange(20, 236, 0.5), indexing="ij"), -1).reshape(
        -1, 2
    )
    d, _ = tree.query(grid, k=4)
    # Three atoms at the bond length and the next at the second-neighbour distance (2.46 Å):
    # a hexagon's centre has six at the bond length.
    sites = grid[(d[:, 0] > 10) & (d[:, 2] < 15.5) & (d[:, 3] > 20)]
    labels = fclusterdata(sites, 3.0, criterion="distance")
    return np.array([sites[labels == k].mean(axis=0) for k in np.unique(labels)])


@pytest.mark.skipif(not ABTEM.is_dir(), reason="the abTEM evaluation frames are not beside the checkout")
@pytest.mark.parametrize(
    "name", ["clean_df0", "haadf_df0_dose2e7", "haadf_df0_dose2e6", "haadf_df40_dose2e6"]
)
def test_abtem_vacancies_stay_empty_and_are_reported(ensemble, name: str) -> None:  # type: ignore[no-untyped-def]
    truth = np.load(ABTEM / "truth_rowcol_px.npy")
    vacancies = abtem_vacancies(truth)
    assert len(vacancies) == 3
    atoms = ensemble.locate(np.load(ABTEM / f"{name}.npy").astype(np.float32), 0.1)[0]
    assert atoms.crystal
    # No column on a vacant site (the members all put one there before the frame was checked).
    d, _ = cKDTree(atoms.rowcol).query(vacancies)
    assert (d > 5).all(), d
    # Each vacancy reported as one, confidently.
    dv, j = cKDTree(atoms.vacancies).query(vacancies)
    assert (dv < 3).all(), dv
    assert (atoms.vacancy_confidence[j] > 0.9).all()
    # And nothing lost: every atom away from the border is still found.
    inner = lambda rc: rc[(rc.min(1) > 10) & (rc[:, 0] < 236) & (rc[:, 1] < 246)]  # noqa: E731
    assert evaluate([inner(atoms.rowcol)], [inner(truth)], 0.1).f1 >= 0.99


def _twin_vacancies(ensemble, lattice: str, seeds: range) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """Vacancies found, missed and falsely reported on twin frames, at least 1 Å inside."""
    found = missed = false = 0
    for seed in seeds:
        base = {"vacancy_rate": 0.03, "substitution_rate": 0.02, "lattice": lattice}
        twin = DigitalTwin(100 + seed, DriftSchedule(base=base), (256, 256))
        frame = twin.acquire(3)
        p = frame.pixel_size
        scene = twin.scene(3)
        origin, _ = twin.window(3)
        true = (scene.xy[scene.kind == VACANCY][:, ::-1] - np.array(origin[::-1])) / p
        margin = 1.0 / p

        def inside(rc: np.ndarray, margin: float = margin) -> np.ndarray:
            return rc[(rc.min(1) > margin) & (rc.max(1) < 256 - margin)] if len(rc) else rc.reshape(0, 2)

        atoms = ensemble.locate(frame.image, p)[0]
        # Reported ones inside against all true ones, true ones inside against all reported.
        hit_true, _ = match(inside(true), atoms.vacancies.reshape(-1, 2), 0.5 / p)
        hit_reported, _ = match(inside(atoms.vacancies), true, 0.5 / p)
        found += len(hit_true)
        missed += len(inside(true)) - len(hit_true)
        false += len(inside(atoms.vacancies)) - len(hit_reported)
    return found, missed, false


def test_columns_beyond_the_edge_do_not_raise_the_edge_heights() -> None:
    # A square lattice of equal Gaussians (height 100 on 5) that runs on past the frame.
    # Left out, the outside columns' tails add a quarter to the edge columns' heights;
    # fitted with one shared height, every column comes out within 1 %.
    centres = np.stack(np.mgrid[-24:88:6.0, -24:88:6.0], -1).reshape(-1, 2) + np.array([0.3, 0.7])
    r, c = np.mgrid[0:64, 0:64]
    image = 5.0 + sum(100 * np.exp(-((r - a) ** 2 + (c - b) ** 2) / 8.0) for a, b in centres)
    inside = ((centres >= 0) & (centres <= 63)).all(1)
    outside = ~inside & ((centres > -9) & (centres < 72)).all(1)
    edge = (centres[inside].min(1) < 6) | (centres[inside].max(1) > 57)
    alone = joint_heights(image, centres[inside], 2.0, 6.0)["height"]
    beyond = (centres[outside], np.zeros(outside.sum(), int))
    joint = joint_heights(image, centres[inside], 2.0, 6.0, beyond)["height"]
    assert np.abs(alone[edge] - 100).max() > 10
    assert np.abs(joint - 100).max() < 1


def test_twin_vacancies_are_found_up_to_the_frames_edge(ensemble) -> None:  # type: ignore[no-untyped-def]
    # Ten graphene frames hold vacancies between 1 Å and a column spacing (1.42 Å) of the edge:
    # the lattice's columns beyond the edge are fitted, so those sites are judged too.
    found, missed, false = _twin_vacancies(ensemble, "graphene", range(10))
    assert found + missed >= 60
    assert found / (found + missed) >= 0.95
    assert found / (found + false) >= 0.9


def test_a_class_of_filled_sites_does_not_switch_the_check_off(ensemble) -> None:  # type: ignore[no-untyped-def]
    # On this MoS2 frame the network names its columns on vacant S2 sites a class of their own
    # ("light", heights ~0). That class is no species; the frame is still checked and its
    # eight vacancies reported.
    found, missed, false = _twin_vacancies(ensemble, "mos2", range(4, 5))
    assert found + missed == 8
    assert found >= 7
    assert false <= 1


def test_frames_checked_in_parallel_give_the_serial_answer(ensemble) -> None:  # type: ignore[no-untyped-def]
    # The edge checks a batch's frames in threads; each answer must be the one-frame check's,
    # bit for bit, and the process's BLAS thread limit must be what it was before.
    from tasks.inference.refine import _blas
    from tasks.inference.verify import verify, verify_many

    twin = DigitalTwin(4, DriftSchedule(base={"vacancy_rate": 0.02}), (160, 160))
    frames = [twin.acquire(i) for i in range(8)]
    images = [f.image for f in frames]
    ensemble.check = False
    try:
        raw = [ensemble.locate(f.image, f.pixel_size)[0] for f in frames]
    finally:
        ensemble.check = True
    before = [p["num_threads"] for p in _blas().info() if p["user_api"] == "blas"]
    serial = [verify(img, a) for img, a in zip(images, raw, strict=True)]
    parallel = verify_many(images, raw, workers=3)
    assert [p["num_threads"] for p in _blas().info() if p["user_api"] == "blas"] == before
    assert sum(len(a) for a in serial) > 100
    for one, other in zip(serial, parallel, strict=True):
        for name in one.__dataclass_fields__:
            assert np.array_equal(
                np.asarray(getattr(one, name)), np.asarray(getattr(other, name)), equal_nan=True
            )
    with pytest.raises(ValueError, match="2 frames and 1 proposals"):
        verify_many(images[:2], raw[:1])


def test_a_batch_checked_beside_its_network_gives_the_batchs_answer(ensemble) -> None:  # type: ignore[no-untyped-def]
    # With two threads or more a checked batch's network runs in parts, each part's frames
    # checked beside the next part's network on fewer threads: atoms and features must be
    # those of the network on the whole batch and ``verify_many`` after it, bit for bit, and
    # torch's thread count what it was.
    import torch

    from tasks.inference.ensemble import Ensemble
    from tasks.inference.verify import verify_many

    fixed = Ensemble(ensemble.net, ensemble.config, ensemble.version, torch.device("cpu"), execution="fused")
    twin = DigitalTwin(4, DriftSchedule(base={"vacancy_rate": 0.02}), (160, 160))
    frames = [twin.acquire(i) for i in range(7)]
    images, p = [f.image for f in frames], frames[0].pixel_size
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fixed.check = False
        raw, raw_features = fixed.analyse(images, p)
        fixed.check = True
        checked, features = fixed.analyse(images, p)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(features, raw_features)
    want = verify_many(images, raw, workers=2)
    assert sum(len(a) for a in want) > 100
    for one, other in zip(want, checked, strict=True):
        for name in one.__dataclass_fields__:
            assert np.array_equal(
                np.asarray(getattr(one, name)), np.asarray(getattr(other, name)), equal_nan=True
            )


def test_a_column_lighter_than_its_site_is_a_column_not_a_vacancy(ensemble) -> None:  # type: ignore[no-untyped-def]
    # MoS2 with one S of many S2 pairs gone: half a column, between "an S2 column" and
    # "nothing". It is still a column; no site of these frames is empty.
    kept = total = false = 0
    for seed in range(2):
        twin = DigitalTwin(
            seed,
            DriftSchedule(base={"lattice": "mos2", "vacancy_rate": 0.0, "substitution_rate": 0.08}),
            (256, 256),
        )
        frame = twin.acquire(1)
        p = frame.pixel_size
        scene = twin.scene(1)
        origin, _ = twin.window(1)
        single_s = (
            scene.xy[scene.weight == scene.weight[scene.weight > 0].min()][:, ::-1] - origin[::-1]
        ) / p
        single_s = single_s[(single_s.min(1) > 2.0 / p) & (single_s.max(1) < 256 - 2.0 / p)]
        atoms = ensemble.locate(frame.image, p)[0]
        kept += len(match(atoms.rowcol, single_s, 0.5 / p)[0])
        total += len(single_s)
        v = atoms.vacancies
        false += int(((v.min(1) > 2.0 / p) & (v.max(1) < 256 - 2.0 / p)).sum()) if len(v) else 0
    assert total >= 5
    assert kept / total >= 0.9
    assert false == 0


def test_no_crystal_no_columns(ensemble) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    frames = {
        "noise": rng.poisson(60.0, (256, 256)).astype(np.float32),
        "vacuum": rng.poisson(0.2, (256, 256)).astype(np.float32),
        "amorphous": rng.poisson(
            np.clip(gaussian_filter(rng.normal(size=(256, 256)), 4) * 50 + 300, 0, None)
        ),
        "smooth, noise-free": gaussian_filter(rng.normal(size=(256, 256)), 3.0) * 50 + 300,
    }
    for name, image in frames.items():
        atoms = ensemble.locate(np.asarray(image, np.float32), 0.1)[0]
        assert len(atoms) <= 5, name
        assert not atoms.trusted, name


def test_a_small_low_dose_frame_keeps_its_columns_unconfirmed(ensemble) -> None:  # type: ignore[no-untyped-def]
    """128² px at 4·10⁴ e/Å² show one of graphene's reflections above the whole-spectrum
    threshold: the check emptied such frames (the drift benchmark's low-dose stretch scored F1
    0.04, the raw network 0.78). The columns the frame cannot confirm are kept, untrusted: at
    the reflections' sub-coefficient positions, where the columns carry them."""
    twin = DigitalTwin(
        seed=21, schedule=DriftSchedule(base={"dose": 4e4, "pixel_size": 0.12}), shape=(128, 128)
    )
    frames = [twin.acquire(i) for i in range(8)]
    found = ensemble.locate([f.image for f in frames], [0.12] * len(frames))
    assert all(len(a) > 0 for a in found)
    assert not any(a.trusted for a in found)
    f1 = evaluate([a.rowcol for a in found], [f.truth.rowcol for f in frames], 0.12).f1
    assert f1 > 0.7


def test_pooled_reflections_find_a_buried_lattice_and_not_noise() -> None:
    """Averaged over 16 frames, a lattice too weak for any one frame's spectrum shows; pure
    noise averaged the same way shows nothing (its threshold is the pooled noise's)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:128, :128]
    pattern = 1.0 + 0.01 * (np.cos(2 * np.pi * xx / 8.0) + np.cos(2 * np.pi * (xx + yy * np.sqrt(3)) / 16.0))
    crystal = [rng.poisson(40.0 * pattern).astype(np.float64) for _ in range(16)]
    assert sum(independent(bragg_reflections(f)) for f in crystal) <= 4
    assert independent(pooled_reflections(crystal))
    noise = [rng.poisson(40.0, (128, 128)).astype(np.float64) for _ in range(16)]
    assert len(pooled_reflections(noise)) == 0


def test_a_batch_of_noise_frames_stays_empty(ensemble) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    frames = [rng.poisson(5.0, (128, 128)).astype(np.float32) for _ in range(8)]
    found = ensemble.locate(frames, [0.12] * len(frames))
    assert all(len(a) == 0 for a in found)


def _low_dose_run(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` frames (and their true columns) of a stationary run at 4·10⁴ e/Å², 128² px."""
    twin = DigitalTwin(
        seed=21, schedule=DriftSchedule(base={"dose": 4e4, "pixel_size": 0.12}), shape=(128, 128)
    )
    frames = [twin.acquire(i) for i in range(n)]
    return [f.image for f in frames], [f.truth.rowcol for f in frames]


def test_a_frame_checked_alone_in_a_run_gets_the_batchs_answer(ensemble) -> None:  # type: ignore[no-untyped-def]
    """A small frame at low dose seldom shows its crystal alone: checked one per call it was
    reported empty, in a batch kept (the batch's spectra pooled). With the run's frames carried
    from call to call (``CheckContext``) each frame is pooled with the 15 before it, so a call
    of one frame gets the answer of a batch of 16, column for column."""
    images, truth = _low_dose_run(32)
    run = CheckContext()
    ensemble.locate(images[16:], 0.12, run)  # the run's frames before (order does not matter)
    batch = ensemble.locate(images[:16], 0.12, copy.deepcopy(run))
    one_a_call = copy.deepcopy(run)
    alone = [ensemble.locate(img, 0.12, one_a_call)[0] for img in images[:16]]
    without = [ensemble.locate(img, 0.12)[0] for img in images[:16]]
    for a, b in zip(alone, batch, strict=True):
        assert len(a) == len(b) and a.trusted == b.trusted
        # A call's size may change the network's path, and its outputs by float round-off.
        np.testing.assert_allclose(a.rowcol, b.rowcol, atol=1e-4)
        np.testing.assert_allclose(a.uncertainty, b.uncertainty, atol=1e-4)
    empty = [sum(len(a) == 0 for a in found) for found in (alone, without)]
    assert empty[0] <= 1 and empty[1] >= empty[0] + 4, empty
    f1 = [evaluate([a.rowcol for a in found], truth[:16], 0.12).f1 for found in (alone, without)]
    assert f1[0] > 0.7 > f1[1] + 0.1, f1


def test_noise_after_a_crystal_stays_empty_with_the_runs_context(ensemble) -> None:  # type: ignore[no-untyped-def]
    """The context's crystal confirms no column in a noise or vacuum frame (the vacuum beside
    a flake, before the drift monitor reports it): a hallucinated lattice does not carry the
    real one's reflections, and a noise run pooled stays noise."""
    images, _ = _low_dose_run(16)
    crystal = CheckContext()
    ensemble.locate(images, 0.12, crystal)
    rng = np.random.default_rng(17)
    noise_run = CheckContext()
    for counts in (0.2, 5.0, 60.0):
        for _ in range(4):
            frame = rng.poisson(counts, (128, 128)).astype(np.float32)
            assert len(ensemble.locate(frame, 0.12, copy.deepcopy(crystal))[0]) == 0, counts
            assert len(ensemble.locate(frame, 0.12, noise_run)[0]) == 0, counts


def test_a_context_holds_each_frame_once_and_the_last_ones() -> None:
    """The pooled threshold assumes independent noise: a frame checked again (a retried batch)
    is held once; past ``frames`` the oldest go; shapes and pixel sizes are pooled apart, the
    last four of them held; ``clear`` forgets them."""
    rng = np.random.default_rng(2)
    frames = [rng.poisson(5.0, (32, 32)).astype(np.float32) for _ in range(6)]
    none = [Atoms.empty()] * 3
    context = CheckContext(frames=4)
    pooled(frames[:3], none, list(none), context, 0.12)
    pooled([*frames[:3], frames[0]], [*none, none[0]], [*none, none[0]], context, 0.12)
    assert len(context) == 3
    pooled(frames[3:], none, list(none), context, 0.12)
    assert len(context) == 4
    pooled(frames[:3], none, list(none), context, 0.2)
    assert len(context) == 7
    for p in (0.3, 0.4, 0.5):  # a fifth pixel size: the least recently checked (0.12) goes
        pooled(frames[:1], none[:1], list(none[:1]), context, p)
    assert len(context) == 6
    context.clear()
    assert len(context) == 0
    with pytest.raises(ValueError, match="at least one frame"):
        CheckContext(frames=0)


def test_a_context_holds_spectra_not_frames_bounded_whatever_the_frames_size() -> None:
    """An edge box beside the instrument keeps 16 frames of the run per shape: it holds what the
    pooled test averages (a spectrum at most 256 px a side), not the frames (64 MB each at
    4096² float32), and not a copy of each call's frames."""
    import tracemalloc

    rng = np.random.default_rng(5)
    none = [Atoms.empty()]
    context = CheckContext()
    tracemalloc.start()
    try:
        for _ in range(3):
            frame = rng.poisson(5.0, (2048, 2048)).astype(np.float32)  # 16 MB
            base = tracemalloc.get_traced_memory()[0] - frame.nbytes
            pooled([frame], none, list(none), context, 0.1)
            del frame
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(context) == 3
    assert held < 3 * 300_000, held  # three 256 × 129 float64 spectra (264 kB each)
    assert context.nbytes < 3 * 300_000


def test_a_large_frame_is_pooled_as_its_tiles() -> None:
    """A frame over 256 px a side is pooled as the mean of its tiles' spectra, with the noise of
    as many frames: noise stays noise, and a lattice its columns follow is confirmed."""
    from tasks.inference.verify import _tile_columns, pool_spectrum

    rng = np.random.default_rng(8)
    noise = [rng.poisson(5.0, (600, 500)).astype(np.float64) for _ in range(2)]
    spectra = [pool_spectrum(f) for f in noise]
    assert spectra[0].shape == (200, 250 // 2 + 1)  # 3 × 2 tiles of 200 × 250 px
    assert len(averaged_reflections(spectra, (200, 250), tiles=6)) == 0
    # A faint square lattice of 9 px (a peak every 9 px on each axis), deep in shot noise.
    r, c = np.mgrid[:600, :500]
    lattice = 2.0 + 0.35 * (np.cos(2 * np.pi * r / 9) + np.cos(2 * np.pi * c / 9))
    frames = [rng.poisson(lattice).astype(np.float64) for _ in range(2)]
    found = averaged_reflections([pool_spectrum(f) for f in frames], (200, 250), tiles=6)
    assert independent(found)
    sites = np.stack(np.meshgrid(np.arange(0, 600, 9.0), np.arange(0, 500, 9.0), indexing="ij"), -1)
    columns = _tile_columns(sites.reshape(-1, 2), (600, 500))
    assert 0 < len(columns) <= (200 // 9 + 1) * (250 // 9 + 1)  # one tile's
    assert independent(carried_reflections(columns, found))


def test_a_context_survives_a_restart_with_the_same_answers(ensemble) -> None:  # type: ignore[no-untyped-def]
    """A restarted edge loop gets its context back (``state``: the frames' ids and fingerprints;
    ``restore``: their spectra taken again from the frames) and answers as the run it continues;
    a context that cannot be restored (a frame not the one named, a malformed state) leaves
    nothing held and says so."""
    from tasks.inference.verify import verify_many

    images, _ = _low_dose_run(24)
    ensemble.check = False
    try:  # calls of the sizes the tests before made (the network's path is chosen per shape)
        raw = ensemble.locate(images[:16], 0.12) + ensemble.locate(images[8:], 0.12)[8:]
    finally:
        ensemble.check = True
    run = CheckContext()
    verify_many(images[:16], raw[:16], context=run, pixel_size=0.12)
    run.name(images[:16], range(16))
    state = json.loads(json.dumps(run.state()))  # as stored: JSON
    restarted = CheckContext()
    restarted.restore(state, lambda ids: [images[i] for i in ids])
    assert len(restarted) == 16 and restarted.nbytes == run.nbytes
    answers = [
        [
            verify_many([img], [p], context=c, pixel_size=0.12)[0]
            for img, p in zip(images[16:], raw[16:], strict=True)
        ]
        for c in (run, restarted, CheckContext())
    ]
    for a, b in zip(answers[0], answers[1], strict=True):
        for name in a.__dataclass_fields__:
            assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), equal_nan=True)
    # Started empty, the first frames of the restarted run are answered otherwise.
    assert sum(len(a) == 0 for a in answers[2]) > sum(len(a) == 0 for a in answers[0])
    with pytest.raises(ValueError, match="not the frame"):
        restarted.restore(state, lambda ids: [images[i + 1] for i in ids])
    assert len(restarted) == 0
    for bad in ({"schema": 1, "keys": "x"}, {"schema": 9}, {"schema": 1, "keys": [{"shape": [128, 128]}]}):
        with pytest.raises(ValueError, match="cannot be restored"):
            restarted.restore(bad, lambda ids: [images[i] for i in ids])
        assert len(restarted) == 0


def test_reflections_are_carried_by_lattice_columns_not_by_random_ones() -> None:
    frame = DigitalTwin(4, DriftSchedule(), (256, 256)).acquire(0)
    reflections = bragg_reflections(frame.image)
    assert independent(reflections)
    assert independent(carried_reflections(frame.truth.rowcol, reflections))
    scattered = np.random.default_rng(0).uniform(0, 256, frame.truth.rowcol.shape)
    assert not independent(carried_reflections(scattered, reflections))
    assert len(bragg_reflections(np.random.default_rng(1).poisson(50.0, (256, 256)).astype(float))) == 0


def test_graphene_translations_exclude_the_bond() -> None:
    frame = DigitalTwin(
        6, DriftSchedule(base={"lattice": "graphene", "vacancy_rate": 0.0}), (256, 256)
    ).acquire(0)
    lattice = site_lattice(frame.truth.rowcol, (256, 256))
    assert lattice.found
    lengths = np.linalg.norm(lattice.vectors, axis=1) * frame.pixel_size
    # 2.46 Å translations; the 1.42 Å bond maps only half the atoms onto atoms.
    assert lengths.min() == pytest.approx(2.46, abs=0.1)


def test_fit_reaches_the_cramer_rao_bound_on_shot_noise() -> None:
    # Round Gaussian columns on a square lattice, counted with Poisson noise many times: the
    # scatter of the fitted positions is the bound the fit reports, within 50 %.
    rng = np.random.default_rng(0)
    centres = np.array([[r, c] for r in range(14, 120, 20) for c in range(14, 120, 20)], float)
    centres += rng.uniform(-0.5, 0.5, centres.shape)
    yy, xx = np.mgrid[0:128, 0:128]
    clean = np.full((128, 128), 5.0)
    for r, c in centres:
        clean += 40.0 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 2.5**2))
    fits = [fit_columns(rng.poisson(clean).astype(float), centres + 0.3, width=2.5) for _ in range(40)]
    positions = np.stack([f.rowcol for f in fits])  # (trials, n, 2)
    inner = (centres.min(1) > 20) & (centres.max(1) < 108)
    scatter = positions[:, inner].std(axis=0).mean()
    bound = np.mean([f.crb[inner].mean() for f in fits])
    assert np.abs(positions[:, inner].mean(axis=0) - centres[inner]).mean() < 0.05  # unbiased
    assert scatter < 1.5 * bound
    assert np.mean([f.gain for f in fits]) == pytest.approx(1.0, abs=0.15)  # counts: gain 1


def test_reported_position_errors_cover_the_true_ones(ensemble) -> None:  # type: ignore[no-untyped-def]
    # Twin frames of two lattices, away from the border: the share of true columns within 2σ
    # on both axes should be ~0.91 for honest errors (it was 0.77-0.83 while σ was the
    # inverse-variance formula alone, which assumes the estimators err independently).
    ensemble.check = True
    covered = []
    for lattice, seed in (("graphene", 100), ("graphene", 101), ("perovskite", 100), ("perovskite", 101)):
        twin = DigitalTwin(seed, DriftSchedule(base={"lattice": lattice, "vacancy_rate": 0.03}), (256, 256))
        frame = twin.acquire(3)
        atoms = ensemble.locate(frame.image, frame.pixel_size)[0]
        margin = 1.0 / frame.pixel_size
        inside = ((atoms.rowcol > margin) & (atoms.rowcol < 256 - margin)).all(axis=1)
        pairs, _ = match(atoms.rowcol[inside], frame.truth.rowcol, 0.5 / frame.pixel_size)
        error = np.abs(atoms.rowcol[inside][pairs[:, 0]] - frame.truth.rowcol[pairs[:, 1]])
        covered.append((error <= 2 * atoms.sigma[inside][pairs[:, 0]]).all(axis=1).mean())
    assert np.mean(covered) > 0.85


def test_locate_csv_has_kinds_errors_and_vacancies(tmp_path: Path) -> None:
    twin = DigitalTwin(2, DriftSchedule(base={"vacancy_rate": 0.04}), (192, 192))
    frame = twin.acquire(0)
    np.save(tmp_path / "f.npy", frame.image)
    args = ["locate", str(tmp_path / "f.npy"), "--pixel-size", str(frame.pixel_size)]
    result = runner.invoke(app, [*args, "--defects", "--registry", str(tmp_path / "reg")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0])[:4] == ["row", "col", "uncertainty", "class"]
    assert list(rows[0])[4:] == ["kind", "sigma_row", "sigma_col", "confidence"]
    kinds = {r["kind"] for r in rows}
    assert "vacancy" in kinds and "column" in kinds
    columns = [r for r in rows if r["kind"] != "vacancy"]
    assert all(0 < float(r["sigma_row"]) < 1 for r in columns)
    plain = runner.invoke(app, [*args, "--registry", str(tmp_path / "reg")])
    assert "vacancy" not in plain.stdout  # vacancies only when asked for


def test_predictions_keep_defects_and_trust(tmp_path: Path, ensemble) -> None:  # type: ignore[no-untyped-def]
    from storage.datasets import DatasetWriter

    twin = DigitalTwin(2, DriftSchedule(base={"vacancy_rate": 0.04}), (128, 128))
    frames = [twin.acquire(i) for i in range(2)]
    path = tmp_path / "run.zarr"
    DatasetWriter.open(path, instrument=twin.state()).append(frames)
    atoms = ensemble.locate([f.image for f in frames], frames[0].pixel_size)
    noise = ensemble.locate(np.random.default_rng(0).poisson(40.0, (128, 128)).astype(np.float32), 0.12)[0]
    writer = open_predictions(path, ensemble.version, attrs={"config": json.dumps({})})
    writer.append([0, 1, 2], [*atoms, noise])
    ds = read_predictions(path, ensemble.version)
    assert ds["crystal"].values.tolist() == [True, True, False]
    back = read_atoms(ds, 0)
    assert np.allclose(back.rowcol, atoms[0].rowcol)
    assert np.allclose(back.vacancies, atoms[0].vacancies)
    assert (back.kind == atoms[0].kind).all()
    assert np.allclose(back.sigma, atoms[0].sigma, equal_nan=True)


def test_a_restore_reads_back_only_what_a_context_holds() -> None:
    """A stored context naming more frames than a context holds (damaged, or written with a
    larger context) makes a resume read only the last ones, not every frame it names."""
    images, _ = _low_dose_run(24)
    larger = CheckContext(frames=24)
    larger.add(images, [0.12] * 24, range(24))
    asked: list[int] = []

    def read(ids: list[int]) -> list[np.ndarray]:
        asked.extend(ids)
        return [images[i] for i in ids]

    restored = CheckContext()
    restored.restore(larger.state(), read)
    assert asked == list(range(8, 24)) and len(restored) == 16
