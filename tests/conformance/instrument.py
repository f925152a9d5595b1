"""The contracts of ``Instrument`` and ``Spectrometer``, for every microscope behind them.

Subclass ``InstrumentContract`` as ``TestSomething`` and implement ``make`` (and ``supply``
for an instrument whose frames are made elsewhere, such as files a vendor program writes).
What is checked is what the rest of scopeflow relies on: the acquisition loop, the dataset
writer (which records ``state()`` and refuses to resume a run under other settings) and the
edge, which reads ``Frame`` fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from scopeflow.errors import InputError
from scopeflow.frame import Frame, Truth
from tasks.acquisition import Instrument
from tasks.acquisition.instrument import Spectra, Spectrometer
from tasks.acquisition.loop import acquire_run


class InstrumentContract:
    """Every ``Instrument`` passes these tests."""

    #: Frames each test acquires (small: the suite runs in seconds).
    frames = 4

    def make(self, where: Path) -> Instrument:
        """A fresh instrument; every call with the same ``where`` has the same settings."""
        raise NotImplementedError

    def supply(self, where: Path, count: int) -> None:
        """Make frames ``0..count-1`` available to acquire (an instrument that simulates its frames
        needs nothing)."""

    @pytest.fixture
    def where(self, tmp_path: Path) -> Path:
        where = tmp_path / "instrument"
        where.mkdir()
        self.supply(where, self.frames)
        return where

    @pytest.fixture
    def instrument(self, where: Path) -> Instrument:
        return self.make(where)

    def test_implements_the_protocol(self, instrument: Instrument) -> None:
        assert isinstance(instrument, Instrument)
        assert isinstance(instrument.name, str) and instrument.name

    def test_state_is_json_that_names_the_instrument(self, instrument: Instrument) -> None:
        state = instrument.state()
        assert json.loads(json.dumps(state)) == state  # recorded as is in the dataset's attributes
        assert state["name"] == instrument.name
        assert isinstance(state["kind"], str) and state["kind"]

    def test_frames_are_numbered_2d_images_with_their_conditions(self, instrument: Instrument) -> None:
        before = instrument.state()
        frames = []
        for i in range(self.frames):
            frame = instrument.acquire(i)
            assert isinstance(frame, Frame)
            # What the instrument says is in force is what the frame was taken under.
            assert instrument.conditions(i) == frame.conditions
            frames.append(frame)
        assert [f.index for f in frames] == list(range(self.frames))
        shape = frames[0].image.shape
        for f in frames:
            assert f.image.dtype == np.float32 and f.image.ndim == 2 and f.image.shape == shape
            assert min(shape) >= 8 and np.isfinite(f.image).all()
            assert isinstance(f.pixel_size, float) and 0 < f.pixel_size < np.inf  # Å/px
            assert isinstance(f.time, np.datetime64)
            assert all(isinstance(k, str) for k in f.conditions)
            assert json.loads(json.dumps(f.conditions)) == f.conditions  # numbers and short strings
            assert isinstance(f.source, str)
            if f.truth is not None:
                assert isinstance(f.truth, Truth)
                n = len(f.truth.rowcol)
                assert f.truth.rowcol.shape == (n, 2) and len(f.truth.cls) == len(f.truth.weight) == n
        times = np.array([f.time for f in frames], dtype="datetime64[ns]")
        assert (np.diff(times) >= np.timedelta64(0)).all()  # frames come in the order taken
        # A resumed run is checked against the recorded state: acquiring must not change it.
        assert instrument.state() == before

    def test_a_stopped_run_resumes_where_it_stopped(self, where: Path, tmp_path: Path) -> None:
        path = tmp_path / "run.zarr"
        assert acquire_run(self.make(where), str(path), 2, batch_size=1) == 2
        # Another process, another instrument object with the same settings, continues the run.
        assert acquire_run(self.make(where), str(path), self.frames, batch_size=2) == self.frames
        ds = xr.open_zarr(path)
        assert list(ds["frame_index"].values) == list(range(self.frames))
        reference = self.make(where)
        for i in range(self.frames):
            assert np.array_equal(ds["frames"][i].values, reference.acquire(i).image), f"frame {i}"
        assert ds.attrs["instrument"] == reference.state()


class SpectrometerContract:
    """Every ``Spectrometer`` passes these tests: subclass and implement ``make`` and ``survey_shape``."""

    def make(self) -> Spectrometer:
        """A fresh spectrometer on its survey frame."""
        raise NotImplementedError

    def survey_shape(self, spectrometer: Spectrometer) -> tuple[int, int]:
        """(rows, cols) px of the survey frame the probe positions refer to."""
        raise NotImplementedError

    @pytest.fixture
    def spectrometer(self) -> Spectrometer:
        return self.make()

    def test_implements_the_protocol(self, spectrometer: Spectrometer) -> None:
        assert isinstance(spectrometer, Spectrometer)
        energy = np.asarray(spectrometer.energy)
        assert energy.ndim == 1 and len(energy) >= 2 and (np.diff(energy) > 0).all()  # eV, increasing

    def test_state_is_json_with_a_kind(self, spectrometer: Spectrometer) -> None:
        state = spectrometer.state()
        assert json.loads(json.dumps(state)) == state
        assert isinstance(state["kind"], str) and state["kind"]

    def test_spectra_at_the_positions_asked_with_their_cost(self, spectrometer: Spectrometer) -> None:
        ny, nx = self.survey_shape(spectrometer)
        rowcol = np.array([[0.0, 0.0], [ny / 2, nx / 3], [ny - 1.0, nx - 1.0]])
        got = spectrometer.measure(rowcol)
        assert isinstance(got, Spectra)
        n, n_e = len(rowcol), len(spectrometer.energy)
        assert np.array_equal(got.rowcol, rowcol)
        assert np.array_equal(got.energy, spectrometer.energy)
        assert got.counts.shape == (n, n_e) and got.counts.dtype == np.float32
        assert np.isfinite(got.counts).all() and (got.counts >= 0).all()
        assert got.seconds.shape == got.dose.shape == (n,)
        assert (got.seconds > 0).all() and np.isfinite(got.dose).all() and (got.dose >= 0).all()

    def test_positions_off_the_frame_are_refused_clearly(self, spectrometer: Spectrometer) -> None:
        ny, nx = self.survey_shape(spectrometer)
        with pytest.raises(InputError, match="inside"):
            spectrometer.measure(np.array([[ny + 5.0, nx / 2]]))
