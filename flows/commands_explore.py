"""``scopeflow explore``: let deep kernel learning choose where to measure spectra on a survey."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from scopeflow.errors import ScopeflowError


def register(app: typer.Typer) -> None:
    """Add the ``explore`` command to ``app``."""

    @app.command("explore")
    def explore_command(
        dataset: Path = typer.Option(..., "--dataset", help="Zarr dataset to write (created if absent)."),
        seed: int = typer.Option(0, help="Twin sample seed (defects, strain, noise)."),
        lattice: str = typer.Option("graphene", help="graphene, mos2 or perovskite."),
        prop: str = typer.Option(
            "dopant",
            "--property",
            help="dopant (band intensity), defect (peak ratio), plasmon (peak position).",
        ),
        model: str = typer.Option("dkl", help="dkl (deep kernel learning) or gp (plain GP on raw patches)."),
        acquisition: str = typer.Option("ei", help="ei, ucb, maxvar or thompson."),
        beta: float = typer.Option(4.0, help="UCB exploration weight (mean + sqrt(beta)·std)."),
        batch: int = typer.Option(1, help="Measurements chosen per step."),
        budget: int = typer.Option(90, help="Maximum number of measurements."),
        budget_seconds: float | None = typer.Option(None, help="Maximum instrument time, s."),
        target: float | None = typer.Option(None, help="Stop once a measured value reaches this."),
        gate: bool = typer.Option(False, help="Pause for approval of each batch (Prefect UI)."),
        gate_timeout: int = typer.Option(300, help="Seconds to wait for approval before measuring anyway."),
        prefect: bool = typer.Option(
            True, help="Run as a Prefect flow (progress artifact); --no-prefect runs plainly."
        ),
    ) -> None:
        """Survey image → candidate patches → fit, choose, measure, record until budget or target."""
        from flows.explore import ExploreConfig, explore, explore_flow

        try:
            config = ExploreConfig(
                seed=seed,
                lattice=lattice,
                property=prop,
                model=model,
                acquisition=acquisition,
                beta=beta,
                batch=batch,
                budget=budget,
                budget_seconds=budget_seconds,
                target=target,
            )
            if gate and not prefect:
                raise typer.BadParameter("--gate needs the Prefect flow (drop --no-prefect)")
            if prefect:
                from flows.prefect_setup import prepare_prefect

                prepare_prefect(lambda line: typer.echo(line, err=True))
                result = explore_flow(str(dataset), asdict(config), gate=gate, gate_timeout=gate_timeout)
            else:
                result = asdict(explore(dataset, config))
        except ScopeflowError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        times = result["decision_seconds"]
        typer.echo(
            f"measured {result['n_measured']} points in {result['steps']} steps "
            f"({result['instrument_seconds']:.2f} s of instrument time); best {result['best_value']:.4g} "
            f"at (row, col) {result['best_rowcol']}; target found: {result['target_found']}; "
            f"decision time median {sorted(times)[len(times) // 2] if times else 0:.3f} s"
        )
        typer.echo(f"measurements in {dataset}/measurements")
