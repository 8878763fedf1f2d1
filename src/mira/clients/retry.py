"""How MIRA's HTTP clients fail: one policy for the chat backend, the OpenAI images editor and the HTTP editor.

- Timeouts, refused or dropped connections, HTTP 408, 429 and 5xx are retried up to ``max_retries`` times with
  exponential backoff and jitter (``backoff * 2**attempt``, capped at ``max_backoff``, times a random factor in
  [0.5, 1]); a ``Retry-After`` (or ``retry-after-ms``) header replaces the backoff, capped at ``max_retry_after``.
- Any other 4xx and a malformed body are not retried.
- Either way the caller gets ONE exception of the class it chose (:class:`ServiceError` by default; the policy raises
  :class:`~mira.policies.base.PolicyError`, editors :class:`~mira.editors.base.EditorError`) whose message names the
  endpoint, says what went wrong and what to try.
- Messages and log lines pass through :func:`redact`: the configured keys, ``Bearer`` tokens and ``sk-...`` keys are
  replaced by ``***``; :func:`safe_url` drops credentials and query strings from URLs that are recorded.

Library exceptions (openai SDK, httpx, builtins) are read by :func:`classify`; a client signals a reply it could not
use by raising :class:`RequestFailure` itself (``kind="malformed"``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import re
import sys
import time
import weakref
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Generic, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("mira.clients")

T = TypeVar("T")

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_SK_RE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")


class ServiceError(RuntimeError):
    """A served backend failed for good: retries exhausted, or a failure that retrying cannot fix."""


class RequestFailure(Exception):
    """One failed request, described: ``kind`` is timeout, connection, status or malformed."""

    def __init__(self, kind: str, detail: str = "", *, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.status, self.retry_after = kind, detail, status, retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in ("timeout", "connection") or (self.kind == "status" and self.status in RETRY_STATUS)

    def describe(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        if self.kind == "timeout":
            return f"timed out{detail}; raise the timeout option or check the server's load"
        if self.kind == "connection":
            return f"could not connect{detail}; check that the server is running and the URL is right"
        if self.kind == "malformed":
            return f"sent a reply that could not be read{detail}; check that the URL points at the right kind of server"
        hint = {
            401: "; check the API key and the environment variable it is read from",
            403: "; check the API key's permissions",
            404: "; check the URL (and the model name, if any)",
            413: "; send smaller images",
        }.get(self.status or 0, "")
        return f"answered HTTP {self.status}{detail}{hint}"


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None if absent."""
    if not headers:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _body_detail(body: Any, limit: int = 300) -> str:
    """The useful part of an error body: OpenAI-style ``{"error": {"message": ...}}`` or the text, shortened."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            pass
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            err = err.get("message", err)
        body = err
    text = " ".join(str(body).split()) if body not in (None, "") else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status(response: Any, body: Any = None) -> RequestFailure:
    """A failure for an HTTP error response (httpx or the SDK's httpx2: same attributes)."""
    return RequestFailure("status", _body_detail(body if body is not None else response.text),
                          status=response.status_code, retry_after=parse_retry_after(response.headers))


def classify(exc: BaseException) -> RequestFailure | None:
    """Describe a request exception from the openai SDK, httpx or the standard library; None for anything else."""
    if isinstance(exc, RequestFailure):
        return exc
    openai = sys.modules.get("openai")
    if openai is not None and isinstance(exc, openai.OpenAIError):
        if isinstance(exc, openai.APITimeoutError):
            return RequestFailure("timeout")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            return RequestFailure("connection", type(cause).__name__ if cause is not None else "")
        if isinstance(exc, openai.APIStatusError):
            return _status(exc.response, exc.body)
        if isinstance(exc, openai.APIResponseValidationError):
            return RequestFailure("malformed", "the body does not match the API's schema")
        return None
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.HTTPError):
        if isinstance(exc, httpx.TimeoutException):
            return RequestFailure("timeout")
        if isinstance(exc, httpx.HTTPStatusError):
            return _status(exc.response)
        if isinstance(exc, httpx.TransportError):
            return RequestFailure("connection", type(exc).__name__)
        return None
    if isinstance(exc, json.JSONDecodeError):
        return RequestFailure("malformed", f"invalid JSON: {exc.msg}")
    if isinstance(exc, TimeoutError):
        return RequestFailure("timeout")
    if isinstance(exc, ConnectionError):
        return RequestFailure("connection", type(exc).__name__)
    return None


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets, ``Bearer`` tokens and ``sk-...`` keys replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _SK_RE.sub("sk-***", _BEARER_RE.sub(r"\1***", text))


def safe_url(url: str | None) -> str | None:
    """``url`` without user:password and query string, fit to be recorded or shown."""
    if not url:
        return url
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter; see the module docstring for what is retried."""

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("retry settings must not be negative")

    def delay(self, attempt: int, failure: RequestFailure) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        if failure.retry_after is not None:
            return min(failure.retry_after, self.max_retry_after)
        return min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)

    def call(self, fn: Callable[[], T], *, endpoint: str, secrets: Iterable[str | None] = (),
             error: type[Exception] = ServiceError) -> T:
        """``fn()`` with retries; raises ``error`` naming ``endpoint`` when it fails for good."""
        secrets = tuple(secrets)
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                time.sleep(self._after_failure(exc, attempt, endpoint, secrets, error))
            attempt += 1

    async def acall(self, fn: Callable[[], Awaitable[T]], *, endpoint: str, secrets: Iterable[str | None] = (),
                    error: type[Exception] = ServiceError) -> T:
        """Async :meth:`call`: awaits ``fn()`` and sleeps without blocking the event loop."""
        secrets = tuple(secrets)
        attempt = 0
        while True:
            try:
                return await fn()
            except Exception as exc:
                await asyncio.sleep(self._after_failure(exc, attempt, endpoint, secrets, error))
            attempt += 1

    def _after_failure(self, exc: Exception, attempt: int, endpoint: str, secrets: tuple, error: type) -> float:
        """The delay before the next try, or raise the final error (unknown exceptions propagate unchanged)."""
        failure = classify(exc)
        if failure is None:
            raise exc
        if not failure.retryable or attempt >= self.max_retries:
            tries = f" (gave up after {attempt + 1} attempts)" if failure.retryable else ""
            raise error(redact(f"{endpoint} {failure.describe()}{tries}", secrets)) from None
        delay = self.delay(attempt, failure)
        log.warning(redact(f"{endpoint} {failure.describe()}; retry {attempt + 1}/{self.max_retries} in "
                           f"{delay:.2f}s", secrets))
        return delay


class PerLoop(Generic[T]):
    """Objects built per running event loop on first use (async HTTP clients must not cross event loops).

    With ``copies > 1`` each loop gets that many, handed out in turn: httpcore's connection pool checks every one of
    its connections on each request, so spreading many concurrent requests over a few clients saves CPU.
    :func:`aclose_clients` closes those of the running loop.
    """

    def __init__(self, factory: Callable[[], T], copies: int = 1):
        self._factory, self._copies = factory, copies
        self._items: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[list[T], Iterator[T]]]" = (
            weakref.WeakKeyDictionary())
        _PER_LOOP.add(self)

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        entry = self._items.get(loop)
        if entry is None:
            items = [self._factory() for _ in range(self._copies)]
            entry = self._items[loop] = (items, itertools.cycle(items))
        return next(entry[1])

    def pop_running(self) -> list[T]:
        """Forget (and return) the objects of the running loop."""
        entry = self._items.pop(asyncio.get_running_loop(), None)
        return entry[0] if entry else []


_PER_LOOP: "weakref.WeakSet[PerLoop]" = weakref.WeakSet()


async def aclose_clients() -> None:
    """Close every async client MIRA built for the running event loop; call it before closing a loop you manage."""
    for per_loop in list(_PER_LOOP):
        for client in per_loop.pop_running():
            close = getattr(client, "aclose", None) or client.close  # httpx.AsyncClient / AsyncOpenAI
            await close()


INLINE_PIXELS = 512 * 512


async def encode_off_loop(pixels: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` (image encoding for a request) in a worker thread, or inline when the images are small
    (``pixels`` <= :data:`INLINE_PIXELS`): a thread hop costs more than encoding a small image, and a large one
    must not stall the other requests on the event loop."""
    if pixels <= INLINE_PIXELS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)
