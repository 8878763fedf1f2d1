"""Stage 5, rank: a judge scores each candidate's final image against the task's complex instruction; the best
candidate is kept, and a task whose best score is under ``rank.threshold`` is dropped.

The judge is any :class:`mira.judges.base.Judge` (VIEScore over a chat model, EditScore ...). Scores are read from
``JudgeScores.overall`` (0-10); a judgement that failed (``JudgeScores.error``) only removes that candidate. Ties
go to the earlier candidate (human results first, then editors in config order). Without a judge, the first
candidate is kept unscored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mira.data.backends import load_judge_spec
from mira.data.config import BuildConfig
from mira.data.records import Candidate, Candidates, Selected, Task
from mira.data.store import StageStats
from mira.data.worker import ShardWorker
from mira.images import load_image
from mira.judges.base import Judge, JudgeScores


async def score_candidates(judge: Judge, task: Task, candidates: list[Candidate]) -> list[JudgeScores]:
    original = load_image(task.image)
    return list(await asyncio.gather(
        *(judge.ascore(original, load_image(c.images[-1]), task.instruction) for c in candidates)))


def select_best(task: Task, candidates: list[Candidate], scores: list[JudgeScores], threshold: float,
                stats: StageStats) -> Selected | None:
    """The best-scored candidate as a :class:`Selected`, or None (reason counted in ``stats``)."""
    ranking = []
    best: int | None = None
    for i, (cand, s) in enumerate(zip(candidates, scores)):
        ranking.append({"candidate": cand.id, "editor": cand.editor, "overall": s.overall, "sc": s.sc, "pq": s.pq,
                        "error": s.error})
        if not s.ok:
            stats.note("judge errors")
            continue
        if best is None or s.overall > scores[best].overall:  # type: ignore[operator]
            best = i
    if best is None:
        stats.drop("judge failed on every candidate")
        return None
    top = scores[best]
    if top.overall < threshold:  # type: ignore[operator]
        stats.drop("best score below threshold")
        return None
    return Selected(task, candidates[best], top.overall, {"sc": top.sc, "pq": top.pq, "overall": top.overall},
                    ranking)


class RankWorker(ShardWorker):
    """Stage worker: tasks with candidates in, selected trajectories out."""

    def __init__(self, config: BuildConfig, work_dir: Path):
        super().__init__(config, work_dir)
        self.concurrency = config.rank.concurrency
        self.judge = load_judge_spec(config.rank.judge) if config.rank.judge else None

    async def handle(self, row: dict[str, Any], stats: StageStats) -> list[dict[str, Any]]:
        item = Candidates.from_dict(row)
        if self.judge is None:
            return [Selected(item.task, item.candidates[0]).to_dict()]
        scores = await score_candidates(self.judge, item.task, item.candidates)
        selected = select_best(item.task, item.candidates, scores, self.config.rank.threshold, stats)
        return [] if selected is None else [selected.to_dict()]
