"""The prompt/answer contract between MIRA and its policy.

This module is the only place that writes prompt text or reads completions. Inference, the data builder and the
trainers all import it, so a model is trained on exactly the messages it is later sent.

Message layout of one decision (DESIGN §3)::

    system:  SYSTEM_PROMPT
    user:    [original image] "Instruction: C" "Edits applied so far: 1. ... 2. ..." [current image] "Next step?"

Everything up to the list of edits is identical across the steps of one trajectory and the list only grows at its
end, so servers with prefix caching (vLLM, SGLang) reuse the encoded original image and instruction at every step.

A completion is ``<think>short reasoning</think><answer>ONE atomic instruction</answer>`` or
``<think>...</think><answer><STOP></answer>``. :func:`parse_completion` is tolerant (used at inference: a missing
``<think>`` is fine, a bare one-line answer is accepted); :func:`parse_completion_strict` is the exact format that the
GRPO format reward checks. A parse failure is returned as data (``ParsedCompletion.error``), never raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = "1"
STOP = "<STOP>"
MAX_ACTION_CHARS = 400

SYSTEM_PROMPT = """\
You are MIRA, an image-editing agent. You work step by step with an image editor that can only carry out ONE simple \
edit at a time.

You are shown the ORIGINAL image, a COMPLEX editing instruction, the edits already sent to the editor, and the \
CURRENT image (the result of those edits). Compare the current image with what the instruction asks for, then decide \
the single next edit.

Rules:
- Issue exactly one atomic edit: one change to one clearly named object or region (for example "make the stove \
black" or "remove the cup on the left table"). It must make sense to the editor on its own, without the rest of the \
instruction.
- If an earlier edit was executed wrongly or changed something that should have stayed, issue an edit that corrects \
it.
- Never repeat an edit that is already visible in the current image.
- When the current image satisfies the whole instruction, answer <STOP>.

Answer in exactly this format, with brief reasoning:
<think>what the current image shows versus what is still missing</think><answer>the next atomic edit</answer>
or, when everything is done:
<think>why the instruction is now fully satisfied</think><answer><STOP></answer>"""

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_OPEN_ANSWER_RE = re.compile(r"<answer>(.*)$", re.DOTALL | re.IGNORECASE)
_STRICT_RE = re.compile(r"\A\s*<think>(?P<think>.+?)</think>\s*<answer>(?P<answer>.+?)</answer>\s*\Z", re.DOTALL)
_STOP_RE = re.compile(r"\A[\s<\[\(\"'`*]*(stop|done|finished|end)[\s>\]\)\"'`*.!]*\Z", re.IGNORECASE)
_PREFIX_RE = re.compile(r"\A(?:next\s+)?(?:atomic\s+)?(?:edit|instruction|action|step|answer)\s*[:\-]\s*", re.IGNORECASE)
_TAG_RE = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)


@dataclass(frozen=True)
class Observation:
    """What the policy sees at one decision: the original image, the current image, the instruction, the history.

    Images are whatever the caller carries (PIL images at inference, paths or PIL in the data builder); this module
    never touches pixels. ``history`` holds the atomic edits already sent to the editor, in order.
    """

    instruction: str
    history: tuple[str, ...] = ()
    original: Any = None
    current: Any = None

    @property
    def images(self) -> list[Any]:
        """The images in the order their placeholders appear in :func:`build_messages`."""
        return [self.original, self.current]


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion read back into reasoning and action. ``action`` is None when nothing usable was found."""

    raw: str
    reasoning: str = ""
    action: str | None = None
    error: str | None = None

    @property
    def is_stop(self) -> bool:
        return self.action == STOP

    @property
    def ok(self) -> bool:
        return self.action is not None


def user_text(instruction: str, history: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """The two text blocks of the user turn: (before the current image, after it)."""
    head = f"Instruction: {instruction.strip()}\n\nEdits applied so far:"
    if history:
        head += "".join(f"\n{i}. {edit}" for i, edit in enumerate(history, start=1))
    else:
        head += " none"
    return head + "\n\nCurrent image:", "What is the next atomic edit? Answer <STOP> if the instruction is fulfilled."


def read_user_text(before: str) -> tuple[str, tuple[str, ...]] | None:
    """(instruction, history) back from the first text block of :func:`user_text`; None if it did not write it."""
    m = re.fullmatch(r"Instruction: (.*)\n\nEdits applied so far:(?: none|((?:\n\d+\. .*)+))\n\nCurrent image:", before,
                     re.DOTALL)
    if m is None:
        return None
    history = tuple(re.sub(r"\A\d+\. ", "", line) for line in (m.group(2) or "").split("\n")[1:])
    instruction = m.group(1)
    return (instruction, history) if user_text(instruction, history)[0] == before else None


def build_messages(observation: Observation, *, embed_images: bool = False) -> list[dict[str, Any]]:
    """Chat messages for one decision, in TRL's vision format (image placeholders ``{"type": "image"}``).

    With ``embed_images=True`` each placeholder also carries its image under ``"image"``, which is what
    ``processor.apply_chat_template`` of transformers expects. The images, in placeholder order, are
    ``observation.images``.
    """
    before, after = user_text(observation.instruction, observation.history)

    def image(img: Any) -> dict[str, Any]:
        return {"type": "image", "image": img} if embed_images else {"type": "image"}

    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Original image:"},
                image(observation.original),
                {"type": "text", "text": before},
                image(observation.current),
                {"type": "text", "text": after},
            ],
        },
    ]


def format_completion(action: str, reasoning: str = "") -> str:
    """The canonical completion for an action (an atomic edit or :data:`STOP`)."""
    action = action.strip()
    if not action:
        raise ValueError("an action must not be empty; use protocol.STOP to end a trajectory")
    return f"<think>{reasoning.strip()}</think><answer>{action}</answer>"


def assistant_message(action: str, reasoning: str = "") -> dict[str, Any]:
    """The assistant turn that teaches ``action`` (used by the data builder and SFT)."""
    return {"role": "assistant", "content": [{"type": "text", "text": format_completion(action, reasoning)}]}


def _normalise_action(text: str) -> str | None:
    """Clean a candidate answer; STOP variants become :data:`STOP`; None if nothing usable remains."""
    text = _TAG_RE.sub("", text).strip()
    if not text:
        return None
    if STOP.lower() in text.lower() and len(text) <= len(STOP) + 8:
        return STOP
    if _STOP_RE.match(text):
        return STOP
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0]
    text = _PREFIX_RE.sub("", text)
    text = re.sub(r"\A(?:[-*•]|\d+[.)])\s+", "", text)
    text = text.strip().strip("\"'`*").strip()
    text = re.sub(r"\s+", " ", text)
    if not text:
        return None
    if _STOP_RE.match(text):
        return STOP
    return text


def parse_completion(raw: str) -> ParsedCompletion:
    """Tolerant parse used at inference.

    Rules, in order: the last complete ``<answer>...</answer>`` wins; else the text after an unclosed ``<answer>``;
    else the text after ``</think>``; else, when there is no ``<think>`` at all, the first line of the reply. The
    answer is cleaned (tags, list markers, "Edit:" prefixes, quotes and extra whitespace removed); ``STOP``,
    ``[STOP]``, ``<stop>``, ``done`` ... all mean :data:`STOP`. Answers longer than :data:`MAX_ACTION_CHARS` or
    empty ones are errors.
    """
    if not isinstance(raw, str):
        return ParsedCompletion(raw=str(raw), error=f"completion is {type(raw).__name__}, not text")
    thinks = _THINK_RE.findall(raw)
    reasoning = " ".join(t.strip() for t in thinks).strip()
    answers = _ANSWER_RE.findall(raw)
    if answers:
        candidate = answers[-1]
    elif (m := _OPEN_ANSWER_RE.search(raw)) is not None:
        candidate = m.group(1)
    elif "</think>" in raw.lower():
        candidate = raw[raw.lower().rindex("</think>") + len("</think>"):]
    elif "<think>" in raw.lower():
        return ParsedCompletion(raw=raw, reasoning=raw.split(">", 1)[1].strip(), error="reasoning was never closed")
    else:
        candidate = raw
    action = _normalise_action(candidate)
    if action is None:
        return ParsedCompletion(raw=raw, reasoning=reasoning, error="no answer found in the completion")
    if len(action) > MAX_ACTION_CHARS:
        return ParsedCompletion(raw=raw, reasoning=reasoning, error=f"answer is longer than {MAX_ACTION_CHARS} chars")
    return ParsedCompletion(raw=raw, reasoning=reasoning, action=action)


def parse_completion_strict(raw: str) -> ParsedCompletion:
    """Exact-format parse used by the GRPO format reward: one think block, one answer block, nothing around them.

    The answer must be :data:`STOP` exactly or a single-line instruction of at most :data:`MAX_ACTION_CHARS`.
    """
    if not isinstance(raw, str):
        return ParsedCompletion(raw=str(raw), error="completion is not text")
    m = _STRICT_RE.match(raw)
    if m is None:
        return ParsedCompletion(raw=raw, error="not of the form <think>...</think><answer>...</answer>")
    think, answer = m.group("think").strip(), m.group("answer").strip()
    if _TAG_RE.search(think) or _TAG_RE.search(answer):
        return ParsedCompletion(raw=raw, error="nested or repeated think/answer tags")
    if not think:
        return ParsedCompletion(raw=raw, error="empty reasoning")
    if answer == STOP:
        return ParsedCompletion(raw=raw, reasoning=think, action=STOP)
    if STOP.lower() in answer.lower() or _STOP_RE.match(answer):
        return ParsedCompletion(raw=raw, reasoning=think, error="STOP must be the whole answer, written <STOP>")
    if "\n" in answer or len(answer) > MAX_ACTION_CHARS:
        return ParsedCompletion(raw=raw, reasoning=think, error="answer must be one line of at most 400 characters")
    return ParsedCompletion(raw=raw, reasoning=think, action=answer)


def same_action(a: str | None, b: str | None) -> bool:
    """Whether two atomic edits are the same request (case, spacing and final punctuation ignored)."""
    if a is None or b is None:
        return False

    def key(s: str) -> str:
        return re.sub(r"\s+", " ", s.strip().rstrip(".!").lower())

    return key(a) == key(b)
