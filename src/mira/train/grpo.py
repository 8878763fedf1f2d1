"""GRPO for a MIRA policy: TRL's ``GRPOTrainer`` over per-step states (I0, I(t-1), C), an editor and a judge in the
loop.

Two modes (``rollout``):

- ``step`` (default): each sampled completion is one decision; :mod:`mira.train.rewards` scores it (format, and the
  judged progress of the executed edit).
- ``trajectory``: TRL's ``rollout_func``. The sampled first decision is executed, then the current policy keeps
  deciding and the editor keeps editing until ``<STOP>`` (or ``max_rollout_steps`` edits, a repeated edit, an
  unparseable answer); the judge's score of the final image becomes ``trajectory_reward``. Gradients flow through the
  first decision, whose return is the whole trajectory's outcome.

>>> config = MiraGRPOConfig(output_dir="out/grpo", model_name_or_path="out/sft", dataset_name="data/mira-grpo",
...                         editor="flux-kontext", judge="mymodule:make_judge")
>>> train_grpo(config)

``editor`` and ``judge`` are registry names (:mod:`mira.registry`) or ``module:factory`` import paths, built with
``editor_options`` / ``judge_options``; the Python API also accepts the objects themselves. Every ``GRPOConfig``
field passes straight through (``use_vllm``, ``vllm_mode``, ``num_generations``, ``beta``, ``loss_type``, ...).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from trl import GRPOConfig, GRPOTrainer

from mira.editors.base import Editor
from mira.judges.base import Judge
from mira.protocol import STOP, Observation, build_messages, parse_completion, same_action
from mira.train.common import (
    ManifestCallback,
    check_base_model,
    load_datasets,
    load_processor,
    lora_config,
    train_and_save,
)
from mira.train.config import ConfigError, MiraTrainArguments
from mira.train.data import prepare_grpo_dataset, read_state
from mira.train.rewards import EditEnvironment, EditReward, format_reward, trajectory_reward

REWARDS = ("format", "edit", "trajectory")


@dataclass
class MiraGRPOConfig(MiraTrainArguments, GRPOConfig):
    """TRL's ``GRPOConfig`` plus MIRA's options (:class:`~mira.train.config.MiraTrainArguments`) and these."""

    rewards: list[str] | None = field(
        default=None,
        metadata={"help": "Reward names (format, edit, trajectory) or module:function paths; default: format + "
                          "edit (step) or format + trajectory (trajectory)."},
    )
    rollout: str = field(default="step", metadata={"help": "'step' (one decision) or 'trajectory' (to <STOP>)."})
    max_rollout_steps: int = field(default=6, metadata={"help": "Most edits in one trajectory rollout."})
    editor: str | None = field(default=None, metadata={"help": "Editor: registry name or module:factory."})
    editor_options: dict[str, Any] | None = field(default=None, metadata={"help": "Options for the editor."})
    judge: str | None = field(default=None, metadata={"help": "Judge: registry name or module:factory."})
    judge_options: dict[str, Any] | None = field(default=None, metadata={"help": "Options for the judge."})
    editor_workers: int = field(default=1, metadata={"help": "Concurrent editor calls (raise for served editors)."})
    judge_workers: int = field(default=1, metadata={"help": "Concurrent judge calls (raise for served judges)."})
    edit_cache_size: int = field(default=256, metadata={"help": "Edited images kept per process (LRU)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_mira_arguments()
        if self.rollout not in ("step", "trajectory"):
            raise ConfigError(f"rollout must be 'step' or 'trajectory', got '{self.rollout}'")
        if self.rewards is None:
            self.rewards = ["format", "trajectory" if self.rollout == "trajectory" else "edit"]
        for name in self.rewards:
            if name not in REWARDS and ":" not in name:
                raise ConfigError(f"unknown reward '{name}'; use {', '.join(REWARDS)} or a module:function path")
        if "trajectory" in self.rewards and self.rollout != "trajectory":
            raise ConfigError("the 'trajectory' reward needs rollout: trajectory")
        if self.max_rollout_steps < 1:
            raise ConfigError("max_rollout_steps must be at least 1")
        if self.editor_workers < 1 or self.judge_workers < 1:
            raise ConfigError("editor_workers and judge_workers must be at least 1")

    def needs_environment(self) -> bool:
        return self.rollout == "trajectory" or "edit" in (self.rewards or [])


def build_grpo_trainer(
    config: MiraGRPOConfig,
    *,
    editor: Editor | None = None,
    judge: Judge | None = None,
    callbacks: list[Any] | None = None,
) -> GRPOTrainer:
    """A ``GRPOTrainer`` with the config's rewards; ``editor`` / ``judge`` objects override the config's names."""
    check_base_model(config)
    needs = ("instruction", "history") if config.needs_environment() else ()
    train, test = load_datasets(config, prepare_grpo_dataset, needs=needs)

    environment = None
    if config.needs_environment():  # after the data checks: an editor can take minutes to load
        editor = editor or _build("editor", config.editor, config.editor_options)
        judge = judge or _build("judge", config.judge, config.judge_options)
        environment = EditEnvironment(
            editor, judge, seed=config.seed, editor_workers=config.editor_workers,
            judge_workers=config.judge_workers, image_cache_size=config.edit_cache_size,
        )

    rollout = None
    if config.rollout == "trajectory":
        if not hasattr(GRPOTrainer, "_generate_single_turn"):
            raise ConfigError("rollout: trajectory needs TRL 1.16 or newer (pip install -U trl)")
        rollout = TrajectoryRollout(environment, config.max_rollout_steps)
    return GRPOTrainer(
        model=config.model_name_or_path,
        reward_funcs=[_reward(name, environment) for name in config.rewards],
        args=config,
        train_dataset=train,
        eval_dataset=test,
        processing_class=load_processor(config, padding_side="left", truncation_side="left"),
        peft_config=lora_config(config),
        rollout_func=rollout,
        callbacks=[ManifestCallback(config, "grpo"), *(callbacks or [])],
    )


def train_grpo(
    config: MiraGRPOConfig,
    *,
    editor: Editor | None = None,
    judge: Judge | None = None,
    callbacks: list[Any] | None = None,
) -> GRPOTrainer:
    """Train and save the policy to ``config.output_dir`` (LoRA merged unless ``merge_lora=False``)."""
    trainer = build_grpo_trainer(config, editor=editor, judge=judge, callbacks=callbacks)
    return train_and_save(trainer, config, "grpo")


def _reward(name: str, environment: EditEnvironment | None) -> Callable[..., list[float | None]]:
    if name == "format":
        return format_reward
    if name == "edit":
        assert environment is not None
        return EditReward(environment)
    if name == "trajectory":
        return trajectory_reward
    return _import(name, "reward")


def _build(kind: str, spec: str | None, options: dict[str, Any] | None) -> Any:
    """An editor or judge from a registry name or a ``module:factory`` path."""
    from mira import registry

    if not spec:
        raise ConfigError(f"the chosen rewards need a {kind}: set '{kind}' (a registry name or module:factory)")
    loader = getattr(registry, f"load_{kind}", None)
    if loader is not None:
        try:
            return loader(spec, **(options or {}))
        except registry.UnknownBackendError:
            if ":" not in spec:
                raise
    return _import(spec, kind)(**(options or {}))


def _import(path: str, kind: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{kind} '{path}' is neither registered nor an importable module:attribute") from None
    return obj


class TrajectoryRollout:
    """TRL ``rollout_func`` that plays each sampled first decision out to ``<STOP>`` with the current policy.

    Returns the first decision's ``prompt_ids`` / ``completion_ids`` / ``logprobs`` (generated exactly as TRL would,
    vLLM included) and, per completion, ``trajectory_score`` (the final image's judged score, 0-1) and
    ``rollout_edits`` (edits executed). With several processes, every process runs the same number of decision rounds
    (idle ones decide on a placeholder), so collective generation calls stay in step.
    """

    def __init__(self, environment: EditEnvironment | None, max_steps: int):
        if environment is None:
            raise ConfigError("trajectory rollouts need an editor and a judge")
        self.environment, self.max_steps = environment, max_steps

    def __call__(self, prompts: list[list[dict[str, Any]]], trainer: GRPOTrainer) -> dict[str, list[Any]]:
        prompt_ids, images, fields = trainer._tokenize_prompts(prompts)
        n = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        completion_ids, logprobs = trainer._generate_single_turn(prompt_ids, images, fields, n)
        rollouts = []
        for prompt, imgs in zip(prompts, images or [None] * len(prompts)):
            state = read_state(prompt)
            if state is None or not imgs or len(imgs) < 2:
                raise ValueError("a prompt of this batch is not a MIRA observation (protocol user turn and two images)")
            rollouts.append(_Rollout(state[0], list(state[1]), imgs[0], imgs[-1]))
        self._advance(rollouts, trainer.processing_class.batch_decode(completion_ids, skip_special_tokens=True))
        for _ in range(self.max_steps):
            active = [r for r in rollouts if not r.done]
            if not _any_process(trainer, len(active)):
                break
            batch = [build_messages(r.observation(), embed_images=True) for r in active] or prompts[:1]
            ids, imgs, fields = trainer._tokenize_prompts(batch)
            generated, _ = trainer._generate_single_turn(ids, imgs, fields, 1)
            self._advance(active, trainer.processing_class.batch_decode(generated, skip_special_tokens=True))
        scores = self.environment.score([(r.original, r.current, r.instruction) for r in rollouts])
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": logprobs,
            "trajectory_score": scores,
            "rollout_edits": [r.edits for r in rollouts],
        }

    def _advance(self, rollouts: list["_Rollout"], texts: list[str]) -> None:
        """Apply one decision to each rollout: stop, or execute the edit (all edits of the round in one batch)."""
        to_edit = []
        for rollout, text in zip(rollouts, texts):
            action = parse_completion(text).action
            last = rollout.history[-1] if rollout.history else None
            if action is None or action == STOP or same_action(action, last) or rollout.edits >= self.max_steps:
                rollout.done = True
            else:
                to_edit.append((rollout, action))
        edited = self.environment.edit([(r.current, a) for r, a in to_edit]) if to_edit else []
        for (rollout, action), image in zip(to_edit, edited):
            if image is None:
                rollout.done = True
                continue
            rollout.current, rollout.edits = image, rollout.edits + 1
            rollout.history.append(action)
            rollout.done = rollout.edits >= self.max_steps


@dataclass
class _Rollout:
    instruction: str
    history: list[str]
    original: Any
    current: Any
    edits: int = 0
    done: bool = False

    def observation(self) -> Observation:
        return Observation(self.instruction, tuple(self.history), self.original, self.current)


def _any_process(trainer: GRPOTrainer, active: int) -> bool:
    """Whether any process still has an unfinished rollout."""
    if trainer.accelerator.num_processes == 1:
        return active > 0
    import torch

    counts = trainer.accelerator.gather(torch.tensor([active], device=trainer.accelerator.device))
    return bool(counts.max().item() > 0)
