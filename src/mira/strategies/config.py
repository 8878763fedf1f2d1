"""What the loop does at the execute phase of a step: candidates, verifier thresholds, rollback, routing, budget.

:class:`StepStrategy` is plain configuration (a YAML file or the CLI fills it; trajectories record it). The default
strategy is the paper's loop: one editor call per step, no verifier, no budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

SCORE_KEYS = ("overall", "sc", "pq")


@dataclass(frozen=True)
class Route:
    """Send steps whose atomic edit matches ``pattern`` (a case-insensitive regex, searched) to ``editor``."""

    pattern: str
    editor: str

    def __post_init__(self) -> None:
        if not self.editor.strip():
            raise ValueError(f"route '{self.pattern}' names no editor; write it as 'regex=editor'")
        try:
            re.compile(self.pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"route pattern '{self.pattern}' is not a valid regex: {exc}") from None

    @classmethod
    def parse(cls, spec: str) -> "Route":
        """``'sky|cloud=qwen-image-edit'`` -> Route('sky|cloud', 'qwen-image-edit') (split at the last ``=``)."""
        pattern, sep, editor = spec.rpartition("=")
        if not sep or not pattern.strip() or not editor.strip():
            raise ValueError(f"route '{spec}' is not of the form 'regex=editor' (e.g. 'sky|cloud=qwen-image-edit')")
        return cls(pattern.strip(), editor.strip())

    def matches(self, action: str) -> bool:
        return re.search(self.pattern, action, re.IGNORECASE) is not None


@dataclass(frozen=True)
class Routing:
    """Which editors may execute one step, and why."""

    editors: tuple[str, ...]
    reason: str
    rule: str | None = None


@dataclass
class StepStrategy:
    """Verifier-guided execution of each step.

    - ``n_candidates``: editor samples per step (each with its own seed), at least one per phrasing and editor
      below; the verifier keeps the best.
    - ``policy_candidates``: completions asked of the policy per decision (``generate(obs, n=...)``); the distinct
      atomic edits among them are phrasings that candidates cycle through (the first completion decides ``<STOP>``).
    - ``compare_editors``: a step that no route claims is tried on every registered editor; the verifier picks.
    - ``adaptive_threshold`` / ``adaptive_gain``: stop sampling a step once a candidate scores at least this, or
      improves on the previous image's score by at least this.
    - ``rollback``: when even the best candidate scores lower than the previous image (by more than
      ``rollback_margin``), discard the round and sample again from the previous image, at most this many times per
      step; if every round is worse, the step is rejected and the previous image kept. A negative margin demands
      progress: a step must raise the score by at least ``-rollback_margin``.
    - ``score_key``: the verifier score compared (``overall``, ``sc`` or ``pq`` of :class:`~mira.judges.base.JudgeScores`).
    - ``routes``: rules sending matching edits to a named editor; the first match wins, else ``default_editor``
      (else the first registered editor).
    - ``preserve_details``: keep the previous image's pixels outside the region the edit changed (see
      :mod:`mira.strategies.preserve`); ``preserve_threshold`` (0-255), ``preserve_radius`` and ``preserve_feather``
      (pixels) shape that region.
    - ``max_editor_calls`` / ``max_seconds``: budget per request; the run ends with stop reason ``budget``.
    """

    n_candidates: int = 1
    policy_candidates: int = 1
    compare_editors: bool = False
    adaptive_threshold: float | None = None
    adaptive_gain: float | None = None
    rollback: int = 0
    rollback_margin: float = 0.0
    score_key: str = "overall"
    routes: tuple[Route, ...] = ()
    default_editor: str | None = None
    preserve_details: bool = False
    preserve_threshold: float = 24.0
    preserve_radius: int = 3
    preserve_feather: int = 2
    max_editor_calls: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        self.routes = tuple(Route.parse(r) if isinstance(r, str) else Route(**r) if isinstance(r, dict) else r
                            for r in self.routes)
        for name in ("n_candidates", "policy_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.rollback < 0:
            raise ValueError(f"rollback must be 0 or more, got {self.rollback}")
        if self.score_key not in SCORE_KEYS:
            raise ValueError(f"score_key must be one of {', '.join(SCORE_KEYS)}, got '{self.score_key}'")
        if self.max_editor_calls is not None and self.max_editor_calls < 1:
            raise ValueError(f"max_editor_calls must be at least 1, got {self.max_editor_calls}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")
        if not 0 <= self.preserve_threshold <= 255:
            raise ValueError(f"preserve_threshold is a 0-255 pixel difference, got {self.preserve_threshold}")
        if self.preserve_radius < 0 or self.preserve_feather < 0:
            raise ValueError("preserve_radius and preserve_feather must be 0 or more")

    @property
    def needs_verifier(self) -> bool:
        """Whether this strategy must compare scores (more than one candidate, adaptive stopping or rollback)."""
        return (self.n_candidates > 1 or self.policy_candidates > 1 or self.compare_editors or self.rollback > 0
                or self.adaptive_threshold is not None or self.adaptive_gain is not None)

    def check_editors(self, names: Iterable[str]) -> None:
        """Raise ValueError when a route or the default editor names an editor that is not registered."""
        names = list(names)
        for target in [r.editor for r in self.routes] + ([self.default_editor] if self.default_editor else []):
            if target not in names:
                raise ValueError(f"route or default editor '{target}' is not registered; editors: {', '.join(names)}")

    def route(self, action: str, names: Sequence[str]) -> Routing:
        """The editors that may execute ``action``: the first matching route, else all (compare) or the default."""
        for r in self.routes:
            if r.matches(action):
                return Routing((r.editor,), f"rule '{r.pattern}'", r.pattern)
        if self.compare_editors and len(names) > 1:
            return Routing(tuple(names), "verifier picks among " + ", ".join(names))
        default = self.default_editor or names[0]
        return Routing((default,), "default editor")

    def clears(self, score: float | None, baseline: float | None) -> bool:
        """Whether a candidate is good enough to stop sampling the step (adaptive N)."""
        if score is None:
            return False
        if self.adaptive_threshold is not None and score >= self.adaptive_threshold:
            return True
        return self.adaptive_gain is not None and baseline is not None and score - baseline >= self.adaptive_gain

    def is_worse(self, score: float | None, baseline: float | None) -> bool:
        """Whether a step's best candidate made things worse than the previous image (unknown scores are not)."""
        if self.rollback == 0 or score is None or baseline is None:
            return False
        return score < baseline - self.rollback_margin

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["routes"] = [f"{r.pattern}={r.editor}" for r in self.routes]
        return d


def score_value(scores: Any, key: str) -> float | None:
    """The compared number of a :class:`~mira.judges.base.JudgeScores` (None when the judgement failed)."""
    if scores is None or getattr(scores, "error", None) is not None:
        return None
    value = getattr(scores, key, None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
