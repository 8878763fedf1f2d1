"""A scripted policy that knows the testbed world's truth: the upper bound for a learned policy.

At every step it reads the original and the current image (pixels only), computes the target scene from the
instruction, and answers through :mod:`mira.protocol` like any policy:

1. ``<STOP>`` when the current scene is the target;
2. else the first clause of the instruction that the current image still needs (its own words, so a learned
   policy trained on these decisions learns to copy clauses), when executing it brings the image closer to the target;
3. else a correction planned from the difference: background, a shape to move back, a colour or size to fix, a shape
   to remove, a shape to add, in that order, each naming its shape afresh in the current image.

If its answer would repeat the edit it issued last (the editor ignored it), it rephrases, since the agent stops on
exact repeats.

With ``plain=True`` (the teacher of :mod:`mira.testbed.learning`) corrections and rephrasings name their shape by its
cell in one of two fixed wordings (:func:`~mira.testbed.language.plain_text`) and the reasoning lists what differs
from the original (:func:`describe_changes`): what a small policy can learn to say from what it sees.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from PIL import Image

from mira.images import load_image
from mira.policies.base import Policy, PolicyError
from mira.protocol import STOP, Observation, format_completion, same_action
from mira.testbed.edits import (
    Add, Background, Edit, EditError, Move, Recolor, Ref, Remove, Resize, apply_edit, distance, refer, run_edits,
)
from mira.testbed.language import ParseError, cell_name, edit_text, parse_instruction, plain_text
from mira.testbed.scene import CELLS, Scene, SceneReadError, read_scene

_REPHRASE_TRIES = 20


def describe_scene(scene: Scene) -> str:
    """A short inventory of a scene, e.g. "a large red circle (top left) and a small blue square (center) on white"."""
    items = [f"a {shape_words(s)} ({cell_name(s.cell)})" for s in scene.shapes]
    listed = ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else (items[0] if items else "no shapes")
    return f"{listed} on {scene.background}"


def shape_words(shape: Any) -> str:
    """"large red circle", or "nothing" for an empty cell."""
    return "nothing" if shape is None else f"{shape.size} {shape.color} {shape.kind}"


def describe_changes(original: Scene, current: Scene) -> str:
    """What differs between two scenes, unit by unit in reading order, e.g.
    "Changed: background white -> black; top left: large red circle -> large blue circle."."""
    changes = [f"background {original.background} -> {current.background}"] if original.background != \
        current.background else []
    changes += [f"{cell_name(c)}: {shape_words(original.at(c))} -> {shape_words(current.at(c))}"
                for c in CELLS if original.at(c) != current.at(c)]
    return "Changed: " + "; ".join(changes) + "." if changes else "Nothing has changed yet."


def by_cell(scene: Scene, edit: Edit) -> Edit:
    """``edit`` with its shape named by the cell it holds in ``scene``."""
    ref = getattr(edit, "ref", None)
    return edit if ref is None else dataclasses.replace(edit, ref=Ref(cell=ref.resolve(scene)[0].cell))


def correction(current: Scene, target: Scene, rng: random.Random) -> Edit | None:
    """The first edit of a plan that turns ``current`` into ``target`` (None if they are equal)."""
    if current.background != target.background:
        return Background(target.background)
    wrong = [c for c in CELLS if current.at(c) != target.at(c)]
    for a in wrong:
        shape = current.at(a)
        for b in wrong:
            if shape is not None and current.at(b) is None and target.at(b) == shape.replace(cell=b):
                return Move(refer(current, shape, rng), b)
    for a in wrong:
        shape, want = current.at(a), target.at(a)
        if shape is not None and want is not None and shape.kind == want.kind:
            ref = refer(current, shape, rng)
            return Recolor(ref, want.color) if shape.color != want.color else Resize(ref, want.size)
    for a in wrong:
        shape = current.at(a)
        if shape is not None:
            return Remove(refer(current, shape, rng))
    for b in wrong:
        want = target.at(b)
        if want is not None:
            return Add(want.kind, want.color, want.size, b)
    return None


def _pending_clause(current: Scene, target: Scene, clauses: list[tuple[str, Edit]]) -> tuple[str, Edit] | None:
    """The first clause that picks one shape in ``current`` and brings it closer to ``target``."""
    gap = distance(current, target)
    for text, edit in clauses:
        ref = getattr(edit, "ref", None)
        if ref is not None and len(ref.resolve(current)) != 1:
            continue
        try:
            after = apply_edit(current, edit)
        except EditError:
            continue
        if distance(after, target) < gap:
            return text, edit
    return None


def _rephrase(current: Scene, edit: Edit, rng: random.Random) -> str:
    ref = getattr(edit, "ref", None)
    if ref is not None:
        edit = dataclasses.replace(edit, ref=refer(current, ref.resolve(current)[0], rng))
    return edit_text(edit, rng)


def decide(original: Scene, current: Scene, instruction: str, last: str | None,
           rng: random.Random, plain: bool = False) -> tuple[str, str]:
    """(action, reasoning) of the oracle for one step; the action is an atomic edit or :data:`~mira.protocol.STOP`.

    ``plain``: fixed wordings for corrections and rephrasings, and the changes as reasoning (see the module docs).
    """
    try:
        clauses = parse_instruction(instruction)
    except ParseError as exc:
        return STOP, f"The instruction is outside the testbed grammar ({exc}), so I leave the image as it is."
    target, _, _ = run_edits(original, [edit for _, edit in clauses])
    seen = f"The image shows {describe_scene(current)}."
    if current == target:
        return STOP, describe_changes(original, current) if plain else f"{seen} That is everything the instruction asks for."
    gap = distance(current, target)
    pending = _pending_clause(current, target, clauses)
    if pending is not None:
        text, edit = pending
        why = f"{seen} Part of the instruction is still missing ({gap} differences from the goal)."
    else:
        edit = correction(current, target, rng)
        assert edit is not None
        text = plain_text(by_cell(current, edit)) if plain else edit_text(edit, rng)
        why = f"{seen} It differs from the goal in {gap} ways that the instruction's own clauses cannot fix; I correct it."
    if plain:
        if same_action(text, last):
            text = next(t for t in (plain_text(by_cell(current, edit), w) for w in (0, 1)) if not same_action(t, last))
        return text, describe_changes(original, current)
    for _ in range(_REPHRASE_TRIES):
        if not same_action(text, last):
            break
        text = _rephrase(current, edit, rng)
    return text, why


def _as_image(image: Any) -> Image.Image:
    return image if isinstance(image, Image.Image) else load_image(image)


class OraclePolicy(Policy):
    """The testbed's scripted oracle (see the module docs); ``n`` completions are all the same decision."""

    name = "testbed-oracle"

    def __init__(self, plain: bool = False):
        self.plain = plain

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "plain": self.plain}

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        try:
            original, current = read_scene(_as_image(observation.original)), read_scene(_as_image(observation.current))
        except SceneReadError as exc:
            raise PolicyError(f"the testbed oracle only sees testbed scenes: {exc}") from None
        last = observation.history[-1] if observation.history else None
        action, reasoning = decide(original, current, observation.instruction, last, random.Random(seed), self.plain)
        return [format_completion(action, reasoning)] * n
