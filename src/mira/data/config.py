"""The build configuration: dataclasses filled from a YAML file (see ``configs/mira_editing.yaml``).

Every section has defaults, so the smallest config names a work folder and one source. Unknown keys and wrong types
are :class:`DataBuildError`\\ s that say which key is wrong and what is accepted. Relative paths are read relative to
the YAML file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataBuildError(ValueError):
    """A configuration, source or work-folder problem; the message is meant to be shown as is."""


@dataclass
class BackendSpec:
    """A backend to build: a registered name or an import path ``package.module:factory``, plus its options.

    Editors resolve registered names through :func:`mira.registry.load_editor`; chat backends know ``openai``
    (any OpenAI-compatible endpoint); anything else is an import path whose factory receives ``options``.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceConfig:
    """One source of multi-turn sessions.

    ``kind``: ``seed-data-edit`` (``path`` = the multi-turn annotation JSONL file or a folder of them, ``images`` =
    the folder their image paths are relative to), ``magicbrush`` (``path`` = a hub id such as ``osunlp/MagicBrush``
    or a local dataset folder; ``split``), or ``jsonl`` (MIRA's own format, see :mod:`mira.data.sources`).
    """

    kind: str
    path: str
    images: str | None = None
    split: str = "train"
    limit: int | None = None
    licence: str | None = None


@dataclass
class AggregateConfig:
    min_turns: int = 2
    max_turns: int = 8
    permutations: int = 2
    judge: BackendSpec | None = None
    concurrency: int = 16


@dataclass
class RewriteConfig:
    backend: BackendSpec | None = None
    atomic_variants: int = 2
    complex_variants: int = 3
    temperature: float = 1.0
    concurrency: int = 16


@dataclass
class SynthesizeConfig:
    editors: list[BackendSpec] = field(default_factory=list)
    samples_per_editor: int = 1
    human_results: bool = True
    concurrency: int = 1
    editor_retries: int = 1


@dataclass
class RankConfig:
    judge: BackendSpec | None = None
    threshold: float = 6.0
    concurrency: int = 16


@dataclass
class AnnotateConfig:
    backend: BackendSpec | None = None
    concurrency: int = 16


@dataclass
class ExportConfig:
    output: str | None = None
    variants_per_trajectory: int = 1
    max_pixels: int | None = 512 * 512
    num_shards: int | None = None


@dataclass
class RayConfig:
    address: str | None = None
    actors: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class BuildConfig:
    work_dir: str
    sources: list[SourceConfig]
    seed: int = 0
    shard_size: int = 256
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    @property
    def output_dir(self) -> Path:
        return Path(self.export.output) if self.export.output else Path(self.work_dir) / "dataset"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SOURCE_KINDS = ("seed-data-edit", "magicbrush", "jsonl")


def load_config(path: str | Path) -> BuildConfig:
    """Read and check a YAML build config; relative paths are taken relative to the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataBuildError(f"config '{path}' does not exist; give the path of a YAML build config")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataBuildError(f"config '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    config = config_from_dict(data if data is not None else {})
    return resolve_paths(config, path.parent)


def config_from_dict(data: dict[str, Any]) -> BuildConfig:
    """A checked :class:`BuildConfig` from plain data (what the YAML file holds)."""
    config = _build(BuildConfig, data, "config")
    _check(config)
    return config


def resolve_paths(config: BuildConfig, base: Path) -> BuildConfig:
    """Make the config's relative file paths relative to ``base`` (hub ids are left alone)."""

    def fix(p: str | None) -> str | None:
        if p is None or Path(p).is_absolute():
            return p
        return str((base / p).resolve())

    config.work_dir = fix(config.work_dir)
    config.export.output = fix(config.export.output)
    for src in config.sources:
        src.images = fix(src.images)
        if src.kind != "magicbrush" or (base / src.path).exists():
            src.path = fix(src.path)
    return config


def _check(config: BuildConfig) -> None:
    if not config.sources:
        raise DataBuildError("config has no sources; add at least one under 'sources:'")
    for i, src in enumerate(config.sources):
        if src.kind not in SOURCE_KINDS:
            raise DataBuildError(f"sources[{i}].kind is '{src.kind}'; choose one of: {', '.join(SOURCE_KINDS)}")
        if src.kind == "seed-data-edit" and not src.images:
            raise DataBuildError(f"sources[{i}] (seed-data-edit) needs 'images': the folder its image paths are in")
    positive = {
        "shard_size": config.shard_size, "aggregate.min_turns": config.aggregate.min_turns,
        "aggregate.max_turns": config.aggregate.max_turns,
        "aggregate.concurrency": config.aggregate.concurrency, "rewrite.concurrency": config.rewrite.concurrency,
        "synthesize.samples_per_editor": config.synthesize.samples_per_editor,
        "synthesize.concurrency": config.synthesize.concurrency, "rank.concurrency": config.rank.concurrency,
        "annotate.concurrency": config.annotate.concurrency, "export.variants_per_trajectory":
        config.export.variants_per_trajectory, "ray.actors": config.ray.actors,
    }
    for key, value in positive.items():
        if value < 1:
            raise DataBuildError(f"{key} is {value}; it must be at least 1")
    for key, value in {"aggregate.permutations": config.aggregate.permutations,
                       "rewrite.atomic_variants": config.rewrite.atomic_variants,
                       "rewrite.complex_variants": config.rewrite.complex_variants,
                       "synthesize.editor_retries": config.synthesize.editor_retries}.items():
        if value < 0:
            raise DataBuildError(f"{key} is {value}; it must not be negative")
    if config.aggregate.max_turns < config.aggregate.min_turns:
        raise DataBuildError("aggregate.max_turns is below aggregate.min_turns")
    if not config.synthesize.editors and not config.synthesize.human_results:
        raise DataBuildError("synthesize has no editors and human_results is false: nothing could make trajectories")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise DataBuildError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DataBuildError(f"unknown key '{unknown[0]}' in {where}; known keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}" if where != "config" else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DataBuildError(f"{where} is missing the required key '{name}'")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if dataclasses.is_dataclass(tp):
        if tp is BackendSpec and isinstance(value, str):
            return BackendSpec(value)
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise DataBuildError(f"{where} must be a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DataBuildError(f"{where} must be a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise DataBuildError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (used to tell whether a stage's inputs or settings changed)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def import_object(target: str) -> Any:
    """``package.module:attr.attr`` -> the object."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise DataBuildError(f"'{target}' is neither a known backend name nor an import path 'package.module:factory'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataBuildError(f"cannot import '{module_name}' for '{target}': {exc}") from None
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise DataBuildError(f"'{target}': {module_name} has no attribute '{attr_path}'")
        obj = getattr(obj, attr)
    return obj
