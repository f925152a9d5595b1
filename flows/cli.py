"""The ``scopeflow`` command line."""

from __future__ import annotations

import datetime as dt
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from scopeflow.config import default_dataset_dir, home, home_source
from scopeflow.errors import InputError, ScopeflowError, TerminatedError
from scopeflow.settings import DEFAULTS
from storage.federation.cli import TokenOpt, UrlOpt, sync_command
from storage.federation.cli import app as store_app

from . import commands_edge, commands_explore, commands_ops, commands_similar
from .prefect_setup import configure_embedded, prepare_prefect

app = typer.Typer(help="scopeflow: autonomous microscopy on the edge and in the cloud.", no_args_is_help=True)
app.add_typer(store_app, name="store")
commands_edge.register(app)
commands_explore.register(app)
commands_ops.register(app)
commands_similar.register(store_app)
console = Console(stderr=True, soft_wrap=True)


@app.callback()
def _announce_home() -> None:
    """Say which home this command uses (models, datasets, the store, Prefect's database)."""
    console.print(f"[dim]scopeflow home: {home()} (from {home_source()})[/dim]")


# A command, not a group: options must be accepted after PATH.
@app.command("sync")
def sync(
    path: Annotated[Path, typer.Argument(help="Dataset directory (a Zarr group).")],
    record: Annotated[
        str | None,
        typer.Option(help="The dataset's record (default: the one recorded for PATH, or a new one)."),
    ] = None,
    repo: Annotated[str, typer.Option(help="Destination repository.")] = "local",
    max_rate: Annotated[float | None, typer.Option(help="Bandwidth cap, MB/s.")] = None,
    verify: Annotated[
        str, typer.Option(help="'changed' or 'full' (re-hash every destination file).")
    ] = "changed",
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
) -> None:
    """Push a dataset directory to a store repository (incremental, verified); a dataset synced
    before goes to its own record and replica, so only new or changed files move."""
    if record is None:
        from storage.federation.client import DEFAULT_URL, StoreClient
        from storage.federation.paths import read_token
        from storage.provenance import find_dataset_record

        with StoreClient(url or DEFAULT_URL, token or read_token()) as client:
            record = find_dataset_record(client, path)
        console.print(f"dataset record: {record}" if record else "no record of this dataset yet: a new one")
    sync_command(path, record, repo, max_rate, verify, url, token)


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
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each new file (instrument=folder).")
    ] = 60.0,
) -> None:
    """Take frames from an instrument into a dataset (resumes after the last committed frame)."""
    from tasks.acquisition import make_instrument

    # Every argument is checked before the Prefect server starts: a mistake costs no wait.
    if frames < 1 or batch_size < 1:
        raise InputError(f"--frames and --batch-size must be ≥ 1, got {frames} and {batch_size}")
    inst = make_instrument(
        instrument, seed=seed, drift=drift, folder=watch, pixel_size=pixel_size, timeout=timeout
    )
    from tasks.acquisition.loop import check_target  # xarray and zarr: a second to import

    stored = check_target(dataset, inst)
    console.print(f"{inst.name}: {stored} frames stored in {dataset}, acquiring up to {frames}")
    prepare_prefect(console.print)
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
        timeout=timeout,
    )
    console.print(f"[green]{result['frames']} frames[/green] in {result['dataset']}")


@app.command()
def run(
    frames: Annotated[int, typer.Option("--frames", "-n", help="Frames to acquire.")] = 144,
    seed: Annotated[int, typer.Option(help="Twin seed.")] = 0,
    drift: Annotated[str, typer.Option(help="Drift schedule of the twin.")] = "demo",
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset path (default: a new one under the home).")
    ] = None,
    ert: Annotated[float, typer.Option(help="Expected frames between false drift alarms.")] = DEFAULTS.ert,
    publish: Annotated[bool, typer.Option(help="Record provenance and sync into the embedded store.")] = True,
) -> None:
    """Run the closed loop on the digital twin with embedded defaults and say where everything is."""
    from tasks.acquisition import make_instrument

    if frames < 1:
        raise InputError(f"--frames must be ≥ 1, got {frames}")
    # The schedule and the dataset are checked before any server starts.
    inst = make_instrument("twin", seed=seed, drift=drift)
    if dataset is not None:
        from tasks.acquisition.loop import check_target

        check_target(dataset, inst)
    prepare_prefect(console.print)
    from scopeflow.settings import limit_threads

    from .loop import loop_flow

    limit_threads()
    if dataset is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        dataset = default_dataset_dir() / f"twin-{stamp}.zarr"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"loop on the twin: {frames} frames (seed {seed}, drift {drift!r}) into {dataset}")
    out = loop_flow(frames=frames, dataset=str(dataset), seed=seed, drift=drift, ert=ert, publish=publish)
    _print_loop(out)


def _print_loop(out: dict) -> None:
    from rich.table import Table

    table = Table(title="F1 over time (against the twin's truth)")
    table.add_column("frames from", justify="right")
    table.add_column("F1", justify="right")
    for start, f1 in out["f1_by_batch"]:
        table.add_row(str(start), f"{f1:.4f}")
    console.print(table)
    for d in out["decisions"]:
        chosen = f" (the {d['regime']} regime's, by the frames' vote)" if d.get("regime") else ""
        console.print(
            f"drift at frames {d['frames'][0]}-{d['frames'][1]}: [bold]{d['action']}[/bold], "
            f"members {d['members']}{chosen}"
        )
    for r in out["retraining"]:
        console.print(f"retraining on frames {r['frames'][0]}-{r['frames'][1]}: {r['reason']}")
    console.print(
        f"[green]dataset:[/green] {out['dataset']} ({out['frames']} frames, ground truth, atoms, decisions)"
    )
    console.print(f"production model: {out['production']}")
    store = out.get("store")
    if store:
        console.print(
            f"[green]store:[/green] {store['store_dir']} — dataset record {store['dataset_record']}, "
            f"{store['files_synced']} files synced to {store['destination']}"
        )
        console.print(
            "browse: scopeflow store serve   (then, in another shell)  "
            f"scopeflow store search --tag drift ; scopeflow store lineage {store['dataset_record']}"
        )
    console.print(f"open the data: python -c \"import xarray; print(xarray.open_zarr('{out['dataset']}'))\"")


def _terminate(signum: int, frame: object) -> None:
    # Raised where the main thread is (a watcher waiting, a batch running): the flow ends as
    # failed while the API still answers, committed frames stay, and the process exits at once.
    raise TerminatedError(f"stopped by {signal.Signals(signum).name}; what was committed is kept")


def main() -> None:
    """Entry point of the console script: clear one-line errors for expected failures."""
    configure_embedded()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except TerminatedError as exc:
        console.print(f"[yellow]{exc}[/yellow]")
        sys.exit(128 + signal.SIGTERM)
    except ScopeflowError as exc:
        # One line, however long: a wrapped message reads as several errors.
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(2)
