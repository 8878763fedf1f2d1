"""Scripted backends for testing the loop's logic (never a stand-in for a real backend's test)."""

from __future__ import annotations

import zlib
from typing import Sequence

from PIL import Image, ImageDraw

from mira.editors.base import Editor, EditorError
from mira.policies.base import Policy, PolicyError
from mira.protocol import Observation


class ScriptedPolicy(Policy):
    """Returns the given completions in order; an Exception instance in the script is raised instead."""

    name = "scripted"

    def __init__(self, script: Sequence[object] = ()):
        self.script = list(script)
        self.calls: list[tuple[Observation, int | None]] = []

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        self.calls.append((observation, seed))
        if not self.script:
            raise PolicyError("script exhausted")
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return [str(item)] * n


class StripeEditor(Editor):
    """Deterministic pure-PIL editor: draws a stripe whose position and colour depend on instruction and seed."""

    name = "stripe"

    def __init__(self, fail_times: int = 0, fail_always: bool = False):
        self.fail_times = fail_times
        self.fail_always = fail_always
        self.calls: list[tuple[str, int | None]] = []

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        self.calls.append((instruction, seed))
        if self.fail_always or self.fail_times > 0:
            self.fail_times -= 1
            raise EditorError("out of memory")
        out = image.copy()
        h = (zlib.crc32(instruction.encode()) ^ (seed or 0)) & 0xFFFFFF
        y = (seed or 0) % max(1, image.height)
        ImageDraw.Draw(out).rectangle([0, y, image.width, min(image.height, y + 3)], fill=(h & 255, h >> 8 & 255, h >> 16 & 255))
        return out

    def params(self) -> dict:
        return {"kind": "stripe"}


def think(action: str, reason: str = "r") -> str:
    return f"<think>{reason}</think><answer>{action}</answer>"
