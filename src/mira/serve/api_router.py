"""HTTP layer of the MIRA server (FastAPI): OpenAI-compatible image edits, MIRA's step stream, models, health.

Endpoints:

- ``POST /v1/images/edits``: OpenAI's images API (multipart ``image`` or ``image[]`` + ``prompt``); answers like
  gpt-image-1 (``b64_json``), or with ``stream=true`` as ``image_edit.partial_image`` events (one per executed step,
  the first ``partial_images`` of them) and a final ``image_edit.completed``.
- ``POST /v1/mira/edits``: multipart ``image`` + ``instruction``; server-sent events ``mira.queued``,
  ``mira.started``, ``mira.decision``, ``mira.step`` (action, reasoning, image, timings) and ``mira.completed`` (final
  image + trajectory); ``stream=false`` returns the ``mira.completed`` body as JSON.
- ``GET /v1/models``, ``GET /health`` (no key needed), and the web UI at ``/ui``.

Every error is an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``. Uploads are read in memory
and sniffed by :func:`mira.images.load_image`; their file names and content types are ignored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from mira.serve.schemas import (
    CompletedEvent,
    DecisionEvent,
    Health,
    ImageData,
    ImageEditForm,
    ImagesResponse,
    MiraEditForm,
    MiraResult,
    ModelCard,
    ModelList,
    PartialImageEvent,
    QueuedEvent,
    StartedEvent,
    StepEvent,
)
from mira.serve.service import (
    Decision,
    EditService,
    Failed,
    Finished,
    Job,
    Queued,
    ServiceError,
    Started,
    StepDone,
    bad_request,
    byte_size,
    key_matches,
)
from mira.trajectory import Trajectory

FORM_OVERHEAD = 1024 * 1024  # room for the text fields and multipart framing next to the image


def build_app(service: EditService, *, api_key: str | None = None, ui: bool = True) -> FastAPI:
    """The FastAPI application around ``service``; with ``ui`` the Gradio page is mounted at ``/ui``."""
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="MIRA", summary="Iterative reasoning image editing, OpenAI-compatible.",
                  version=_version(), lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=service.config.max_upload_bytes + FORM_OVERHEAD)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(_router(service, api_key))
    if ui:
        import gradio as gr

        from mira.serve.ui import build_ui

        auth = None if api_key is None else (lambda _user, password: key_matches(password, api_key))
        gr.mount_gradio_app(app, build_ui(service), path="/ui", auth=auth, footer_links=[],
                            max_file_size=service.config.max_upload_bytes)
        app.add_api_route("/", lambda: RedirectResponse("/ui/"), include_in_schema=False)
    return app


def _router(service: EditService, api_key: str | None) -> APIRouter:
    router = APIRouter()
    auth = [Depends(_require_key(api_key))]
    created = int(time.time())
    name = service.config.model_name

    @router.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(model=name, **service.stats())

    @router.get("/v1/models", response_model=ModelList, dependencies=auth)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=name, created=created)])

    @router.post("/v1/images/edits", dependencies=auth, response_model=ImagesResponse,
                 openapi_extra=_multipart_schema(ImageEditForm))
    async def images_edits(request: Request) -> Any:
        form, image = await _read_form(request, ImageEditForm)
        if form.model not in (None, "", name):
            raise ServiceError(404, f"the model '{form.model}' does not exist; this server serves '{name}'",
                               param="model", code="model_not_found")
        if form.n not in (None, 1):
            raise bad_request("n must be 1: one MIRA run gives one image; send several requests for variations", "n")
        if form.response_format == "url":
            raise bad_request("response_format 'url' is not supported; use b64_json (the default)", "response_format")
        job = await _submit(service, image, form.prompt, form, "prompt")
        if form.stream:
            return _sse(_openai_stream(job, form))
        traj = await _final(job, request)
        error = _run_error(traj)
        if error is not None:
            raise error
        b64, size = await _encode(traj.final_image, form, form.size_tuple())
        body = ImagesResponse(created=int(time.time()), data=[ImageData(b64_json=b64)],
                              output_format=form.output_format, size=size)
        return JSONResponse(body.model_dump(), headers={"X-MIRA-Trajectory-Id": traj.id,
                                                        "X-MIRA-Stop-Reason": str(traj.stop_reason),
                                                        "X-MIRA-Steps": str(len(traj.steps))})

    @router.post("/v1/mira/edits", dependencies=auth, response_model=MiraResult,
                 openapi_extra=_multipart_schema(MiraEditForm))
    async def mira_edits(request: Request) -> Any:
        form, image = await _read_form(request, MiraEditForm)
        job = await _submit(service, image, form.instruction, form, "instruction")
        if form.stream:
            return _sse(_mira_stream(job, form))
        return await _mira_result(await _final(job, request), form)

    return router


# -- requests --------------------------------------------------------------------------------------------------------
async def _read_form(request: Request, model: type[BaseModel]) -> tuple[Any, bytes]:
    """Parse the multipart body: the one image file (field ``image`` or ``image[]``) and the validated fields."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("send multipart/form-data with an 'image' file and the text fields", code="invalid_body")
    form = await request.form(max_files=4, max_fields=64)
    try:
        if form.get("mask") is not None:
            raise bad_request("masks are not supported: MIRA decides where to edit from the instruction", "mask")
        uploads = form.getlist("image") + form.getlist("image[]")
        if not uploads:
            raise bad_request("no image: send the image to edit as the multipart file field 'image'", "image")
        if len(uploads) > 1:
            raise bad_request(f"got {len(uploads)} images; MIRA edits one image per request", "image")
        if not isinstance(uploads[0], UploadFile):
            raise bad_request("'image' must be a file upload, not a text field", "image")
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        try:
            parsed = model.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            raise bad_request(f"{param}: {first['msg']}", param) from None
        return parsed, await uploads[0].read()
    finally:
        await form.close()


async def _submit(service: EditService, image: bytes, instruction: str, form: Any, instruction_param: str) -> Job:
    edit = await asyncio.to_thread(service.prepare, image, instruction, max_steps=form.max_steps, seed=form.seed,
                                   instruction_param=instruction_param)
    return service.submit(edit)


async def _final(job: Job, request: Request) -> Trajectory:
    """Wait for the job's trajectory; cancels it if the client disconnects first."""
    watcher = asyncio.create_task(_cancel_on_disconnect(job, request))
    try:
        async for event in job.events():
            if isinstance(event, Finished):
                return event.trajectory
            if isinstance(event, Failed):
                raise event.error
        raise ServiceError(500, "the edit ended without a result", type="server_error")
    finally:
        watcher.cancel()
        job.cancel()


async def _cancel_on_disconnect(job: Job, request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.5)
    job.cancel()


def _run_error(traj: Trajectory) -> ServiceError | None:
    """A run that ended in a backend failure is an error for OpenAI clients (MIRA clients get the trajectory)."""
    if traj.stop_reason in ("policy_error", "editor_error"):
        return ServiceError(500, f"the edit failed: {traj.error}", type="server_error", code=traj.stop_reason)
    return None


# -- responses -------------------------------------------------------------------------------------------------------
def _encode_sync(img: Image.Image, fmt: str, quality: int | None, size: tuple[int, int] | None) -> tuple[str, str]:
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    # PNG at zlib level 1: photos barely compress further, and encoding at level 6 is several times slower
    options: dict[str, Any] = {"compress_level": 1} if fmt == "png" else {"quality": quality or 90}
    img.save(buf, format=fmt.upper(), **options)
    return base64.b64encode(buf.getvalue()).decode("ascii"), f"{img.width}x{img.height}"


async def _encode(img: Image.Image, form: Any, size: tuple[int, int] | None = None) -> tuple[str, str]:
    """Base64 of ``img`` in the requested format (encoding runs off the event loop)."""
    return await asyncio.to_thread(_encode_sync, img, form.output_format, form.output_compression, size)


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event(payload: BaseModel | dict) -> str:
    data = payload.model_dump() if isinstance(payload, BaseModel) else payload
    name = data.get("type", "error")
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


_DONE = "data: [DONE]\n\n"


async def _openai_stream(job: Job, form: ImageEditForm) -> AsyncIterator[str]:
    sent = 0
    size = form.size_tuple()
    try:
        async for event in job.events():
            if isinstance(event, StepDone) and event.step.image is not None and sent < form.partial_images:
                b64, text = await _encode(event.step.image, form, size)
                yield _event(PartialImageEvent(b64_json=b64, created_at=int(time.time()), size=text,
                                               output_format=form.output_format, partial_image_index=sent))
                sent += 1
            elif isinstance(event, Finished):
                error = _run_error(event.trajectory)
                if error is not None:
                    yield _event(error.body())
                else:
                    b64, text = await _encode(event.trajectory.final_image, form, size)
                    yield _event(CompletedEvent(b64_json=b64, created_at=int(time.time()), size=text,
                                                output_format=form.output_format))
            elif isinstance(event, Failed):
                yield _event(event.error.body())
        yield _DONE
    finally:
        job.cancel()


async def _mira_stream(job: Job, form: MiraEditForm) -> AsyncIterator[str]:
    try:
        async for event in job.events():
            if isinstance(event, Queued):
                yield _event(QueuedEvent(id=job.id, position=event.position))
            elif isinstance(event, Started):
                req = event.request
                yield _event(StartedEvent(id=job.id, instruction=req.instruction, max_steps=req.max_steps,
                                          seed=req.seed, size=f"{req.image.width}x{req.image.height}"))
            elif isinstance(event, Decision):
                parsed = event.parsed
                yield _event(DecisionEvent(index=event.index, action=parsed.action, reasoning=parsed.reasoning,
                                           stop=parsed.is_stop))
            elif isinstance(event, StepDone):
                yield _event(await _step_event(event, form))
            elif isinstance(event, Finished):
                yield _event(await _mira_result(event.trajectory, form))
            else:
                yield _event(event.error.body())
        yield _DONE
    finally:
        job.cancel()


async def _step_event(event: StepDone, form: MiraEditForm) -> StepEvent:
    step = event.step
    image = None
    if step.image is not None and form.step_images:
        image, _ = await _encode(step.image, form)
    note = step.extra.get("not_executed") or step.extra.get("editor_error")
    return StepEvent(index=step.index, action=step.action, reasoning=step.reasoning, stop=step.is_stop,
                     executed=step.image is not None, image=image, seed=step.seed,
                     policy_seconds=round(step.policy_seconds, 4), editor_seconds=round(step.editor_seconds, 4),
                     note=note)


async def _mira_result(traj: Trajectory, form: MiraEditForm) -> MiraResult:
    b64, size = await _encode(traj.final_image, form)
    return MiraResult(id=traj.id, stop_reason=str(traj.stop_reason), error=traj.error, image=b64,
                      output_format=form.output_format, size=size, trajectory=traj.to_dict())


# -- auth, limits, errors --------------------------------------------------------------------------------------------
def _require_key(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ServiceError(401, "missing API key: send the header 'Authorization: Bearer <key>' with the key "
                                    "the server was started with (--api-key or MIRA_API_KEY)",
                               code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if not key_matches(token.strip(), api_key):
            raise ServiceError(401, "incorrect API key; use the key the server was started with",
                               code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return check


class BodyLimit:
    """Answers 413 (OpenAI-style body) to API requests whose body exceeds ``max_bytes``, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = await _service_error(None, self._error())
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._error()
            return message

        await self.app(scope, limited, send)

    def _error(self) -> ServiceError:
        return ServiceError(413, f"the request body is over the server's {byte_size(self.max_bytes)} limit; "
                                 "send a smaller image", code="request_too_large")


async def _service_error(_request: Request | None, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    error = ServiceError(exc.status_code, str(exc.detail), type=kind, code=_HTTP_CODES.get(exc.status_code),
                         headers=dict(exc.headers or {}))
    return await _service_error(request, error)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(p) for p in first["loc"][1:]) or None
    return await _service_error(request, bad_request(f"{param or 'request'}: {first['msg']}", param))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    error = ServiceError(500, f"internal server error: {type(exc).__name__}", type="server_error")
    return await _service_error(request, error)


def _multipart_schema(model: type[BaseModel]) -> dict:
    """OpenAPI description of a multipart body: the image file plus the fields of ``model``."""
    schema = model.model_json_schema()
    schema["properties"] = {"image": {"type": "string", "format": "binary"}, **schema["properties"]}
    schema["required"] = ["image", *schema.get("required", [])]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _version() -> str:
    from mira import __version__

    return __version__
