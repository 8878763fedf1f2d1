"""Every prompt a MIRA judge sends to a vision-language model. Nothing else in :mod:`mira.judges` writes prompt text.

The VIEScore-style judge asks two questions, each answered with two 0-10 scores:

- semantic consistency (SC), shown the source and the edited image: ``edit_success`` (the instruction was carried
  out, every part of it) and ``overediting`` (what the instruction did not mention stayed as it was);
- perceptual quality (PQ), shown the edited image only: ``naturalness`` and ``artifacts`` (10 = none).

A criterion's score is the minimum of its two numbers and ``overall = sqrt(SC * PQ)``. Replies are asked for as JSON
(``{"reasoning": "...", "score": [a, b]}``) but :mod:`mira.judges.parsing` reads many other shapes too.
"""

from __future__ import annotations

from typing import Any

PROMPT_VERSION = "1"  # recorded with every score; bump when any text below changes
SCALE = 10

SYSTEM_PROMPT = (
    "You are a careful, impartial evaluator of images produced by AI image editors. You score what you see on a "
    f"0 to {SCALE} scale and answer with JSON only."
)

# criterion -> (names of its two scores, the question). Score names double as the labels the parser looks for.
SC_NAMES = ("edit_success", "overediting")
PQ_NAMES = ("naturalness", "artifacts")

SC_PROMPT = """\
The first image is the SOURCE image. The second image is the result of editing the source with this instruction:

Instruction: {instruction}

Give two scores from 0 to 10:
1. edit_success: how completely and correctly the edited image carries out the instruction, every part of it \
(0 = nothing that was asked for was done, 10 = everything was done exactly as asked).
2. overediting: how well the edit kept everything the instruction did not ask to change \
(0 = the image was changed far beyond the request or replaced, 10 = only the requested changes were made).

Answer with JSON only, in this form:
{{"reasoning": "one or two sentences", "score": [edit_success, overediting]}}"""

PQ_PROMPT = """\
This image was produced by an AI image editor. Judge only how it looks, not what it shows.

Give two scores from 0 to 10:
1. naturalness: how natural and coherent the image looks: lighting, shadows, proportions, perspective and sense of \
depth (0 = clearly unnatural, 10 = looks entirely real or intentionally crafted).
2. artifacts: how free the image is of distortions, smears, blur, noise, garbled text, malformed hands or faces and \
other generation artifacts (0 = severe artifacts, 10 = none at all).

Answer with JSON only, in this form:
{"reasoning": "one or two sentences", "score": [naturalness, artifacts]}"""

RETRY_PROMPT = """\
Your reply could not be read ({error}). Answer again with JSON only, exactly in this form:
{{"reasoning": "one or two sentences", "score": [{names}]}}"""


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _image(img: Any) -> dict[str, Any]:
    return {"type": "image", "image": img}


def sc_messages(source: Any, edited: Any, instruction: str) -> list[dict[str, Any]]:
    """Messages (TRL vision format, images embedded) for the semantic-consistency question."""
    return [
        {"role": "system", "content": [_text(SYSTEM_PROMPT)]},
        {
            "role": "user",
            "content": [
                _text("SOURCE image:"),
                _image(source),
                _text("EDITED image:"),
                _image(edited),
                _text(SC_PROMPT.format(instruction=instruction.strip())),
            ],
        },
    ]


def pq_messages(edited: Any) -> list[dict[str, Any]]:
    """Messages for the perceptual-quality question (the edited image only)."""
    return [
        {"role": "system", "content": [_text(SYSTEM_PROMPT)]},
        {"role": "user", "content": [_image(edited), _text(PQ_PROMPT)]},
    ]


def retry_messages(
    messages: list[dict[str, Any]], reply: str, error: str, names: tuple[str, ...]
) -> list[dict[str, Any]]:
    """``messages`` followed by the unreadable reply and a request to answer again in the expected form."""
    return [
        *messages,
        {"role": "assistant", "content": [_text(reply)]},
        {"role": "user", "content": [_text(RETRY_PROMPT.format(error=error, names=", ".join(names)))]},
    ]
