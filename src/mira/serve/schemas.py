"""Request and response bodies of the MIRA server (pydantic).

Form fields arrive as text (multipart/form-data); the request models coerce them. Fields that OpenAI's images API
defines but MIRA cannot honour (``quality``, ``background``, ``input_fidelity``, ...) are accepted and ignored, so that
unchanged OpenAI clients keep working; the ones whose meaning MIRA would silently change (``n``, ``mask``,
``response_format="url"``) are refused with a 400 that names the parameter.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

OutputFormat = Literal["png", "jpeg", "webp"]
_SIZE_RE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
MIN_SIDE, MAX_SIDE = 16, 4096


class _Form(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    max_steps: Optional[int] = Field(None, ge=1, description="Most edits the agent may issue (MIRA extension).")
    seed: Optional[int] = Field(None, ge=0, lt=2**31, description="Base seed of the run (MIRA extension).")
    output_format: OutputFormat = "png"
    output_compression: Optional[int] = Field(None, ge=0, le=100, description="JPEG/WebP quality, 0-100 (90).")


class ImageEditForm(_Form):
    """Fields of ``POST /v1/images/edits`` besides the image file (OpenAI images API)."""

    prompt: str = Field(description="The complex editing instruction.")
    model: Optional[str] = None
    n: Optional[int] = Field(None, description="Only 1 is supported.")
    size: Optional[str] = Field(None, description="'auto' (default: the editor's size) or WIDTHxHEIGHT.")
    response_format: Optional[Literal["b64_json", "url"]] = None
    stream: bool = False
    partial_images: int = Field(0, ge=0, description="Stream the first N step images as partial images.")

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: Optional[str]) -> Optional[str]:
        if value in (None, "", "auto"):
            return None
        match = _SIZE_RE.match(value)
        if not match or not all(MIN_SIDE <= int(side) <= MAX_SIDE for side in match.groups()):
            raise ValueError(f"size must be 'auto' or WIDTHxHEIGHT with sides from {MIN_SIDE} to {MAX_SIDE}")
        return value

    def size_tuple(self) -> Optional[tuple[int, int]]:
        if self.size is None:
            return None
        w, h = self.size.split("x")
        return int(w), int(h)


class MiraEditForm(_Form):
    """Fields of ``POST /v1/mira/edits`` besides the image file."""

    instruction: str = Field(validation_alias=AliasChoices("instruction", "prompt"),
                             description="The complex editing instruction ('prompt' is accepted too).")
    stream: bool = Field(True, description="Server-sent events per step (default) or one JSON body at the end.")
    step_images: bool = Field(True, description="Include each step's image in the step events.")


# -- responses -------------------------------------------------------------------------------------------------------
class ErrorInfo(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorInfo


class ImageData(BaseModel):
    b64_json: str
    revised_prompt: Optional[str] = None


class ImagesResponse(BaseModel):
    """Body of a non-streamed ``/v1/images/edits`` answer, as gpt-image-1 returns it."""

    created: int
    data: list[ImageData]
    output_format: OutputFormat
    size: str
    background: Literal["opaque"] = "opaque"
    quality: Literal["auto"] = "auto"


class _ImageEditEvent(BaseModel):
    b64_json: str
    created_at: int
    output_format: OutputFormat
    size: str
    background: Literal["opaque"] = "opaque"
    quality: Literal["auto"] = "auto"


class PartialImageEvent(_ImageEditEvent):
    """``image_edit.partial_image``: the image after one executed step."""

    type: Literal["image_edit.partial_image"] = "image_edit.partial_image"
    partial_image_index: int


class CompletedEvent(_ImageEditEvent):
    """``image_edit.completed``: the final image."""

    type: Literal["image_edit.completed"] = "image_edit.completed"


class QueuedEvent(BaseModel):
    type: Literal["mira.queued"] = "mira.queued"
    id: str
    position: int = Field(description="Edits ahead of this one (0: it starts next).")


class StartedEvent(BaseModel):
    type: Literal["mira.started"] = "mira.started"
    id: str
    instruction: str
    max_steps: int
    seed: int
    size: str


class DecisionEvent(BaseModel):
    """The policy's decision for a step, sent before the editor runs it."""

    type: Literal["mira.decision"] = "mira.decision"
    index: int
    action: str
    reasoning: str
    stop: bool


class StepEvent(BaseModel):
    """One finished step: the decision, its timings and (unless it was ``<STOP>`` or failed) the new image."""

    type: Literal["mira.step"] = "mira.step"
    index: int
    action: str
    reasoning: str
    stop: bool
    executed: bool
    image: Optional[str] = Field(None, description="Base64 image after this step (output_format).")
    seed: Optional[int] = None
    policy_seconds: float
    editor_seconds: float
    note: Optional[str] = Field(None, description="Why the step was not executed, if it was not.")


class MiraResult(BaseModel):
    """The final result with the whole trajectory (the body of ``stream=false``, the last event otherwise)."""

    type: Literal["mira.completed"] = "mira.completed"
    id: str
    stop_reason: str
    error: Optional[str] = None
    image: str = Field(description="Base64 final image (output_format).")
    output_format: OutputFormat
    size: str
    trajectory: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mira"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    running: int
    waiting: int
    max_queue: int
    completed: int
    failed: int
    cancelled: int
