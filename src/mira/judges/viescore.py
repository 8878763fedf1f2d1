"""A VIEScore-style judge over any :class:`~mira.vlm.ChatBackend`.

Two questions per edit (prompts in :mod:`mira.judges.prompts`): semantic consistency on (source, edited) and
perceptual quality on the edited image alone, each answered with two 0-10 scores. ``SC = min(edit_success,
overediting)``, ``PQ = min(naturalness, artifacts)``, ``overall = sqrt(SC * PQ)``.

An unreadable reply is shown back to the judge with a request to answer in the expected form, up to ``retries``
times; a backend error is retried the same way. When a question still has no readable answer the result is
``JudgeScores(error=...)`` (with whatever the other question gave): a failed judgement is data, never an exception.
:meth:`VIEScoreJudge.ascore` asks both questions concurrently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Generator

from PIL import Image

from mira.agent import _describe
from mira.judges import prompts
from mira.judges.base import Judge, JudgeScores
from mira.judges.parsing import parse_scores
from mira.vlm import ChatBackend

Request = tuple[list[dict[str, Any]], int]
MAX_RAW_CHARS = 2000


@dataclass
class _Answer:
    values: list[float] = field(default_factory=list)
    reasoning: str = ""
    attempts: int = 0
    raw: str = ""
    error: str | None = None


class VIEScoreJudge(Judge):
    """SC / PQ / overall on 0-10 from a vision-language model.

    ``temperature`` and ``sampling`` go to every call of the backend (None / empty: the backend's own defaults);
    each attempt at a question uses the seed ``seed + attempt``.

    >>> judge = VIEScoreJudge(backend, retries=2)
    >>> judge.score(source, edited, "make the cup red and the table black").overall
    """

    name = "viescore"

    def __init__(
        self,
        backend: ChatBackend,
        *,
        retries: int = 2,
        temperature: float | None = None,
        seed: int = 0,
        sampling: dict[str, Any] | None = None,
    ):
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.backend = backend
        self.retries = retries
        self.seed = seed
        self.sampling = {**({} if temperature is None else {"temperature": temperature}), **(sampling or {})}

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> "VIEScoreJudge":
        """VIEScore over :func:`mira.registry.load_chat` ``(spec)``; judge options (``retries``, ``temperature``,
        ``seed``, ``sampling``) stay here, every other option goes to the chat backend (``base_url`` ...)."""
        from mira.registry import load_chat

        own = {k: options.pop(k) for k in ("retries", "temperature", "seed", "sampling") if k in options}
        return cls(load_chat(spec, **options), **own)

    @classmethod
    def openai(cls, model: str, **options: Any) -> "VIEScoreJudge":
        """VIEScore over an OpenAI-compatible endpoint: ``openai("gpt-4.1")``, ``openai(name, base_url=...)``."""
        return cls.from_spec(f"openai:{model}", **options)

    # -- public API ---------------------------------------------------------------------------------------------
    def score(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        sc = self._drive(self._ask(prompts.sc_messages(source, edited, instruction), prompts.SC_NAMES))
        pq = self._drive(self._ask(prompts.pq_messages(edited), prompts.PQ_NAMES))
        return self._combine(sc, pq)

    async def ascore(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        sc, pq = await asyncio.gather(
            self._adrive(self._ask(prompts.sc_messages(source, edited, instruction), prompts.SC_NAMES)),
            self._adrive(self._ask(prompts.pq_messages(edited), prompts.PQ_NAMES)),
        )
        return self._combine(sc, pq)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "prompt_version": prompts.PROMPT_VERSION, "retries": self.retries,
                "seed": self.seed, "sampling": self.sampling, "backend": self.backend.config()}

    # -- internals ----------------------------------------------------------------------------------------------
    def _ask(self, messages: list[dict[str, Any]], names: tuple[str, ...]) -> Generator[Request, list[str], _Answer]:
        """One question, re-asked after an unreadable reply or a backend error; yields (messages, seed)."""
        current, error, reply = messages, "", ""
        for attempt in range(1 + self.retries):
            try:
                replies = yield current, self.seed + attempt
            except Exception as exc:  # backend failures are retried, then recorded
                error = f"judge backend failed: {_describe(exc)}"
                continue
            reply = replies[0] if replies else ""
            parsed = parse_scores(reply, names)
            if parsed.ok:
                return _Answer(parsed.values, parsed.reasoning, attempt + 1, reply[:MAX_RAW_CHARS])
            error = f"unreadable reply: {parsed.error}"
            current = prompts.retry_messages(messages, reply, parsed.error or "no scores", names)
        return _Answer(attempts=1 + self.retries, raw=reply[:MAX_RAW_CHARS],
                       error=f"{error} (after {1 + self.retries} attempts)")

    def _drive(self, question: Generator[Request, list[str], _Answer]) -> _Answer:
        result: Any = None
        failure: BaseException | None = None
        while True:
            try:
                messages, seed = question.throw(failure) if failure is not None else question.send(result)
            except StopIteration as done:
                return done.value
            result, failure = None, None
            try:
                result = self.backend.chat(messages, n=1, seed=seed, **self.sampling)
            except Exception as exc:
                failure = exc

    async def _adrive(self, question: Generator[Request, list[str], _Answer]) -> _Answer:
        result: Any = None
        failure: BaseException | None = None
        while True:
            try:
                messages, seed = question.throw(failure) if failure is not None else question.send(result)
            except StopIteration as done:
                return done.value
            result, failure = None, None
            try:
                result = await self.backend.achat(messages, n=1, seed=seed, **self.sampling)
            except Exception as exc:
                failure = exc

    @staticmethod
    def _combine(sc: _Answer, pq: _Answer) -> JudgeScores:
        details: dict[str, Any] = {
            "prompt_version": prompts.PROMPT_VERSION,
            "sc_scores": dict(zip(prompts.SC_NAMES, sc.values)),
            "pq_scores": dict(zip(prompts.PQ_NAMES, pq.values)),
            "sc_reasoning": sc.reasoning,
            "pq_reasoning": pq.reasoning,
            "attempts": {"sc": sc.attempts, "pq": pq.attempts},
        }
        if sc.error is None and pq.error is None:
            return JudgeScores.from_sc_pq(min(sc.values), min(pq.values), **details)
        details["raw"] = {"sc": sc.raw, "pq": pq.raw}
        errors = [f"{name}: {a.error}" for name, a in (("SC", sc), ("PQ", pq)) if a.error]
        return JudgeScores(
            sc=min(sc.values) if sc.error is None else None,
            pq=min(pq.values) if pq.error is None else None,
            details=details,
            error="; ".join(errors),
        )
