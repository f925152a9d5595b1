"""Every Instrument and Spectrometer of scopeflow against the shared contracts
(tests/conformance/instrument.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from tasks.acquisition import Instrument
from tasks.acquisition.instrument import Spectrometer
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.acquisition.twin.spectra import SpectrumChannel
from tasks.acquisition.watcher import FolderWatcher
from tests.conformance.instrument import InstrumentContract, SpectrometerContract


class TestDigitalTwin(InstrumentContract):
    def make(self, where: Path) -> Instrument:
        # Conditions change within the run, so "conditions(i) is frame i's" is not trivially true.
        return DigitalTwin(seed=11, schedule=DriftSchedule.parse("defocus=40@2"), shape=(64, 64))


class TestFolderWatcher(InstrumentContract):
    def make(self, where: Path) -> Instrument:
        return FolderWatcher(where, pixel_size=0.1, settle=0.05, timeout=10)

    def supply(self, where: Path, count: int) -> None:
        # What vendor software leaves: .npy and TIFF files, one a second apart (their order).
        for i in range(count):
            image = np.random.default_rng(i).poisson(30, size=(48, 64)).astype(np.uint16)
            path = where / f"frame{i:03d}.{'tif' if i % 2 else 'npy'}"
            if i % 2:
                tifffile.imwrite(path, image)
            else:
                np.save(path, image)
            os.utime(path, ns=(1_800_000_000_000_000_000 + i * 10**9,) * 2)


class TestTwinSpectrumChannel(SpectrometerContract):
    def make(self) -> Spectrometer:
        return SpectrumChannel(DigitalTwin(3, shape=(64, 64)))

    def survey_shape(self, spectrometer: Spectrometer) -> tuple[int, int]:
        assert isinstance(spectrometer, SpectrumChannel)
        return spectrometer.twin.shape
