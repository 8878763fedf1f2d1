"""Stage 3, rewrite: paraphrase each atomic instruction and each fused instruction, N variants each, deduplicated.

Two paraphrasers share one interface (``await paraphraser.paraphrase(text, n, complex_instruction=..., seed=...)``):

- :class:`ChatParaphraser`: any :class:`mira.vlm.ChatBackend` (an OpenAI-compatible endpoint, a local model),
  prompted by :mod:`mira.data.prompts`;
- :class:`TemplateParaphraser`: deterministic rules (verb synonyms, polite wrappers) for offline runs.

Variants are kept only when they are new (case, punctuation and spacing ignored) and usable: an atomic variant must
survive the protocol's strict answer format unchanged (one line, at most ``MAX_ACTION_CHARS``), a fused one must be
a valid instruction. The original text is always variant 0.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

from mira.data.backends import load_chat_spec
from mira.data.prompts import parse_string_list, rewrite_messages
from mira.data.records import Task
from mira.data.store import StageStats
from mira.data.worker import ShardWorker, stable_seed
from mira.images import InputError, validate_instruction
from mira.protocol import STOP, format_completion, parse_completion_strict
from mira.vlm import ChatBackend


def dedupe_key(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def usable(text: str, *, complex_instruction: bool) -> bool:
    """Whether a variant can be trained on as is (see the module docs)."""
    if complex_instruction:
        try:
            return validate_instruction(text) == text
        except InputError:
            return False
    if STOP.lower() in text.lower():
        return False
    return parse_completion_strict(format_completion(text, "x")).action == text


def select_variants(original: str, candidates: list[str], n: int, *, complex_instruction: bool) -> list[str]:
    """``original`` followed by up to ``n`` new, usable candidates, in the order given."""
    seen = {dedupe_key(original)}
    out = [original]
    for cand in candidates:
        if len(out) > n:
            break
        if "\n" in cand.strip():  # a variant is one line; a multi-line item is not a paraphrase
            continue
        cand = " ".join(cand.split())
        key = dedupe_key(cand)
        if key and key not in seen and usable(cand, complex_instruction=complex_instruction):
            seen.add(key)
            out.append(cand)
    return out


class TemplateParaphraser:
    """Deterministic paraphrases: edit-verb synonyms and polite wrappers, picked with a seeded generator."""

    VERBS = {
        "remove": ["delete", "erase", "get rid of", "take away"],
        "delete": ["remove", "erase", "get rid of"],
        "erase": ["remove", "delete"],
        "add": ["put", "insert", "include"],
        "put": ["place", "add"],
        "change": ["alter", "modify"],
        "replace": ["swap out", "substitute"],
        "make": ["turn", "render"],
        "turn": ["make"],
        "color": ["paint", "recolor"],
        "paint": ["color"],
    }
    WRAPPERS = ["Please {x}.", "{X}, please.", "Could you {x}?", "Can you {x}?", "I'd like you to {x}.",
                "Go ahead and {x}.", "{X}."]

    def _verb_variants(self, text: str) -> list[str]:
        first, _, rest = text.partition(" ")
        swaps = self.VERBS.get(first.lower(), [])
        return [f"{s} {rest}".strip() for s in swaps] if rest else []

    async def paraphrase(self, text: str, n: int, *, complex_instruction: bool, seed: int) -> list[str] | None:
        body = text.strip().rstrip(".!?")
        lowered = body[:1].lower() + body[1:] if body[1:2].islower() or len(body) < 2 else body
        bodies = [lowered] + ([] if complex_instruction else self._verb_variants(lowered))
        out = []
        for b in bodies:
            for w in self.WRAPPERS:
                out.append(w.replace("{x}", b).replace("{X}", b[:1].upper() + b[1:]))
        random.Random(seed).shuffle(out)
        return out[: 4 * n]


class ChatParaphraser:
    """Paraphrases from a chat model (:mod:`mira.data.prompts` holds the request)."""

    def __init__(self, backend: ChatBackend, temperature: float = 1.0):
        self.backend = backend
        self.temperature = temperature

    async def paraphrase(self, text: str, n: int, *, complex_instruction: bool, seed: int) -> list[str] | None:
        replies = await self.backend.achat(
            rewrite_messages(text, n, complex_instruction=complex_instruction), n=1, seed=seed,
            temperature=self.temperature,
        )
        items = parse_string_list(replies[0]) if replies else []
        return items or None


class RewriteWorker(ShardWorker):
    """Fills ``instruction_variants`` and ``turn_variants`` of each task; a session's turns are paraphrased once."""

    def __init__(self, config: Any, work_dir: Any):
        super().__init__(config, work_dir)
        cfg = config.rewrite
        self.concurrency = cfg.concurrency
        self.paraphraser = (ChatParaphraser(load_chat_spec(cfg.backend), cfg.temperature) if cfg.backend
                            else TemplateParaphraser())
        self._cache: dict[tuple[bool, str], asyncio.Future] = {}

    def start_shard(self, index: int) -> None:
        self._cache = {}

    async def _compute(self, text: str, n: int, complex_instruction: bool, stats: StageStats) -> list[str]:
        seed = stable_seed(self.config.seed, "rewrite", complex_instruction, text)
        found = await self.paraphraser.paraphrase(text, n, complex_instruction=complex_instruction, seed=seed)
        if found is None:
            stats.note("rewriter reply unusable")
        variants = select_variants(text, found or [], n, complex_instruction=complex_instruction)
        if found is not None and len(variants) <= n:
            stats.note("fewer variants than asked")
        return variants

    async def _variants(self, text: str, n: int, complex_instruction: bool, stats: StageStats) -> list[str]:
        if n == 0:
            return [text]
        key = (complex_instruction, text)
        if key not in self._cache:
            self._cache[key] = asyncio.ensure_future(self._compute(text, n, complex_instruction, stats))
        return list(await self._cache[key])

    async def handle(self, row: dict[str, Any], stats: StageStats) -> list[dict[str, Any]]:
        cfg = self.config.rewrite
        task = Task.from_dict(row)
        instruction, *turns = await asyncio.gather(
            self._variants(task.instruction, cfg.complex_variants, True, stats),
            *(self._variants(t, cfg.atomic_variants, False, stats) for t in task.turns))
        task.instruction_variants, task.turn_variants = instruction, list(turns)
        return [task.to_dict()]
