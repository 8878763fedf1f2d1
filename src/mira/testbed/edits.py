"""Atomic edits of the testbed world and the referring expressions that pick their shape.

An edit is a small frozen dataclass (:class:`Recolor`, :class:`Remove`, :class:`Add`, :class:`Move`, :class:`Resize`,
:class:`Background`); :func:`apply_edit` executes one on a :class:`~mira.testbed.scene.Scene`. A :class:`Ref` names a
shape by attributes ("the red circle"), by cell ("the shape in the top left corner") or by its relation to another
shape ("the circle left of the square"). Relations compare grid rows and columns: "left of" means in a column further
left, whatever the row; "above" means in a row higher up, whatever the column.

A multi-clause instruction means its clauses applied in order, each one resolved on the scene left by the previous
ones (:func:`apply_edits`); when a reference matches several shapes, the first in reading order is taken.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Union

from mira.testbed.scene import Cell, Scene, Shape

RELATIONS = ("left of", "right of", "above", "below")


class EditError(ValueError):
    """An edit that cannot be applied to a scene (nothing matches its reference, its destination is taken)."""


@dataclass(frozen=True)
class Ref:
    """A referring expression: attributes, an optional cell, an optional relation to an anchor shape."""

    kind: str | None = None
    color: str | None = None
    size: str | None = None
    cell: Cell | None = None
    relation: str | None = None
    anchor: "Ref | None" = None

    def matches(self, shape: Shape) -> bool:
        return all(want is None or want == have for want, have in (
            (self.kind, shape.kind), (self.color, shape.color), (self.size, shape.size), (self.cell, shape.cell)))

    def resolve(self, scene: Scene) -> list[Shape]:
        """Every shape of ``scene`` this expression fits, in reading order."""
        found = [s for s in scene.shapes if self.matches(s)]
        if self.relation is None:
            return found
        anchors = self.anchor.resolve(scene) if self.anchor is not None else []
        if not anchors:
            return []
        anchor = anchors[0]
        return [s for s in found if s.cell != anchor.cell and related(s.cell, self.relation, anchor.cell)]


def related(cell: Cell, relation: str, anchor: Cell) -> bool:
    """Whether ``cell`` is ``relation`` ("left of", "right of", "above", "below") the ``anchor`` cell."""
    (r, c), (ar, ac) = cell, anchor
    return {"left of": c < ac, "right of": c > ac, "above": r < ar, "below": r > ar}[relation]


@dataclass(frozen=True)
class Recolor:
    ref: Ref
    color: str


@dataclass(frozen=True)
class Remove:
    ref: Ref


@dataclass(frozen=True)
class Add:
    kind: str
    color: str
    size: str
    cell: Cell


@dataclass(frozen=True)
class Move:
    ref: Ref
    cell: Cell


@dataclass(frozen=True)
class Resize:
    ref: Ref
    size: str


@dataclass(frozen=True)
class Background:
    color: str


Edit = Union[Recolor, Remove, Add, Move, Resize, Background]


def target_shape(scene: Scene, ref: Ref) -> Shape:
    """The shape ``ref`` picks in ``scene`` (the first in reading order if several fit)."""
    found = ref.resolve(scene)
    if not found:
        raise EditError("no shape in the image fits the description")
    return found[0]


def apply_to(scene: Scene, edit: Edit, shape: Shape | None) -> Scene:
    """Apply ``edit`` with its reference already resolved to ``shape`` (None for Add and Background)."""
    if isinstance(edit, Background):
        return scene.with_background(edit.color)
    if isinstance(edit, Add):
        if scene.at(edit.cell) is not None:
            raise EditError("the cell where the shape should go is taken")
        return scene.with_shape(Shape(edit.kind, edit.color, edit.size, edit.cell))
    assert shape is not None
    if isinstance(edit, Recolor):
        return scene.with_shape(shape.replace(color=edit.color))
    if isinstance(edit, Resize):
        return scene.with_shape(shape.replace(size=edit.size))
    if isinstance(edit, Remove):
        return scene.without(shape.cell)
    if edit.cell == shape.cell:
        return scene
    if scene.at(edit.cell) is not None:
        raise EditError("the cell the shape should move to is taken")
    return scene.without(shape.cell).with_shape(shape.replace(cell=edit.cell))


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """``scene`` after ``edit``; raises :class:`EditError` when the edit cannot be applied."""
    ref = getattr(edit, "ref", None)
    return apply_to(scene, edit, target_shape(scene, ref) if ref is not None else None)


def apply_edits(scene: Scene, edits: list[Edit]) -> Scene:
    """``scene`` after every edit in order; raises :class:`EditError` at the first that cannot be applied."""
    for edit in edits:
        scene = apply_edit(scene, edit)
    return scene


def run_edits(scene: Scene, edits: list[Edit]) -> tuple[Scene, list[dict[Cell | str, Shape | str | None]], int]:
    """Apply ``edits`` in order, skipping those that cannot be applied: (final scene, effect of each applied edit,
    number skipped)."""
    effects, skipped = [], 0
    for edit in edits:
        try:
            new = apply_edit(scene, edit)
        except EditError:
            skipped += 1
            continue
        effects.append(effect(scene, new))
        scene = new
    return scene, effects, skipped


def changed_units(a: Scene, b: Scene) -> set[Cell | str]:
    """The cells whose content differs between two scenes, plus ``"background"`` if the backgrounds differ."""
    units: set[Cell | str] = {"background"} if a.background != b.background else set()
    cells = {s.cell for s in a.shapes} | {s.cell for s in b.shapes}
    return units | {c for c in cells if a.at(c) != b.at(c)}


def unit_content(scene: Scene, unit: Cell | str) -> Shape | str | None:
    """What a unit holds: the background colour for ``"background"``, else the shape in that cell (or None)."""
    return scene.background if unit == "background" else scene.at(unit)


def effect(before: Scene, after: Scene) -> dict[Cell | str, Shape | str | None]:
    """The units an edit changed, with what they hold afterwards."""
    return {u: unit_content(after, u) for u in changed_units(before, after)}


def distance(a: Scene, b: Scene) -> int:
    """How far two scenes are apart: 1 per differing attribute, 3 per shape present in one scene only."""
    d = int(a.background != b.background)
    for cell in changed_units(a, b) - {"background"}:
        x, y = a.at(cell), b.at(cell)
        if x is None or y is None:
            d += 3
        else:
            d += (x.kind != y.kind) + (x.color != y.color) + (x.size != y.size)
    return d


def unique_refs(scene: Scene, shape: Shape) -> dict[str, list[Ref]]:
    """Every expression that picks ``shape`` alone in ``scene``, grouped by style: attributes, cell, relation."""
    def alone(ref: Ref) -> bool:
        return ref.resolve(scene) == [shape]

    attributes = [r for r in (Ref(kind=shape.kind), Ref(color=shape.color, kind=shape.kind),
                              Ref(color=shape.color), Ref(size=shape.size, color=shape.color, kind=shape.kind))
                  if alone(r)]
    cell = [Ref(cell=shape.cell), Ref(kind=shape.kind, cell=shape.cell)]
    relation = []
    for other in scene.shapes:
        if other == shape:
            continue
        anchor = next((r for r in (Ref(kind=other.kind), Ref(color=other.color, kind=other.kind))
                       if r.resolve(scene) == [other]), None)
        if anchor is None:
            continue
        for rel in RELATIONS:
            if related(shape.cell, rel, other.cell):
                relation += [r for r in (Ref(kind=shape.kind, relation=rel, anchor=anchor),
                                         Ref(color=shape.color, kind=shape.kind, relation=rel, anchor=anchor))
                             if alone(r)][:1]
    return {"attributes": attributes, "cell": cell, "relation": relation}


def refer(scene: Scene, shape: Shape, rng: random.Random) -> Ref:
    """A random expression that picks ``shape`` alone in ``scene``: a random style among those that have one (a cell
    reference always works), then a random expression of that style."""
    options = unique_refs(scene, shape)
    style = rng.choice([name for name, refs in options.items() if refs])
    return rng.choice(options[style])
