"""``scopeflow explore``: let a GP choose where to measure spectra on a survey, or test hypotheses."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from scopeflow.errors import ScopeflowError


def register(app: typer.Typer) -> None:
    """Add the ``explore`` command to ``app``."""

    @app.command("explore")
    def explore_command(
        dataset: Path = typer.Option(
            ...,
            "--dataset",
            help="Zarr dataset to write (created if absent; resumed if it holds measurements).",
        ),
        seed: int = typer.Option(0, help="Twin sample seed (defects, strain, noise)."),
        lattice: str = typer.Option("graphene", help="graphene, mos2 or perovskite."),
        prop: str = typer.Option(
            "dopant",
            "--property",
            help="dopant (band intensity), defect (peak ratio), plasmon (peak position).",
        ),
        model: str = typer.Option("dkl", help="dkl (deep kernel learning) or gp (plain GP on raw patches)."),
        acquisition: str = typer.Option(
            "logei",
            "--acquisition",
            help="BoTorch acquisition function scoring the candidates: "
            "logei (ei), pi, ucb, maxvar, thompson, qlogei, qucb.",
        ),
        beta: float = typer.Option(4.0, help="UCB exploration weight (mean + sqrt(beta)·std)."),
        batch: int = typer.Option(1, help="Measurements chosen per step."),
        budget: int = typer.Option(90, help="Maximum number of measurements (earlier runs' included)."),
        budget_seconds: float | None = typer.Option(None, help="Maximum instrument time of this run, s."),
        target: float | None = typer.Option(None, help="Stop once a measured value reaches this."),
        dwell: float = typer.Option(0.05, help="Spectrum dwell time, s (longer: less noise)."),
        hypotheses: str | None = typer.Option(
            None,
            help="Hypothesis learning: a .py file (or module) defining HYPOTHESES or hypotheses(nominal); "
            "tasks.active.hypotheses.strain holds three plasmon-vs-strain laws.",
        ),
        policy: str = typer.Option(
            "softmax", help="How a hypothesis is chosen per step: softmax or egreedy."
        ),
        gate: bool = typer.Option(False, help="Pause for a person's answer about each batch (Prefect UI)."),
        gate_timeout: int = typer.Option(300, help="Seconds to wait for an answer before measuring anyway."),
        prefect: bool = typer.Option(
            True, help="Run as a Prefect flow (artifacts); --no-prefect runs plainly."
        ),
    ) -> None:
        """Survey image → candidates → fit, choose, measure, record until budget or target."""
        from flows.explore import explore, explore_flow
        from tasks.active.campaign_loop import ExploreConfig

        try:
            config = ExploreConfig(
                seed=seed,
                lattice=lattice,
                property=prop,
                model=model,
                scorer=acquisition,
                beta=beta,
                batch=batch,
                budget=budget,
                budget_seconds=budget_seconds,
                target=target,
                dwell=dwell,
                hypotheses=hypotheses,
                policy=policy,
            )
            if hypotheses:
                from flows.explore import nominal_value
                from tasks.active.hypotheses import load_hypotheses

                load_hypotheses(hypotheses, nominal=nominal_value(prop, lattice))  # fail before any work
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
        resumed = f" (resumed after {result['resumed_from']})" if result["resumed_from"] else ""
        typer.echo(
            f"measured {result['n_measured']} points{resumed} in {result['steps']} steps "
            f"({result['instrument_seconds']:.2f} s of instrument time); best {result['best_value']:.4g} "
            f"at (row, col) {result['best_rowcol']}; target found: {result['target_found']}; "
            f"decision time median {sorted(times)[len(times) // 2] if times else 0:.3f} s"
        )
        if result.get("hypotheses"):
            for h in result["hypotheses"]["hypotheses"]:
                params = ", ".join(f"{k} = {v:.4g} ± {h['sd'][k]:.2g}" for k, v in h["params"].items())
                typer.echo(
                    f"hypothesis {h['name']}: weight {h['weight']:.3f}, chosen {h['chosen']}×; {params}"
                )
        typer.echo(f"measurements in {dataset}/measurements")
