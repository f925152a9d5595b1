"""``scopeflow train``, ``specialise``, ``locate``, ``edge`` and ``models``: edge inference on the command line.

``register(app)`` adds them to the main Typer app. Heavy imports (torch, Prefect) happen
inside the commands so ``scopeflow --help`` stays fast.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from scopeflow.errors import InputError, ScopeflowError
from scopeflow.settings import DEFAULTS

console = Console(stderr=True, soft_wrap=True)
models_app = typer.Typer(help="The model registry: list versions, promote, roll back.", no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
    return typer.Exit(code=2)


def _registry(path: Path | None):  # type: ignore[no-untyped-def]
    from storage.models import ModelRegistry

    return ModelRegistry(path) if path else ModelRegistry()


def _keep(
    ensemble,
    lineage: dict,
    metrics: dict,
    registry: Path | None,
    promote: str,
    ship: bool,
    parent: str | None = None,
) -> None:  # type: ignore[no-untyped-def]
    """Ship ``ensemble`` as the next default, or register it and point ``promote`` at it; say where."""
    from storage.models import DEFAULT_MODELS_DIR
    from tasks.inference.registry import save_ensemble, ship_ensemble

    if ship:
        version = ship_ensemble(ensemble, lineage=lineage, metrics=metrics, parent=parent)
        console.print(f"[green]shipped[/green] {version} in {DEFAULT_MODELS_DIR}")
        return
    reg = _registry(registry)
    version = save_ensemble(reg, ensemble, lineage=lineage, metrics=metrics, parent=parent)
    if promote != "none":
        reg.promote(version, promote)
    console.print(
        f"[green]registered[/green] {version} in {reg.root}" + (f" as {promote}" if promote != "none" else "")
    )


def locate(
    path: Annotated[Path, typer.Argument(help="Image: .npy, .tif or any file rosettasciio reads.")],
    pixel_size: Annotated[
        float | None, typer.Option("--pixel-size", help="Pixel size in Å/px (overrides the file's metadata).")
    ] = None,
    model: Annotated[str, typer.Option("--model", help="Model version or alias.")] = "production",
    out: Annotated[
        Path | None, typer.Option("--out", help="CSV file to write (default: standard output).")
    ] = None,
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
    defects: Annotated[
        bool, typer.Option("--defects", help="Also list vacancies (rows with kind=vacancy).")
    ] = False,
) -> None:
    """Atom columns of one image as CSV ``row,col,uncertainty[,class],kind,sigma_row,sigma_col,confidence``
    in the image's pixels (``kind``: column, substitution, or with --defects vacancy)."""
    try:
        import numpy as np

        from tasks.acquisition.readers import read_image

        image, file_pixel_size, _ = read_image(path)
        size = pixel_size if pixel_size is not None else file_pixel_size
        if size is None:
            raise InputError(f"{path}: the file records no pixel size; pass --pixel-size (Å/px, 0.05–0.3)")
        if pixel_size is not None and file_pixel_size and abs(pixel_size / file_pixel_size - 1) > 0.01:
            console.print(
                f"[yellow]warning:[/yellow] --pixel-size {pixel_size:g} Å/px overrides the file's "
                f"{file_pixel_size:g} Å/px"
            )
        if min(image.shape) < 16 or float(np.ptp(image)) == 0.0:
            console.print(
                f"[yellow]warning:[/yellow] an image of {image.shape[0]}×{image.shape[1]} px"
                + (" with one value everywhere" if float(np.ptp(image)) == 0.0 else "")
                + " holds no resolvable columns"
            )
        from scopeflow.settings import limit_threads
        from tasks.inference.registry import load_ensemble

        limit_threads()
        ensemble = load_ensemble(model, _registry(registry))
        atoms = ensemble.locate(image, size)[0]
    except (ScopeflowError, OSError) as exc:
        raise _fail(exc) from None
    buf = io.StringIO()
    _write_atoms_csv(buf, atoms, len(ensemble.config.class_names) > 1, defects)
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        try:
            out.write_text(buf.getvalue())
        except OSError as exc:
            raise _fail(InputError(f"cannot write {out}: {exc.strerror or exc}")) from None
    found = f"{len(atoms)} atom columns"
    if len(atoms.vacancies):
        found += f", {len(atoms.vacancies)} vacancies"
    if not atoms.crystal:
        found += " (no crystal lattice in the frame: noise, vacuum or amorphous)"
    elif not atoms.trusted:
        found += " (untrusted: the frame does not confirm every column)"
    console.print(f"{found} ({ensemble.version}, {size:g} Å/px)" + (f" → {out}" if out else ""))


def _write_atoms_csv(buf: io.StringIO, atoms, classes: bool, defects: bool) -> None:  # type: ignore[no-untyped-def]
    """The locate contract's columns, then ``kind,sigma_row,sigma_col,confidence`` (px; vacancies
    have no uncertainty or class: their confidence is that the site is empty)."""
    from scopeflow.atoms import KINDS

    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "row",
            "col",
            "uncertainty",
            *(["class"] if classes else []),
            "kind",
            "sigma_row",
            "sigma_col",
            "confidence",
        ]
    )
    for i, (r, c) in enumerate(atoms.rowcol):
        s_r, s_c = atoms.sigma[i]
        writer.writerow(
            [
                f"{r:.3f}",
                f"{c:.3f}",
                f"{atoms.uncertainty[i]:.4f}",
                *([int(atoms.cls[i])] if classes else []),
                KINDS[int(atoms.kind[i])],
                f"{s_r:.4f}",
                f"{s_c:.4f}",
                f"{atoms.confidence[i]:.4f}",
            ]
        )
    if defects:
        for (r, c), conf in zip(atoms.vacancies, atoms.vacancy_confidence, strict=True):
            writer.writerow(
                [f"{r:.3f}", f"{c:.3f}", "", *([""] if classes else []), "vacancy", "", "", f"{conf:.4f}"]
            )


def train(
    seed: Annotated[int, typer.Option(help="Seed of the training data, order and initialisation.")] = 0,
    members: Annotated[int, typer.Option(help="Ensemble members.")] = 5,
    samples: Annotated[int | None, typer.Option(help="Twin training samples.")] = None,
    baseline_steps: Annotated[int | None, typer.Option(help="Optimiser steps of the baseline.")] = None,
    member_steps: Annotated[int | None, typer.Option(help="Optimiser steps of the members.")] = None,
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
    promote: Annotated[
        str, typer.Option(help="Alias to point at the new version: candidate, production or none.")
    ] = ("candidate"),
    ship: Annotated[
        bool, typer.Option(help="Replace the default ensemble in storage/default_models.")
    ] = False,
    evaluate: Annotated[
        bool, typer.Option(help="Score on twin scenarios and abTEM frames (slower).")
    ] = False,
    baseline: Annotated[
        str | None,
        typer.Option(help="Start the members from member 0 of this model version (skip the baseline)."),
    ] = None,
) -> None:
    """Train an ensemble on digital-twin frames and register it."""
    import dataclasses

    from tasks.training import TrainConfig, train_ensemble

    overrides = {
        k: v
        for k, v in {
            "samples": samples,
            "baseline_steps": baseline_steps,
            "member_steps": member_steps,
        }.items()
        if v is not None
    }
    config = dataclasses.replace(TrainConfig(), seed=seed, members=members, **overrides)
    try:
        base_net = None
        if baseline is not None:
            from tasks.inference.registry import load_ensemble

            base_net = load_ensemble(baseline, _registry(registry)).net.member(0).cpu()
        result = train_ensemble(config, log=console.print, baseline=base_net)
        if baseline is not None:
            result.lineage["baseline_from"] = baseline
        metrics = dict(result.metrics)
        if evaluate:
            from tasks.training.evaluation import report

            metrics["evaluation"] = report(result.ensemble)
        _keep(result.ensemble, result.lineage, metrics, registry, promote, ship)
    except ScopeflowError as exc:
        raise _fail(exc) from None
    if not ship:
        console.print(
            json.dumps({k: v for k, v in metrics.items() if k != "evaluation"}, indent=1, default=str)
        )


def specialise(
    source: Annotated[
        str, typer.Option("--from", help="Model version or alias whose members to start from.")
    ] = "production",
    seed: Annotated[int, typer.Option(help="Seed of the training data, pools and order.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps (all members at once).")] = None,
    standard_samples: Annotated[
        int | None, typer.Option(help="Twin samples from the standard ranges.")
    ] = None,
    regime_samples: Annotated[int | None, typer.Option(help="Twin samples per specialist regime.")] = None,
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
    promote: Annotated[
        str, typer.Option(help="Alias to point at the new version: candidate, production or none.")
    ] = "candidate",
    ship: Annotated[
        bool, typer.Option(help="Add the result to storage/default_models as the next default ensemble.")
    ] = False,
) -> None:
    """Fine-tune an ensemble's members into specialists: 2 reference, 2 low-dose, 2 blur."""
    import dataclasses

    import torch

    from tasks.inference.registry import load_ensemble
    from tasks.training.specialists import SpecialiseConfig
    from tasks.training.specialists import specialise as run_specialise

    overrides = {
        k: v
        for k, v in {
            "steps": steps,
            "standard_samples": standard_samples,
            "regime_samples": regime_samples,
        }.items()
        if v is not None
    }
    config = dataclasses.replace(SpecialiseConfig(), seed=seed, **overrides)
    try:
        start = load_ensemble(source, _registry(registry), device=torch.device("cpu"))
        result = run_specialise(start, config, log=console.print)
        _keep(result.ensemble, result.lineage, result.metrics, registry, promote, ship, parent=start.version)
    except ScopeflowError as exc:
        raise _fail(exc) from None
    if not ship:
        console.print(json.dumps(result.metrics, indent=1, default=str))


def edge(
    dataset: Annotated[Path, typer.Option(help="Zarr dataset whose frames to process.")],
    model: Annotated[str, typer.Option(help="Model version or alias.")] = "production",
    batch_size: Annotated[
        int, typer.Option(help="Frames per task run (one decision each).")
    ] = DEFAULTS.batch_size,
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            help="Retrain here (minutes) when selection cannot absorb a drift, promoting a better "
            "candidate to production. Without it the drift event goes to the retrain deployment "
            "of a configured server, or the run says retraining is needed."
        ),
    ] = False,
) -> None:
    """Run edge inference over a dataset's frames, appending atoms tagged with the model version."""
    import os

    from flows.prefect_setup import prepare_prefect

    try:
        # Checked before the Prefect server starts: a mistake costs no wait.
        from storage.datasets import frame_count

        if batch_size < 1:
            raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")
        frames = frame_count(dataset)
        reg = _registry(registry)
        version = reg.resolve(model)
        dispatch = "inprocess" if retrain else "event" if os.environ.get("PREFECT_API_URL") else "report"
        console.print(f"model {version} ({model}) from {reg.root}; {frames} frames in {dataset}")
        prepare_prefect(console.print)
        from scopeflow.settings import limit_threads

        from .edge import edge_flow

        limit_threads()
        summary = edge_flow(
            dataset=str(dataset),
            model=model,
            batch_size=batch_size,
            registry=str(registry) if registry else None,
            dispatch=dispatch,
        )
    except ScopeflowError as exc:
        raise _fail(exc) from None
    for outcome in summary.get("retraining", []):
        console.print(f"retraining: {outcome.get('reason')}")
        if outcome.get("promoted"):
            console.print(f"[bold]promoted[/bold] {outcome.get('production')} to production in {reg.root}")
    for start, adopted in summary.get("adopted", []):
        console.print(f"from frame {start} on: model {adopted} (newly promoted)")
    f1 = f", F1 {summary['f1']:.4f} against truth" if "f1" in summary else ""
    console.print(
        f"[green]{summary['atoms']} atoms[/green] in {summary['frames_processed']} frames "
        f"({summary['frames_per_second']:.1f} frames/s, model {summary['model_version']}){f1}"
    )
    for frame, text in summary.get("attributions", []):
        console.print(f"drift at frame {frame}: {text}")
    if "monitor" in summary:
        console.print(f"drift monitor: {summary['monitor']}")


@models_app.command("list")
def models_list(
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
) -> None:
    """Versions (with their aliases and validation F1)."""
    reg = _registry(registry)
    aliases = {a: reg.alias(a) for a in ("production", "candidate")}
    for version in reg.versions():
        tags = [a for a, v in aliases.items() if v == version]
        f1 = reg.manifest(version).get("metrics", {}).get("validation_f1")
        typer.echo(f"{version}\t{','.join(tags)}\t{'' if f1 is None else f'{f1:.4f}'}")


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version (or alias) to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "production",
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
) -> None:
    """Point an alias at a version (checksum-verified first)."""
    try:
        reg = _registry(registry)
        old = reg.promote(version, alias)
    except ScopeflowError as exc:
        raise _fail(exc) from None
    console.print(f"{alias}: {old} → {reg.alias(alias)}")


@models_app.command("rollback")
def models_rollback(
    alias: Annotated[str, typer.Option(help="Alias to roll back.")] = "production",
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
) -> None:
    """Point an alias back at the version it held before."""
    try:
        version = _registry(registry).rollback(alias)
    except ScopeflowError as exc:
        raise _fail(exc) from None
    console.print(f"{alias} → {version}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``specialise``, ``locate``, ``edge`` and the ``models`` group to ``app``."""
    app.command()(train)
    app.command()(specialise)
    app.command()(locate)
    app.command()(edge)
    app.add_typer(models_app, name="models")
