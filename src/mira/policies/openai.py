"""A policy served over any OpenAI-compatible chat endpoint: vLLM, SGLang, OpenAI, Gemini.

Spec ``openai:MODEL``; options (``--policy-option key=value`` on the CLI) are those of
:class:`~mira.clients.openai_chat.OpenAIChatBackend`::

    mira edit in.png "..." --policy openai:Qwen/Qwen2.5-VL-7B-Instruct --policy-option base_url=http://127.0.0.1:8000/v1
    mira edit in.png "..." --policy openai:gpt-4.1            # key from $OPENAI_API_KEY
    OpenAIPolicy("gemini-2.5-flash", base_url="https://generativelanguage.googleapis.com/v1beta/openai/",
                 api_key_env="GEMINI_API_KEY")

Sampling defaults to ``temperature=0.7`` and ``max_tokens=512`` (None leaves a field to the server). Each decision
sends exactly ``protocol.build_messages(observation, embed_images=True)``; :meth:`agenerate` uses the
SDK's async client, so many trajectories share one process without threads (:func:`mira.batch.run_many`).
"""

from __future__ import annotations

from typing import Any

from mira.clients.openai_chat import OpenAIChatBackend
from mira.clients.retry import ServiceError
from mira.policies.base import Policy, PolicyError
from mira.protocol import Observation, build_messages


class OpenAIPolicy(Policy):
    """MIRA's policy behind an OpenAI-compatible endpoint; failures raise :class:`PolicyError` naming the endpoint."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        name: str | None = None,
        temperature: float | None = 0.7,
        max_tokens: int | None = 512,
        **options: Any,
    ):
        try:
            self.backend = OpenAIChatBackend(model, base_url=base_url, api_key_env=api_key_env,
                                             temperature=temperature, max_tokens=max_tokens, **options)
        except (ServiceError, ValueError) as exc:
            raise PolicyError(str(exc)) from None
        self.name = name or model

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        try:
            return self.backend.chat(build_messages(observation, embed_images=True), n=n, seed=seed)
        except ServiceError as exc:
            raise PolicyError(str(exc)) from None

    async def agenerate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        try:
            return await self.backend.achat(build_messages(observation, embed_images=True), n=n, seed=seed)
        except ServiceError as exc:
            raise PolicyError(str(exc)) from None

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.backend.config()}
