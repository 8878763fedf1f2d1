"""An editor for the testbed world that fails the way diffusion editors do.

It reads the scene from the image's pixels, parses the instruction with the testbed grammar and renders the result.
Like a diffusion editor asked for many things at once, it carries out only part of a multi-clause instruction; and
with probability ``error_rate`` per clause it errs in one of these ways:

- ``noop``: the image comes back unchanged;
- ``wrong_object``: the edit lands on another shape (or, for an addition, in another free cell);
- ``wrong_value``: the wrong colour (recolour, add, background) or the wrong destination (move); a resize has no
  wrong value and falls back to another mode;
- ``side_effect``: the edit is right but another shape changes colour too.

Clauses outside the grammar, and clauses whose reference matches nothing, are ignored, as a diffusion editor ignores
what it does not understand. Every random choice comes from the per-call seed.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from mira.editors.base import Editor, EditorError
from mira.testbed.edits import Add, Background, Edit, EditError, Move, Recolor, apply_to, target_shape
from mira.testbed.language import ParseError, parse_edit, split_clauses
from mira.testbed.scene import BACKGROUNDS, COLORS, Scene, SceneReadError, Shape, add_noise, read_scene, render

ERROR_MODES = ("noop", "wrong_object", "wrong_value", "side_effect")
PARTIAL_MODES = ("first", "random", "all")


class TestbedEditor(Editor):
    """Executes testbed instructions on testbed images, partially and with errors.

    Args:
        error_rate: probability that one executed clause goes wrong.
        partial: which clauses of a multi-clause instruction run: ``first`` (only the first), ``random`` (each with
            probability ``keep_rate``, at least one) or ``all``.
        keep_rate: used by ``partial="random"``.
        error_modes: the error modes to draw from (see the module docs).
        noise: standard deviation of Gaussian pixel noise added to the output (0 gives clean renders).
    """

    __test__ = False  # not a pytest test class despite its name
    name = "testbed"

    def __init__(self, error_rate: float = 0.2, partial: str = "random", keep_rate: float = 0.5,
                 error_modes: tuple[str, ...] | list[str] = ERROR_MODES, noise: float = 0.0):
        if not 0.0 <= error_rate <= 1.0 or not 0.0 <= keep_rate <= 1.0:
            raise ValueError("error_rate and keep_rate must be between 0 and 1")
        if partial not in PARTIAL_MODES:
            raise ValueError(f"partial must be one of {', '.join(PARTIAL_MODES)}, not '{partial}'")
        unknown = set(error_modes) - set(ERROR_MODES)
        if unknown or not error_modes:
            raise ValueError(f"error_modes must be a non-empty subset of {', '.join(ERROR_MODES)}")
        if noise < 0:
            raise ValueError("noise must be >= 0")
        self.error_rate, self.partial, self.keep_rate, self.noise = error_rate, partial, keep_rate, noise
        self.error_modes = tuple(error_modes)

    def params(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "partial": self.partial, "keep_rate": self.keep_rate,
                "error_modes": list(self.error_modes), "noise": self.noise}

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        try:
            scene = read_scene(image)
        except SceneReadError as exc:
            raise EditorError(f"the testbed editor only edits testbed scenes: {exc}") from None
        rng = random.Random(seed)
        for edit in self._chosen(instruction, rng):
            scene = self._execute(scene, edit, rng)
        out = render(scene)
        return add_noise(out, self.noise, rng.randrange(2**32)) if self.noise > 0 else out

    def _chosen(self, instruction: str, rng: random.Random) -> list[Edit]:
        edits = []
        for clause in split_clauses(instruction):
            try:
                edits.append(parse_edit(clause))
            except ParseError:
                continue
        if self.partial == "first" or len(edits) <= 1:
            return edits[:1]
        if self.partial == "all":
            return edits
        kept = [e for e in edits if rng.random() < self.keep_rate]
        return kept or [rng.choice(edits)]

    def _execute(self, scene: Scene, edit: Edit, rng: random.Random) -> Scene:
        ref = getattr(edit, "ref", None)
        try:
            shape = target_shape(scene, ref) if ref is not None else None
            if rng.random() >= self.error_rate:
                return apply_to(scene, edit, shape)
            modes = list(self.error_modes)
            rng.shuffle(modes)
            for mode in modes:
                result = _err(mode, scene, edit, shape, rng)
                if result is not None:
                    return result
            return scene
        except EditError:
            return scene


def _err(mode: str, scene: Scene, edit: Edit, shape: Shape | None, rng: random.Random) -> Scene | None:
    """``scene`` after ``edit`` executed with error ``mode``; None where the mode does not apply to the edit."""
    if mode == "noop":
        return scene
    if mode == "wrong_object":
        others = [s for s in scene.shapes if shape is None or s.cell != shape.cell]
        if isinstance(edit, Add):
            free = [c for c in scene.free_cells if c != edit.cell]
            return apply_to(scene, Add(edit.kind, edit.color, edit.size, rng.choice(free)), None) if free else None
        if isinstance(edit, Background) or not others:
            return None
        other = rng.choice(others)
        if isinstance(edit, Move) and scene.at(edit.cell) is not None:
            return None
        return apply_to(scene, edit, other)
    if mode == "wrong_value":
        if isinstance(edit, Background):
            return scene.with_background(rng.choice([c for c in BACKGROUNDS if c not in (edit.color, scene.background)]))
        if isinstance(edit, (Recolor, Add)):
            color = rng.choice([c for c in COLORS if c != edit.color and (shape is None or c != shape.color)])
            return apply_to(scene, Recolor(edit.ref, color) if isinstance(edit, Recolor) else
                            Add(edit.kind, color, edit.size, edit.cell), shape)
        if isinstance(edit, Move):
            free = [c for c in scene.free_cells if c != edit.cell]
            return apply_to(scene, Move(edit.ref, rng.choice(free)), shape) if free else None
        return None
    # side_effect: the edit is right, and another shape changes colour too
    result = apply_to(scene, edit, shape)
    victims = [s for s in result.shapes if s == scene.at(s.cell)]
    if not victims:
        return None
    victim = rng.choice(victims)
    return result.with_shape(victim.replace(color=rng.choice([c for c in COLORS if c != victim.color])))
