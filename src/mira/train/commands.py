"""``mira train sft|grpo CONFIG.yaml [--set key=value ...] [--resume]``.

Light at import time (typer only), so ``mira --help`` stays fast. For several GPUs, launch the same commands through
accelerate: ``accelerate launch --config_file configs/accelerate/zero2.yaml -m mira.train sft CONFIG.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

app = typer.Typer(
    name="train",
    help="Train a MIRA policy: SFT on MIRA-Editing, then GRPO with an editor and a judge in the loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG_HELP = "Flat YAML config: MIRA's options plus any TRL config field (see configs/train/)."
SET_HELP = "Override one option, key=value (repeatable); values are read as JSON when possible."
RESUME_HELP = "Resume from the latest checkpoint in output_dir."


@app.command()
def sft(
    config: Path = typer.Argument(..., help=CONFIG_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
) -> None:
    """Supervised fine-tuning on a MIRA-Editing dataset (TRL SFTTrainer)."""

    def run(options: dict[str, Any]) -> Any:
        from mira.train.config import load_config
        from mira.train.sft import MiraSFTConfig, train_sft

        return train_sft(load_config(MiraSFTConfig, config, options))

    _run(run, set_, resume)


@app.command()
def grpo(
    config: Path = typer.Argument(..., help=CONFIG_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
) -> None:
    """GRPO with an editor and a judge in the loop (TRL GRPOTrainer)."""

    def run(options: dict[str, Any]) -> Any:
        from mira.train.config import load_config
        from mira.train.grpo import MiraGRPOConfig, train_grpo

        return train_grpo(load_config(MiraGRPOConfig, config, options))

    _run(run, set_, resume)


def _run(train: Callable[[dict[str, Any]], Any], pairs: list[str] | None, resume: bool) -> None:
    """Run a training command with the CLI's one-line error handling."""
    from mira.cli import CLIError, console, friendly_errors, parse_options

    @friendly_errors
    def guarded() -> None:
        from mira.train.config import ConfigError
        from mira.train.data import DatasetError

        options = parse_options(pairs)
        if resume:
            options["resume_from_checkpoint"] = "latest"
        try:
            trainer = train(options)
        except (ConfigError, DatasetError) as exc:
            raise CLIError(str(exc)) from None
        if not trainer.is_world_process_zero():
            return
        out = trainer.args.output_dir
        console.print(f"[green]done[/]: policy saved to {out}", soft_wrap=True)
        console.print(f"try it:  mira edit IMAGE \"INSTRUCTION\" --policy {out}", soft_wrap=True)

    guarded()


def main() -> None:
    app()
