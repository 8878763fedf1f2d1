"""The serving logic behind the HTTP API and the web UI: one agent, one edit at a time, a bounded queue.

A GPU edits one request at a time, so edits run on a single worker thread that owns the agent. Requests wait in a
bounded queue; when it is full :meth:`EditService.submit` raises a 503 with ``Retry-After``. Each admitted request
becomes a :class:`Job` whose events (queued, started, decision, step, finished) are read with ``async for`` from
whatever event loop submitted it (FastAPI's or Gradio's).

Jobs stop early, at the next step boundary, when their client goes away (:meth:`Job.cancel`) or their deadline
passes: the agent's callbacks raise and the loop ends; a request that times out while still queued never starts.
The loop itself is unchanged: this module only listens to it through :class:`mira.agent.AgentCallback`.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Optional, Union

from PIL import Image

from mira.agent import AgentCallback, MiraAgent
from mira.images import InputError, load_image, validate_instruction
from mira.protocol import ParsedCompletion
from mira.trajectory import Step, Trajectory


@dataclass
class ServiceConfig:
    """Limits of a server; every one is a ``mira serve`` option."""

    model_name: str = "mira"
    max_queue: int = 8
    timeout_s: float = 600.0
    max_upload_bytes: int = 32 * 1024 * 1024
    max_upload_pixels: int = 24_000_000
    default_max_steps: int = 8
    max_steps_limit: int = 32


class ServiceError(Exception):
    """A failure to report to the client as an OpenAI-style error body with ``status``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ServiceError:
    return ServiceError(400, message, param=param, code=code)


@dataclass
class EditRequest:
    """A validated edit. ``run_dir`` is for trusted in-process callers (the web UI), never set from HTTP."""

    image: Image.Image
    instruction: str
    max_steps: int
    seed: int
    run_dir: Optional[Path] = None


# -- events ----------------------------------------------------------------------------------------------------------
@dataclass
class Queued:
    position: int


@dataclass
class Started:
    request: EditRequest


@dataclass
class Decision:
    index: int
    parsed: ParsedCompletion


@dataclass
class StepDone:
    step: Step


@dataclass
class Finished:
    trajectory: Trajectory


@dataclass
class Failed:
    error: ServiceError


Event = Union[Queued, Started, Decision, StepDone, Finished, Failed]


class _Abort(Exception):
    """Raised from the agent's callbacks to end a run whose client left or whose deadline passed."""


class Job:
    """One admitted edit. Iterate :meth:`events` once; call :meth:`cancel` when its client goes away."""

    def __init__(self, request: EditRequest, deadline: float, loop: asyncio.AbstractEventLoop):
        self.id = uuid.uuid4().hex[:12]
        self.request = request
        self.deadline = deadline
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop the job: it never starts if queued, and a running one ends at its next step boundary."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, event: Event) -> None:
        """Hand an event to the submitting event loop (callable from any thread)."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the submitting loop has closed: nobody is listening any more
            self.cancel()

    async def events(self) -> AsyncIterator[Event]:
        """Events up to and including :class:`Finished` or :class:`Failed`; a passed deadline yields a 504."""
        while True:
            try:
                event = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    remaining = max(self.deadline - time.monotonic(), 0.0)
                    event = await asyncio.wait_for(self._queue.get(), timeout=remaining)
                except asyncio.TimeoutError:
                    self.cancel()
                    yield Failed(ServiceError(504, "the edit did not finish within the server's time limit; try "
                                                   "fewer steps or a smaller image", type="server_error",
                                              code="timeout"))
                    return
            yield event
            if isinstance(event, (Finished, Failed)):
                return


class _JobCallback(AgentCallback):
    def __init__(self, job: Job):
        self.job = job

    def on_run_start(self, trajectory: Trajectory) -> None:
        trajectory.id = self.job.id  # one id from the queue event to the result and the run folder

    def _check(self) -> None:
        if self.job.cancelled or time.monotonic() > self.job.deadline:
            raise _Abort

    def on_decision(self, index: int, parsed: ParsedCompletion, trajectory: Trajectory) -> None:
        self._check()
        self.job.emit(Decision(index, parsed))

    def on_step(self, step: Step, trajectory: Trajectory) -> None:
        self.job.emit(StepDone(step))
        self._check()


class EditService:
    """Holds the agent (models loaded once) and runs its edits one at a time from a bounded queue."""

    def __init__(self, agent: MiraAgent, config: ServiceConfig | None = None):
        self.agent = agent
        self.config = config or ServiceConfig()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mira-edit")
        self._lock = threading.Lock()
        self._pending = 0  # admitted and not finished, the running one included
        self._running = 0
        self._counts = {"completed": 0, "failed": 0, "cancelled": 0}
        self._mean_seconds = 0.0
        self._jobs: set[Job] = set()

    # -- validation --------------------------------------------------------------------------------------------------
    def prepare(self, image: bytes, instruction: object, *, max_steps: int | None = None, seed: int | None = None,
                image_param: str = "image", instruction_param: str = "prompt",
                run_dir: Path | None = None) -> EditRequest:
        """Check an upload against the server's limits and :func:`mira.images.load_image`; 400/413 on failure."""
        cfg = self.config
        if len(image) > cfg.max_upload_bytes:
            raise ServiceError(413, f"the image is {byte_size(len(image))}, over the server's "
                                    f"{byte_size(cfg.max_upload_bytes)} limit; send a smaller file",
                               param=image_param, code="image_too_large")
        pixels = _header_pixels(image)
        if pixels is not None and pixels > cfg.max_upload_pixels:
            raise ServiceError(413, f"the image has {pixels / 1e6:.1f} megapixels, over the server's "
                                    f"{cfg.max_upload_pixels / 1e6:.0f} megapixel limit; resize it first",
                               param=image_param, code="image_too_large")
        try:
            text = validate_instruction(instruction)
        except InputError as exc:
            raise bad_request(str(exc), instruction_param) from None
        try:
            img = load_image(image)
        except InputError as exc:
            raise bad_request(str(exc), image_param, code="invalid_image") from None
        steps = cfg.default_max_steps if max_steps is None else max_steps
        if not 1 <= steps <= cfg.max_steps_limit:
            raise bad_request(f"max_steps must be between 1 and {cfg.max_steps_limit}, got {steps}", "max_steps")
        return EditRequest(img, text, steps, self.agent.config.seed if seed is None else seed, run_dir)

    # -- queue -------------------------------------------------------------------------------------------------------
    def submit(self, request: EditRequest) -> Job:
        """Admit an edit (503 with ``Retry-After`` when the queue is full); call from a running event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._pending > self.config.max_queue:
                retry = max(1, min(60, math.ceil(self._mean_seconds or 1.0)))
                raise ServiceError(
                    503, f"the server is busy: {self._pending} edits are running or queued; retry in {retry} s",
                    type="server_error", code="queue_full", headers={"Retry-After": str(retry)})
            position = self._pending
            self._pending += 1
            job = Job(request, time.monotonic() + self.config.timeout_s, loop)
            self._jobs.add(job)
        job.emit(Queued(position))
        self._worker.submit(self._run, job)
        return job

    def _run(self, job: Job) -> None:
        outcome = "cancelled"
        start = time.monotonic()
        if not job.cancelled and start <= job.deadline:
            with self._lock:
                self._running += 1
            try:
                job.emit(Started(job.request))
                req = job.request
                traj = self.agent.run(req.image, req.instruction, seed=req.seed, max_steps=req.max_steps,
                                      run_dir=req.run_dir, callbacks=[_JobCallback(job)])
                outcome = "failed" if traj.stop_reason in ("policy_error", "editor_error") else "completed"
                job.emit(Finished(traj))
            except _Abort:
                pass
            except Exception as exc:  # an unexpected failure of one edit must not stop the worker
                outcome = "failed"
                job.emit(Failed(ServiceError(500, f"the edit failed: {type(exc).__name__}: {exc}",
                                             type="server_error", code="internal_error")))
            finally:
                with self._lock:
                    self._running -= 1
        with self._lock:
            self._pending -= 1
            self._jobs.discard(job)
            self._counts[outcome] += 1
            if outcome != "cancelled":
                elapsed = time.monotonic() - start
                self._mean_seconds = elapsed if not self._mean_seconds else 0.8 * self._mean_seconds + 0.2 * elapsed

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": self._running, "waiting": self._pending - self._running,
                    "max_queue": self.config.max_queue, **self._counts}

    def close(self) -> None:
        """Shut down: every job is told so and cancelled; the running one stops at its next step boundary."""
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.emit(Failed(ServiceError(503, "the server is shutting down; retry on another server or later",
                                         type="server_error", code="shutting_down")))
            job.cancel()
        self._worker.shutdown(wait=True, cancel_futures=True)


def key_matches(given: str, key: str) -> bool:
    """Constant-time comparison of a client's API key with the server's."""
    return hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))


def byte_size(n: int) -> str:
    """``n`` bytes for people: 512 B, 195 KiB, 1.5 MiB."""
    if n < 1024:
        return f"{n} B"
    if n < 2**20:
        return f"{n / 1024:.0f} KiB"
    return f"{n / 2**20:.1f} MiB"


def _header_pixels(data: bytes) -> int | None:
    """Width x height from the image header (nothing is decoded); None when PIL cannot read a header."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            return w * h
    except Exception:  # load_image reports unreadable input with the right message
        return None
