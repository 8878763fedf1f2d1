"""Supervised fine-tuning of a MIRA policy: TRL's ``SFTTrainer`` on a MIRA-Editing dataset.

>>> config = MiraSFTConfig(output_dir="out/sft", model_name_or_path="Qwen/Qwen2.5-VL-3B-Instruct",
...                        dataset_name="data/mira-editing", use_peft=True, max_pixels=512 * 28 * 28)
>>> train_sft(config)          # then: mira edit IMAGE "INSTRUCTION" --policy out/sft

The loss covers the assistant turns only (``assistant_only_loss``, on by default here): the policy learns to answer,
not to repeat the prompt. Every ``SFTConfig`` field passes straight through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig, SFTTrainer

from mira.train.common import (
    ManifestCallback,
    check_base_model,
    load_datasets,
    load_processor,
    lora_config,
    train_and_save,
)
from mira.train.config import MiraTrainArguments
from mira.train.data import prepare_sft_dataset


@dataclass
class MiraSFTConfig(MiraTrainArguments, SFTConfig):
    """TRL's ``SFTConfig`` plus MIRA's options (:class:`~mira.train.config.MiraTrainArguments`).

    Defaults that differ from TRL's: ``assistant_only_loss=True`` and ``max_length=None`` (a MIRA prompt carries
    two images; truncating it would cut image tokens).
    """

    assistant_only_loss: bool = field(default=True, metadata={"help": "Loss on the assistant turns only."})
    max_length: int | None = field(default=None, metadata={"help": "Truncate longer sequences (None: never)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_mira_arguments()


def build_sft_trainer(config: MiraSFTConfig, *, callbacks: list[Any] | None = None) -> SFTTrainer:
    """An ``SFTTrainer`` over the config's checked dataset, with the config's processor and LoRA settings."""
    check_base_model(config)
    train, test = load_datasets(config, prepare_sft_dataset)
    return SFTTrainer(
        model=config.model_name_or_path,
        args=config,
        train_dataset=train,
        eval_dataset=test,
        processing_class=load_processor(config),
        peft_config=lora_config(config),
        callbacks=[ManifestCallback(config, "sft"), *(callbacks or [])],
    )


def train_sft(config: MiraSFTConfig, *, callbacks: list[Any] | None = None) -> SFTTrainer:
    """Train and save the policy to ``config.output_dir`` (LoRA merged unless ``merge_lora=False``)."""
    return train_and_save(build_sft_trainer(config, callbacks=callbacks), config, "sft")
