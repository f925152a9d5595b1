"""The ``scopeflow`` command line."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from scopeflow.config import default_dataset_dir
from scopeflow.errors import ScopeflowError
from storage.federation.cli import app as store_app
from storage.federation.cli import sync_command

from . import commands_edge, commands_explore
from .prefect_setup import configure_embedded

app = typer.Typer(help="scopeflow: autonomous microscopy on the edge and in the cloud.", no_args_is_help=True)
app.add_typer(store_app, name="store")
# A command, not a group: options must be accepted after PATH.
app.command("sync", help="Push a dataset directory to a store repository (incremental, verified).")(sync_command)
commands_edge.register(app)
commands_explore.register(app)
console = Console(stderr=True)


@app.command("drift-report")
def drift_report(
    dataset: Annotated[Path, typer.Option(help="Dataset whose drift decisions to print.")],
) -> None:
    """Print the dataset's drift decisions as CSV (frame_start,frame_end,detected,action,<scores>)."""
    from storage.datasets.dataset import open_dataset
    from storage.datasets.decisions import decisions_csv

    open_dataset(dataset)  # a clear error when it is not a dataset
    sys.stdout.write(decisions_csv(dataset))


@app.command()
def acquire(
    frames: Annotated[int, typer.Option("--frames", "-n", help="Frames the dataset should hold.")],
    dataset: Annotated[Path, typer.Option(help="Zarr dataset directory (created or resumed).")],
    instrument: Annotated[str, typer.Option(help="twin or folder.")] = "twin",
    seed: Annotated[int, typer.Option(help="Twin seed.")] = 0,
    drift: Annotated[
        str | None, typer.Option(help="Twin drift schedule: preset or key=value@start[~ramp],…")
    ] = None,
    watch: Annotated[Path | None, typer.Option(help="Folder to ingest (instrument=folder).")] = None,
    pixel_size: Annotated[float | None, typer.Option(help="Pixel size in Å when files carry none.")] = None,
    batch_size: Annotated[int, typer.Option(help="Frames per committed batch (one task run).")] = 16,
) -> None:
    """Take frames from an instrument into a dataset (resumes after the last committed frame)."""
    from .acquire import acquire_flow

    result = acquire_flow(
        frames=frames,
        dataset=str(dataset),
        instrument=instrument,
        seed=seed,
        drift=drift,
        watch=str(watch) if watch else None,
        pixel_size=pixel_size,
        batch_size=batch_size,
    )
    console.print(f"[green]{result['frames']} frames[/green] in {result['dataset']}")


@app.command()
def run(
    frames: Annotated[int, typer.Option("--frames", "-n", help="Frames to acquire.")] = 64,
    seed: Annotated[int, typer.Option(help="Twin seed.")] = 0,
    drift: Annotated[str, typer.Option(help="Drift schedule of the twin.")] = "demo",
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset path (default: a new one under the home).")
    ] = None,
) -> None:
    """Run the loop on the digital twin with embedded defaults and say where the data is."""
    from .acquire import acquire_flow

    if dataset is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        dataset = default_dataset_dir() / f"twin-{stamp}.zarr"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"acquiring {frames} twin frames (seed {seed}, drift {drift!r}) into {dataset}")
    result = acquire_flow(frames=frames, dataset=str(dataset), instrument="twin", seed=seed, drift=drift)
    console.print(
        f"[green]dataset:[/green] {result['dataset']} ({result['frames']} frames, ground truth included)"
    )
    console.print(
        f"open it with: python -c \"import xarray; print(xarray.open_zarr('{result['dataset']}'))\""
    )


def main() -> None:
    """Entry point of the console script: clear one-line errors for expected failures."""
    configure_embedded()
    try:
        app()
    except ScopeflowError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
