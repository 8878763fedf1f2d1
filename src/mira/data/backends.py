"""Building the builder's backends from config specs: editors, judges and chat models.

- editors: registered names go through :func:`mira.registry.load_editor`; an import path ``package.module:factory``
  builds a custom one;
- chat backends (rewriter, dependence judge, annotator): ``openai:MODEL`` is a model behind any OpenAI-compatible
  chat endpoint (vLLM, SGLang, OpenAI, Gemini's compatible API), options ``base_url``, ``api_key_env`` (default
  ``OPENAI_API_KEY``), ``timeout``, ``max_retries``, ``max_tokens``; an import path builds any
  :class:`mira.vlm.ChatBackend` (a local transformers model, for example);
- judges: an import path to a factory returning a :class:`mira.judges.base.Judge`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from typing import Any

from mira.data.config import BackendSpec, DataBuildError, import_object
from mira.editors.base import Editor
from mira.judges.base import Judge
from mira.vlm import ChatBackend


def _build(spec: BackendSpec, kind: type, what: str) -> Any:
    factory = import_object(spec.name)
    try:
        obj = factory(**spec.options)
    except TypeError as exc:
        raise DataBuildError(f"{what} '{spec.name}' does not accept options {sorted(spec.options)}: {exc}") from None
    if not isinstance(obj, kind):
        raise DataBuildError(f"{what} '{spec.name}' built a {type(obj).__name__}, not a {kind.__name__}")
    return obj


def load_editor_spec(spec: BackendSpec) -> Editor:
    from mira.registry import UnknownBackendError, load_editor

    try:
        return load_editor(spec.name, **spec.options)
    except UnknownBackendError:
        if ":" not in spec.name:
            raise
    return _build(spec, Editor, "editor")


def load_judge_spec(spec: BackendSpec) -> Judge:
    return _build(spec, Judge, "judge")


def load_chat_spec(spec: BackendSpec) -> ChatBackend:
    if spec.name.startswith("openai:"):
        return OpenAIChatBackend(spec.name[len("openai:"):], **spec.options)
    return _build(spec, ChatBackend, "chat backend")


def image_data_url(img: Any) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def to_openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL-format messages with embedded PIL images -> OpenAI chat messages with data-URL images."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        parts = []
        for item in content:
            if item.get("type") == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(item["image"])}})
            else:
                parts.append({"type": "text", "text": item["text"]})
        out.append({"role": message["role"], "content": parts})
    return out


_LOOP_CLIENTS: dict[tuple[int, str], Any] = {}


def _loop_client(kwargs: dict[str, Any]) -> Any:
    """One async client per event loop and endpoint (an async client cannot outlive its loop)."""
    from openai import AsyncOpenAI

    key = (id(asyncio.get_running_loop()), repr(sorted(kwargs.items())))
    if key not in _LOOP_CLIENTS:
        _LOOP_CLIENTS[key] = AsyncOpenAI(**kwargs)
    return _LOOP_CLIENTS[key]


async def aclose_clients() -> None:
    """Close the async clients made on the running event loop (call before closing the loop)."""
    loop = id(asyncio.get_running_loop())
    for key in [k for k in _LOOP_CLIENTS if k[0] == loop]:
        await _LOOP_CLIENTS.pop(key).close()


class OpenAIChatBackend(ChatBackend):
    """A chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (async-native)."""

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, max_retries: int = 2, max_tokens: int = 512):
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.timeout, self.max_retries, self.max_tokens = timeout, max_retries, max_tokens

    def _kwargs(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_key": os.environ.get(self.api_key_env) or "EMPTY",
                "timeout": self.timeout, "max_retries": self.max_retries}

    def _request(self, messages: list[dict[str, Any]], n: int, seed: int | None, sampling: dict[str, Any]) -> dict:
        return {"model": self.model, "messages": to_openai_messages(messages), "n": n, "seed": seed,
                "max_tokens": sampling.pop("max_tokens", self.max_tokens), **sampling}

    def chat(self, messages: list[dict[str, Any]], *, n: int = 1, seed: int | None = None, **sampling: Any) -> list[str]:
        from openai import OpenAI

        with OpenAI(**self._kwargs()) as client:
            reply = client.chat.completions.create(**self._request(messages, n, seed, sampling))
        return [c.message.content or "" for c in reply.choices]

    async def achat(
        self, messages: list[dict[str, Any]], *, n: int = 1, seed: int | None = None, **sampling: Any
    ) -> list[str]:
        client = _loop_client(self._kwargs())
        reply = await client.chat.completions.create(**self._request(messages, n, seed, sampling))
        return [c.message.content or "" for c in reply.choices]

    def config(self) -> dict[str, Any]:
        return {"name": f"openai:{self.model}", "base_url": self.base_url}
