"""Options shared by the SFT and GRPO configs, and loading a config from YAML plus ``key=value`` overrides.

A training config is one flat YAML mapping, as in TRL's own scripts: MIRA's options (model, dataset, LoRA preset,
image-size limits, ...) sit next to every field of TRL's ``SFTConfig`` / ``GRPOConfig``, which pass straight through.
This module imports nothing heavy; the config classes themselves live in :mod:`mira.train.sft` and
:mod:`mira.train.grpo`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

LORA_PRESETS: dict[str, str | list[str]] = {
    # The language model's attention and MLP projections only: the vision tower stays frozen.
    "language": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    # Every linear layer but the output head, vision tower included (PEFT's own preset).
    "all-linear": "all-linear",
}

C = TypeVar("C")


class ConfigError(ValueError):
    """A training config that cannot be used; the message says what to change."""


@dataclass
class MiraTrainArguments:
    """MIRA's options, shared by :class:`~mira.train.sft.MiraSFTConfig` and :class:`~mira.train.grpo.MiraGRPOConfig`.

    Everything else in a config is a field of TRL's ``SFTConfig`` / ``GRPOConfig`` (learning_rate, max_steps,
    per_device_train_batch_size, gradient_checkpointing, bf16, save_steps, use_vllm, ...).
    """

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Qwen2.5-VL / Qwen3-VL hub id or local folder (e.g. the SFT output)."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "MIRA-Editing dataset: a folder written by save_to_disk, or a hub id."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on (DatasetDict / hub)."})
    dataset_test_split: str = field(
        default="test", metadata={"help": "Split to evaluate on, when the dataset has it."}
    )
    eval_fraction: float = field(
        default=0.0,
        metadata={"help": "Hold out this fraction of trajectories for evaluation when there is no test split."},
    )
    validate_rows: int | None = field(
        default=1000, metadata={"help": "Rows whose messages and images are checked before training (None: all)."}
    )
    min_pixels: int | None = field(
        default=None, metadata={"help": "Processor lower bound on image area (pixels); saved with the policy."}
    )
    max_pixels: int | None = field(
        default=None, metadata={"help": "Processor upper bound on image area (pixels); saved with the policy."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_preset: str = field(
        default="language",
        metadata={"help": "LoRA targets: 'language' (LLM projections only) or 'all-linear' (vision tower too)."},
    )
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Explicit LoRA target module names; overrides lora_preset."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    merge_lora: bool = field(
        default=True,
        metadata={"help": "Merge the adapters into the base weights for the final policy (adapter kept in adapter/)."},
    )

    def _check_mira_arguments(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path is required: a Qwen2.5-VL / Qwen3-VL hub id or local folder")
        if not self.dataset_name:
            raise ConfigError("dataset_name is required: a MIRA-Editing dataset folder (save_to_disk) or hub id")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.lora_preset not in LORA_PRESETS:
            raise ConfigError(f"lora_preset '{self.lora_preset}' is unknown; choose one of: {', '.join(LORA_PRESETS)}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ConfigError(f"min_pixels ({self.min_pixels}) is larger than max_pixels ({self.max_pixels})")
        if self.validate_rows is not None and self.validate_rows < 0:
            raise ConfigError("validate_rows must be a positive number of rows, or null to check every row")
        strategy = getattr(self, "eval_strategy", "no")
        if self.eval_fraction > 0 and str(getattr(strategy, "value", strategy)) == "no":
            raise ConfigError("eval_fraction is set but eval_strategy is 'no'; set eval_strategy: steps or epoch")

    def lora_targets(self) -> str | list[str]:
        return self.lora_target_modules or LORA_PRESETS[self.lora_preset]


def load_config(cls: type[C], path: str | Path | None, overrides: dict[str, Any] | None = None) -> C:
    """Build ``cls`` from a flat YAML file and ``key=value`` overrides (overrides win).

    Unknown keys, values of the wrong type and invalid combinations raise :class:`ConfigError` with one line that
    names the key. Numbers written as YAML strings (``1e-5``) are converted for numeric fields.
    """
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config '{path}' does not exist; give the path of a YAML file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config '{path}' must be a mapping of option: value, got {type(loaded).__name__}")
        raw.update(loaded)
    raw.update(overrides or {})
    if "output_dir" not in raw:
        raise ConfigError("output_dir is required: the folder that receives checkpoints and the final policy")

    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; it is neither a MIRA option nor a {_trl_name(cls)} field"
            raise ConfigError(f"unknown option '{key}'{hint}")
        kwargs[key] = _coerce(key, value, hints.get(key))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid config: {str(exc).strip().splitlines()[0]}") from None


def _trl_name(cls: type) -> str:
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("trl"):
            return base.__name__
    return "TRL config"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert string values of plain numeric / boolean fields (YAML reads ``1e-5`` as text)."""
    if not isinstance(value, str) or hint is None:
        return value
    options = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    if len(options) != 1 or options[0] not in (int, float, bool):
        return value
    target = options[0]
    if value.lower() in ("none", "null") and _is_union(hint):
        return None
    try:
        if target is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError
            return value.lower() == "true"
        return target(float(value)) if target is int and float(value).is_integer() else target(value)
    except ValueError:
        raise ConfigError(f"option '{key}' must be {target.__name__}, got '{value}'") from None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
