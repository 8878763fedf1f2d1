"""Policies that need no model: the raw-editor baseline and a fixed plan.

They speak the same protocol as learned policies, so one agent loop and one evaluation runner drive them all.
"""

from __future__ import annotations

from typing import Any, Sequence

from mira.policies.base import Policy
from mira.protocol import STOP, Observation, format_completion


class PassthroughPolicy(Policy):
    """The raw-editor baseline: hand the whole instruction to the editor once, then stop."""

    name = "passthrough"

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        if observation.history:
            return [format_completion(STOP, "The instruction was sent to the editor once.")] * n
        return [format_completion(observation.instruction, "Send the whole instruction in one edit.")] * n


class StaticPlanPolicy(Policy):
    """Executes a fixed list of atomic edits open loop (it never looks at the images), then stops."""

    name = "static-plan"

    def __init__(self, plan: Sequence[str]):
        if not plan:
            raise ValueError("a static plan needs at least one atomic edit")
        self.plan = [p.strip() for p in plan]

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        i = len(observation.history)
        if i >= len(self.plan):
            return [format_completion(STOP, "Every planned edit was issued.")] * n
        return [format_completion(self.plan[i], f"Planned edit {i + 1} of {len(self.plan)}.")] * n

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "plan": self.plan}
