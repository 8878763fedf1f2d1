"""The data of a learning run, all made from the testbed world with training seeds (below 10000).

- **builder** (:func:`build_with_builder`): ``export_sessions`` writes multi-turn sessions, and the real data builder
  (:func:`mira.data.build.build`) turns them into MIRA-Editing: aggregate (fused and reordered instructions),
  synthesize with the noisy :class:`~mira.testbed.editor.TestbedEditor` (plus the sessions' exact renders), rank
  with :class:`~mira.testbed.judge.TestbedJudge` (only exact results are kept), annotate with
  :class:`ChangeAnnotator`, export. These trajectories are clean: start / continue / stop states.
- **teacher** (:func:`teacher_dataset`): the builder replays fixed turns and cannot express a closed loop, so the
  corrective states come from the plain oracle (``OraclePolicy(plain=True)``) driving the noisy editor in
  :class:`~mira.agent.MiraAgent`; each trajectory, errors and corrections included, is written as samples by the
  builder's export stage (:func:`mira.data.export.trajectory_samples`), so both parts share one format.
- **pretrain** (:func:`pretrain_dataset`): short prompts for stage 1: one-image chats, "What is in each cell?"
  answered cell by cell (:func:`describe_cells`, a dense target that teaches where each cell is), two-image chats,
  "What changed?" answered with the list of changes (:func:`~mira.testbed.oracle.describe_changes`, the text the
  policy's reasoning is made of), and the decisions above without the 248-token system prompt.
- **grpo** (:func:`grpo_dataset`): states (prompt, images, instruction, history) for GRPO, from teacher trajectories.

The reasoning of every decision is the list of changes between the original and the current image.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from mira.agent import MiraAgent
from mira.protocol import PROTOCOL_VERSION, Observation, build_messages
from mira.testbed.editor import TestbedEditor
from mira.testbed.edits import apply_edit, run_edits
from mira.testbed.language import ParseError, cell_name, parse_edit, plain_text
from mira.testbed.learning.config import LearningConfig
from mira.testbed.oracle import OraclePolicy, by_cell, describe_changes, shape_words
from mira.testbed.scene import CELLS, Scene, read_scene
from mira.testbed.tasks import HELD_OUT_SEED, Task, export_sessions, make_tasks
from mira.vlm import ChatBackend

PERCEPTION_QUESTION = "What changed?"
LISTING_QUESTION = "What is in each cell?"
TEACHER_MAX_STEPS = 12  # the teacher finishes every task within this many edits
LICENCE = "CC0-1.0"


def seed_for(config: LearningConfig, part: str) -> int:
    """The task seed of one part of the data (all below the held-out range)."""
    offset = {"sessions": 1, "teacher": 2, "perception": 3, "grpo": 4, "language": 5}[part]
    seed = config.seed * 10 + offset
    if seed >= HELD_OUT_SEED:
        raise ValueError(f"seed {config.seed} would reach the held-out task seeds; use a seed below 999")
    return seed


class ChangeAnnotator(ChatBackend):
    """The builder's annotator for testbed sessions: reads both images of the annotator prompt and answers with
    the list of changes (exact, where a VLM annotator would describe them)."""

    def chat(self, messages: list[dict[str, Any]], *, n: int = 1, seed: int | None = None, **sampling: Any) -> list[str]:
        images = [part["image"] for m in messages for part in m["content"] if part.get("type") == "image"]
        original, current = (read_scene(img) for img in images[:2])
        return [describe_changes(original, current)] * n

    def config(self) -> dict[str, Any]:
        return {"name": "testbed-changes"}


def language_text(config: LearningConfig, n: int = 3000) -> list[str]:
    """Sentences of the testbed's language (instructions, plain edits, lists of changes) for the tokenizer."""
    rng = random.Random(seed_for(config, "language"))
    lines = []
    for task in make_tasks(n, seed_for(config, "language"), (1, config.max_clauses)):
        lines.append(task.instruction)
        scene = task.source
        for edit in task.edits:
            lines.append(plain_text(by_cell(scene, edit), rng.randrange(2)))
            scene = apply_edit(scene, edit)
        lines.append(describe_changes(task.source, scene))
    return lines


# -- the data builder -------------------------------------------------------------------------------------------
def builder_config(config: LearningConfig, folder: Path) -> dict[str, Any]:
    """The ``mira data build`` configuration used for the testbed sessions in ``folder``."""
    return {
        "work_dir": str(folder / "build"),
        "seed": config.seed,
        "shard_size": 256,
        "sources": [{"kind": "jsonl", "path": str(folder / "sessions" / "sessions.jsonl"), "licence": LICENCE}],
        "aggregate": {"min_turns": 1, "max_turns": config.max_clauses, "permutations": config.builder_permutations},
        "rewrite": {"atomic_variants": 0, "complex_variants": 0},
        "synthesize": {"editors": [{"name": "testbed", "options": {"error_rate": config.error_rate}}],
                       "human_results": True},
        "rank": {"judge": {"name": "mira.testbed.judge:TestbedJudge"}, "threshold": 9.99},
        "annotate": {"backend": {"name": "mira.testbed.learning.data:ChangeAnnotator"}},
        "export": {"output": str(folder / "dataset"), "max_pixels": None},
    }


def build_with_builder(config: LearningConfig, folder: Path) -> Any:
    """Sessions -> ``mira.data.build`` -> the builder's dataset (resumes an interrupted build)."""
    import datasets
    from rich.console import Console

    from mira.data.build import build
    from mira.data.config import config_from_dict

    sessions = folder / "sessions" / "sessions.jsonl"
    if not sessions.is_file():
        export_sessions(folder / "sessions", config.builder_sessions, seed_for(config, "sessions"),
                        (1, config.max_clauses))
    result = build(config_from_dict(builder_config(config, folder)), console=Console(stderr=True, quiet=True))
    return datasets.load_from_disk(str(result.output))


# -- the teacher's closed-loop trajectories ---------------------------------------------------------------------
def teacher_runs(tasks: list[Task], config: LearningConfig, seed: int) -> Iterator[tuple[Task, Any]]:
    """(task, trajectory) of the plain oracle driving the noisy editor, for every task it finishes."""
    editor = TestbedEditor(error_rate=config.error_rate)
    for i, task in enumerate(tasks):
        agent = MiraAgent(policy=OraclePolicy(plain=True), editor=editor, max_steps=TEACHER_MAX_STEPS,
                          seed=seed * 100_000 + i)
        trajectory = agent.run(task.image, task.instruction)
        if trajectory.stop_reason == "stop":
            yield task, trajectory


def after_error(original: Image.Image, current: Image.Image, history: list[str]) -> bool:
    """Whether ``current`` differs from what a faultless editor would have made of ``history``."""
    try:
        edits = [parse_edit(h) for h in history]
    except ParseError:
        return True
    return read_scene(current) != run_edits(read_scene(original), edits)[0]


def trajectory_rows(task: Task, trajectory: Any) -> list[dict[str, Any]]:
    """The samples of one teacher trajectory, written by the data builder's export stage."""
    from mira.data.export import trajectory_samples
    from mira.data.records import Candidate, Selected
    from mira.data.records import Task as BuildTask

    steps = [s for s in trajectory.steps if not s.is_stop]
    edits = [s.action for s in steps]
    record = BuildTask(id=task.id, session_id=task.id, source="testbed-teacher", licence=LICENCE, image="",
                       turns=edits, order=list(range(len(edits))), instruction=task.instruction)
    candidate = Candidate(id=f"{task.id}.teacher", editor="testbed", images=[],
                          seed=trajectory.config["agent"]["seed"], step_seeds=[s.seed for s in steps])
    selected = Selected(record, candidate, score=10.0, reasoning=[s.reasoning for s in trajectory.steps])
    return trajectory_samples(selected, task.instruction, edits, images=[png(img) for img in images_of(trajectory)])


def images_of(trajectory: Any) -> list[Image.Image]:
    """The original and the image after each executed edit."""
    return [trajectory.original, *(s.image for s in trajectory.steps if not s.is_stop)]


def png(image: Image.Image) -> dict[str, Any]:
    """An image as the PNG bytes a ``datasets.Image`` column stores (keeps big datasets out of memory)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def teacher_dataset(config: LearningConfig) -> tuple[Any, Counter]:
    """Samples of plain-oracle trajectories with the noisy editor, and counts of the states they hold."""
    import datasets

    from mira.data.export import features
    from mira.testbed.language import split_clauses

    tasks = make_tasks(config.teacher_tasks, seed_for(config, "teacher"), (1, config.max_clauses))
    rows, counts = [], Counter()
    for task, trajectory in teacher_runs(tasks, config, seed_for(config, "teacher")):
        edits = [s.action for s in trajectory.steps if not s.is_stop]
        images = images_of(trajectory)
        clauses = split_clauses(task.instruction)
        for row in trajectory_rows(task, trajectory):
            t = row["step"]
            counts[row["kind"]] += 1
            if after_error(images[0], images[t], edits[:t]):
                counts["after an editor error"] += 1
            if t < len(edits) and edits[t] not in clauses:
                counts["correction or rephrasing"] += 1
            rows.append(row)
    return datasets.Dataset.from_list(rows, features=features()), counts


# -- perception ------------------------------------------------------------------------------------------------
def describe_cells(scene: Scene) -> str:
    """Every cell in reading order, then the background: "top left: large red circle; top middle: nothing; ..."."""
    cells = "; ".join(f"{cell_name(c)}: {shape_words(scene.at(c))}" for c in CELLS)
    return f"{cells}; background {scene.background}."


def listing_messages(cells: str) -> list[dict[str, Any]]:
    """A one-image "what is in each cell?" chat with its answer, in TRL's vision format."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": LISTING_QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": cells}]}]


def perception_messages(changes: str | None = None) -> list[dict[str, Any]]:
    """A two-image "what changed?" chat in TRL's vision format (with the answer when ``changes`` is given)."""
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Original image:"}, {"type": "image"},
        {"type": "text", "text": "Current image:"}, {"type": "image"},
        {"type": "text", "text": PERCEPTION_QUESTION},
    ]}]
    if changes is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": changes}]})
    return messages


def perception_pairs(config: LearningConfig) -> Iterator[tuple[Image.Image, Image.Image, str]]:
    """(original, current, changes): a random subset of a task's clauses run by an editor that errs more often than
    the evaluation's, so that unexpected changes are common; about one pair in ten is unchanged."""
    seed = seed_for(config, "perception")
    rng = random.Random(seed)
    editor = TestbedEditor(error_rate=min(1.0, 2 * config.error_rate))
    made = 0
    for task in make_tasks((config.perception_pairs + 2) // 3, seed, (1, config.max_clauses)):
        for _ in range(3):
            if made == config.perception_pairs:
                return
            current = task.image
            if rng.random() > 0.1:
                for clause in task.clauses:
                    if rng.random() < 0.6:
                        current = editor.edit(current, clause, seed=rng.randrange(2**31))
            made += 1
            yield task.image, current, describe_changes(task.source, read_scene(current))


def pretrain_dataset(config: LearningConfig, decisions: Any) -> Any:
    """Short-prompt rows for stage 1: per perception pair its changes and the cells of one of its images, plus every
    decision of ``decisions`` (MIRA-Editing rows) without its system prompt (the user turn and the answer are the
    protocol's), shuffled together."""
    import datasets

    from mira.data.export import features

    chats = features()["messages"]
    rows = []
    for i, (original, current, changes) in enumerate(perception_pairs(config)):
        rows.append({"messages": perception_messages(changes), "images": [png(original), png(current)]})
        shown = current if i % 2 else original
        rows.append({"messages": listing_messages(describe_cells(read_scene(shown))), "images": [png(shown)]})
    pairs = datasets.Dataset.from_list(rows, features=datasets.Features(
        {"messages": chats, "images": datasets.List(datasets.Image())}))
    short = decisions.select_columns(["messages", "images"]).map(
        lambda messages: {"messages": messages[1:]}, input_columns="messages")
    return datasets.concatenate_datasets([pairs, short.cast(pairs.features)]).shuffle(seed=config.seed)


# -- GRPO states ------------------------------------------------------------------------------------------------
def grpo_dataset(config: LearningConfig) -> Any:
    """One decision state per teacher trajectory on fresh tasks: prompt, images, instruction, history."""
    import datasets

    seed = seed_for(config, "grpo")
    rng = random.Random(seed)
    rows = []
    for task, trajectory in teacher_runs(make_tasks(config.grpo_states, seed, (1, config.max_clauses)), config, seed):
        images = images_of(trajectory)
        t = rng.randrange(len(images))
        history = [s.action for s in trajectory.steps[:t]]
        rows.append({"prompt": build_messages(Observation(task.instruction, tuple(history))),
                     "images": [png(images[0]), png(images[t])], "instruction": task.instruction,
                     "history": history, "protocol_version": PROTOCOL_VERSION})
    return datasets.Dataset.from_list(rows).cast_column("images", datasets.List(datasets.Image()))
