"""Stage 4, synthesize: candidate trajectories that execute a task's atomic turns in order.

Each configured editor runs every task ``samples_per_editor`` times through :class:`mira.agent.MiraAgent` driven by
a :class:`~mira.policies.baselines.StaticPlanPolicy` of the task's turns, so the data is made by the same loop,
seeds and run-folder format as inference. A candidate's base seed is derived from the build seed, the task id, the
editor's position and the sample index; every step's seed is recorded. Where the source has human result images
(the session's own order only), they are a candidate too.

Each candidate is a run folder ``WORK/synthesize/runs/<task>/<editor><i>-s<n>/`` (PNGs, trajectory.json,
report.html) finished by ``candidate.json``, written last and atomically: a job killed mid-shard reuses every
finished candidate and redoes the others from their seeds, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from mira.agent import MiraAgent
from mira.data.backends import load_editor_spec
from mira.data.config import BuildConfig
from mira.data.records import Candidate, Candidates, Task
from mira.data.store import StageStats, atomic_write_text
from mira.data.worker import ShardWorker, stable_seed
from mira.editors.base import Editor
from mira.images import InputError
from mira.policies.baselines import StaticPlanPolicy


def safe_name(text: str, limit: int = 80) -> str:
    """A file-system-safe folder name for an id (a short hash keeps altered names unique)."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:limit]
    if clean == text:
        return clean
    return f"{clean}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def human_candidate(task: Task) -> Candidate:
    assert task.results is not None
    return Candidate(id=f"{task.id}.human", editor="human", images=list(task.results),
                     step_seeds=[None] * len(task.turns))


async def run_editor(task: Task, editor: Editor, *, seed: int, run_dir: Path, retries: int) -> Candidate | str:
    """Execute ``task``'s turns with ``editor``; the candidate, or why it failed."""
    agent = MiraAgent(policy=StaticPlanPolicy(task.turns), editor=editor, max_steps=len(task.turns) + 1,
                      editor_retries=retries, seed=seed)
    traj = await agent.arun(task.image, task.instruction, run_dir=run_dir)
    if traj.stop_reason != "stop":
        return f"editor run ended with {traj.stop_reason}"
    steps = [s for s in traj.steps if not s.is_stop]
    return Candidate(
        id="", editor=editor.name, seed=seed, images=[str(run_dir / s.image_path) for s in steps],
        step_seeds=[s.seed for s in steps], editor_config=editor.config(), run_dir=str(run_dir),
    )


class SynthesizeWorker(ShardWorker):
    """Stage worker: tasks in, tasks with their candidates out; tasks without any candidate are dropped."""

    def __init__(self, config: BuildConfig, work_dir: Path):
        super().__init__(config, work_dir)
        self.concurrency = config.synthesize.concurrency
        self.editors = [load_editor_spec(spec) for spec in config.synthesize.editors]
        self.root = Path(work_dir) / "synthesize" / "runs"

    async def _candidate(self, task: Task, e: int, sample: int, stats: StageStats) -> Candidate | None:
        editor = self.editors[e]
        cid = f"{task.id}.{editor.name}{e}.s{sample}"
        run_dir = self.root / safe_name(task.id) / f"{safe_name(editor.name, 40)}{e}-s{sample}"
        marker = run_dir / "candidate.json"
        if marker.is_file():
            stats.note("candidates reused from an earlier run")
            saved = json.loads(marker.read_text())
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # left by a killed run
            seed = stable_seed(self.config.seed, "synthesize", task.id, e, sample)
            try:
                result = await run_editor(task, editor, seed=seed, run_dir=run_dir,
                                          retries=self.config.synthesize.editor_retries)
            except InputError as exc:
                result = f"invalid input ({exc})"
            saved = {"failed": result} if isinstance(result, str) else {"candidate": result.to_dict()}
            atomic_write_text(marker, json.dumps(saved, sort_keys=True))
        if "failed" in saved:
            stats.note(f"{editor.name}: {saved['failed'].split(' (')[0]}")
            return None
        cand = Candidate.from_dict(saved["candidate"])
        cand.id = cid
        return cand

    async def handle(self, row: dict[str, Any], stats: StageStats) -> list[dict[str, Any]]:
        task = Task.from_dict(row)
        cands = []
        if task.results and self.config.synthesize.human_results:
            cands.append(human_candidate(task))
        for e in range(len(self.editors)):
            for sample in range(self.config.synthesize.samples_per_editor):
                cand = await self._candidate(task, e, sample, stats)
                if cand is not None:
                    cands.append(cand)
        if not cands:
            stats.drop("no candidate succeeded")
            return []
        stats.note("candidates", len(cands))
        return [Candidates(task, cands).to_dict()]
