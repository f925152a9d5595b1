"""``scopeflow locate`` per the contract: formats, pixel sizes, CSV, and clear failures."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from flows.commands_edge import register
from storage.models import DEFAULT_MODELS_DIR, ModelRegistry
from storage.models.registry import WEIGHTS
from tasks.acquisition.twin import DigitalTwin, DriftSchedule
from tasks.inference.metrics import evaluate
from tests.inference.test_readers import write_hspy, write_tiff

app = typer.Typer()
register(app)
runner = CliRunner()


@pytest.fixture(scope="module")
def frame():  # type: ignore[no-untyped-def]
    return DigitalTwin(5, DriftSchedule(base={"region": 3}), (128, 128)).acquire(0)


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "registry"


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_npy_tif_hspy_give_the_same_atoms(tmp_path: Path, frame, registry: Path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "f.npy", frame.image)
    write_tiff(tmp_path / "f.tif", frame.image, frame.pixel_size / 10)
    write_hspy(tmp_path / "f.hspy", frame.image, frame.pixel_size / 10)
    results = {}
    for name, extra in (("f.npy", ["--pixel-size", str(frame.pixel_size)]), ("f.tif", []), ("f.hspy", [])):
        out = tmp_path / f"{name}.csv"
        result = runner.invoke(
            app, ["locate", str(tmp_path / name), "--out", str(out), "--registry", str(registry), *extra]
        )
        assert result.exit_code == 0, result.output
        text = out.read_text()
        assert text.splitlines()[0] == "row,col,uncertainty,class,kind,sigma_row,sigma_col,confidence"
        results[name] = np.array([[float(r["row"]), float(r["col"])] for r in rows(text)])
    assert np.allclose(results["f.npy"], results["f.tif"], atol=1e-3)
    assert np.allclose(results["f.npy"], results["f.hspy"], atol=1e-3)
    scores = evaluate([results["f.npy"]], [frame.truth.rowcol], frame.pixel_size)
    assert scores.f1 > 0.9  # a small frame: columns cut by its edges weigh more


def test_stdout_and_the_pixel_size_flag_beat_metadata(tmp_path: Path, frame, registry: Path) -> None:  # type: ignore[no-untyped-def]
    write_hspy(tmp_path / "f.hspy", frame.image, 0.02)  # wrong metadata (0.2 Å/px), overridden
    result = runner.invoke(
        app,
        [
            "locate",
            str(tmp_path / "f.hspy"),
            "--pixel-size",
            str(frame.pixel_size),
            "--registry",
            str(registry),
        ],
    )
    assert result.exit_code == 0, result.output
    found = np.array([[float(r["row"]), float(r["col"])] for r in rows(result.stdout)])
    assert evaluate([found], [frame.truth.rowcol], frame.pixel_size).f1 > 0.9


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (
            lambda d: (d / "x.npy").write_text("not an image"),
            ["x.npy", "--pixel-size", "0.1"],
            "not a readable",
        ),
        (lambda d: np.save(d / "x.npy", np.zeros((2, 64, 64))), ["x.npy", "--pixel-size", "0.1"], "2-D"),
        (lambda d: np.save(d / "x.npy", np.full((64, 64), np.nan)), ["x.npy", "--pixel-size", "0.1"], "NaN"),
        (lambda d: np.save(d / "x.npy", np.ones((64, 64))), ["x.npy"], "pixel size"),
        (
            lambda d: np.save(d / "x.npy", np.ones((64, 64))),
            ["x.npy", "--pixel-size", "2"],
            "outside the range",
        ),
        (
            lambda d: np.save(d / "x.npy", np.ones((64, 64))),
            ["x.npy", "--pixel-size", "0.1", "--model", "v0042-00000000"],
            "unknown model version",
        ),
        (lambda d: None, ["absent.npy", "--pixel-size", "0.1"], "no such file"),
    ],
)
def test_bad_input_fails_clearly(
    tmp_path: Path, registry: Path, setup, args: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    setup(tmp_path)
    args = [str(tmp_path / args[0]), *args[1:]]
    result = runner.invoke(app, ["locate", *args, "--registry", str(registry)])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_corrupted_weights_are_refused(tmp_path: Path, frame, registry: Path) -> None:  # type: ignore[no-untyped-def]
    shipped = ModelRegistry(registry).resolve("default")
    (registry / "versions").mkdir(parents=True)
    shutil.copytree(DEFAULT_MODELS_DIR / shipped, registry / "versions" / shipped)
    ModelRegistry(registry).promote(shipped)
    weights = registry / "versions" / shipped / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit after promotion (disk or tampering)
    weights.write_bytes(bytes(data))
    np.save(tmp_path / "f.npy", frame.image)
    result = runner.invoke(
        app, ["locate", str(tmp_path / "f.npy"), "--pixel-size", "0.12", "--registry", str(registry)]
    )
    assert result.exit_code != 0
    assert "corrupted" in result.output
