"""Policies MIRA is compared with: the raw editor, a fixed plan, and the VLM baselines of the paper.

- :class:`PassthroughPolicy` (eval method ``raw``): the whole instruction goes to the editor once;
- :class:`StaticPlanPolicy`: a given list of atomic edits, executed open loop;
- :class:`RewritePolicy` (``rewrite``): a VLM rewrites the instruction into one better editor prompt, executed once;
- :class:`VLMPlanPolicy` (``plan``): a VLM decomposes the instruction once, the plan is executed open loop.

They speak the same protocol as learned policies, so one agent loop and one evaluation runner drive them all. The
VLM baselines talk to any :class:`~mira.vlm.ChatBackend`; their prompts live in :mod:`mira.eval.prompts`.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any, Sequence

from mira.eval import prompts
from mira.policies.base import Policy, PolicyError
from mira.protocol import MAX_ACTION_CHARS, STOP, Observation, format_completion
from mira.vlm import ChatBackend


class PassthroughPolicy(Policy):
    """The raw-editor baseline: hand the whole instruction to the editor once, then stop."""

    name = "passthrough"

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        if observation.history:
            return [format_completion(STOP, "The instruction was sent to the editor once.")] * n
        return [format_completion(observation.instruction, "Send the whole instruction in one edit.")] * n


def _planned(plan: Sequence[str], done: int, n: int) -> list[str]:
    """The completion that issues edit ``done + 1`` of ``plan``, or STOP once every edit was issued."""
    if done >= len(plan):
        return [format_completion(STOP, "Every planned edit was issued.")] * n
    return [format_completion(plan[done], f"Planned edit {done + 1} of {len(plan)}.")] * n


class StaticPlanPolicy(Policy):
    """Executes a fixed list of atomic edits open loop (it never looks at the images), then stops."""

    name = "static-plan"

    def __init__(self, plan: Sequence[str]):
        if not plan:
            raise ValueError("a static plan needs at least one atomic edit")
        self.plan = [p.strip() for p in plan]

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        return _planned(self.plan, len(observation.history), n)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "plan": self.plan}


_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_ITEM_RE = re.compile(r"^\s*(?:\d+[.):]|[-*•]|step\s*\d+\s*[:.)-])\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_LABEL_RE = re.compile(r"\A(?:edited\s+|editor\s+|rewritten\s+|new\s+)?(?:prompt|instruction)\s*:\s*", re.IGNORECASE)


def _clean(text: str) -> str:
    text = _THINK_RE.sub(" ", text)
    if "</think>" in text.lower():
        text = text[text.lower().rindex("</think>") + len("</think>"):]
    return re.sub(r"```[a-zA-Z]*", "", text).strip()


def _one_line(text: str) -> str:
    text = " ".join(_LABEL_RE.sub("", text.strip()).split()).strip().strip("\"'`*").strip()
    if len(text) > MAX_ACTION_CHARS:
        text = text[:MAX_ACTION_CHARS].rsplit(" ", 1)[0]
    return text


def parse_rewrite(reply: str) -> str:
    """The editor prompt in a rewrite reply: think blocks, fences, labels and quotes removed, one line, at most
    :data:`~mira.protocol.MAX_ACTION_CHARS` characters; "" if nothing is left."""
    paragraphs = [p for p in re.split(r"\n\s*\n", _clean(reply)) if p.strip()]
    return _one_line(paragraphs[0]) if paragraphs else ""


def parse_plan(reply: str, max_edits: int) -> list[str]:
    """The atomic edits of a plan reply: numbered or bulleted items, else a JSON-style list, else non-empty lines."""
    text = _clean(reply)
    items = _ITEM_RE.findall(text)
    if not items and (m := re.search(r"\[(.*?)\]", text, re.DOTALL)) is not None:
        items = re.findall(r"\"([^\"]+)\"|'([^']+)'", m.group(1))
        items = [a or b for a, b in items]
    if not items:
        items = text.splitlines()
    edits = [_one_line(item) for item in items]
    return [e for e in edits if e and e.upper().strip("<>[]") != "STOP"][:max_edits]


class _ChatBaseline(Policy):
    """A baseline that asks a VLM once at the first step of a trajectory (sync or async)."""

    def __init__(self, backend: ChatBackend, *, sampling: dict[str, Any] | None = None):
        self.backend = backend
        self.sampling = dict(sampling or {})  # empty: the backend's own sampling defaults

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> "_ChatBaseline":
        """The baseline over :func:`mira.registry.load_chat` ``(spec)``; ``sampling`` (and, for the plan,
        ``max_edits``) stay here, every other option goes to the chat backend."""
        from mira.registry import load_chat

        own = {k: options.pop(k) for k in ("sampling", "max_edits") if k in options}
        return cls(load_chat(spec, **options), **own)

    def _messages(self, observation: Observation) -> list[dict[str, Any]] | None:
        """What to ask the VLM at this decision, or None when the answer needs no VLM call."""
        raise NotImplementedError

    def _answer(self, observation: Observation, reply: str | None, n: int) -> list[str]:
        raise NotImplementedError

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        messages = self._messages(observation)
        if messages is None:
            return self._answer(observation, None, n)
        try:
            replies = self.backend.chat(messages, n=1, seed=seed, **self.sampling)
        except Exception as exc:
            raise PolicyError(f"{self.name}: the VLM failed: {exc}") from exc
        return self._answer(observation, replies[0] if replies else "", n)

    async def agenerate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        messages = self._messages(observation)
        if messages is None:
            return self._answer(observation, None, n)
        try:
            replies = await self.backend.achat(messages, n=1, seed=seed, **self.sampling)
        except Exception as exc:
            raise PolicyError(f"{self.name}: the VLM failed: {exc}") from exc
        return self._answer(observation, replies[0] if replies else "", n)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "prompt_version": prompts.PROMPT_VERSION, "sampling": self.sampling,
                "backend": self.backend.config()}


class RewritePolicy(_ChatBaseline):
    """One-shot rewrite: a VLM turns the instruction into one editor prompt; it is executed once, then STOP.

    A reply with nothing usable falls back to the original instruction (said so in the step's reasoning).
    """

    name = "rewrite"

    def _messages(self, observation: Observation) -> list[dict[str, Any]] | None:
        return None if observation.history else prompts.rewrite_messages(observation.original, observation.instruction)

    def _answer(self, observation: Observation, reply: str | None, n: int) -> list[str]:
        if reply is None:
            return [format_completion(STOP, "The rewritten prompt was sent to the editor once.")] * n
        prompt = parse_rewrite(reply)
        if not prompt:
            return [format_completion(observation.instruction, "The VLM gave no prompt; send the instruction.")] * n
        return [format_completion(prompt, "Rewritten by the VLM into one editor prompt.")] * n


class VLMPlanPolicy(_ChatBaseline):
    """Static plan from a VLM: decompose once at the first step (seeing only the source image), then execute the
    plan open loop like :class:`StaticPlanPolicy`.

    The plan of a running trajectory is found again from what it has issued so far (the observation's history), so
    one policy serves many concurrent trajectories. A reply with no usable edit falls back to the instruction.
    """

    name = "vlm-plan"

    def __init__(self, backend: ChatBackend, *, max_edits: int = 8, sampling: dict[str, Any] | None = None,
                 cache_size: int = 4096):
        super().__init__(backend, sampling=sampling)
        self.max_edits, self.cache_size = max_edits, cache_size
        self._plans: OrderedDict[tuple, list[str]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(observation: Observation, issued: Sequence[str]) -> tuple:
        return id(observation.original), observation.instruction, tuple(issued)

    def _messages(self, observation: Observation) -> list[dict[str, Any]] | None:
        if not observation.history:
            return prompts.plan_messages(observation.original, observation.instruction, self.max_edits)
        return None

    def _answer(self, observation: Observation, reply: str | None, n: int) -> list[str]:
        if reply is not None:
            plan = parse_plan(reply, self.max_edits) or [observation.instruction]
            with self._lock:
                for done in range(1, len(plan) + 1):
                    self._plans[self._key(observation, plan[:done])] = plan
                while len(self._plans) > self.cache_size:
                    self._plans.popitem(last=False)
            return _planned(plan, 0, n)
        with self._lock:
            plan = self._plans.get(self._key(observation, observation.history))
        if plan is None:
            raise PolicyError("vlm-plan: no plan matches this trajectory's edits (was the policy restarted?)")
        return _planned(plan, len(observation.history), n)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "max_edits": self.max_edits}
