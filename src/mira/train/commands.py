"""``mira train sft|grpo CONFIG.yaml [--set key=value ...] [--resume]``.

Light at import time (typer only), so ``mira --help`` stays fast. For several GPUs, launch the same commands through
accelerate: ``accelerate launch --config_file configs/accelerate/zero2.yaml -m mira.train sft CONFIG.yaml``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

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


def _command(name: str, doc: str, module: str, config_class: str, train: str) -> None:
    """Register ``mira train NAME``: build ``module.config_class`` from the YAML, then run ``module.train`` on it."""

    def command(
        config: Path = typer.Argument(..., help=CONFIG_HELP),
        set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
        resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    ) -> None:
        from mira.cli import CLIError, console, friendly_errors, parse_options

        @friendly_errors
        def run() -> None:
            from mira.train.config import ConfigError, load_config
            from mira.train.data import DatasetError

            options = parse_options(set_)
            if resume:
                options["resume_from_checkpoint"] = "latest"
            trainer_module = importlib.import_module(module)
            try:
                trainer = getattr(trainer_module, train)(
                    load_config(getattr(trainer_module, config_class), config, options)
                )
            except (ConfigError, DatasetError) as exc:
                raise CLIError(str(exc)) from None
            if trainer.is_world_process_zero():
                out = trainer.args.output_dir
                console.print(f"[green]done[/]: policy saved to {out}", soft_wrap=True)
                console.print(f"try it:  mira edit IMAGE \"INSTRUCTION\" --policy {out}", soft_wrap=True)

        run()

    command.__doc__ = doc
    app.command(name)(command)


_command("sft", "Supervised fine-tuning on a MIRA-Editing dataset (TRL SFTTrainer).",
         "mira.train.sft", "MiraSFTConfig", "train_sft")
_command("grpo", "GRPO with an editor and a judge in the loop (TRL GRPOTrainer).",
         "mira.train.grpo", "MiraGRPOConfig", "train_grpo")


def main() -> None:
    app()
