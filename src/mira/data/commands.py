"""``mira data``: build the MIRA-Editing training set (see :mod:`mira.data.build`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Build MIRA-Editing, the training set of start / continue / stop samples.",
                  no_args_is_help=True)


@app.command("build")
def build_command(
    config: Path = typer.Argument(..., help="YAML build config (see configs/mira_editing.yaml)."),
    ray: bool = typer.Option(False, "--ray", help="Spread the expensive stages over a Ray cluster (ray.address)."),
    redo: Optional[str] = typer.Option(None, "--redo", help="Delete this stage and the later ones, then rebuild."),
) -> None:
    """Run or resume every stage of CONFIG; a re-run skips finished shards."""
    from mira.cli import CLIError, console, friendly_errors
    from mira.data.config import DataBuildError, load_config

    @friendly_errors
    def run() -> None:
        from mira.data.build import build

        try:
            build(load_config(config), use_ray=ray, redo=redo, console=console)
        except DataBuildError as exc:
            raise CLIError(str(exc)) from None

    run()
