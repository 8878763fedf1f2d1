"""The whole learning run, stage by stage, resumable: ``run(config, OUT)`` (CLI ``mira testbed run OUT``).

Stages, each recorded in ``OUT/progress.json`` when it finishes (a rerun skips finished stages, and a training stage
resumes from its last checkpoint):

1. ``policy``: the random-weight Qwen3-VL and its processor (``OUT/policy-init``);
2. ``data``: the builder's dataset plus the teacher's, shuffled together (``OUT/data/sft``), the short-prompt rows
   (``OUT/data/pretrain``) and the GRPO states (``OUT/data/grpo``);
3. ``pretrain``, 4. ``sft``, 5. ``grpo``: training (``OUT/pretrain``, ``OUT/sft``, ``OUT/grpo``);
6. ``evaluate``: single-shot, static plan, MIRA-SFT, MIRA-SFT+GRPO and the oracle on held-out tasks, run by the
   evaluation harness (``OUT/eval``: run folders, ``results.jsonl``, the harness's report; it resumes per item).

The report (``OUT/report.md``, also returned) holds the table, the GRPO reward curve and what each stage did.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any, Callable

from mira.testbed.learning.config import LearningConfig, check_resumable

class Progress:
    """``progress.json``: what each finished stage reported."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def finish(self, stage: str, info: dict[str, Any]) -> None:
        self.done[stage] = info
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=2))
        tmp.replace(self.path)


def run(config: LearningConfig, output: str | Path, *, log: Callable[[str], None] = print) -> str:
    """Run (or resume) every stage in ``output``; returns the report (Markdown)."""
    out = Path(output)
    check_resumable(config, out)
    progress = Progress(out / "progress.json")
    stages: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("policy", lambda: _policy(config, out)),
        ("data", lambda: _data(config, out, log)),
        ("pretrain", lambda: _pretrain(config, out)),
        ("sft", lambda: _sft(config, out)),
        ("grpo", lambda: _grpo(config, out)),
        ("evaluate", lambda: _evaluate(config, out, log)),
    ]
    for name, stage in stages:
        if name in progress.done:
            log(f"{name}: done earlier")
            continue
        log(f"{name}: running")
        start = time.monotonic()
        info = stage()
        info["wall_minutes"] = round((time.monotonic() - start) / 60.0, 2)
        progress.finish(name, info)
        log(f"{name}: {_brief(info)}")
    report = make_report(config, progress.done)
    (out / "report.md").write_text(report)
    return report


def _brief(info: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in info.items() if not isinstance(v, (list, dict)))


def _policy(config: LearningConfig, out: Path) -> dict[str, Any]:
    from mira.testbed.learning.data import language_text
    from mira.testbed.learning.model import build_policy

    return {"parameters": build_policy(config, out / "policy-init", language_text(config))}


def _data(config: LearningConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from mira.data.export import quiet_datasets

    with quiet_datasets():
        return _make_data(config, out / "data", log)


def _make_data(config: LearningConfig, folder: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets

    from mira.testbed.learning.data import build_with_builder, grpo_dataset, pretrain_dataset, teacher_dataset

    builder = build_with_builder(config, folder / "builder")
    log(f"data: the data builder made {len(builder)} samples")
    teacher, counts = teacher_dataset(config)
    log(f"data: the teacher made {len(teacher)} samples")
    sft = datasets.concatenate_datasets([builder, teacher]).shuffle(seed=config.seed)
    sft.save_to_disk(str(folder / "sft"))
    short = pretrain_dataset(config, sft)
    short.save_to_disk(str(folder / "pretrain"))
    grpo = grpo_dataset(config)
    grpo.save_to_disk(str(folder / "grpo"))
    kinds = Counter(builder["kind"])
    return {"builder_samples": len(builder), "builder_kinds": dict(kinds), "teacher_samples": len(teacher),
            "teacher_kinds": dict(counts), "sft_samples": len(sft), "pretrain_samples": len(short),
            "grpo_states": len(grpo)}


def _pretrain(config: LearningConfig, out: Path) -> dict[str, Any]:
    from mira.testbed.learning.train import pretrain

    if config.pretrain_steps == 0 or config.pretrain_minutes == 0:
        return {"skipped": True}
    return pretrain(config, out / "policy-init", out / "data" / "pretrain", out / "pretrain")


def _sft(config: LearningConfig, out: Path) -> dict[str, Any]:
    from mira.testbed.learning.train import train_sft_stage

    start = out / "pretrain" if (out / "pretrain" / "config.json").is_file() else out / "policy-init"
    return train_sft_stage(config, start, out / "data" / "sft", out / "sft")


def _grpo(config: LearningConfig, out: Path) -> dict[str, Any]:
    from mira.testbed.learning.train import train_grpo_stage

    return train_grpo_stage(config, out / "sft", out / "data" / "grpo", out / "grpo")


def _evaluate(config: LearningConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from mira.testbed.learning.evaluate import evaluate

    methods = evaluate(out / "eval", {"mira-sft": out / "sft", "mira-grpo": out / "grpo"}, n=config.eval_tasks,
                       seed=config.eval_seed, clauses=(1, config.max_clauses), error_rate=config.error_rate,
                       max_steps=config.eval_max_steps, concurrency=config.eval_batch,
                       max_new_tokens=config.max_new_tokens)
    for name, m in methods.items():
        log(f"evaluate: {name}: {m['success']:.1%} solved")
    return {"tasks": config.eval_tasks, "methods": methods}


def make_report(config: LearningConfig, done: dict[str, Any]) -> str:
    """The Markdown report: the table, the GRPO reward curve, what each stage did."""
    lines = ["# Learning in the testbed", ""]
    evaluation = done.get("evaluate")
    if evaluation:
        methods = evaluation["methods"]
        ks = sorted({int(k) for m in methods.values() for k in m["by_k"]})
        head = ["method", "success", "mean SC", "editor calls/task", *(f"k={k}" for k in ks)]
        lines += [f"{evaluation['tasks']} held-out tasks (seed {config.eval_seed}), editor error rate "
                  f"{config.error_rate}, at most {config.eval_max_steps} steps; success = final scene exactly the "
                  "target.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, m in methods.items():
            by_k = {int(k): v for k, v in m["by_k"].items()}
            lines.append(f"| {name} | {m['success']:.1%} | {m['mean_sc']:.2f} | {m['calls']:.2f} | "
                         + " | ".join(f"{by_k[k]:.1%}" if k in by_k else "" for k in ks) + " |")
        lines.append(f"| {1 - config.error_rate:g}^k, for reference | | | | "
                     + " | ".join(f"{(1 - config.error_rate) ** k:.1%}" for k in ks) + " |")
        lines += ["", "Stop reasons: " + "; ".join(
            f"{name}: " + ", ".join(f"{r} {n}" for r, n in sorted(m["stop_reasons"].items()))
            for name, m in methods.items() if m["stop_reasons"]), ""]
    grpo = done.get("grpo")
    if grpo and grpo.get("curve"):
        lines += ["GRPO reward curve, mean per sampled answer over each bin of steps (total = format + state value; "
                  "state value = edit_reward + edit_baseline, the judged score 0-1 of the state the answer leads to):",
                  "", "| steps | total | format | state value |", "|---|---|---|---|"]
        lines += [f"| {b['steps']} | {b['reward']:.3f} | {b['format']:.3f} | {b['edit'] + b['baseline']:.3f} |"
                  for b in bin_curve(grpo["curve"])]
        lines.append("")
    lines += ["Stages:", ""]
    for stage in ("policy", "data", "pretrain", "sft", "grpo", "evaluate"):
        if stage in done:
            info = {k: v for k, v in done[stage].items() if k not in ("curve", "methods")}
            lines.append(f"- {stage}: {json.dumps(info)}")
    return "\n".join(lines) + "\n"


def bin_curve(curve: list[dict[str, float]], bins: int = 10) -> list[dict[str, Any]]:
    """The reward curve averaged over up to ``bins`` consecutive groups of steps."""
    size = max(1, -(-len(curve) // bins))
    out = []
    for i in range(0, len(curve), size):
        part = curve[i:i + size]
        out.append({"steps": f"{int(part[0]['step'])}-{int(part[-1]['step'])}",
                    **{key: mean(p.get(key, 0.0) for p in part) for key in ("reward", "format", "edit", "baseline")}})
    return out
