"""Random editing tasks of the testbed world and their export as multi-turn sessions for the data builder.

A task is a source scene, a complex instruction of 1-4 clauses and the scene it asks for. Clauses are order free:
each touches its own cells, and each one's reference picks the same shape whichever of the other clauses ran
before it, in whatever order. So the target does not depend on the order an agent executes the clauses in, any
subset of clauses has one well-defined result, and the data builder may reorder a session's turns.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mira.testbed.edits import (
    Add, Background, Edit, EditError, Move, Recolor, Remove, Resize, apply_edit, changed_units, effect, refer,
)
from mira.testbed.language import edit_text, join_clauses
from mira.testbed.scene import COLORS, BACKGROUNDS, SHAPES, SIZES, Scene, Shape, random_scene, render

HELD_OUT_SEED = 10_000  # evaluation tasks use seeds from here on; training data uses lower seeds
EDIT_WEIGHTS = {"recolor": 3.0, "move": 2.0, "add": 2.0, "remove": 2.0, "resize": 1.5, "background": 1.0}


@dataclass(frozen=True)
class Task:
    """A source scene, a complex instruction, its atomic clauses (with their edits) and the target scene."""

    id: str
    source: Scene
    instruction: str
    clauses: tuple[str, ...]
    edits: tuple[Edit, ...]
    target: Scene

    @property
    def image(self) -> Image.Image:
        return render(self.source)

    @property
    def target_image(self) -> Image.Image:
        return render(self.target)

    def states(self) -> list[Scene]:
        """The scene after each clause, executed in order."""
        out, scene = [], self.source
        for edit in self.edits:
            scene = apply_edit(scene, edit)
            out.append(scene)
        return out


def is_order_free(source: Scene, edits: list[Edit]) -> bool:
    """Whether, in every ordering of ``edits`` (so for every subset run before it), each edit's reference picks
    exactly one shape and the edit has the same effect."""
    effects, scene = [], source
    try:
        for edit in edits:
            new = apply_edit(scene, edit)
            effects.append(effect(scene, new))
            scene = new
        for order in itertools.permutations(range(len(edits))):
            scene = source
            for i in order:
                ref = getattr(edits[i], "ref", None)
                if ref is not None and len(ref.resolve(scene)) != 1:
                    return False
                new = apply_edit(scene, edits[i])
                if effect(scene, new) != effects[i]:
                    return False
                scene = new
    except EditError:
        return False
    units = [u for e in effects for u in e]
    return all(effects) and len(units) == len(set(units))


def sample_edit(scene: Scene, rng: random.Random, touched: set) -> Edit:
    """A random edit of ``scene`` that leaves the cells (and background) in ``touched`` alone."""
    shapes = [s for s in scene.shapes if s.cell not in touched]
    free = [c for c in scene.free_cells if c not in touched]
    allowed = {"recolor": bool(shapes), "remove": bool(shapes), "resize": bool(shapes), "move": bool(shapes and free),
               "add": bool(free), "background": "background" not in touched}
    kinds = [k for k in EDIT_WEIGHTS if allowed[k]]
    kind = rng.choices(kinds, weights=[EDIT_WEIGHTS[k] for k in kinds])[0]
    if kind == "background":
        return Background(rng.choice([c for c in BACKGROUNDS if c != scene.background]))
    if kind == "add":
        return Add(rng.choice(SHAPES), rng.choice(tuple(COLORS)), rng.choice(tuple(SIZES)), rng.choice(free))
    shape: Shape = rng.choice(shapes)
    ref = refer(scene, shape, rng)
    if kind == "recolor":
        return Recolor(ref, rng.choice([c for c in COLORS if c != shape.color]))
    if kind == "remove":
        return Remove(ref)
    if kind == "resize":
        return Resize(ref, "small" if shape.size == "large" else "large")
    return Move(ref, rng.choice(free))


def make_task(rng: random.Random, n_clauses: int, task_id: str, n_shapes: tuple[int, int] = (2, 5)) -> Task:
    """One random order-free task with ``n_clauses`` clauses."""
    while True:
        source = random_scene(rng, n_shapes)
        scene, touched, edits = source, set(), []
        for _ in range(n_clauses):
            edit = sample_edit(scene, rng, touched)
            new = apply_edit(scene, edit)
            touched |= changed_units(scene, new)
            edits.append(edit)
            scene = new
        if is_order_free(source, edits):
            clauses = tuple(edit_text(e, rng) for e in edits)
            return Task(task_id, source, join_clauses(list(clauses), rng), clauses, tuple(edits), scene)


def make_tasks(n: int, seed: int, clauses: tuple[int, int] = (1, 4), n_shapes: tuple[int, int] = (2, 5)) -> list[Task]:
    """``n`` random tasks with ``clauses`` (inclusive range) clauses each; the same seed gives the same tasks."""
    if n < 0 or not 1 <= clauses[0] <= clauses[1]:
        raise ValueError("need n >= 0 and a clause range 1 <= low <= high")
    rng = random.Random(seed)
    return [make_task(rng, rng.randint(*clauses), f"testbed-{seed}-{i:05d}", n_shapes) for i in range(n)]


def export_sessions(directory: str | Path, n: int, seed: int, clauses: tuple[int, int] = (2, 4)) -> Path:
    """Write ``n`` tasks as multi-turn sessions: ``DIR/sessions.jsonl`` plus ``DIR/images/<id>/*.png``.

    One JSON object per line::

        {"id": "testbed-0-00000", "image": "images/testbed-0-00000/source.png",
         "turns": ["make the red circle blue", "remove the square"],
         "results": ["images/testbed-0-00000/turn_1.png", "images/testbed-0-00000/turn_2.png"],
         "instruction": "Make the red circle blue and remove the square.", "licence": "CC0-1.0"}

    This is the data builder's ``jsonl`` source format (``{kind: jsonl, path: DIR/sessions.jsonl}``): paths are
    relative to the JSONL file's folder, ``results`` are exact renders of the scene after each turn, and turns may be
    reordered (tasks are order free). ``instruction`` is the testbed's own complex instruction. Returns the JSONL path.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in make_tasks(n, seed, clauses):
        folder = out / "images" / task.id
        folder.mkdir(parents=True, exist_ok=True)
        task.image.save(folder / "source.png")
        results = []
        for i, state in enumerate(task.states(), start=1):
            render(state).save(folder / f"turn_{i}.png")
            results.append(f"images/{task.id}/turn_{i}.png")
        rows.append({"id": task.id, "image": f"images/{task.id}/source.png", "turns": list(task.clauses),
                     "results": results, "instruction": task.instruction, "licence": "CC0-1.0"})
    path = out / "sessions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def export_benchmark(directory: str | Path, n: int, seed: int = HELD_OUT_SEED,
                     clauses: tuple[int, int] = (1, 4)) -> Path:
    """Write ``n`` held-out tasks as an evaluation benchmark: ``DIR/samples.jsonl`` plus ``DIR/images/*.png``.

    One JSON object per line, the evaluation runner's local format::

        {"id": "testbed-10000-00000", "instruction": "Make the red circle blue and remove the square.",
         "image": "images/testbed-10000-00000.png", "reference": "images/testbed-10000-00000.reference.png",
         "atomic": ["make the red circle blue", "remove the square"], "clauses": 2, "source": "testbed"}

    ``reference`` is the exact target. Returns the folder.
    """
    out = Path(directory)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for task in make_tasks(n, seed, clauses):
        image, reference = f"images/{task.id}.png", f"images/{task.id}.reference.png"
        task.image.save(out / image)
        task.target_image.save(out / reference)
        rows.append({"id": task.id, "instruction": task.instruction, "image": image, "reference": reference,
                     "atomic": list(task.clauses), "clauses": len(task.clauses), "source": "testbed"})
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out
