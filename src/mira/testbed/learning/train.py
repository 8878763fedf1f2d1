"""The three training stages of a learning run, each bounded by steps and by minutes, each resumable.

1. pre-training: TRL's ``SFTTrainer`` on short prompts (:func:`~mira.testbed.learning.data.pretrain_dataset`):
   "what changed?" chats and the decisions without the system prompt, ~110 tokens each instead of the agent's ~350,
   so the vision tower and the language model see three times as many samples per minute;
2. SFT: :func:`mira.train.sft.train_sft` on the agent's decisions with full prompts (MIRA-Editing rows);
3. GRPO: :func:`mira.train.grpo.train_grpo` on decision states, rewards ``format`` + ``edit`` (the sampled edit run by
   the noisy :class:`~mira.testbed.editor.TestbedEditor`, its progress scored by :class:`~mira.testbed.judge.TestbedJudge`)
   + :func:`edit_baseline`, which makes the sum the score of the state the decision leads to.

Learning rates are constant after a short warm-up, since a stage may end on its minutes before its steps.
:class:`Deadline` stops a stage when its minutes are spent, counting the time of earlier (interrupted) runs of the
stage; checkpoints are saved every ``SAVE_EVERY_MINUTES`` and a rerun resumes from the last one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mira.testbed.learning.config import LearningConfig

SAVE_EVERY_MINUTES = 5.0


class Deadline(TrainerCallback):
    """Stops training once ``minutes`` of wall-clock time are spent in this stage (over all its runs) and saves a
    checkpoint at least every ``SAVE_EVERY_MINUTES``; the time spent is kept in ``ledger``."""

    def __init__(self, minutes: float, ledger: Path):
        self.budget, self.ledger = minutes * 60.0, ledger
        self.spent = json.loads(ledger.read_text())["seconds"] if ledger.is_file() else 0.0
        self.start = self.last_save = time.monotonic()

    def elapsed(self) -> float:
        return self.spent + time.monotonic() - self.start

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102 - TrainerCallback hook
        now = time.monotonic()
        if self.elapsed() >= self.budget:
            control.should_training_stop = True
        if now - self.last_save >= SAVE_EVERY_MINUTES * 60.0:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):  # noqa: D102
        self.last_save = time.monotonic()
        self.record()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: D102
        self.record()

    def record(self) -> None:
        self.ledger.write_text(json.dumps({"seconds": self.elapsed()}))


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def common_args(config: LearningConfig, output: Path, steps: int, batch: int, lr: float) -> dict[str, Any]:
    """Trainer arguments shared by the stages: CPU, bf16 autocast, constant learning rate, seeded, quiet."""
    return dict(output_dir=str(output), max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
                lr_scheduler_type="constant_with_warmup", warmup_steps=min(100, max(1, steps // 10)),
                weight_decay=0.0, logging_steps=10 if steps >= 100 else 1, save_strategy="steps",
                save_steps=10**9, save_total_limit=1, report_to="none", seed=config.seed, data_seed=config.seed,
                use_cpu=True, bf16=True, activation_checkpointing=False, disable_tqdm=True,
                dataloader_num_workers=0)


def pretrain(config: LearningConfig, model: Path, dataset: Path, output: Path) -> dict[str, Any]:
    """Stage 1 (TRL ``SFTTrainer``); the trained policy is saved in ``output``."""
    import datasets
    from transformers import AutoProcessor
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**common_args(config, output, config.pretrain_steps, config.pretrain_batch, config.pretrain_lr),
                     max_length=None, assistant_only_loss=True)
    trainer = SFTTrainer(model=str(model), args=args, train_dataset=datasets.load_from_disk(str(dataset)),
                         processing_class=AutoProcessor.from_pretrained(model),
                         callbacks=[Deadline(config.pretrain_minutes, output / "minutes.json")])
    trainer.train(resume_from_checkpoint=_last_checkpoint(output))
    trainer.save_model(str(output))
    return summary(trainer)


def train_sft_stage(config: LearningConfig, model: Path, dataset: Path, output: Path) -> dict[str, Any]:
    """Stage 2 (``mira.train``); the policy is saved in ``output``."""
    from mira.train.sft import MiraSFTConfig, train_sft

    args = MiraSFTConfig(**common_args(config, output, config.sft_steps, config.sft_batch, config.sft_lr),
                         model_name_or_path=str(model), dataset_name=str(dataset),
                         resume_from_checkpoint="latest" if _last_checkpoint(output) else None)
    return summary(train_sft(args, callbacks=[Deadline(config.sft_minutes, output / "minutes.json")]))


def train_grpo_stage(config: LearningConfig, model: Path, dataset: Path, output: Path) -> dict[str, Any]:
    """Stage 3 (``mira.train``); the policy is saved in ``output``; the summary holds the rewards of every step."""
    from mira.train.grpo import MiraGRPOConfig, train_grpo

    batch = config.grpo_prompts * config.grpo_generations
    args = MiraGRPOConfig(**{**common_args(config, output, config.grpo_steps, batch, config.grpo_lr),
                             "logging_steps": 1},
                          model_name_or_path=str(model), dataset_name=str(dataset),
                          rewards=["format", "edit", "mira.testbed.learning.train:edit_baseline"],
                          editor="testbed", editor_options={"error_rate": config.error_rate},
                          judge="mira.testbed.judge:TestbedJudge", num_generations=config.grpo_generations,
                          max_completion_length=config.max_new_tokens, temperature=config.grpo_temperature,
                          resume_from_checkpoint="latest" if _last_checkpoint(output) else None)
    trainer = train_grpo(args, callbacks=[Deadline(config.grpo_minutes, output / "minutes.json")])
    return {**summary(trainer), "curve": reward_curve(trainer.state.log_history)}


def summary(trainer: Any) -> dict[str, Any]:
    """Steps done, minutes spent and the first and last logged training loss of a finished stage."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    ledger = Path(trainer.args.output_dir) / "minutes.json"
    minutes = json.loads(ledger.read_text())["seconds"] / 60.0 if ledger.is_file() else 0.0
    return {"steps": trainer.state.global_step, "minutes": round(minutes, 2),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def edit_baseline(prompts: list[Any], completions: list[Any], images: list[list[Any]] | None = None,
                  instruction: list[str] | None = None, history: list[list[str] | None] | None = None,
                  **kwargs: Any) -> list[float]:
    """A reward added to ``mira.train``'s ``edit_reward``: every answer that ``edit_reward`` executes as an edit also
    earns the judged score of the state it was made in, s(before).

    ``edit_reward`` pays an edit its progress, s(after) - s(before), and ``<STOP>`` the score of the state, s(before):
    in a half-done state stopping would then earn more than the edit that finishes the task (s is the judge's
    overall score, sqrt(SC x PQ) / 10, so 0.71 against 0.29 with one of two clauses done). With this term the sum is
    the score of the state the decision leads to: s(after) for an edit, s(before) for ``<STOP>``, 0 for an answer
    that cannot be used.
    """
    from mira.protocol import STOP, parse_completion, same_action
    from mira.testbed.judge import TestbedJudge
    from mira.train.rewards import completion_text

    if images is None or instruction is None:
        raise ValueError("edit_baseline needs the dataset columns 'images' and 'instruction'")
    judge, rewards = TestbedJudge(), []
    for i, completion in enumerate(completions):
        action = parse_completion(completion_text(completion)).action
        last = (history[i] or [None])[-1] if history is not None else None
        if action is None or action == STOP or same_action(action, last):
            rewards.append(0.0)
            continue
        scores = judge.score(images[i][0], images[i][-1], instruction[i])
        rewards.append(min(max(float(scores.overall or 0.0) / 10.0, 0.0), 1.0))
    return rewards


def reward_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per logged GRPO step: the mean total reward and each reward's mean."""
    keys = {"reward": "reward", "rewards/format_reward/mean": "format", "rewards/edit_reward/mean": "edit",
            "rewards/edit_baseline/mean": "baseline"}
    return [{"step": entry["step"], **{short: entry[key] for key, short in keys.items() if key in entry}}
            for entry in log_history if "reward" in entry]
