"""The records that flow between the builder's stages, one JSON line each.

sources -> :class:`Session`; aggregate -> :class:`Task` (one per order of a session's turns); rewrite fills the
task's variants; synthesize -> :class:`Candidates` (a task and the trajectories that executed it); rank and annotate
-> :class:`Selected` (the task, the best candidate, its score and the reasoning of each step); export turns a
:class:`Selected` into start / continue / stop samples.

Image paths are absolute. Turns are the atomic instructions, in the order they are executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


class Record:
    """JSON round trip for the dataclass records below."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON; nested records become dicts, other values are shared, not copied (fast)."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Record):
                value = value.to_dict()
            elif isinstance(value, list) and value and isinstance(value[0], Record):
                value = [v.to_dict() for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Session(Record):
    """A multi-turn editing session: the original image, the atomic turns, optional human result images."""

    id: str
    source: str
    image: str
    turns: list[str]
    results: list[str] | None = None
    licence: str = "unspecified"


@dataclass
class Task(Record):
    """One order of a session's turns, fused into a complex instruction, plus paraphrases (after rewrite).

    ``order`` maps task positions to the session's turn indices; ``results`` (human images) are kept only for the
    session's own order. ``instruction_variants[0]`` is ``instruction`` and ``turn_variants[i][0]`` is ``turns[i]``.
    """

    id: str
    session_id: str
    source: str
    licence: str
    image: str
    turns: list[str]
    order: list[int]
    instruction: str
    results: list[str] | None = None
    instruction_variants: list[str] = field(default_factory=list)
    turn_variants: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.instruction_variants:
            self.instruction_variants = [self.instruction]
        if not self.turn_variants:
            self.turn_variants = [[t] for t in self.turns]


@dataclass
class Candidate(Record):
    """One execution of a task's turns: the image after each turn and who made it (an editor, or ``human``)."""

    id: str
    editor: str
    images: list[str]
    seed: int | None = None
    step_seeds: list[int | None] = field(default_factory=list)
    editor_config: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None


@dataclass
class Candidates(Record):
    task: Task
    candidates: list[Candidate]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Candidates":
        return cls(Task.from_dict(data["task"]), [Candidate.from_dict(c) for c in data["candidates"]])


@dataclass
class Selected(Record):
    """The kept trajectory of a task: the best candidate, its judge scores and each step's reasoning.

    ``reasoning`` has one entry per decision: ``len(task.turns)`` edits and the final ``<STOP>``.
    """

    task: Task
    candidate: Candidate
    score: float | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Selected":
        return cls(
            Task.from_dict(data["task"]), Candidate.from_dict(data["candidate"]), data.get("score"),
            data.get("scores", {}), data.get("ranking", []), data.get("reasoning", []),
        )
