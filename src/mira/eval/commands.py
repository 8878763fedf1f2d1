"""``mira eval``: run every method on a benchmark, score the results, write tables and a gallery; resumable.

Methods (``--methods``, comma-separated):

- ``raw``: the editor alone, given the whole instruction once;
- ``rewrite``: a VLM (``--planner``, default: the ``--policy`` model) rewrites the instruction into one prompt;
- ``plan``: the same VLM decomposes the instruction once; the plan runs open loop;
- ``mira``: the MIRA loop with ``--policy`` (an instruct VLM zero-shot, or a trained checkpoint);
- ``NAME=POLICY-SPEC``: any other policy, e.g. ``sft=checkpoints/sft`` or ``gpt=openai:gpt-4.1``.

Only light modules are imported here (the command line must start fast); the backends load when the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

BUILTIN_METHODS = ("raw", "rewrite", "plan", "mira")
SERVED_PREFIXES = ("openai:", "openai-images:", "http://", "https://")


def method_specs(methods: str, policy: str, planner: str) -> dict[str, str]:
    """``raw,rewrite,plan,mira,NAME=SPEC`` -> {method name: policy spec}."""
    specs: dict[str, str] = {}
    for entry in (m.strip() for m in methods.split(",")):
        if not entry:
            continue
        name, sep, spec = entry.partition("=")
        name = name.strip()
        if sep:
            specs[name] = spec.strip()
        elif name in BUILTIN_METHODS:
            specs[name] = {"raw": "passthrough", "rewrite": f"rewrite:{planner}", "plan": f"plan:{planner}",
                           "mira": policy}[name]
        else:
            raise ValueError(f"unknown method '{name}': use {', '.join(BUILTIN_METHODS)} or NAME=POLICY-SPEC")
        if not name or not specs[name]:
            raise ValueError(f"method '{entry}' needs a name and a policy spec")
    if not specs:
        raise ValueError("give at least one method")
    return specs


def served(spec: str | None) -> bool:
    """Whether a backend spec names a served backend (HTTP), which the async mode can call concurrently."""
    if spec is None or spec == "passthrough":
        return True
    for wrapper in ("rewrite:", "plan:", "viescore:"):
        if spec.startswith(wrapper):
            spec = spec[len(wrapper):]
    return spec.startswith(SERVED_PREFIXES)


@dataclass
class SpecFactory:
    """Builds a worker's backends from registry specs and CLI options. Plain data, so Ray can ship it to workers.

    The editor and the ``mira`` policy are built like ``mira edit`` builds them (same flags); the other methods'
    policies with :func:`mira.registry.load_policy` (the ``rewrite`` / ``plan`` ones with ``planner_options``).
    """

    editor: str
    methods: dict[str, str]
    judge: str | None = None
    judge_options: dict[str, Any] = field(default_factory=dict)
    planner_options: dict[str, Any] = field(default_factory=dict)
    editor_model: str | None = None
    device: str | None = None
    dtype: str = "auto"
    offload: str = "none"
    steps: int | None = None
    guidance: float | None = None
    max_pixels: int | None = None
    temperature: float | None = None
    policy_options: list[str] = field(default_factory=list)
    editor_options: list[str] = field(default_factory=list)

    def __call__(self, device: Any = None) -> Any:
        from mira.cli import build_backends
        from mira.eval.runner import Backends
        from mira.policies.baselines import RewritePolicy, VLMPlanPolicy
        from mira.registry import load_chat, load_judge, load_policy
        from mira.vlm import ChatBackend

        mira_spec = self.methods.get("mira", "passthrough")
        mira_policy, editor = build_backends(
            mira_spec, self.editor, self.editor_model, device or self.device, self.dtype, self.offload, self.steps,
            self.guidance, self.max_pixels, self.temperature, self.policy_options, self.editor_options)
        # one VLM serves both baselines, and the mira policy itself when it is the planner (no second copy)
        chats: dict[str, Any] = {mira_spec: mira_policy} if isinstance(mira_policy, ChatBackend) else {}
        own = {k: v for k, v in self.planner_options.items() if k in ("sampling", "max_edits")}
        backend_options = {k: v for k, v in self.planner_options.items() if k not in own}

        def chat(spec: str) -> Any:
            if spec not in chats:
                chats[spec] = load_chat(spec, **backend_options)
            return chats[spec]

        policies = {}
        for name, spec in self.methods.items():
            if name == "mira":
                policies[name] = mira_policy
            elif spec.startswith("rewrite:"):
                policies[name] = RewritePolicy(chat(spec[len("rewrite:"):]), sampling=own.get("sampling"))
            elif spec.startswith("plan:"):
                policies[name] = VLMPlanPolicy(chat(spec[len("plan:"):]), **own)
            else:
                policies[name] = load_policy(spec)
        judge = load_judge(self.judge, **self.judge_options) if self.judge else None
        return Backends(editor=editor, policies=policies, judge=judge)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got '{text}'") from None


def eval_command(
    benchmark: Optional[str] = typer.Option(None, help="complex-edit, magicbrush, gedit-bench, compbench, or a "
                                            "local benchmark folder (samples.jsonl + images)."),
    benchmark_option: Optional[list[str]] = typer.Option(None, "--benchmark-option",
                                                         help="Benchmark loader option key=value (complexity=8, "
                                                              "split=..., source=<local copy>)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate only the first N samples."),
    methods: str = typer.Option("raw,rewrite,plan,mira", help="Comma-separated: raw, rewrite, plan, mira, "
                                "NAME=POLICY-SPEC."),
    policy: str = typer.Option("Qwen/Qwen2.5-VL-7B-Instruct", help="Policy of the mira method (hub id, local "
                               "checkpoint, openai:MODEL ...)."),
    planner: Optional[str] = typer.Option(None, help="VLM of the rewrite and plan baselines (default: --policy)."),
    planner_option: Optional[list[str]] = typer.Option(None, "--planner-option",
                                                       help="Planner option key=value (default: --policy-option)."),
    judge: str = typer.Option("openai:gpt-4.1", help="Judge: openai:MODEL, viescore:CHAT-SPEC, editscore, arniqa, "
                              "topiq, iqa:METRIC, testbed, or 'none'."),
    judge_option: Optional[list[str]] = typer.Option(None, "--judge-option", help="Judge option key=value "
                                                     "(base_url=..., retries=2 ...)."),
    editor: str = typer.Option("flux-kontext", help="Editor: flux-kontext, qwen-image-edit, ..."),
    editor_model: Optional[str] = typer.Option(None, help="Hub id or local path of the editor's weights."),
    editor_option: Optional[list[str]] = typer.Option(None, "--editor-option", help="Editor option key=value."),
    policy_option: Optional[list[str]] = typer.Option(None, "--policy-option", help="Policy option key=value."),
    seeds: str = typer.Option("0", help="Comma-separated base seeds; every method runs every seed."),
    max_steps: int = typer.Option(8, min=1, max=64, help="Most edits per item."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: evals/BENCHMARK-EDITOR). Re-running "
                                       "the same command resumes it."),
    mode: str = typer.Option("auto", help="auto, async (served backends), local (in-process models), ray."),
    concurrency: int = typer.Option(16, min=1, help="Items in flight in async mode."),
    devices: Optional[str] = typer.Option(None, help="Local mode: comma-separated devices, one worker each "
                                          "(cuda:0,cuda:1)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray mode: cluster address (default: start a local one)."),
    workers: int = typer.Option(2, min=1, help="Ray mode: number of workers."),
    worker_gpus: float = typer.Option(1.0, min=0.0, help="Ray mode: GPUs per worker."),
    worker_cpus: float = typer.Option(1.0, min=0.0, help="Ray mode: CPUs per worker."),
    device: Optional[str] = typer.Option(None, help="Torch device for local backends."),
    dtype: str = typer.Option("auto", help="auto, bfloat16, float16, float32."),
    offload: str = typer.Option("none", help="Editor offload: none, model, sequential, group."),
    steps: Optional[int] = typer.Option(None, help="Editor denoising steps (default: the family's)."),
    guidance: Optional[float] = typer.Option(None, help="Editor guidance (default: the family's)."),
    max_pixels: Optional[int] = typer.Option(None, help="Editor working resolution in pixels (keeps aspect)."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature of the mira policy."),
    redo_failed: bool = typer.Option(False, help="Run again the items that failed (backend error, no score)."),
    report_only: bool = typer.Option(False, help="Only re-write the report of --out from its results."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Evaluate methods on a benchmark: run, score, and write report.md, results.csv, summary.json, gallery.html."""
    from mira.cli import CLIError, console, parse_options
    from mira.eval.benchmarks import BenchmarkError, load_benchmark, safe_id
    from mira.eval.report import markdown, summarize, write_report
    from mira.eval.runner import EvalRunner, RunnerError, read_records

    if benchmark is None and not (report_only and out is not None):
        raise CLIError("give --benchmark (or --report-only with --out)")
    if out is None:
        out = Path("evals") / f"{safe_id(Path(str(benchmark)).name)}-{safe_id(editor)}"
    if report_only:
        paths = write_report(out)
        console.print(f"wrote {paths['markdown']}, {paths['csv']}, {paths['json']}, {paths['gallery']}")
        return
    try:
        specs = method_specs(methods, policy, planner or policy)
        seed_list = _ints(seeds, "--seeds")
        if mode == "auto":
            specs_served = all(served(s) for s in [*specs.values(), editor, None if judge == "none" else judge])
            mode = "async" if specs_served else ("ray" if ray_address else "local")
        factory = SpecFactory(
            editor=editor, methods=specs, judge=None if judge == "none" else judge,
            judge_options=parse_options(judge_option),
            planner_options=parse_options(planner_option if planner_option or planner else policy_option),
            editor_model=editor_model, device=device, dtype=dtype, offload=offload, steps=steps, guidance=guidance,
            max_pixels=max_pixels, temperature=temperature,
            policy_options=list(policy_option or []), editor_options=list(editor_option or []),
        )
        samples = load_benchmark(str(benchmark), limit=limit, **parse_options(benchmark_option))
        console.print(f"{len(samples)} samples x {len(specs)} methods x {len(seed_list)} seeds -> {out} ({mode})")
        runner = EvalRunner(
            samples, list(specs), out, factory=factory, seeds=seed_list, max_steps=max_steps, mode=mode,
            concurrency=concurrency, devices=[d.strip() for d in devices.split(",")] if devices else [device],
            ray_address=ray_address, workers=workers, worker_gpus=worker_gpus, worker_cpus=worker_cpus,
            benchmark=str(benchmark), redo_failed=redo_failed, progress=progress,
        )
        runner.run()
    except (RunnerError, BenchmarkError, ValueError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    paths = write_report(out)
    records = list(read_records(out / "results.jsonl").values())
    typer.echo(markdown(summarize(records, list(specs)), f"Evaluation: {benchmark}"))
    console.print(f"report: {paths['markdown']} · gallery: {paths['gallery']}")
