"""``mira testbed demo | export | benchmark | run``: the testbed world from the command line (typer only at import
time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer


def _check_range(low: int, high: int) -> None:
    from mira.cli import CLIError

    if low > high:
        raise CLIError(f"--min-clauses {low} is above --max-clauses {high}; swap them")


def demo(
    n: int = typer.Option(200, min=1, help="Number of held-out tasks."),
    seed: int = typer.Option(10_000, help="Task seed (10000 and up are kept out of training data)."),
    error_rate: float = typer.Option(0.2, min=0.0, max=1.0, help="Probability that the editor botches a clause."),
    min_clauses: int = typer.Option(1, min=1, help="Fewest clauses per instruction."),
    max_clauses: int = typer.Option(4, min=1, help="Most clauses per instruction."),
    max_steps: int = typer.Option(12, min=1, help="Most edits the closed loop may issue per task."),
    partial: str = typer.Option("random", help="How the editor handles multi-clause instructions: first, random, all."),
) -> None:
    """Compare single-shot, static plan and the oracle closed loop on held-out testbed tasks; print the table."""
    from mira.cli import CLIError
    from mira.testbed.demo import format_table, run_baselines
    from mira.testbed.editor import PARTIAL_MODES

    if partial not in PARTIAL_MODES:
        raise CLIError(f"--partial must be one of {', '.join(PARTIAL_MODES)}, not '{partial}'")
    _check_range(min_clauses, max_clauses)
    results = run_baselines(n, seed, error_rate, (min_clauses, max_clauses), max_steps, partial)
    typer.echo(format_table(results, error_rate))


def export(
    directory: Path = typer.Argument(..., help="Folder for sessions.jsonl and the images."),
    n: int = typer.Option(1000, min=1, help="Number of sessions."),
    seed: int = typer.Option(0, help="Task seed."),
    min_clauses: int = typer.Option(2, min=1, help="Fewest turns per session."),
    max_clauses: int = typer.Option(4, min=1, help="Most turns per session."),
) -> None:
    """Write testbed tasks as multi-turn sessions (JSONL + PNGs) for `mira data`."""
    from mira.testbed.tasks import export_sessions

    _check_range(min_clauses, max_clauses)
    typer.echo(f"wrote {export_sessions(directory, n, seed, (min_clauses, max_clauses))}")


def benchmark(
    directory: Path = typer.Argument(..., help="Folder for samples.jsonl and the images."),
    n: int = typer.Option(200, min=1, help="Number of samples."),
    seed: int = typer.Option(10_000, help="Task seed (10000 and up are kept out of training data)."),
    min_clauses: int = typer.Option(1, min=1, help="Fewest clauses per instruction."),
    max_clauses: int = typer.Option(4, min=1, help="Most clauses per instruction."),
) -> None:
    """Write held-out testbed tasks as an evaluation benchmark (samples.jsonl + PNGs) for `mira eval`."""
    from mira.testbed.tasks import export_benchmark

    _check_range(min_clauses, max_clauses)
    typer.echo(f"wrote {export_benchmark(directory, n, seed, (min_clauses, max_clauses))}")


def run(
    directory: Path = typer.Argument(..., help="Output folder: data, checkpoints, evaluation, report.md; rerun to resume."),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny sizes and a handful of steps: the whole pipeline in a minute."),
    minutes: Optional[float] = typer.Option(None, min=0.1, help="Training minutes in all (split over the stages as "
                                                                 "configured); default: the preset's."),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="Override a setting, KEY=VALUE (repeatable)."),
) -> None:
    """Train a tiny Qwen3-VL policy from random weights (short-prompt pre-training, SFT, GRPO) on testbed data made
    by the data builder and the oracle, evaluate it against the baselines on held-out tasks, print the report."""
    import time

    from mira.cli import CLIError
    from mira.testbed.learning.config import LearningError, apply_overrides, full
    from mira.testbed.learning.config import smoke as smoke_preset
    from mira.testbed.learning.pipeline import run as run_learning

    start = time.monotonic()
    try:
        config = apply_overrides(smoke_preset() if smoke else full(), settings or [])
        if minutes is not None:
            config = config.with_minutes(minutes)
        report = run_learning(config, directory,
                              log=lambda text: typer.echo(f"[{(time.monotonic() - start) / 60:6.1f} min] {text}"))
    except LearningError as exc:
        raise CLIError(str(exc)) from None
    typer.echo(report)


def testbed(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> typer.Typer:
    """The ``testbed`` command group, each command wrapped by ``wrap`` (the CLI's error handler)."""
    group = typer.Typer(help="The CPU-verifiable testbed world: baselines, training sessions, evaluation benchmark, "
                        "learning runs.", no_args_is_help=True)
    group.command()(wrap(demo))
    group.command()(wrap(export))
    group.command()(wrap(benchmark))
    group.command()(wrap(run))
    return group
