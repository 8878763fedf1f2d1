"""A learnable toy editing world for the training tests: colour edits, an editor that paints, a judge that measures.

``ColorEditor`` paints the whole image in the colour an instruction names; ``ColorJudge`` scores how close an image's
mean colour is to the colour the complex instruction asks for. Rows are built only with :mod:`mira.protocol`.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageStat

from mira.editors.base import Editor
from mira.judges.base import Judge, JudgeScores
from mira.protocol import PROTOCOL_VERSION, Observation, assistant_message, build_messages

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "black": (10, 10, 10)}
WHITE = (245, 245, 245)


def colour_in(text: str) -> str | None:
    return next((name for name in COLORS if name in text.lower()), None)


class ColorEditor(Editor):
    """Paints the image in the colour the instruction names; anything else leaves it unchanged."""

    name = "color-editor"

    def __init__(self) -> None:
        self.calls = 0

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        self.calls += 1
        colour = colour_in(instruction)
        return Image.new("RGB", image.size, COLORS[colour]) if colour else image.copy()


class ColorJudge(Judge):
    """10 when the image's mean colour is the colour the instruction names, falling linearly with the distance."""

    name = "color-judge"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        self.calls += 1
        target = COLORS[colour_in(instruction) or "black"]
        mean = ImageStat.Stat(edited.convert("RGB")).mean
        closeness = 1.0 - sum(abs(m - t) for m, t in zip(mean, target)) / (3 * 255)
        return JudgeScores.from_sc_pq(10 * closeness, 10 * closeness)


def make_editor(**options: Any) -> ColorEditor:
    return ColorEditor()


def make_judge(**options: Any) -> ColorJudge:
    return ColorJudge()


def image(colour: tuple[int, int, int] = WHITE, size: int = 56) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def sft_rows(*, near_misses: bool = False) -> list[dict[str, Any]]:
    """One start row per colour ("make the cup <colour>"); with ``near_misses`` each also appears answered
    without the answer tags, so a policy trained on them writes the exact format about half of the time."""
    rows = []
    for t, colour in enumerate(COLORS):
        obs = Observation(f"make the cup {colour}", (), image(), image())
        answers = [assistant_message(f"make the cup {colour}", "The cup is white.")]
        if near_misses:
            answers.append({"role": "assistant", "content": [
                {"type": "text", "text": f"<think>The cup is white.</think>make the cup {colour}"}]})
        for answer in answers:
            rows.append({
                "messages": build_messages(obs) + [answer], "images": obs.images,
                "trajectory_id": f"t{t}", "step": 1, "kind": "start", "source": "toy", "score": 1.0,
                "protocol_version": PROTOCOL_VERSION,
            })
    return rows


def grpo_rows() -> list[dict[str, Any]]:
    """GRPO rows: the start state of each colour task, and a state where the edit is already done."""
    rows = []
    for t, colour in enumerate(COLORS):
        for history, current in (((), image()), ((f"make the cup {colour}",), image(COLORS[colour]))):
            obs = Observation(f"make the cup {colour}", history, image(), current)
            rows.append({
                "prompt": build_messages(obs), "images": obs.images, "instruction": obs.instruction,
                "history": list(history), "trajectory_id": f"t{t}", "step": len(history) + 1,
                "protocol_version": PROTOCOL_VERSION,
            })
    return rows


def builder_dataset() -> Any:
    """The data builder's own export (``mira.data.export``) of one two-edit trajectory per colour: 3 rows each."""
    from datasets import Dataset

    from mira.data.export import features, trajectory_samples
    from mira.data.records import Candidate, Selected, Task

    rows = []
    for colour in COLORS:
        turns = [f"make the cup {colour}", "make the saucer black"]
        task = Task(id=f"task-{colour}", session_id=colour, source="toy", licence="CC0", image="i.png", turns=turns,
                    order=[0, 1], instruction=f"make the cup {colour} and the saucer black")
        images = [image(), image(COLORS[colour]), image(COLORS["black"])]
        selected = Selected(task=task, candidate=Candidate(id=f"c-{colour}", editor="color-editor", images=[]),
                            score=9.0, reasoning=["The cup is white.", "The saucer is white.", "All done."])
        rows += trajectory_samples(selected, task.instruction, turns, images=images)
    return Dataset.from_list(rows, features=features())
