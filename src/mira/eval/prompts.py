"""Prompts of the VLM baselines that MIRA is compared with. Nothing else writes their prompt text.

- one-shot rewrite (:class:`mira.policies.baselines.RewritePolicy`): the VLM sees the source image and the complex
  instruction and writes ONE better prompt for the editor, which is executed once;
- static plan (:class:`mira.policies.baselines.VLMPlanPolicy`): the VLM sees the same and decomposes the
  instruction once into atomic edits, which are executed open loop (the VLM never sees an intermediate image).

MIRA's own policy prompt is :data:`mira.protocol.SYSTEM_PROMPT`; judge prompts are in :mod:`mira.judges.prompts`.
Both baselines use the same VLM as the MIRA policy by default, so the comparison isolates the closed loop.
"""

from __future__ import annotations

from typing import Any

PROMPT_VERSION = "1"  # recorded in each baseline's config; bump when any text below changes
MAX_REWRITE_WORDS = 60

REWRITE_SYSTEM = (
    "You write prompts for an instruction-based image editing model. The editor follows short, explicit, concrete "
    "instructions well and long, vague or many-part instructions poorly."
)
REWRITE_PROMPT = """\
Here is the image to edit and the user's instruction:

Instruction: {instruction}

Rewrite the instruction as ONE prompt for the editor that covers every requested change, names each object \
unambiguously as it appears in this image, and keeps everything else unchanged. Use at most {max_words} words. \
Reply with the prompt only, on one line."""

PLAN_SYSTEM = (
    "You plan image edits for an instruction-based image editing model that can carry out only ONE simple edit "
    "at a time."
)
PLAN_PROMPT = """\
Here is the image to edit and the user's instruction:

Instruction: {instruction}

Break the instruction into a short ordered list of atomic edits. Each atomic edit changes one clearly named object \
or region of this image and makes sense on its own, without the rest of the instruction. Use as few edits as the \
instruction needs (at most {max_edits}). Reply with a numbered list, one edit per line, and nothing else."""


def _turns(system: str, image: Any, text: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]},
    ]


def rewrite_messages(image: Any, instruction: str) -> list[dict[str, Any]]:
    """Messages (TRL vision format, image embedded) asking for one rewritten editor prompt."""
    return _turns(REWRITE_SYSTEM, image, REWRITE_PROMPT.format(instruction=instruction.strip(),
                                                               max_words=MAX_REWRITE_WORDS))


def plan_messages(image: Any, instruction: str, max_edits: int) -> list[dict[str, Any]]:
    """Messages asking for a numbered list of at most ``max_edits`` atomic edits."""
    return _turns(PLAN_SYSTEM, image, PLAN_PROMPT.format(instruction=instruction.strip(), max_edits=max_edits))
