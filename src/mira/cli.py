"""The ``mira`` command line (typer + rich).

Every command turns user mistakes into one red line and a non-zero exit; a traceback is shown only with
``MIRA_DEBUG=1``. Heavy libraries are imported inside the commands that need them, so ``mira --help`` is fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="mira",
    help="MIRA: an iterative reasoning agent that wraps any image editor in a closed perception-action loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

DEFAULT_POLICY = "Qwen/Qwen2.5-VL-7B-Instruct"


class CLIError(Exception):
    """An error whose message is shown to the user as is."""


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known failures into a one-line message and exit code 2 (1 for unexpected ones)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mira.editors.base import EditorError
        from mira.images import InputError
        from mira.policies.base import PolicyError
        from mira.registry import UnknownBackendError

        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (CLIError, InputError, UnknownBackendError, EditorError, PolicyError, FileNotFoundError) as exc:
            if os.environ.get("MIRA_DEBUG"):
                raise
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:  # last resort: still one line, never a traceback unless asked for
            if os.environ.get("MIRA_DEBUG"):
                raise
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))} (set MIRA_DEBUG=1 for details)")
            raise typer.Exit(1) from None

    return wrapper


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text.encode("utf-8", "replace").decode("utf-8"))


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs -> dict; values are parsed as JSON when possible (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"option '{pair}' is not of the form key=value")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def build_backends(
    policy: str,
    editor: str,
    editor_model: Optional[str],
    device: Optional[str],
    dtype: str,
    offload: str,
    steps: Optional[int],
    guidance: Optional[float],
    max_pixels: Optional[int],
    temperature: Optional[float],
    policy_options: list[str] | None,
    editor_options: list[str] | None,
):
    """Policy and editor from the shared backend flags (used by `mira edit` and the servers)."""
    from mira.registry import POLICIES, load_policy

    p_opts = parse_options(policy_options)
    if policy not in POLICIES and ":" not in policy.split("/")[0]:
        p_opts = {"dtype": dtype, "device": device, "temperature": temperature, **p_opts}
        p_opts = {k: v for k, v in p_opts.items() if v is not None}
    elif temperature is not None and policy not in POLICIES:  # model-free baselines have no temperature
        p_opts.setdefault("temperature", temperature)
    editor_backend = build_editor(editor, editor_model, device, dtype, offload, steps, guidance, max_pixels,
                                  editor_options)
    return load_policy(policy, **p_opts), editor_backend


def build_editor(
    editor: str,
    editor_model: Optional[str],
    device: Optional[str],
    dtype: str,
    offload: str,
    steps: Optional[int],
    guidance: Optional[float],
    max_pixels: Optional[int],
    editor_options: list[str] | None,
):
    """An editor from the shared backend flags."""
    from mira.registry import load_editor

    e_opts = parse_options(editor_options)
    if editor in ("flux-kontext", "qwen-image-edit", "qwen-image-edit-plus", "diffusers"):
        e_opts = {"model": editor_model, "dtype": dtype, "device": device, "offload": offload,
                  "num_inference_steps": steps, "guidance_scale": guidance, "max_pixels": max_pixels, **e_opts}
        e_opts = {k: v for k, v in e_opts.items() if v is not None}
    elif editor_model:
        e_opts.setdefault("model", editor_model)
    return load_editor(editor, **e_opts)


class RichProgress:
    """Agent callback that prints each step (reasoning, action, timings) as it happens."""

    def __init__(self, out: Console, max_steps: int):
        from mira.agent import AgentCallback

        class _Callback(AgentCallback):
            def on_decision(_, index, parsed, trajectory):  # noqa: N805
                out.print(f"[dim]step {index}/{max_steps} · thinking: {escape(parsed.reasoning or '-')}[/]")

            def on_step(_, step, trajectory):  # noqa: N805
                if step.is_stop:
                    out.print(f"[bold green]step {step.index}: <STOP>[/] ({step.policy_seconds:.1f}s)")
                    return
                status = "[red]not executed[/]" if step.image is None else f"editor {step.editor_seconds:.1f}s"
                status += f" · {len(step.candidates)} editor calls" if len(step.candidates) > 1 else ""
                status += f" · score {step.scores['overall']:.2f}" if "overall" in step.scores else ""
                out.print(
                    f"[bold]step {step.index}:[/] {escape(step.action)}  "
                    f"[dim](policy {step.policy_seconds:.1f}s · {status} · seed {step.seed})[/]"
                )

        self.callback = _Callback()


@app.command()
@friendly_errors
def edit(
    image: Path = typer.Argument(..., help="Image to edit (PNG, JPEG, WebP, ...)."),
    instruction: str = typer.Argument(..., help="The complex editing instruction."),
    output: Path = typer.Option(Path("out.png"), "-o", "--output", help="Where to write the final image."),
    policy: str = typer.Option(DEFAULT_POLICY, help="Policy: Qwen-VL hub id or local path, 'passthrough', ..."),
    editor: str = typer.Option("flux-kontext", help="Editor: flux-kontext, qwen-image-edit, qwen-image-edit-plus, ..."),
    editor_model: Optional[str] = typer.Option(None, help="Hub id or local path of the editor's weights."),
    max_steps: int = typer.Option(8, min=1, max=64, help="Most edits the agent may issue."),
    seed: int = typer.Option(0, help="Base seed; every step's seed derives from it."),
    run_dir: Optional[Path] = typer.Option(None, help="Run folder (default: runs/<time>-<id>)."),
    device: Optional[str] = typer.Option(None, help="Torch device for local backends (default: cuda if present)."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32."),
    offload: str = typer.Option("none", help="Editor offload: none, model, sequential, group (low-memory GPUs)."),
    steps: Optional[int] = typer.Option(None, help="Editor denoising steps (default: the family's)."),
    guidance: Optional[float] = typer.Option(None, help="Editor guidance (default: the family's)."),
    max_pixels: Optional[int] = typer.Option(None, help="Editor working resolution in pixels (keeps aspect)."),
    temperature: Optional[float] = typer.Option(None, help="Policy sampling temperature."),
    policy_option: Optional[list[str]] = typer.Option(None, "--policy-option", help="Extra policy option key=value."),
    editor_option: Optional[list[str]] = typer.Option(None, "--editor-option", help="Extra editor option key=value."),
    verifier: Optional[str] = typer.Option(None, help="Judge (registry name) that scores candidates toward the "
                                           "instruction; needed by the options below that compare."),
    best_of: int = typer.Option(1, "--best-of", min=1, help="Editor samples (seeds) per step; the verifier keeps the best."),
    phrasings: int = typer.Option(1, min=1, help="Phrasings of each edit asked of the policy; candidates cycle them."),
    adaptive_threshold: Optional[float] = typer.Option(None, help="Stop sampling a step once a candidate scores this."),
    adaptive_gain: Optional[float] = typer.Option(None, help="Stop sampling a step once a candidate beats the "
                                                  "previous image's score by this."),
    rollback: int = typer.Option(0, min=0, help="Resample a step up to N times when it scores below the previous image."),
    route: Optional[list[str]] = typer.Option(None, "--route", help="'regex=editor': matching edits go to that editor."),
    compare_with: Optional[list[str]] = typer.Option(None, "--compare-with", help="Also try unrouted steps on this "
                                                     "editor; the verifier picks (repeatable)."),
    preserve_details: bool = typer.Option(False, "--preserve-details",
                                          help="Keep the pixels outside the region each edit changed."),
    max_editor_calls: Optional[int] = typer.Option(None, min=1, help="Budget: most editor calls for the request."),
    max_seconds: Optional[float] = typer.Option(None, min=0.001, help="Budget: most seconds for the request."),
) -> None:
    """Edit IMAGE following INSTRUCTION, one atomic step at a time."""
    from datetime import datetime

    from mira.agent import MiraAgent
    from mira.images import load_image, validate_instruction
    from mira.strategies.cli import load_verifier, strategy_from_flags

    instruction = validate_instruction(instruction)
    load_image(image)  # fail on bad input before loading any model
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise CLIError(f"output '{output}' must end in .png, .jpg, .jpeg or .webp")
    strategy = strategy_from_flags(
        verifier=verifier, best_of=best_of, phrasings=phrasings, adaptive_threshold=adaptive_threshold,
        adaptive_gain=adaptive_gain, rollback=rollback, routes=route, compare_with=compare_with,
        preserve_details=preserve_details, max_editor_calls=max_editor_calls, max_seconds=max_seconds)
    with console.status("loading models"):
        pol, ed = build_backends(policy, editor, editor_model, device, dtype, offload, steps, guidance, max_pixels,
                                 temperature, policy_option, editor_option)
        editors = {editor: ed}
        for name in [r.editor for r in strategy.routes] + list(compare_with or []):
            if name not in editors:
                editors[name] = build_editor(name, None, device, dtype, offload, steps, guidance, max_pixels, None)
        judge = load_verifier(verifier) if verifier else None
    agent = MiraAgent(policy=pol, editor=editors, verifier=judge, strategy=strategy, max_steps=max_steps, seed=seed,
                      callbacks=[RichProgress(console, max_steps).callback])
    if run_dir is None:
        run_dir = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    traj = agent.run(image, instruction, run_dir=run_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    traj.final_image.save(output)
    colour = "green" if traj.stop_reason == "stop" else "yellow"
    console.print(f"[{colour}]done[/]: {traj.stop_reason} after {len(traj.steps)} steps"
                  f"{' — ' + escape(traj.error) if traj.error else ''}")
    console.print(f"image: {output}\nrun:   {run_dir} (report.html)")
    if traj.stop_reason in ("policy_error", "editor_error"):
        raise typer.Exit(3)


@app.command()
@friendly_errors
def report(run_dir: Path = typer.Argument(..., help="A run folder written by `mira edit`.")) -> None:
    """Re-render RUN_DIR/report.html from the run folder alone."""
    from mira.trajectory import write_report

    if not run_dir.is_dir():
        raise CLIError(f"'{run_dir}' is not a folder; give a run folder written by `mira edit`")
    console.print(f"wrote {write_report(run_dir)}")


@app.command("tiny-models")
@friendly_errors
def tiny_models(
    directory: Path = typer.Argument(..., help="Folder to write the tiny models into."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Build only these (repeatable)."),
) -> None:
    """Write tiny random-weight models (Qwen2.5-VL, Qwen3-VL, FLUX.1-Kontext, Qwen-Image-Edit(-Plus)) for
    offline smoke tests of the whole real path on a CPU. Outputs are noise: the weights are random."""
    from mira.testing import build_tiny_models

    with console.status("building tiny models"):
        paths = build_tiny_models(directory, which=only)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def quiet_libraries() -> None:
    """Keep library progress bars and warnings out of MIRA's own step-by-step output."""
    for var, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(var, value)


from mira.serve.commands import serve, ui  # noqa: E402  (typer only; models load when a command runs)

app.command()(friendly_errors(serve))
app.command()(friendly_errors(ui))
from mira.testbed.commands import testbed  # noqa: E402  (typer only; the world loads when a command runs)

app.add_typer(testbed(friendly_errors), name="testbed")
from mira.data.commands import app as data_app  # noqa: E402

app.add_typer(data_app, name="data")
from mira.train.commands import app as train_app  # noqa: E402 - light: typer only

app.add_typer(train_app, name="train")

from mira.eval.commands import eval_command  # noqa: E402  (typer only; models load when the command runs)

app.command("eval")(friendly_errors(eval_command))


def main() -> None:
    quiet_libraries()
    try:
        app()
    except UnicodeEncodeError as exc:  # arguments that are not valid text reach us as surrogates
        console.print(f"[bold red]error:[/] an argument is not valid UTF-8 text ({exc.reason})")
        sys.exit(2)


if __name__ == "__main__":
    main()
