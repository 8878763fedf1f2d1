"""Stage 7, split and export: kept trajectories -> start / continue / stop samples -> a sharded HF dataset.

A trajectory with k edits gives k + 1 samples, one per decision of the policy. Sample t holds exactly the messages
inference sends at that decision, built by :mod:`mira.protocol`::

    messages = build_messages(Observation(instruction, history=edits[:t])) + [assistant_message(action_t, reasoning_t)]
    images   = [original, image after t edits]

with ``action_t`` the (t+1)-th edit, or ``<STOP>`` after the last one; kind is ``start`` (t = 0), ``continue`` or
``stop``. ``export.variants_per_trajectory`` copies of each trajectory are written; copy v words the instruction
and the edits with paraphrases from the rewrite stage (chosen with a seeded generator, distinct instructions per
copy). Images are stored as PNG bytes, at most ``export.max_pixels`` pixels (aspect kept).

Rows are TRL's vision format (``messages`` + ``images``) plus metadata columns (see :data:`METADATA`), so
``SFTTrainer`` trains on ``datasets.load_from_disk(OUTPUT)`` directly. Each input shard becomes a dataset shard in
``WORK/export/``; :func:`assemble` concatenates them into ``OUTPUT`` with a dataset card.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from mira.data.config import BuildConfig
from mira.data.records import Selected
from mira.data.store import StageDir, StageStats, atomic_write_text
from mira.data.worker import ShardWorker
from mira.images import load_image, working_size
from mira.protocol import PROTOCOL_VERSION, STOP, Observation, assistant_message, build_messages

METADATA = {
    "trajectory_id": "id of the kept trajectory (task id + editor + sample)",
    "variant": "which wording of the trajectory (0 .. export.variants_per_trajectory - 1)",
    "step": "decision index: 0 = first edit, k = the stop",
    "num_edits": "edits in the whole trajectory (k)",
    "kind": "start | continue | stop",
    "source": "seed-data-edit | magicbrush | jsonl",
    "session_id": "the source session",
    "licence": "licence of the source",
    "editor": "who made the images (an editor name, or human)",
    "seed": "base seed of the editor run (-1 for human results)",
    "score": "judge score (0-10) of the trajectory's final image, -1 without a judge",
    "protocol_version": "mira.protocol.PROTOCOL_VERSION the messages were built with",
}


def features() -> Any:
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features({
        "messages": List({"role": text, "content": List({"type": text, "text": text})}),
        "images": List(Image()),
        "trajectory_id": text, "variant": Value("int32"), "step": Value("int32"), "num_edits": Value("int32"),
        "kind": text, "source": text, "session_id": text, "licence": text, "editor": text, "seed": Value("int64"),
        "score": Value("float32"), "protocol_version": text,
    })


def empty_dataset() -> Any:
    import datasets

    feats = features()
    return datasets.Dataset.from_dict({name: [] for name in feats}, features=feats)


def wordings(sel: Selected, copies: int, seed: int) -> list[tuple[str, list[str]]]:
    """``copies`` (instruction, edits) wordings of a trajectory: distinct instructions while there are enough."""
    task = sel.task
    rng = random.Random(f"{seed}:export:{task.id}")
    instructions = list(task.instruction_variants)
    rng.shuffle(instructions)
    out = []
    for v in range(copies):
        instruction = instructions[v % len(instructions)]
        out.append((instruction, [rng.choice(variants) for variants in task.turn_variants]))
    return out


def trajectory_samples(sel: Selected, instruction: str, edits: list[str], variant: int = 0,
                       images: list[Any] | None = None) -> list[dict[str, Any]]:
    """The k + 1 samples of one wording of a trajectory.

    ``images`` are the k + 1 images in order (original, after edit 1, ...); by default the paths of the record.
    """
    k = len(edits)
    images = images if images is not None else [sel.task.image, *sel.candidate.images]
    reasoning = sel.reasoning or [""] * (k + 1)
    rows = []
    for t in range(k + 1):
        action = edits[t] if t < k else STOP
        messages = build_messages(Observation(instruction, tuple(edits[:t])))
        messages.append(assistant_message(action, reasoning[t]))
        rows.append({
            "messages": messages, "images": [images[0], images[t]], "trajectory_id": sel.candidate.id,
            "variant": variant, "step": t, "num_edits": k, "kind": "start" if t == 0 else "stop" if t == k else
            "continue", "source": sel.task.source, "session_id": sel.task.session_id, "licence": sel.task.licence,
            "editor": sel.candidate.editor, "seed": -1 if sel.candidate.seed is None else sel.candidate.seed,
            "score": -1.0 if sel.score is None else float(sel.score), "protocol_version": PROTOCOL_VERSION,
        })
    return rows


def encode_image(path: str, max_pixels: int | None) -> dict[str, Any]:
    """PNG bytes of a validated image, scaled down to ``max_pixels`` (aspect kept) when larger."""
    img = load_image(path)
    if max_pixels and img.width * img.height > max_pixels:
        img = img.resize(working_size(img.size, max_pixels, multiple=2))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def _rows(shard_file: str, copies: int, seed: int, max_pixels: int | None) -> Iterator[dict[str, Any]]:
    with open(shard_file, encoding="utf-8") as fh:
        for line in fh:
            sel = Selected.from_dict(json.loads(line))
            images = [encode_image(p, max_pixels) for p in [sel.task.image, *sel.candidate.images]]
            for v, (instruction, edits) in enumerate(wordings(sel, copies, seed)):
                yield from trajectory_samples(sel, instruction, edits, v, images)


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide datasets' own progress bars (the builder shows its own)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def write_shard_dataset(shard_file: Path, out_dir: Path, copies: int, seed: int, max_pixels: int | None) -> int:
    """Samples of one shard of selected trajectories, saved with ``save_to_disk`` at ``out_dir``; the row count.

    A shard without samples writes nothing."""
    import datasets

    cache = out_dir.with_name(f".{out_dir.name}.cache")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    with open(shard_file, encoding="utf-8") as fh:
        if not any(line.strip() for line in fh):
            return 0
    kwargs = {"shard_file": str(shard_file), "copies": copies, "seed": seed, "max_pixels": max_pixels}
    with quiet_datasets():
        ds = datasets.Dataset.from_generator(_rows, features=features(), cache_dir=str(cache), gen_kwargs=kwargs)
        ds.save_to_disk(str(tmp))
    n = len(ds)
    del ds
    tmp.rename(out_dir)
    shutil.rmtree(cache, ignore_errors=True)
    return n


class ExportWorker(ShardWorker):
    """Stage worker: one shard of annotated trajectories -> one dataset shard; rows out are per-trajectory
    summaries (for the dataset card)."""

    def process(self, index: int, rows: list[dict[str, Any]], advance: Callable[[int], None]):
        cfg = self.config.export
        n = write_shard_dataset(StageDir(self.work_dir, "annotate").shard_path(index),
                                self.work_dir / "export" / f"data-{index:05d}", cfg.variants_per_trajectory,
                                self.config.seed, cfg.max_pixels)
        summaries = []
        for row in rows:
            sel = Selected.from_dict(row)
            summaries.append({"trajectory_id": sel.candidate.id, "source": sel.task.source, "licence":
                              sel.task.licence, "editor": sel.candidate.editor, "num_edits": len(sel.task.turns),
                              "score": sel.score, "session_id": sel.task.session_id})
        advance(len(rows))
        stats = StageStats(inputs=len(rows), kept=len(summaries))
        stats.note("samples", n)
        return summaries, stats


def assemble(work_dir: Path, output: Path, num_shards: int | None, stage_totals: dict[str, StageStats],
             config: BuildConfig) -> int:
    """Concatenate the export shards into ``output`` (``save_to_disk``) and write its dataset card; the row count."""
    import datasets

    from mira.data.store import read_jsonl

    stage = work_dir / "export"
    parts = sorted(p for p in stage.glob("data-*") if p.is_dir())
    tmp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_datasets():
        loaded = [datasets.load_from_disk(str(p)) for p in parts]
        ds = datasets.concatenate_datasets(loaded) if loaded else empty_dataset()
        kwargs = {"num_shards": min(num_shards, max(1, len(ds)))} if num_shards else {}
        ds.save_to_disk(str(tmp), **kwargs)
    summaries = [r for p in sorted(stage.glob("shard-*.jsonl")) for r in read_jsonl(p)]
    atomic_write_text(tmp / "README.md", dataset_card(summaries, ds, stage_totals, config))
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)
    return len(ds)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card(summaries: list[dict[str, Any]], ds: Any, stage_totals: dict[str, StageStats],
                 config: BuildConfig) -> str:
    """README.md of the exported dataset: counts, steps histogram, sources and their licences, build counts."""
    kinds = Counter(ds["kind"]) if len(ds) else Counter()
    steps = Counter(s["num_edits"] for s in summaries)
    by_source: dict[str, Counter] = {}
    licences: dict[str, set[str]] = {}
    for s in summaries:
        by_source.setdefault(s["source"], Counter())["trajectories"] += 1
        by_source[s["source"]]["edits"] += s["num_edits"]
        licences.setdefault(s["source"], set()).add(s["licence"])
    all_licences = sorted({lic for v in licences.values() for lic in v})
    header_licence = all_licences[0].lower() if len(all_licences) == 1 and all_licences[0] != "unspecified" else "other"
    scores = [s["score"] for s in summaries if s["score"] is not None]
    build_rows = [(name, t.inputs, t.kept, ", ".join(f"{k}: {v}" for k, v in t.dropped.items()) or "-")
                  for name, t in stage_totals.items()]
    def name(spec: Any) -> str:
        return f"`{spec.name}`" if spec else "none"

    settings = (f"Editors: {', '.join(name(e) for e in config.synthesize.editors) or 'none'}"
                f"{' and human results' if config.synthesize.human_results else ''}; judge: {name(config.rank.judge)}; "
                f"rewriter: {name(config.rewrite.backend) if config.rewrite.backend else 'templates'}; "
                f"reasoning: {name(config.annotate.backend) if config.annotate.backend else 'templates'}; "
                f"seed {config.seed}.")
    score_line = (f"Judge scores of kept trajectories (0-10): mean {sum(scores) / len(scores):.2f}, "
                  f"min {min(scores):.2f}, max {max(scores):.2f}; threshold {config.rank.threshold}."
                  if scores else "No judge was configured: trajectories are unscored (score -1).")
    return f"""---
license: {header_licence}
task_categories:
- image-text-to-text
tags:
- image-editing
- multi-turn
- mira
pretty_name: MIRA-Editing
---

# MIRA-Editing

Training data for MIRA, an agent that edits an image one atomic instruction at a time until `<STOP>`. Each row is one
decision of the policy: the messages inference sends at that step (built by `mira.protocol`, protocol version
{PROTOCOL_VERSION}) followed by the assistant answer `<think>...</think><answer>...</answer>`, with `images` =
[original, current]. Load it with `datasets.load_from_disk` and train with TRL's `SFTTrainer` as is.

## Counts

{_table(("", "count"), [("trajectories", len(summaries)), ("samples", len(ds)), ("start samples", kinds["start"]),
                        ("continue samples", kinds["continue"]), ("stop samples", kinds["stop"]),
                        ("wordings per trajectory", config.export.variants_per_trajectory)])}

{score_line}

## Edits per trajectory

{_table(("edits", "trajectories"), sorted(steps.items()))}

## Sources and licences

{_table(("source", "trajectories", "edits", "licence"),
        [(src, c["trajectories"], c["edits"], ", ".join(sorted(licences[src]))) for src, c in sorted(by_source.items())])}

The data inherits the licences of its sources: SEED-Data-Edit is CC-BY-NC-4.0 (non-commercial research only);
MagicBrush is CC-BY-4.0 and its source photos come from MS-COCO (Flickr terms of use); local JSONL sessions carry the
licence given in their rows or config. Images made by editors follow the terms of the editor models used.

## Columns

- `messages`: system / user / assistant turns in TRL's vision format (image placeholders `{{"type": "image"}}`).
- `images`: [original image, current image], PNG.
{chr(10).join(f"- `{k}`: {v}." for k, v in METADATA.items())}

## How it was built

`mira data build` (stages: sources, aggregate, rewrite, synthesize, rank, annotate, export). {settings}

{_table(("stage", "in", "kept", "dropped"), build_rows)}
"""
