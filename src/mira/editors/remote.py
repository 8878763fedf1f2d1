"""Editors behind HTTP: the OpenAI images API, and MIRA's own editor service with its client.

``openai-images:MODEL`` -> :class:`OpenAIImagesEditor`: ``images.edit`` of the OpenAI API (``gpt-image-1`` ...) or of
any server that implements ``POST {base_url}/images/edits``. The API takes no seed, so runs are not reproducible.

``http://HOST:PORT`` -> :class:`HTTPEditor`: a client of ``mira serve-editor``, which puts any local editor (FLUX.1
Kontext, Qwen-Image-Edit ... on its own GPU) behind :func:`editor_app`. Wire format (version ``mira-editor/1``)::

    GET  /health   -> 200 {"status": "ok", "protocol": "mira-editor/1",
                           "editor": {"name": ..., "params": {...}, "config": {...}}}
    POST /v1/edit     {"image": "<base64 PNG>", "instruction": "make the sky blue", "seed": 7}
                   -> 200 {"image": "<base64 PNG>", "params": {...}, "seed": 7, "seconds": 1.93}
    errors         -> {"error": {"message": "...", "type": "invalid_request" | "unauthorized" | "editor_error"}}
                      400 bad image or instruction, 401 wrong key, 500 the editor failed

With ``--api-key-env NAME`` the service requires ``Authorization: Bearer $NAME`` on ``/v1/edit``; clients pass
``api_key_env=NAME``. At most ``concurrency`` edits run at once (default 1: one GPU pipeline); further requests wait.

Clients retry per :mod:`mira.clients.retry` and raise :class:`~mira.editors.base.EditorError` naming the endpoint.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.

import asyncio
import base64
import binascii
import logging
import os
import secrets as _secrets
import time
from typing import Any

from PIL import Image

from mira.clients.openai_chat import OpenAIClients
from mira.clients.retry import PerLoop, RequestFailure, RetryPolicy, ServiceError, encode_off_loop, safe_url
from mira.editors.base import Editor, EditorError
from mira.trajectory import image_to_png_bytes

WIRE_PROTOCOL = "mira-editor/1"
ASYNC_CLIENTS = 4  # async httpx clients per event loop, used in turn (see mira.clients.retry.PerLoop)
log = logging.getLogger("mira.editors.remote")


def _b64_png(img: Image.Image) -> str:
    return base64.b64encode(image_to_png_bytes(img)).decode("ascii")


def _decode_image(data: Any, what: str) -> Image.Image:
    """An RGB image from base64 text sent by a server; anything else is a malformed reply."""
    from mira.images import InputError, load_image

    if not isinstance(data, str) or not data:
        raise RequestFailure("malformed", f"{what} has no base64 image")
    try:
        return load_image(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, InputError) as exc:
        raise RequestFailure("malformed", f"{what} is not a readable image: {exc}") from None


class OpenAIImagesEditor(Editor):
    """``images.edit`` of the OpenAI API as an editor (spec ``openai-images:MODEL``, e.g. ``gpt-image-1``).

    ``size``, ``quality``, ``input_fidelity`` and any other ``images.edit`` argument pass through when given.
    With ``keep_size`` (default) the result is resized to the input's size, so the loop's images stay comparable.
    """

    def __init__(
        self,
        model: str = "gpt-image-1",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        name: str | None = None,
        keep_size: bool = True,
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        **options: Any,
    ):
        try:
            self.clients = OpenAIClients(base_url, api_key, api_key_env, timeout, f"image model '{model}'")
        except (ServiceError, ValueError) as exc:
            raise EditorError(str(exc)) from None
        self.model = model
        self.name = name or model
        self.keep_size = keep_size
        self.options = {k: v for k, v in options.items() if v is not None}
        if model.startswith("dall-e"):
            self.options.setdefault("response_format", "b64_json")
        self.retry = RetryPolicy(max_retries=max_retries, backoff=backoff)
        self.endpoint = f"image edits of '{model}' at {safe_url(self.clients.base_url)}"

    def _request(self, image: Image.Image, instruction: str) -> dict[str, Any]:
        return {"model": self.model, "prompt": instruction, "n": 1,
                "image": ("image.png", image_to_png_bytes(image), "image/png"), **self.options}

    def _result(self, response: Any, source: Image.Image) -> Image.Image:
        data = getattr(response, "data", None)
        if not isinstance(data, list) or not data:
            raise RequestFailure("malformed", "no images in the reply")
        img = _decode_image(getattr(data[0], "b64_json", None), "the reply")
        if self.keep_size and img.size != source.size:
            img = img.resize(source.size, Image.Resampling.LANCZOS)
        return img

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        request = self._request(image, instruction)
        return self.retry.call(lambda: self._result(self.clients.sync.images.edit(**request), image),
                               endpoint=self.endpoint, secrets=(self.clients.api_key,), error=EditorError)

    async def aedit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        request = await encode_off_loop(image.width * image.height, self._request, image, instruction)
        client = self.clients.aio

        async def once() -> Image.Image:
            return self._result(await client.images.edit(**request), image)

        return await self.retry.acall(once, endpoint=self.endpoint, secrets=(self.clients.api_key,), error=EditorError)

    def params(self) -> dict[str, Any]:
        return {"model": self.model, "keep_size": self.keep_size, **self.options}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "backend": "openai-images", "base_url": safe_url(self.clients.base_url),
                **self.params()}


class HTTPEditor(Editor):
    """Client of ``mira serve-editor`` (spec ``http://host:port``), sync and natively async (httpx).

    On construction it reads ``/health`` (unless ``check=False``) to fail fast and to record the served editor's
    name and parameters in trajectories. ``timeout`` includes the time a request waits in the service's queue: when
    many trajectories share a one-edit-at-a-time service, raise it or lower their concurrency.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        api_key: str | None = None,
        api_key_env: str | None = None,
        name: str | None = None,
        check: bool = True,
    ):
        if not url.startswith(("http://", "https://")):
            raise EditorError(f"editor URL '{url}' must start with http:// or https://")
        if timeout <= 0:
            raise EditorError("timeout must be a positive number of seconds")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retry = RetryPolicy(max_retries=max_retries, backoff=backoff)
        self._api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        if api_key_env and not self._api_key:
            raise EditorError(f"the environment variable {api_key_env} (the editor service's key) is not set")
        self._headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self.endpoint = f"editor service at {safe_url(self.url)}"
        self._client: Any = None
        self._aclients = PerLoop(self._new_async_client, copies=ASYNC_CLIENTS)
        self.remote: dict[str, Any] = self.health() if check else {}
        self.name = name or self.remote.get("name") or "http-editor"

    def _new_async_client(self) -> Any:
        import httpx

        return httpx.AsyncClient(base_url=self.url, timeout=self.timeout, headers=self._headers)

    def _sync_client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(base_url=self.url, timeout=self.timeout, headers=self._headers)
        return self._client

    def _call(self, fn: Any) -> Any:
        return self.retry.call(fn, endpoint=self.endpoint, secrets=(self._api_key,), error=EditorError)

    def health(self) -> dict[str, Any]:
        """The served editor's description (``name``, ``params``, ``config``) from ``GET /health``."""

        def once() -> dict[str, Any]:
            response = self._sync_client().get("/health")
            response.raise_for_status()
            body = response.json()
            if not isinstance(body, dict) or body.get("status") != "ok" or not isinstance(body.get("editor"), dict):
                raise RequestFailure("malformed", f"/health is not a {WIRE_PROTOCOL} answer")
            return body["editor"]

        return self._call(once)

    @staticmethod
    def _payload(image: Image.Image, instruction: str, seed: int | None) -> dict[str, Any]:
        return {"image": _b64_png(image), "instruction": instruction, "seed": seed}

    @staticmethod
    def _result(response: Any) -> Image.Image:
        response.raise_for_status()
        body = response.json()
        return _decode_image(body.get("image") if isinstance(body, dict) else None, "the edit reply")

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        payload = self._payload(image, instruction, seed)
        return self._call(lambda: self._result(self._sync_client().post("/v1/edit", json=payload)))

    async def aedit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        payload = await encode_off_loop(image.width * image.height, self._payload, image, instruction, seed)
        client = self._aclients.get()

        async def once() -> Image.Image:
            return self._result(await client.post("/v1/edit", json=payload))

        return await self.retry.acall(once, endpoint=self.endpoint, secrets=(self._api_key,), error=EditorError)

    def params(self) -> dict[str, Any]:
        return dict(self.remote.get("params", {}))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "backend": "http", "url": safe_url(self.url),
                "remote": self.remote.get("config", {})}


# -- the service -------------------------------------------------------------------------------------------------
def editor_app(editor: Editor, *, concurrency: int = 1, api_key: str | None = None) -> Any:
    """A FastAPI app serving ``editor`` with the wire format of this module's docstring."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel

    from mira.images import InputError, load_image, validate_instruction

    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)
    app = FastAPI(title="MIRA editor service", version=WIRE_PROTOCOL)

    def error(status: int, kind: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    class EditRequest(BaseModel):
        image: str
        instruction: str
        seed: int | None = None

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) or "body" for e in exc.errors())
        return error(400, "invalid_request", f"expected JSON with image (base64 PNG), instruction and seed; bad: {fields}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "protocol": WIRE_PROTOCOL,
                "editor": {"name": editor.name, "params": editor.params(), "config": editor.config()}}

    @app.post("/v1/edit", response_model=None)
    async def edit(body: EditRequest, request: Request) -> Any:
        if api_key is not None:
            sent = request.headers.get("authorization", "")
            if not _secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                return error(401, "unauthorized", "missing or wrong API key (send Authorization: Bearer KEY)")
        try:
            image = load_image(base64.b64decode(body.image, validate=True))
            instruction = validate_instruction(body.instruction)
        except binascii.Error:
            return error(400, "invalid_request", "image is not base64 text; send a base64-encoded PNG")
        except InputError as exc:
            return error(400, "invalid_request", str(exc))
        async with gate:
            t0 = time.perf_counter()
            try:
                result = await editor.aedit(image, instruction, seed=body.seed)
            except Exception as exc:  # the service reports every editor failure to its client
                log.warning("edit failed: %s: %s", type(exc).__name__, exc)
                return error(500, "editor_error", f"{editor.name} failed: {type(exc).__name__}: {exc}")
            seconds = time.perf_counter() - t0
        if not isinstance(result, Image.Image):
            return error(500, "editor_error", f"{editor.name} returned {type(result).__name__}, not an image")
        encoded = await encode_off_loop(result.width * result.height, _b64_png, result)
        return JSONResponse({"image": encoded, "params": editor.params(), "seed": body.seed, "seconds": round(seconds, 4)})

    return app
