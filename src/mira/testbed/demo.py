"""The closed-loop demonstration: raw editor vs. open-loop plan vs. the oracle in MIRA's loop, on held-out tasks.

Every method runs through the real :class:`~mira.agent.MiraAgent` with the same noisy :class:`TestbedEditor` and is
scored by the same :class:`TestbedJudge` on (source image, final image, complex instruction):

- ``single-shot``: :class:`~mira.policies.baselines.PassthroughPolicy`, the whole instruction in one editor call;
- ``static plan``: :class:`~mira.policies.baselines.StaticPlanPolicy` with the exact clause split, open loop;
- ``closed loop (oracle)``: :class:`~mira.testbed.oracle.OraclePolicy`, which looks at every result.

A task succeeds when the final scene is exactly the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean
from typing import Callable

from mira.agent import MiraAgent
from mira.policies.base import Policy
from mira.policies.baselines import PassthroughPolicy, StaticPlanPolicy
from mira.testbed.editor import TestbedEditor
from mira.testbed.judge import TestbedJudge
from mira.testbed.oracle import OraclePolicy
from mira.testbed.tasks import HELD_OUT_SEED, Task, make_tasks
from mira.trajectory import Trajectory

METHODS: dict[str, Callable[[Task], Policy]] = {
    "single-shot": lambda task: PassthroughPolicy(),
    "static plan": lambda task: StaticPlanPolicy(task.clauses),
    "closed loop (oracle)": lambda task: OraclePolicy(),
}


@dataclass
class MethodResult:
    """Per-task outcomes of one method."""

    name: str
    success: list[bool] = field(default_factory=list)
    sc: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    clauses: list[int] = field(default_factory=list)

    def record(self, task: Task, trajectory: Trajectory, judge: TestbedJudge) -> None:
        """Judge the final image of ``trajectory`` on ``task`` and add the outcome."""
        scores = judge.score(task.image, trajectory.final_image, task.instruction)
        if not scores.ok:
            raise RuntimeError(f"task {task.id}: the judge failed: {scores.error}")
        self.success.append(bool(scores.details["exact"]))
        self.sc.append(float(scores.sc))
        self.calls.append(trajectory.editor_calls)
        self.clauses.append(len(task.clauses))

    def rate(self, k: int | None = None) -> float:
        picked = [ok for ok, n in zip(self.success, self.clauses) if k is None or n == k]
        return sum(picked) / len(picked) if picked else float("nan")


def run_method(name: str, tasks: list[Task], editor: TestbedEditor, max_steps: int, seed: int) -> MethodResult:
    """Run one method on every task through :class:`MiraAgent` and judge each final image."""
    judge, result = TestbedJudge(), MethodResult(name)
    for i, task in enumerate(tasks):
        agent = MiraAgent(policy=METHODS[name](task), editor=editor, max_steps=max_steps, seed=seed + i)
        result.record(task, agent.run(task.image, task.instruction), judge)
    return result


def run_baselines(n: int = 200, seed: int = HELD_OUT_SEED, error_rate: float = 0.2, clauses: tuple[int, int] = (1, 4),
                  max_steps: int = 12, partial: str = "random") -> list[MethodResult]:
    """Every method of :data:`METHODS` on the same ``n`` tasks with an editor that errs at ``error_rate``."""
    tasks = make_tasks(n, seed, clauses)
    editor = TestbedEditor(error_rate=error_rate, partial=partial)
    return [run_method(name, tasks, editor, max_steps, seed) for name in METHODS]


def format_table(results: list[MethodResult], error_rate: float) -> str:
    """A Markdown table: success rate, mean SC and editor calls per task, then success by number of clauses."""
    ks = sorted(set(results[0].clauses))
    head = ["method", "success", "mean SC", "editor calls/task", *(f"success k={k}" for k in ks)]
    rows = [[r.name, f"{r.rate():.1%}", f"{mean(r.sc):.2f}", f"{mean(r.calls):.2f}", *(f"{r.rate(k):.1%}" for k in ks)]
            for r in results]
    clauses = results[0].clauses
    expected = mean((1 - error_rate) ** k for k in clauses)
    rows.append([f"(1-error_rate)^k, for reference", f"{expected:.1%}", "", f"{mean(clauses):.2f}",
                 *(f"{(1 - error_rate) ** k:.1%}" for k in ks)])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
