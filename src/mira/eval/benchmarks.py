"""Benchmarks: lists of (image, complex instruction) samples, from a local folder or from Hugging Face datasets.

Local format (what :func:`write_local` writes and :func:`load_local` reads)::

    BENCH/
      samples.jsonl      one JSON object per line:
                           "image"        path of the source image, relative to BENCH (or absolute)   required
                           "instruction"  the complex instruction                                     required
                           "id"           unique sample id (letters, digits, . _ -)   default: the line number
                           "atomic"       list of the atomic edits the instruction is made of         optional
                           "reference"    path of a reference result image                            optional
                           any other key  kept in Sample.meta (e.g. "complexity", "source")
      images/ ...        the images (any layout; paths are what samples.jsonl says)

Hugging Face loaders (:func:`load_magicbrush`, :func:`load_complex_edit`, :func:`load_gedit_bench`,
:func:`load_compbench`, and :func:`load_hf` for any dataset with an image and an instruction column) call
``datasets.load_dataset``; offline (``HF_HUB_OFFLINE=1``) they read the local cache. ``source=`` may instead name a
local copy: a folder written by ``Dataset.save_to_disk``, or a folder of data files (parquet, JSON ...).

Paper-style mix (500 samples of MagicBrush + CompBench) from local copies, once::

    from mira.eval.benchmarks import build_mix, load_compbench, load_magicbrush
    build_mix("benchmarks/mira-500", [
        load_magicbrush(split="dev", source="/data/MagicBrush"),            # sessions -> complex instructions
        load_compbench(source="/data/CompBench", tasks=["multi_object_add", "multi_object_remove"]),
    ], n=500, seed=0)
    # then: mira eval --benchmark benchmarks/mira-500 ...

The paper does not publish its exact selection; :func:`build_mix` draws an even, seeded share from each source, so
the same copies and seed always give the same 500 samples.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from PIL import Image

from mira.images import ImageSource, load_image

SAMPLES_FILE = "samples.jsonl"
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


class BenchmarkError(ValueError):
    """A benchmark that cannot be read; the message says what is wrong and what to do."""


@dataclass
class Sample:
    """One evaluation sample. ``image`` (and ``reference``) are paths or PIL images."""

    id: str
    instruction: str
    image: ImageSource
    atomic: list[str] = field(default_factory=list)
    reference: ImageSource | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        return load_image(self.image)


def safe_id(text: str) -> str:
    """``text`` usable as a folder name: runs of other characters become ``-``."""
    cleaned = _SAFE_ID.sub("-", str(text)).strip("-.")
    return cleaned[:120] or "sample"


def join_instructions(parts: Sequence[str]) -> str:
    """Atomic instructions as one complex instruction: ``"A, B and C."`` (first letters lowered after the first)."""
    cleaned = [p.strip().rstrip(".!;,") for p in parts if p and p.strip()]
    cleaned = [cleaned[0]] + [p[0].lower() + p[1:] if p[:2] != p[:2].upper() else p for p in cleaned[1:]]
    if len(cleaned) == 1:
        return cleaned[0] + "."
    return ", ".join(cleaned[:-1]) + " and " + cleaned[-1] + "."


# -- local format ---------------------------------------------------------------------------------------------------
def load_local(path: str | Path, *, limit: int | None = None) -> list[Sample]:
    """Samples of a local benchmark: a folder holding ``samples.jsonl``, or the JSONL file itself."""
    path = Path(path)
    jsonl = path / SAMPLES_FILE if path.is_dir() else path
    if not jsonl.is_file():
        raise BenchmarkError(f"'{path}' is not a benchmark: no {SAMPLES_FILE} there (see mira.eval.benchmarks)")
    root = jsonl.parent
    samples: list[Sample] = []
    seen: set[str] = set()
    for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{jsonl}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchmarkError(f"{where} is not valid JSON ({exc.msg}); fix that line") from None
        if not isinstance(row, dict) or not row.get("image") or not row.get("instruction"):
            raise BenchmarkError(f"{where} needs an \"image\" path and an \"instruction\"")
        sample_id = safe_id(row.pop("id", f"{number:05d}"))
        if sample_id in seen:
            raise BenchmarkError(f"{where}: sample id '{sample_id}' is used twice; ids must be unique")
        seen.add(sample_id)
        image = root / row.pop("image")
        if not image.is_file():
            raise BenchmarkError(f"{where}: image '{image}' does not exist")
        reference = row.pop("reference", None)
        atomic = row.pop("atomic", None) or []
        if not isinstance(atomic, list) or not all(isinstance(a, str) for a in atomic):
            raise BenchmarkError(f"{where}: \"atomic\" must be a list of strings")
        samples.append(Sample(sample_id, str(row.pop("instruction")), str(image), atomic,
                              str(root / reference) if reference else None, meta=row))
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise BenchmarkError(f"{jsonl} holds no samples")
    return samples


def write_local(out_dir: str | Path, samples: Iterable[Sample]) -> Path:
    """Write ``samples`` in the local format (images as PNG under ``images/``); returns the folder."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for sample in samples:
        row: dict[str, Any] = {"id": sample.id, "instruction": sample.instruction}
        row["image"] = f"images/{sample.id}.png"
        load_image(sample.image).save(out_dir / row["image"])
        if sample.reference is not None:
            row["reference"] = f"images/{sample.id}.reference.png"
            load_image(sample.reference).save(out_dir / row["reference"])
        if sample.atomic:
            row["atomic"] = list(sample.atomic)
        row.update(sample.meta)
        lines.append(json.dumps(row, ensure_ascii=False))
    (out_dir / SAMPLES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out_dir


def build_mix(out_dir: str | Path, sources: Sequence[Sequence[Sample]], *, n: int = 500, seed: int = 0) -> Path:
    """A seeded mix of ``n`` samples drawn evenly from ``sources`` (the remainder from the first ones), written
    in the local format. Each sample keeps its id, prefixed when two sources share one."""
    rng = random.Random(seed)
    shares = [n // len(sources) + (1 if i < n % len(sources) else 0) for i in range(len(sources))]
    chosen: list[Sample] = []
    for source, share in zip(sources, shares):
        if share > len(source):
            raise BenchmarkError(f"a source has {len(source)} samples, fewer than its share of {share}")
        chosen += rng.sample(list(source), share)
    ids = [s.id for s in chosen]
    for sample in chosen:
        if ids.count(sample.id) > 1:
            sample.id = safe_id(f"{sample.meta.get('source', 'src')}-{sample.id}")
    return write_local(out_dir, chosen)


# -- Hugging Face datasets ------------------------------------------------------------------------------------------
def open_dataset(source: str, split: str, **kwargs: Any) -> Any:
    """``datasets`` split from a hub id (cache when offline), a ``save_to_disk`` folder or a folder of data files."""
    try:
        import datasets
    except ImportError:
        raise BenchmarkError("Hugging Face benchmarks need datasets: pip install 'mira-edit[eval]'") from None
    path = Path(source)
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            data = datasets.load_from_disk(str(path))
            return data[split] if isinstance(data, datasets.DatasetDict) else data
        return datasets.load_dataset(source, split=split, **kwargs)
    except (KeyError, ValueError, FileNotFoundError, ConnectionError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchmarkError(
            f"could not load split '{split}' of '{source}' ({message}); download it once with network access, "
            "or pass source=<local copy>"
        ) from None


def load_hf(
    source: str,
    *,
    split: str = "train",
    image_column: str = "image",
    instruction_column: str = "instruction",
    id_column: str | None = None,
    reference_column: str | None = None,
    atomic_column: str | None = None,
    where: Callable[..., bool] | None = None,
    where_columns: Sequence[str] = (),
    name: str = "hf",
    limit: int | None = None,
) -> list[Sample]:
    """Samples from any dataset with an image column and an instruction column. ``where(*values of
    where_columns)`` filters rows without decoding their images."""
    data = open_dataset(source, split)
    columns = [c for c in (image_column, instruction_column, id_column, reference_column, atomic_column) if c]
    missing = [c for c in [*columns, *where_columns] if c not in data.column_names]
    if missing:
        raise BenchmarkError(f"'{source}' has no column {missing[0]!r}; its columns are {data.column_names}")
    if where is not None:
        data = data.filter(where, input_columns=list(where_columns))
    data = data.select_columns(columns)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    samples = []
    for index, row in enumerate(data):
        sample_id = safe_id(f"{name}-{row[id_column] if id_column else f'{index:05d}'}")
        samples.append(Sample(
            sample_id, row[instruction_column], row[image_column],
            atomic=list(row[atomic_column]) if atomic_column else [],
            reference=row[reference_column] if reference_column else None,
            meta={"source": name},
        ))
    return samples


def load_magicbrush(
    *, split: str = "dev", source: str = "osunlp/MagicBrush", min_turns: int = 2, limit: int | None = None
) -> list[Sample]:
    """MagicBrush editing sessions as complex instructions: the turns of one session (one ``img_id``, ordered by
    ``turn_index``) joined into one instruction on the session's first source image; the atomic list is the turns
    and the reference is the last turn's target. Sessions with fewer than ``min_turns`` turns are skipped."""
    data = open_dataset(source, split)
    sessions: dict[str, list[tuple[int, int]]] = {}
    for index, (img_id, turn) in enumerate(zip(data["img_id"], data["turn_index"])):
        sessions.setdefault(str(img_id), []).append((int(turn), index))
    samples = []
    for img_id, turns in sessions.items():
        if len(turns) < min_turns:
            continue
        rows = [data[index] for _, index in sorted(turns)]
        atomic = [row["instruction"] for row in rows]
        samples.append(Sample(
            safe_id(f"magicbrush-{img_id}"), join_instructions(atomic), rows[0]["source_img"], atomic,
            reference=rows[-1]["target_img"], meta={"source": "magicbrush", "turns": len(rows)},
        ))
        if limit is not None and len(samples) >= limit:
            break
    return samples


def load_complex_edit(
    *, split: str = "test_real", complexity: int | Sequence[int] = 8, source: str = "UCSC-VLAA/Complex-Edit",
    limit: int | None = None,
) -> list[Sample]:
    """Complex-Edit at complexity level(s) C1-C8: one sample per image and level; the instruction is the level's
    compound instruction and the atomic list the first ``level`` instructions of the image's edit sequence."""
    levels = [complexity] if isinstance(complexity, int) else list(complexity)
    if not levels or any(not 1 <= int(c) <= 8 for c in levels):
        raise BenchmarkError(f"Complex-Edit complexity levels run from 1 to 8, got {complexity}")
    data = open_dataset(source, split)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    samples = []
    for index, row in enumerate(data):
        compound, sequence = row["edit"]["compound"], row["edit"].get("sequence") or []
        atomic = [step.get("instruction", "") for step in sequence]
        for level in levels:
            samples.append(Sample(
                f"complex-edit-{split}-{index:04d}-c{level}", compound[int(level) - 1]["compound_instruction"],
                row["image"], atomic[: int(level)], meta={"source": "complex-edit", "complexity": int(level)},
            ))
    return samples


def load_gedit_bench(
    *, language: str = "en", task_types: Sequence[str] | None = None, source: str = "stepfun-ai/GEdit-Bench",
    limit: int | None = None,
) -> list[Sample]:
    """GEdit-Bench (split ``train``), one language (``en`` / ``cn``), optionally some task types only."""
    wanted = set(task_types or [])

    def keep(row_language: str, task_type: str) -> bool:
        return row_language == language and (not wanted or task_type in wanted)

    return load_hf(source, split="train", image_column="input_image", id_column="key", where=keep,
                   where_columns=("instruction_language", "task_type"), name="gedit", limit=limit)


def load_compbench(
    *, source: str = "BohanJia/CompBench", split: str = "train", tasks: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Sample]:
    """CompBench (``input_image``, ``instruction``, ``edited_image`` as reference), optionally only some values of
    its ``task`` column (``multi_object_add``, ``multi_object_remove``, ``add``, ``implicit_reasoning`` ...)."""
    wanted = set(tasks or ())

    def keep(task: str) -> bool:
        return not wanted or task in wanted

    return load_hf(source, split=split, image_column="input_image", id_column="image_path",
                   reference_column="edited_image", where=keep, where_columns=("task",), name="compbench",
                   limit=limit)


BENCHMARKS: dict[str, Callable[..., list[Sample]]] = {
    "magicbrush": load_magicbrush,
    "complex-edit": load_complex_edit,
    "gedit-bench": load_gedit_bench,
    "compbench": load_compbench,
}


def load_benchmark(spec: str, *, limit: int | None = None, **options: Any) -> list[Sample]:
    """Samples of a named benchmark (``magicbrush``, ``complex-edit``, ``gedit-bench``, ``compbench``; ``options``
    go to its loader) or of a local benchmark folder / JSONL file."""
    if spec in BENCHMARKS:
        try:
            return BENCHMARKS[spec](limit=limit, **options)
        except TypeError as exc:
            raise BenchmarkError(f"benchmark '{spec}': {exc}") from None
    if Path(spec).exists():
        if options:
            raise BenchmarkError(f"a local benchmark takes no options, got {sorted(options)}")
        return load_local(spec, limit=limit)
    raise BenchmarkError(f"unknown benchmark '{spec}': give one of {', '.join(BENCHMARKS)} or a folder holding "
                         f"{SAMPLES_FILE}")
