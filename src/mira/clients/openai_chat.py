"""A :class:`mira.vlm.ChatBackend` over any OpenAI-compatible chat endpoint, with the official OpenAI SDK.

Works with ``vllm serve``, SGLang, OpenAI (GPT-4.1 ...), Gemini's OpenAI-compatible endpoint and any server that
implements ``POST {base_url}/chat/completions``::

    backend = OpenAIChatBackend("Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://127.0.0.1:8000/v1")
    texts = backend.chat(protocol.build_messages(obs, embed_images=True), n=4, seed=0, temperature=0.7)

Messages are in TRL's vision format; each ``{"type": "image", "image": ...}`` item (a PIL image, path or bytes) is
sent as an ``image_url`` content part holding a data URL. Image policy: ``image_format`` ``"png"`` (lossless, the
default) or ``"jpeg"`` (``jpeg_quality``), and ``max_image_pixels`` (images above it are downscaled, aspect kept;
None sends them at full size, which is what an in-process model would see); ``image_detail`` sets OpenAI's
``detail`` field.

Sampling: keyword arguments of :meth:`chat` (over defaults given as extra keyword arguments at construction) become
fields of the request body: ``temperature``, ``top_p``, ``max_tokens``, ``stop`` ... and server-specific ones (vLLM's
``top_k``, ``min_p``, ``repetition_penalty`` ...); None values are left out. ``n`` candidates are asked for in one
request; if a server returns fewer choices, the rest are requested in further calls.

Keys: ``api_key`` or the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``). Without a key, a custom
``base_url`` (local vLLM/SGLang) gets the placeholder ``EMPTY``; the OpenAI API itself needs one. Keys never reach
:meth:`config`, logs or error messages. Failures follow :mod:`mira.clients.retry` (the SDK's own retries are off) and
end in one :class:`~mira.clients.retry.ServiceError` naming the endpoint.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import weakref
from typing import Any

from PIL import Image

from mira.clients.retry import (INLINE_PIXELS, PerLoop, RequestFailure, RetryPolicy, ServiceError, encode_off_loop,
                                safe_url)
from mira.vlm import ChatBackend

# The SDK's typed ``chat.completions.create`` re-walks every message on each call (measured: 3.0 ms of client CPU per
# call against 1.8 ms, two 64x64 images), which caps the throughput of many concurrent trajectories; the body is
# built here and sent with the SDK's documented ``client.post`` (same client, transport, errors and response model).
CHAT_PATH = "/chat/completions"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def resolve_api_key(api_key: str | None, api_key_env: str | None, base_url: str | None, what: str) -> str:
    """The key to send: ``api_key``, else ``$api_key_env``, else ``EMPTY`` for custom servers (vLLM convention)."""
    key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
    if key:
        return key
    if base_url is None or safe_url(base_url) == DEFAULT_BASE_URL:
        raise ServiceError(f"{what} needs an API key: set the environment variable {api_key_env or 'OPENAI_API_KEY'} "
                           "(or pass base_url=... for a local server that needs none)")
    return "EMPTY"


def encode_image(image: Any, *, image_format: str = "png", jpeg_quality: int = 90,
                 max_pixels: int | None = None) -> str:
    """A ``data:`` URL of ``image`` (PIL image, path or bytes) in PNG or JPEG, downscaled to ``max_pixels``."""
    from mira.images import load_image, working_size

    img = image if isinstance(image, Image.Image) else load_image(image)
    if max_pixels is not None and img.width * img.height > max_pixels:
        img = img.resize(working_size(img.size, max_pixels, multiple=1), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if image_format == "jpeg":
        img.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality)
    else:
        img.save(buf, format="PNG")
    return f"data:image/{image_format};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class OpenAIClients:
    """Sync and async OpenAI SDK clients for one endpoint and key (SDK retries off: :mod:`mira.clients.retry` rules).

    Shared by the chat backend and the OpenAI images editor; the async client is built once per event loop.
    """

    def __init__(self, base_url: str | None, api_key: str | None, api_key_env: str | None, timeout: float, what: str):
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.base_url = base_url or DEFAULT_BASE_URL
        self.timeout = float(timeout)
        self.api_key = resolve_api_key(api_key, api_key_env, base_url, what)
        self._sync: Any = None
        self._async = PerLoop(lambda: self._build("AsyncOpenAI"))

    def _build(self, cls: str) -> Any:
        import openai

        return getattr(openai, cls)(api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0)

    @property
    def sync(self) -> Any:
        if self._sync is None:
            self._sync = self._build("OpenAI")
        return self._sync

    @property
    def aio(self) -> Any:
        """The async client of the running event loop."""
        return self._async.get()

    def __repr__(self) -> str:
        return f"OpenAIClients(base_url={safe_url(self.base_url)!r})"


def _completion_type() -> type:
    from openai.types.chat import ChatCompletion

    return ChatCompletion


def _pixels(messages: list[dict[str, Any]]) -> int:
    """Pixels of the PIL images in ``messages`` (other image sources count as large)."""
    total = 0
    for message in messages:
        for item in message["content"] if isinstance(message["content"], list) else ():
            if item.get("type") == "image":
                image = item.get("image")
                total += image.width * image.height if isinstance(image, Image.Image) else INLINE_PIXELS + 1
    return total


def _shift(seed: int | None, offset: int) -> int | None:
    """The seed of a follow-up request, so that topping up ``n`` does not repeat the first candidates."""
    return None if seed is None else seed + offset


class OpenAIChatBackend(ChatBackend):
    """Chat completions from an OpenAI-compatible endpoint, sync (:meth:`chat`) and natively async (:meth:`achat`)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        image_format: str = "png",
        jpeg_quality: int = 90,
        max_image_pixels: int | None = None,
        image_detail: str | None = None,
        **sampling: Any,
    ):
        if not model:
            raise ValueError("give the model name the server serves, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
        image_format = image_format.lower().replace("jpg", "jpeg")
        if image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be 'png' or 'jpeg', got '{image_format}'")
        self.model = model
        self.clients = OpenAIClients(base_url, api_key, api_key_env, timeout, f"model '{model}'")
        self.retry = RetryPolicy(max_retries=max_retries, backoff=backoff)
        self.image_format, self.jpeg_quality = image_format, jpeg_quality
        self.max_image_pixels, self.image_detail = max_image_pixels, image_detail
        self.sampling = sampling
        self.endpoint = f"chat completions of '{model}' at {safe_url(self.clients.base_url)}"
        # The original image recurs at every step of a trajectory: encode each PIL image once.
        self._encoded: dict[int, tuple[weakref.ref, str]] = {}
        self._lock = threading.Lock()

    def image_url(self, image: Any) -> str:
        """The data URL sent for ``image`` under this backend's image policy (cached per live PIL image object)."""
        cacheable = isinstance(image, Image.Image)
        if cacheable:
            with self._lock:
                ref, url = self._encoded.get(id(image), (None, None))
            if ref is not None and ref() is image:
                return url
        url = encode_image(image, image_format=self.image_format, jpeg_quality=self.jpeg_quality,
                           max_pixels=self.max_image_pixels)
        if cacheable:
            key = id(image)
            with self._lock:
                self._encoded[key] = (weakref.ref(image, lambda _, key=key: self._encoded.pop(key, None)), url)
        return url

    def to_openai_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """TRL-format messages -> OpenAI chat messages with images as data URLs."""
        out = []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                out.append({"role": message["role"], "content": content})
                continue
            parts = []
            for item in content:
                if item.get("type") == "image":
                    if item.get("image") is None:
                        raise ValueError("an image placeholder carries no image; build messages with embed_images=True")
                    url: dict[str, Any] = {"url": self.image_url(item["image"])}
                    if self.image_detail:
                        url["detail"] = self.image_detail
                    parts.append({"type": "image_url", "image_url": url})
                else:
                    parts.append({"type": "text", "text": item["text"]})
            out.append({"role": message["role"], "content": parts})
        return out

    def _body(self, messages: list[dict[str, Any]], n: int, seed: int | None, sampling: dict[str, Any]) -> dict:
        """The JSON body of one request; parameters unknown to the OpenAI API ride along as extra fields."""
        params = {**self.sampling, **sampling}
        body: dict[str, Any] = {"model": self.model, "messages": messages, "n": n}
        body.update({k: v for k, v in params.items() if v is not None})
        if seed is not None:
            body["seed"] = seed
        return body

    @staticmethod
    def _texts(response: Any) -> list[str]:
        """The choices' texts; a reply that is not a chat completion raises ``RequestFailure("malformed")``."""
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise RequestFailure("malformed", "no choices in the reply")
        texts = []
        for choice in choices:
            message = getattr(choice, "message", None)
            content = getattr(message, "content", None)
            if message is None or not isinstance(content, (str, type(None))):
                raise RequestFailure("malformed", "a choice has no message text")
            texts.append(content or "")
        return texts

    def chat(self, messages: list[dict[str, Any]], *, n: int = 1, seed: int | None = None, **sampling: Any) -> list[str]:
        """``n`` completions of the turn after ``messages`` (TRL vision format, images embedded)."""
        openai_messages = self.to_openai_messages(messages)
        client = self.clients.sync
        texts: list[str] = []
        while len(texts) < n:
            body = self._body(openai_messages, n - len(texts), _shift(seed, len(texts)), sampling)
            texts += self.retry.call(lambda: self._texts(client.post(CHAT_PATH, body=body, cast_to=_completion_type())),
                                     endpoint=self.endpoint, secrets=(self.clients.api_key,))
        return texts[:n]

    async def achat(
        self, messages: list[dict[str, Any]], *, n: int = 1, seed: int | None = None, **sampling: Any
    ) -> list[str]:
        """Async :meth:`chat` with the SDK's async client; large images are encoded off the event loop."""
        openai_messages = await encode_off_loop(_pixels(messages), self.to_openai_messages, messages)
        client = self.clients.aio
        texts: list[str] = []
        while len(texts) < n:
            body = self._body(openai_messages, n - len(texts), _shift(seed, len(texts)), sampling)

            async def once() -> list[str]:
                return self._texts(await client.post(CHAT_PATH, body=body, cast_to=_completion_type()))

            texts += await self.retry.acall(once, endpoint=self.endpoint, secrets=(self.clients.api_key,))
        return texts[:n]

    def config(self) -> dict[str, Any]:
        return {
            "backend": "openai-chat", "model": self.model, "base_url": safe_url(self.clients.base_url),
            "timeout": self.clients.timeout, "max_retries": self.retry.max_retries, "image_format": self.image_format,
            "max_image_pixels": self.max_image_pixels, "sampling": dict(self.sampling),
        }
