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
        from mira.clients.openai_chat import OpenAIChatBackend

        return OpenAIChatBackend(spec.name[len("openai:"):], **{"max_tokens": 512, **spec.options})
    return _build(spec, ChatBackend, "chat backend")
