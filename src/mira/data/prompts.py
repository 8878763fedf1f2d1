"""Prompts of the data builder's helper models (rewriter, dependence judge, reasoning annotator) and their parsers.

These are not the policy's prompts: what the policy is trained on is built by :mod:`mira.protocol` only. Messages
are in the format of :class:`mira.vlm.ChatBackend` (content lists, images embedded as ``{"type": "image",
"image": PIL.Image}``).
"""

from __future__ import annotations

import json
import re
from typing import Any

REWRITER_SYSTEM = (
    "You rewrite image-editing instructions. A rewrite must ask for exactly the same edits as the original: the "
    "same objects, the same changes, in the same order, nothing added and nothing left out. Vary the wording and "
    "sentence structure; keep it natural, as a person would type it. Answer with a JSON list of strings and "
    "nothing else."
)

ATOMIC_REQUEST = (
    "Rewrite this single image edit in {n} different ways. Each rewrite is one short imperative sentence.\n\n"
    "Edit: {text}"
)

COMPLEX_REQUEST = (
    "Rewrite this multi-part image-editing instruction in {n} different ways. Keep every part and keep the parts "
    "in their order.\n\nInstruction: {text}"
)

DEPENDENCE_SYSTEM = (
    "You judge whether image edits can be applied in a different order. Two edits depend on each other when the "
    "later one refers to, changes or relies on what the earlier one touched, or when one of them changes the whole "
    "picture. Answer with a JSON list of [earlier, later] pairs of edit numbers that must keep their order, or [] "
    "when every edit is independent, and nothing else."
)

DEPENDENCE_REQUEST = "Edits, applied in this order:\n{edits}"

ANNOTATOR_SYSTEM = (
    "You write the brief reasoning of an image-editing agent. The agent compares the current image with what the "
    "instruction asks for and decides the next single edit. Write one or two plain sentences, in the first person, "
    "about what the current image shows versus what is still missing, ending with why the given next step is the "
    "right one. No lists, no tags, no quotes."
)

ANNOTATOR_NEXT_EDIT = "The next step is the edit: {action}"
ANNOTATOR_DONE = "Every requested change is now visible, so the next step is to stop."


def rewrite_messages(text: str, n: int, *, complex_instruction: bool) -> list[dict[str, Any]]:
    template = COMPLEX_REQUEST if complex_instruction else ATOMIC_REQUEST
    return [
        {"role": "system", "content": [{"type": "text", "text": REWRITER_SYSTEM}]},
        {"role": "user", "content": [{"type": "text", "text": template.format(n=n, text=text)}]},
    ]


def dependence_messages(turns: list[str]) -> list[dict[str, Any]]:
    edits = "\n".join(f"{i}. {t}" for i, t in enumerate(turns, start=1))
    return [
        {"role": "system", "content": [{"type": "text", "text": DEPENDENCE_SYSTEM}]},
        {"role": "user", "content": [{"type": "text", "text": DEPENDENCE_REQUEST.format(edits=edits)}]},
    ]


def annotator_messages(
    original: Any, current: Any, instruction: str, done: list[str], action: str | None
) -> list[dict[str, Any]]:
    """Ask for the reasoning before ``action`` (None: before stopping), showing both images."""
    history = "".join(f"\n{i}. {e}" for i, e in enumerate(done, start=1)) or " none"
    next_step = ANNOTATOR_DONE if action is None else ANNOTATOR_NEXT_EDIT.format(action=action)
    return [
        {"role": "system", "content": [{"type": "text", "text": ANNOTATOR_SYSTEM}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Original image:"},
            {"type": "image", "image": original},
            {"type": "text", "text": f"Instruction: {instruction}\n\nEdits applied so far:{history}\n\nCurrent image:"},
            {"type": "image", "image": current},
            {"type": "text", "text": next_step},
        ]},
    ]


_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_BULLET_RE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_TAG_RE = re.compile(r"</?(?:think|answer|reasoning)>", re.IGNORECASE)


def _json_block(reply: str) -> Any:
    m = _FENCE_RE.search(reply)
    text = m.group(1) if m else reply
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        return json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None


def parse_string_list(reply: str) -> list[str]:
    """Strings from a JSON list reply, or from a numbered / bulleted list; [] if nothing usable."""
    data = _json_block(reply)
    if isinstance(data, list):
        items = [x for x in data if isinstance(x, str)]
    else:
        items = [_BULLET_RE.sub("", line) for line in reply.splitlines() if _BULLET_RE.match(line)]
    return [" ".join(x.strip().strip("\"'").split()) for x in items if x and x.strip()]


def parse_pairs(reply: str, k: int) -> set[tuple[int, int]] | None:
    """0-based (earlier, later) pairs from a reply listing 1-based pairs; None when the reply is not such a list."""
    data = _json_block(reply)
    if not isinstance(data, list):
        return None
    pairs = set()
    for item in data:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, int) for x in item)):
            return None
        i, j = sorted(item)
        if not (1 <= i < j <= k):
            return None
        pairs.add((i - 1, j - 1))
    return pairs


def clean_reasoning(reply: str, max_chars: int = 600) -> str | None:
    """One paragraph of reasoning from a reply (tags and line breaks removed); None if empty or too long."""
    text = " ".join(_TAG_RE.sub(" ", reply).split()).strip().strip("\"'")
    if not text or len(text) > max_chars:
        return None
    return text
