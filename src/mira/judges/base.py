"""The Judge protocol: who scores an edit. One interface serves evaluation, the agent's verifier and GRPO rewards.

Scores follow VIEScore on a 0-10 scale: semantic consistency ``sc`` (the edit did what the instruction asked and
nothing more), perceptual quality ``pq`` (natural, free of artifacts) and ``overall = sqrt(sc * pq)``. A judge that
cannot produce a score returns ``JudgeScores(error=...)`` instead of raising: a failed judgement is data.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image


@dataclass
class JudgeScores:
    sc: float | None = None
    pq: float | None = None
    overall: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.overall is not None

    @classmethod
    def from_sc_pq(cls, sc: float, pq: float, **details: Any) -> "JudgeScores":
        return cls(sc=sc, pq=pq, overall=math.sqrt(max(sc, 0.0) * max(pq, 0.0)), details=details)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Judge:
    """Base class of judges. Subclasses set ``name`` and implement :meth:`score`."""

    name: str = "judge"

    def score(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        """Score ``edited`` (the result of editing ``source``) against ``instruction``."""
        raise NotImplementedError

    async def ascore(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        return await asyncio.to_thread(self.score, source, edited, instruction)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}
