"""The Editor protocol: who executes one atomic instruction on an image.

An editor takes the current image, one instruction and a seed and returns the new image. :meth:`Editor.aedit`
defaults to a worker thread; served editors override it with a native async client.
"""

from __future__ import annotations

import asyncio
from typing import Any

from PIL import Image


class EditorError(RuntimeError):
    """The editor backend failed to produce an image."""


class Editor:
    """Base class of editors. Subclasses set ``name`` and implement :meth:`edit`."""

    name: str = "editor"

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        raise NotImplementedError

    async def aedit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        return await asyncio.to_thread(self.edit, image, instruction, seed=seed)

    def params(self) -> dict[str, Any]:
        """Per-call parameters recorded with every step (steps, guidance, size policy ...)."""
        return {}

    def config(self) -> dict[str, Any]:
        """What to record in a trajectory's config snapshot (never secrets)."""
        return {"name": self.name, **self.params()}
