"""Plumbing shared by the SFT and GRPO trainers: processor, LoRA, resuming, and the saved policy.

What a finished run leaves in ``output_dir`` (DESIGN §5):

- the policy, loadable as is by ``mira edit --policy OUTPUT_DIR`` (``AutoProcessor`` + ``AutoModelForImageTextToText``):
  full weights, or with LoRA the adapters merged into the base weights (``merge_lora``, the default);
- ``adapter/`` (LoRA, merged): the adapters alone. With ``merge_lora: false`` the adapters sit in ``output_dir``
  itself, which transformers also loads as a policy (it fetches the base model named in ``adapter_config.json``);
- ``checkpoint-N/``: resumable checkpoints, each loadable as a policy the same way (a LoRA one holds adapters only);
- ``mira_training.json`` (also in every checkpoint): protocol version, stage, base model, dataset, LoRA settings.

The processor is saved with every checkpoint, image-size limits (``min_pixels`` / ``max_pixels``) included, so the
policy sees images at inference exactly as it saw them in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from mira import __version__
from mira.protocol import PROTOCOL_VERSION
from mira.train.config import ConfigError, MiraTrainArguments

MANIFEST = "mira_training.json"


def check_base_model(config: MiraTrainArguments) -> None:
    """Refuse a local MIRA checkpoint trained with another protocol version."""
    manifest = Path(config.model_name_or_path).expanduser() / MANIFEST
    if manifest.is_file():
        found = json.loads(manifest.read_text(encoding="utf-8")).get("protocol_version")
        if found != PROTOCOL_VERSION:
            raise ConfigError(
                f"'{config.model_name_or_path}' was trained with protocol version {found}, but this MIRA speaks "
                f"version {PROTOCOL_VERSION}; start from a checkpoint trained with this version"
            )


def load_datasets(config: MiraTrainArguments, prepare: Callable[..., Any], **checks: Any) -> tuple[Any, Any | None]:
    """(train, eval or None) of the config's dataset, each checked and prepared by ``prepare``."""
    from mira.train.data import load_splits

    train, test = load_splits(
        config.dataset_name,
        train_split=config.dataset_train_split,
        test_split=config.dataset_test_split,
        eval_fraction=config.eval_fraction,
        seed=config.seed,
    )
    checks["validate_rows"] = config.validate_rows
    train = prepare(train, name=f"dataset '{config.dataset_name}'", **checks)
    return train, (prepare(test, name="eval split", **checks) if test is not None else None)


def load_processor(config: Any, **kwargs: Any) -> Any:
    """The model's processor with the config's image-size limits."""
    from transformers import AutoProcessor

    pixels = {k: v for k, v in (("min_pixels", config.min_pixels), ("max_pixels", config.max_pixels)) if v}
    revision = (config.model_init_kwargs or {}).get("revision") if isinstance(config.model_init_kwargs, dict) else None
    return AutoProcessor.from_pretrained(
        config.model_name_or_path, revision=revision, trust_remote_code=config.trust_remote_code, **pixels, **kwargs
    )


def lora_config(config: MiraTrainArguments) -> Any:
    """A PEFT LoraConfig from the config's LoRA options, or None for full fine-tuning."""
    if not config.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets(),
        task_type="CAUSAL_LM",
    )


def resume_checkpoint(config: Any) -> str | None:
    """The checkpoint to resume from: ``resume_from_checkpoint`` as a path, or ``latest`` / ``true``."""
    from transformers.trainer_utils import get_last_checkpoint

    value = config.resume_from_checkpoint
    if value in (None, "", False, "false", "False"):
        return None
    if str(value).lower() in ("latest", "true"):
        last = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
        if last is None:
            raise ConfigError(f"no checkpoint-* folder in '{config.output_dir}' to resume from")
        return last
    if not Path(value).is_dir():
        raise ConfigError(f"resume_from_checkpoint '{value}' is not a checkpoint folder")
    return str(value)


def manifest(config: MiraTrainArguments, stage: str, *, merged: bool) -> dict[str, Any]:
    lora = None
    if config.use_peft:
        lora = {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                "target_modules": config.lora_targets()}
    return {
        "protocol_version": PROTOCOL_VERSION,
        "stage": stage,
        "base_model": config.model_name_or_path,
        "dataset": config.dataset_name,
        "lora": lora,
        "merged": merged,
        "mira_version": __version__,
    }


class ManifestCallback(TrainerCallback):
    """Writes ``mira_training.json`` into every checkpoint folder."""

    def __init__(self, config: MiraTrainArguments, stage: str):
        self.data = manifest(config, stage, merged=False)

    def on_save(self, args, state, control, **kwargs):  # noqa: D102 - TrainerCallback hook
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / MANIFEST).write_text(json.dumps(self.data, indent=2), encoding="utf-8")


def train_and_save(trainer: Any, config: MiraTrainArguments, stage: str) -> Any:
    """Train (resuming when asked), then save the final policy to ``output_dir`` (see the module doc)."""
    trainer.train(resume_from_checkpoint=resume_checkpoint(config))
    out = Path(config.output_dir)
    merged = bool(config.use_peft and config.merge_lora)
    trainer.save_model(str(out / "adapter" if merged else out))  # every rank: ZeRO-3 gathers weights here
    if trainer.accelerator.is_main_process:
        if merged:
            merge_adapter(out / "adapter", out, config)
        (out / MANIFEST).write_text(json.dumps(manifest(config, stage, merged=merged), indent=2), encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    return trainer


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, config: MiraTrainArguments) -> Path:
    """Load the base model, apply the adapters, merge them and save a plain policy (weights + processor)."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    init = dict(config.model_init_kwargs or {}) if isinstance(config.model_init_kwargs, dict) else {}
    init.pop("device_map", None)
    base = AutoModelForImageTextToText.from_pretrained(
        config.model_name_or_path, dtype=init.pop("dtype", "auto"), trust_remote_code=config.trust_remote_code, **init
    )
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    model.save_pretrained(str(out_dir))
    AutoProcessor.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    return Path(out_dir)
