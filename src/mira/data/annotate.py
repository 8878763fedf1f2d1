"""Stage 6, annotate: the short reasoning before each decision of a kept trajectory.

With ``annotate.backend`` set, a VLM sees the original and current images, the instruction, the edits so far and
the next step, and writes one or two sentences (prompt in :mod:`mira.data.prompts`); an unusable reply falls back
to the template. Without a backend, :func:`template_reasoning` writes it deterministically.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mira.data.backends import load_chat_spec
from mira.data.config import BuildConfig
from mira.data.prompts import annotator_messages, clean_reasoning
from mira.data.records import Selected
from mira.data.store import StageStats
from mira.data.worker import ShardWorker, stable_seed
from mira.images import load_image


def template_reasoning(turns: list[str], step: int) -> str:
    """Reasoning before decision ``step`` (0-based; ``step == len(turns)`` is the stop)."""
    done, todo = turns[:step], turns[step:]
    if not todo:
        return f"The current image shows every requested change ({'; '.join(done)}). Nothing is missing, so I stop."
    if not done:
        seen = "The current image is still the original, so none of the requested changes are there yet."
    else:
        seen = f"The current image already shows: {'; '.join(done)}."
    return f"{seen} Still missing: {'; '.join(todo)}. Next: {todo[0]}."


class AnnotateWorker(ShardWorker):
    """Stage worker: fills ``Selected.reasoning`` (one entry per decision, the stop included)."""

    def __init__(self, config: BuildConfig, work_dir: Path):
        super().__init__(config, work_dir)
        self.concurrency = config.annotate.concurrency
        self.backend = load_chat_spec(config.annotate.backend) if config.annotate.backend else None

    async def _vlm(self, sel: Selected, original: Any, step: int, stats: StageStats) -> str:
        assert self.backend is not None
        task, turns = sel.task, sel.task.turns
        current = original if step == 0 else load_image(sel.candidate.images[step - 1])
        messages = annotator_messages(original, current, task.instruction, turns[:step],
                                      turns[step] if step < len(turns) else None)
        replies = await self.backend.achat(messages, n=1, seed=stable_seed(self.config.seed, "annotate", task.id,
                                                                           step))
        text = clean_reasoning(replies[0]) if replies else None
        if text is None:
            stats.note("annotator reply unusable (template used)")
            return template_reasoning(turns, step)
        return text

    async def handle(self, row: dict[str, Any], stats: StageStats) -> list[dict[str, Any]]:
        sel = Selected.from_dict(row)
        steps = range(len(sel.task.turns) + 1)
        if self.backend is None:
            sel.reasoning = [template_reasoning(sel.task.turns, t) for t in steps]
        else:
            original = load_image(sel.task.image)
            sel.reasoning = list(await asyncio.gather(*(self._vlm(sel, original, t, stats) for t in steps)))
        return [sel.to_dict()]
