"""CLI commands for operations: ``up``, ``down``, ``status``, ``deploy`` and ``reprocess``.

``register(app)`` adds them to the ``scopeflow`` typer app.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from scopeflow.errors import InputError, NotFoundError

console = Console(stderr=True, soft_wrap=True)


#: What --spec means when not given (relative: here, else the repository's own).
SPEC_OPTION_DEFAULT = Path("deployments/prefect.yaml")


def up(
    host: Annotated[
        str, typer.Option(help="Interface every service listens on (loopback by default).")
    ] = "127.0.0.1",
    prefect_port: Annotated[int, typer.Option(help="Prefect server (UI and API) port.")] = 4200,
    store_port: Annotated[int, typer.Option(help="Store server port.")] = 8765,
    media_port: Annotated[int, typer.Option(help="Media server (image artifacts) port.")] = 8766,
    spec: Annotated[Path, typer.Option(help="Deployments file to apply.")] = SPEC_OPTION_DEFAULT,
    workers: Annotated[bool, typer.Option(help="Start one process worker per work pool.")] = True,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="SCOPEFLOW_PREFECT_DATABASE_URL",
            help="Prefect database (default SQLite under the home), e.g. postgresql+asyncpg://u:p@host/db.",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each service may take to start.")] = 120.0,
) -> None:
    """Start the Prefect server, store, media server, work pools, deployments and workers on this machine."""
    from .deploy import DEFAULT_SPEC
    from .ops import OpsSettings
    from .ops import up as start

    spec_path = _spec_path(spec)
    if not spec_path.exists():
        if spec != SPEC_OPTION_DEFAULT:
            # A file the user named and that is not there: say so before any server starts.
            raise NotFoundError(f"no deployments file at {spec}")
        spec_path = DEFAULT_SPEC
    settings = OpsSettings(
        host=host,
        prefect_port=prefect_port,
        store_port=store_port,
        media_port=media_port,
        spec=spec_path,
        database_url=database_url,
        workers=workers,
        timeout_s=timeout,
    )
    state = start(settings, log=console.print)
    console.print(f"[green]up[/green]: Prefect UI {state.ui_url}, state in {settings.state_file}")
    console.print("to run flows against it from a shell:")
    for key, value in state.env.items():
        sys.stdout.write(f"export {key}={value}\n")


def _spec_path(spec: Path) -> Path:
    """A relative spec not found here is taken from the repository (where the default lives)."""
    from .deploy import ROOT

    return spec if spec.is_absolute() or spec.exists() else ROOT / spec


def down() -> None:
    """Stop exactly what `scopeflow up` started (by process id) and forget it."""
    from .ops import down as stop

    outcomes = stop(log=console.print)
    console.print(f"[green]down[/green]: {len(outcomes)} processes handled")


def status() -> None:
    """Print the processes `scopeflow up` started, one per line: name, pid, running or exited, URL."""
    from .ops import status as services

    for service, alive in services():
        sys.stdout.write(
            f"{service.name}\t{service.pid}\t{'running' if alive else 'exited'}\t{service.url}\n"
        )


def deploy(
    spec: Annotated[Path, typer.Option(help="Deployments file to apply.")] = SPEC_OPTION_DEFAULT,
) -> None:
    """Apply the deployments (pools, schedules, triggers) to the Prefect API in PREFECT_API_URL."""
    from .deploy import apply_deployments

    ids = asyncio.run(apply_deployments(_spec_path(spec)))
    for name, deployment_id in ids.items():
        sys.stdout.write(f"{name}\t{deployment_id}\n")


def reprocess(
    dataset: Annotated[Path, typer.Argument(help="Archived dataset (Zarr directory).")],
    model: Annotated[str, typer.Option(help="Model version or alias.")] = "production",
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (default: a LocalCluster here).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="LocalCluster worker processes (default: one per --threads cores here)."),
    ] = None,
    threads: Annotated[int, typer.Option(help="Threads per worker (torch threads).")] = 1,
    batch_frames: Annotated[int, typer.Option(help="Frames per dask task.")] = 16,
    prediction_set: Annotated[str | None, typer.Option("--set", help="Prediction set name.")] = None,
    record: Annotated[bool, typer.Option(help="Add store records (dataset, model, predictions).")] = False,
) -> None:
    """Re-analyse DATASET with MODEL over dask; print the summary as JSON."""
    from storage.datasets import frame_count
    from storage.models import ModelRegistry

    from .prefect_setup import prepare_prefect

    # Checked before the Prefect server starts: a mistake costs no wait.
    if (workers is not None and workers < 1) or threads < 1 or batch_frames < 1:
        raise InputError(
            f"--workers, --threads and --batch-frames must be ≥ 1, got {workers}, {threads} and {batch_frames}"
        )
    frames = frame_count(dataset)
    registry = ModelRegistry()
    console.print(
        f"model {registry.resolve(model)} ({model}) from {registry.root}; {frames} frames in {dataset}"
    )
    prepare_prefect(console.print)
    from .reprocess import reprocess_flow

    result = reprocess_flow(
        dataset=str(dataset),
        model=model,
        scheduler=scheduler,
        n_workers=workers,
        threads_per_worker=threads,
        batch_frames=batch_frames,
        prediction_set=prediction_set,
        record_in_store=record,
    )
    sys.stdout.write(json.dumps(result, indent=1, default=str) + "\n")


def register(app: typer.Typer) -> None:
    """Add the operations commands to ``app``."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("deploy")(deploy)
    app.command("reprocess")(reprocess)
