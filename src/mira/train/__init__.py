"""Training MIRA policies: SFT, then GRPO with an editor and a judge in the loop (thin over TRL).

Configs are TRL configs with MIRA's options added (:class:`MiraSFTConfig`, :class:`MiraGRPOConfig`); rewards are
plain callables (:mod:`mira.train.rewards`). Names resolve lazily, so ``import mira.train`` imports no torch or TRL.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MiraSFTConfig": "mira.train.sft",
    "build_sft_trainer": "mira.train.sft",
    "train_sft": "mira.train.sft",
    "MiraGRPOConfig": "mira.train.grpo",
    "TrajectoryRollout": "mira.train.grpo",
    "build_grpo_trainer": "mira.train.grpo",
    "train_grpo": "mira.train.grpo",
    "EditEnvironment": "mira.train.rewards",
    "EditReward": "mira.train.rewards",
    "format_reward": "mira.train.rewards",
    "trajectory_reward": "mira.train.rewards",
    "ConfigError": "mira.train.config",
    "load_config": "mira.train.config",
    "DatasetError": "mira.train.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mira.train' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
