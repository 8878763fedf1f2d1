"""The one VLM-client layer: a chat backend that answers multimodal messages.

Policies (:mod:`mira.policies`), judges (:mod:`mira.judges`) and the data builder's rewriters all talk to
vision-language models through this interface, whether the model runs in-process (transformers) or behind an
OpenAI-compatible endpoint (vLLM, SGLang, GPT-4.1, Gemini).

Messages are in TRL's vision format with images embedded: ``{"type": "image", "image": PIL.Image}`` content items
(what :func:`mira.protocol.build_messages` returns with ``embed_images=True``).
"""

from __future__ import annotations

import asyncio
from typing import Any


class ChatBackend:
    """Base class of chat backends. Subclasses implement :meth:`chat` (and :meth:`achat` when natively async)."""

    def chat(self, messages: list[dict[str, Any]], *, n: int = 1, seed: int | None = None, **sampling: Any) -> list[str]:
        """Return ``n`` completions of the assistant turn that follows ``messages``."""
        raise NotImplementedError

    async def achat(
        self, messages: list[dict[str, Any]], *, n: int = 1, seed: int | None = None, **sampling: Any
    ) -> list[str]:
        return await asyncio.to_thread(self.chat, messages, n=n, seed=seed, **sampling)

    def config(self) -> dict[str, Any]:
        return {}
