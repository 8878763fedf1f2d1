"""Clients of served models: the OpenAI-compatible chat backend and the failure policy every HTTP client shares.

- :mod:`mira.clients.retry`: what a failed request means (retry or not), backoff with jitter, ``Retry-After``,
  secret redaction, one async client per event loop. Used by every HTTP client in MIRA.
- :mod:`mira.clients.openai_chat`: :class:`~mira.clients.openai_chat.OpenAIChatBackend`, the
  :class:`mira.vlm.ChatBackend` over any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, SGLang,
  OpenAI, Gemini's compatibility endpoint). Policies and judges both use it.
"""
