"""The settings of a learning run: world, policy size, data sizes, training steps and minutes, evaluation.

:func:`full` is the issue's protocol on a 2-core CPU, :func:`smoke` a one-minute version of the whole pipeline.
Every field can be overridden (``mira testbed run OUT --set sft_lr=5e-4``); the run records its settings in
``OUT/config.json`` and refuses to resume a folder made with different ones (only the minutes may change).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESUMABLE_CHANGES = ("pretrain_minutes", "sft_minutes", "grpo_minutes", "eval_batch")


class LearningError(ValueError):
    """A learning-run setting or folder that cannot be used; the message says what to change."""


@dataclass
class LearningConfig:
    """One learning run. Training seeds are below 10000, the held-out evaluation tasks start at ``eval_seed``."""

    seed: int = 0
    # the world
    error_rate: float = 0.2               # per executed clause, in training data, rewards and evaluation
    max_clauses: int = 4                  # tasks have 1..max_clauses clauses
    image_tokens: int = 9                 # per image: 96x96 pixels, one merged 32x32 patch per grid cell
    # the policy: a random-weight Qwen3-VL (mira.testing) of this size
    hidden_size: int = 192
    layers: int = 4
    heads: int = 3
    kv_heads: int = 1
    intermediate_size: int = 512
    vision_depth: int = 2
    vision_hidden_size: int = 128
    vocab_size: int = 2048                # byte-level BPE trained on the testbed's language
    max_new_tokens: int = 96
    # data
    builder_sessions: int = 2000          # sessions through `mira.data.build` (clean trajectories)
    builder_permutations: int = 1         # reordered variants per session (the builder's aggregate stage)
    teacher_tasks: int = 8000             # plain-oracle trajectories with the noisy editor (corrective states)
    perception_pairs: int = 20000         # (original, current) pairs with their list of changes
    grpo_states: int = 1500
    # stage 1: pre-training on short prompts (perception pairs + the decisions without the system prompt; TRL)
    pretrain_minutes: float = 60.0
    pretrain_steps: int = 50000
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-3
    # stage 2: SFT on the agent's decisions, full protocol prompts (mira.train)
    sft_minutes: float = 15.0
    sft_steps: int = 20000
    sft_batch: int = 16
    sft_lr: float = 3e-4
    # stage 3: GRPO (mira.train; format + executed-edit rewards)
    grpo_minutes: float = 20.0
    grpo_steps: int = 2000
    grpo_prompts: int = 4                 # prompts per step
    grpo_generations: int = 8
    grpo_lr: float = 5e-5
    grpo_temperature: float = 1.0
    # evaluation
    eval_tasks: int = 200
    eval_seed: int = 10_000
    eval_max_steps: int = 12
    eval_batch: int = 64                  # decisions generated together

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_minutes(self, total: float) -> "LearningConfig":
        """The same run with ``total`` training minutes, split like the current stage minutes."""
        if total <= 0:
            raise LearningError("the training budget must be positive minutes")
        stages = (self.pretrain_minutes, self.sft_minutes, self.grpo_minutes)
        scale = total / sum(stages)
        return dataclasses.replace(self, pretrain_minutes=stages[0] * scale, sft_minutes=stages[1] * scale,
                                   grpo_minutes=stages[2] * scale)


def full() -> LearningConfig:
    """The issue's protocol sized for one CPU core: 95 minutes of training, then 200 held-out tasks."""
    return LearningConfig()


def smoke() -> LearningConfig:
    """Every stage of :func:`full` with tiny sizes and a handful of steps (about a minute on a CPU)."""
    return LearningConfig(
        hidden_size=64, layers=2, heads=2, kv_heads=1, intermediate_size=128, vision_depth=1, vision_hidden_size=32,
        vocab_size=1024, max_new_tokens=24, builder_sessions=12, teacher_tasks=12, perception_pairs=64,
        grpo_states=16, pretrain_minutes=1.0, pretrain_steps=2, pretrain_batch=8, sft_minutes=1.0, sft_steps=3,
        sft_batch=8, grpo_minutes=1.0, grpo_steps=2, grpo_prompts=2, grpo_generations=2, eval_tasks=6,
        eval_max_steps=3, eval_batch=8,
    )


PRESETS = {"full": full, "smoke": smoke}


def apply_overrides(config: LearningConfig, pairs: list[str]) -> LearningConfig:
    """``config`` with ``key=value`` overrides (numbers and booleans parsed)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise LearningError(f"'{pair}' is not KEY=VALUE with a known key; keys: {', '.join(fields)}")
        kind = type(getattr(config, key))
        try:
            changes[key] = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except ValueError:
            raise LearningError(f"{key} must be {kind.__name__}, got '{text}'") from None
    return dataclasses.replace(config, **changes)


def check_resumable(config: LearningConfig, folder: Path) -> None:
    """Record ``config`` in ``folder/config.json``, or refuse when the folder was made with other settings."""
    path = folder / "config.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v and k not in RESUMABLE_CHANGES)
        if changed:
            raise LearningError(f"'{folder}' holds a run with other settings ({', '.join(changed)}); use a new "
                                "output folder or the same settings")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2))
