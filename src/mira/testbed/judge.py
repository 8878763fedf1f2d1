"""The exact judge of the testbed world, behind the same :class:`~mira.judges.base.Judge` interface as VLM judges.

The target is computed, not guessed: the instruction's clauses are parsed and applied to the scene read from the
source image, and compared with the scene read from the edited image. Units are the nine cells and the background.

- ``sc`` = 10 x (clauses satisfied / clauses) x (1 - unintended changes / units the instruction leaves alone). A
  clause is satisfied when every unit it changes holds what the target holds; an unintended change is a unit the
  instruction leaves alone that differs from the source. Clauses whose reference matches nothing in the source are
  left out of the count (reported as ``inapplicable``). ``sc`` is 10 exactly when the edited scene is the target.
- ``pq`` = 10 x (1 - rms / 64), where rms is the pixel difference between the edited image and the clean render of
  the scene read from it: 10 for clean renders, lower for noisy ones.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from mira.judges.base import Judge, JudgeScores
from mira.testbed.edits import Edit, run_edits, unit_content
from mira.testbed.language import ParseError, cell_name, parse_instruction
from mira.testbed.scene import CELLS, Scene, SceneReadError, read_scene, render_residual

_PQ_SCALE = 64.0


def score_scenes(source: Scene, edited: Scene, edits: list[Edit]) -> tuple[float, dict[str, Any]]:
    """Semantic consistency (0-10) of ``edited`` as the result of ``edits`` on ``source``, and its details."""
    target, effects, inapplicable = run_edits(source, edits)
    satisfied = sum(all(unit_content(edited, u) == unit_content(target, u) for u in eff) for eff in effects)
    intended = {u for eff in effects for u in eff}
    kept = [u for u in ("background", *CELLS) if u not in intended]
    unintended = [u for u in kept if unit_content(edited, u) != unit_content(source, u)]
    following = satisfied / len(effects) if effects else 1.0
    preservation = 1.0 - len(unintended) / len(kept) if kept else 1.0
    details = {
        "clauses": len(effects), "satisfied": satisfied, "inapplicable": inapplicable,
        "unintended": [u if u == "background" else cell_name(u) for u in unintended],
        "exact": edited == target,
    }
    return 10.0 * following * preservation, details


class TestbedJudge(Judge):
    """Scores testbed edits exactly from pixels (see the module docs for the formulas)."""

    __test__ = False
    name = "testbed"

    def score(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        try:
            before, after = read_scene(source), read_scene(edited)
        except SceneReadError as exc:
            return JudgeScores(error=str(exc))
        try:
            edits = [edit for _, edit in parse_instruction(instruction)]
        except ParseError as exc:
            return JudgeScores(error=f"the instruction is outside the testbed grammar: {exc}")
        sc, details = score_scenes(before, after, edits)
        pq = 10.0 * max(0.0, 1.0 - render_residual(edited, after) / _PQ_SCALE)
        return JudgeScores.from_sc_pq(sc, pq, **details)
