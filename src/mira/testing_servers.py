"""Real HTTP servers on 127.0.0.1 for tests, examples and benchmarks, with scripted answers, latency and faults.

- :class:`LoopbackServer` runs any ASGI app (FastAPI, :func:`mira.editors.remote.editor_app` ...) with uvicorn in a
  background thread on a free port, records every request and can answer the next requests with scripted
  :class:`Fault` s (status, ``Retry-After``, raw body, delay) instead of the app.
- :class:`ScriptedOpenAIServer` is an OpenAI-compatible server: ``POST /v1/chat/completions`` answers from a
  ``responder(request) -> str | list[str]`` (a policy's plan, a judge's scores, a rewriter's text) and
  ``POST /v1/images/edits`` from an ``image_responder(image, prompt) -> PIL image``.
- :class:`ScriptedEditor` is a pure-PIL editor (a colour wash derived from the instruction) with optional latency.

::

    with ScriptedOpenAIServer(plan_responder(["make the sky blue"]), latency=0.2) as server:
        server.inject(Fault(429, retry_after=0.1))          # the next request gets a 429
        policy = OpenAIPolicy("scripted", base_url=server.base_url)

Requires the ``serve`` extra (fastapi, uvicorn, python-multipart).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import re
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from PIL import Image

from mira.editors.base import Editor
from mira.protocol import STOP, format_completion

Responder = Callable[[dict[str, Any]], "str | list[str]"]
ImageResponder = Callable[[Image.Image, str], Image.Image]


@dataclass(frozen=True)
class Fault:
    """A scripted answer that replaces the app's: ``delay`` seconds of silence, then ``status`` with ``body``.

    ``Fault(429, retry_after=0.1)`` rate-limits, ``Fault(503)`` is a server error, ``Fault(200, body="{oops")`` a
    malformed body, ``Fault(delay=30)`` a hang (the client times out first).
    """

    status: int = 500
    retry_after: float | None = None
    body: str | None = None
    delay: float = 0.0
    content_type: str = "application/json"


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tint(image: Image.Image, text: str, strength: float = 0.3) -> Image.Image:
    """``image`` washed with a colour derived from ``text``: a deterministic, visible, instruction-dependent edit."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    wash = Image.new("RGB", image.size, tuple(digest[:3]))
    return Image.blend(image.convert("RGB"), wash, strength)


class LoopbackServer:
    """An ASGI app served by uvicorn on ``127.0.0.1:<free port>`` in a daemon thread (a context manager).

    ``latency`` seconds are added to every request (without blocking other requests). ``requests`` holds the
    method, path and headers of every request received; ``max_in_flight`` the most requests handled at once.
    """

    def __init__(self, app: Any, *, latency: float = 0.0):
        self.app = app
        self.latency = latency
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self.port: int | None = None
        self._faults: deque[Fault] = deque()
        self._sticky: Fault | None = None
        self._running: contextlib.ExitStack | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started; use it as a context manager or call start()")
        return f"http://127.0.0.1:{self.port}"

    def inject(self, fault: Fault, times: int | None = 1) -> None:
        """Answer the next ``times`` requests with ``fault`` (None: every request until :meth:`clear_faults`)."""
        if times is None:
            self._sticky = fault
        else:
            self._faults.extend([fault] * times)

    def clear_faults(self) -> None:
        self._faults.clear()
        self._sticky = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append({"method": scope["method"], "path": scope["path"], "headers": headers})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._answer(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _answer(self, scope: dict, receive: Callable, send: Callable) -> None:
        fault = self._faults.popleft() if self._faults else self._sticky
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is None:
            return await self.app(scope, receive, send)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        body = fault.body if fault.body is not None else json.dumps(
            {"error": {"message": f"injected HTTP {fault.status}", "type": "injected"}})
        out_headers = [(b"content-type", fault.content_type.encode())]
        if fault.retry_after is not None:
            out_headers.append((b"retry-after", f"{fault.retry_after:g}".encode()))
        await send({"type": "http.response.start", "status": fault.status, "headers": out_headers})
        await send({"type": "http.response.body", "body": body.encode("utf-8")})

    def start(self) -> "LoopbackServer":
        from mira.serve.commands import running_server

        self._running = contextlib.ExitStack()
        url = self._running.enter_context(running_server(self))
        self.port = int(url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def user_text_of(request: dict[str, Any]) -> str:
    """All text of the user turns of a chat request."""
    texts = []
    for message in request.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        texts += [p.get("text", "") for p in parts if p.get("type") == "text"]
    return "\n".join(texts)


def plan_responder(plan: Sequence[str], *, stop: bool = True) -> Responder:
    """A policy that issues ``plan`` one edit per step (it counts the edits listed in the prompt), then ``<STOP>``.

    With ``stop=False`` it repeats the last planned edit instead of stopping.
    """
    plan = list(plan)

    def respond(request: dict[str, Any]) -> str:
        done = len(re.findall(r"\n\d+\. ", user_text_of(request)))
        if done < len(plan):
            return format_completion(plan[done], f"{done} of {len(plan)} planned edits are done.")
        if stop or not plan:
            return format_completion(STOP, "Every planned edit is visible.")
        return format_completion(plan[-1], "Repeat the last edit.")

    return respond


class ScriptedOpenAIServer(LoopbackServer):
    """An OpenAI-compatible chat + images-edit server with scripted answers (``base_url`` is ``url + "/v1"``).

    ``chat_requests`` and ``image_requests`` hold the parsed bodies received (images of image edits as PIL).
    """

    def __init__(
        self,
        responder: Responder | str | None = None,
        *,
        image_responder: ImageResponder = tint,
        latency: float = 0.0,
    ):
        self.responder: Responder = (
            (lambda _request, text=responder: text) if isinstance(responder, str)
            else responder or plan_responder(["make the sky blue"])
        )
        self.image_responder = image_responder
        self.chat_requests: list[dict[str, Any]] = []
        self.image_requests: list[dict[str, Any]] = []
        super().__init__(self._build_app(), latency=latency)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def _build_app(self) -> Any:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        app = FastAPI()

        def bad(message: str) -> JSONResponse:
            return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=400)

        @app.post("/v1/chat/completions", response_model=None)
        async def chat(request: Request) -> Any:
            try:
                body = await request.json()
            except ValueError:
                return bad("the body is not JSON")
            self.chat_requests.append(body)
            n = int(body.get("n") or 1)
            answer = self.responder(body)
            texts = [answer] * n if isinstance(answer, str) else list(answer)
            return JSONResponse({
                "id": f"chatcmpl-{len(self.chat_requests)}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                            for i, t in enumerate(texts)],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            })

        @app.post("/v1/images/edits", response_model=None)
        async def images_edit(request: Request) -> Any:
            form = await request.form()
            upload = form.get("image") or next(iter(form.getlist("image[]")), None)
            prompt = form.get("prompt")
            if upload is None or not isinstance(prompt, str):
                return bad("image and prompt are required")
            image = Image.open(io.BytesIO(await upload.read())).convert("RGB")
            fields = {k: v for k, v in form.items() if k not in ("image", "image[]")}
            self.image_requests.append({**fields, "image": image})
            buf = io.BytesIO()
            self.image_responder(image, prompt).save(buf, format="PNG")
            return JSONResponse({"created": int(time.time()),
                                 "data": [{"b64_json": base64.b64encode(buf.getvalue()).decode()}]})

        return app


class ScriptedEditor(Editor):
    """A pure-PIL editor: :func:`tint` by the instruction, after ``latency`` seconds (natively async in :meth:`aedit`)."""

    name = "scripted-editor"

    def __init__(self, latency: float = 0.0, strength: float = 0.3):
        self.latency, self.strength = latency, strength
        self.calls: list[tuple[str, int | None]] = []

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        self.calls.append((instruction, seed))
        time.sleep(self.latency)
        return tint(image, instruction, self.strength)

    async def aedit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        self.calls.append((instruction, seed))
        await asyncio.sleep(self.latency)
        return tint(image, instruction, self.strength)

    def params(self) -> dict[str, Any]:
        return {"latency": self.latency, "strength": self.strength}
