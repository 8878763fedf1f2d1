"""Evaluation test helpers: a benchmark of real photographs, deterministic fakes for loop logic, and a scripted
VLM (judge, rewriter, planner) served over HTTP on 127.0.0.1 by a small OpenAI-compatible FastAPI server.

Everything here is deterministic across processes (hashlib, never ``hash()``), so a killed-and-resumed run, a Ray
worker and a local run all produce the same results.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request
from PIL import Image

from mira.editors.base import Editor
from mira.eval.benchmarks import Sample, write_local
from mira.eval.runner import Backends
from mira.judges.viescore import VIEScoreJudge
from mira.policies.base import Policy
from mira.policies.baselines import PassthroughPolicy, RewritePolicy, VLMPlanPolicy
from mira.protocol import STOP, Observation, format_completion
from mira.vlm import ChatBackend

PHOTOS = {  # skimage.data photo -> a complex instruction about it
    "astronaut": "make the flag green, the suit golden and the background black",
    "coffee": "make the cup red, the saucer blue and the table black",
    "chelsea": "make the cat white and the wall purple",
    "rocket": "make the sky orange, the rocket silver and the trees brown",
    "hubble_deep_field": "make the large galaxy pink and remove the bright star",
}


def photo_samples(n: int = 3, size: tuple[int, int] = (96, 64)) -> list[Sample]:
    """``n`` samples on sample photographs that ship with scikit-image."""
    import skimage.data

    samples = []
    for name, instruction in list(PHOTOS.items())[:n]:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size, Image.Resampling.BILINEAR)
        samples.append(Sample(name, instruction, image, atomic=split_instruction(instruction)))
    return samples


def photo_benchmark(directory: Path, n: int = 3) -> Path:
    """A local benchmark folder (samples.jsonl + images) of :func:`photo_samples`."""
    return write_local(directory, photo_samples(n))


def split_instruction(instruction: str) -> list[str]:
    parts = re.split(r",\s*|\s+and\s+", instruction.rstrip("."))
    subject = parts[0].split(" ")[0]  # "make" / "remove"
    return [p if p.split(" ")[0] in ("make", "remove") else f"{subject} {p}" for p in parts if p]


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


class TintEditor(Editor):
    """Blends the image with a colour derived from the instruction and seed; optional latency."""

    name = "tint"

    def __init__(self, latency: float = 0.0, strength: float = 0.3):
        self.latency, self.strength = latency, strength
        self.calls = 0

    def _tint(self, image: Image.Image, instruction: str, seed: int | None) -> Image.Image:
        self.calls += 1
        h = _digest(instruction, seed)
        colour = Image.new("RGB", image.size, (h & 255, h >> 8 & 255, h >> 16 & 255))
        return Image.blend(image, colour, self.strength)

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        time.sleep(self.latency)
        return self._tint(image, instruction, seed)

    async def aedit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        await asyncio.sleep(self.latency)
        return self._tint(image, instruction, seed)

    def params(self) -> dict[str, Any]:
        return {"strength": self.strength}


class SplitPolicy(Policy):
    """A stand-in for a good MIRA policy: issues the instruction's parts one per step, then STOP."""

    name = "split"

    def __init__(self, latency: float = 0.0):
        self.latency = latency

    def _answer(self, observation: Observation, n: int) -> list[str]:
        parts = split_instruction(observation.instruction)
        done = len(observation.history)
        action = parts[done] if done < len(parts) else STOP
        return [format_completion(action, f"{done} of {len(parts)} parts done.")] * n

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        time.sleep(self.latency)
        return self._answer(observation, n)

    async def agenerate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        await asyncio.sleep(self.latency)
        return self._answer(observation, n)


# -- the scripted VLM ------------------------------------------------------------------------------------------------
def _decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def request_parts(body: dict[str, Any]) -> tuple[str, list[Image.Image], bool]:
    """(all user text, the images in order, whether this is a retry after an unreadable reply)."""
    texts, images = [], []
    for message in body["messages"]:
        content = message["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if part.get("type") == "text" and message["role"] == "user":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                images.append(_decode(part["image_url"]["url"]))
    return "\n".join(texts), images, any(m["role"] == "assistant" for m in body["messages"])


def scripted_vlm(body: dict[str, Any]) -> str:
    """Answers judge, rewrite and plan prompts from what the request shows (deterministic; reply shapes vary)."""
    text, images, retry = request_parts(body)
    key = _digest(*(hashlib.sha256(im.tobytes()).hexdigest() for im in images), text[:200])
    if "edit_success" in text:
        source, edited = np.asarray(images[0], float), np.asarray(images[1].resize(images[0].size), float)
        change = float(np.abs(source - edited).mean())
        success, kept = min(10.0, round(change / 4, 1)), max(0.0, round(10 - change / 12, 1))
        if key % 4 == 0 and not retry:
            return "I cannot tell from these images."  # unreadable: the judge must ask again
        shapes = [
            json.dumps({"reasoning": f"mean change {change:.1f}", "score": [success, kept]}),
            f"```json\n{{\"score\": [{success}, {kept}], \"reasoning\": \"ok\"}}\n```",
            f"Edit success: {success}/10\nOver-editing: {kept}/10",
        ]
        return shapes[key % 3]
    if "naturalness" in text:
        spread = float(np.asarray(images[0], float).std())
        return json.dumps({"score": [round(min(10.0, spread / 8), 1), 8]})
    if "Rewrite the instruction" in text:
        instruction = re.search(r"Instruction: (.*)", text).group(1)
        return f"Prompt: {instruction.rstrip('.')}, keeping everything else unchanged"
    if "Break the instruction" in text:
        instruction = re.search(r"Instruction: (.*)", text).group(1)
        return "\n".join(f"{i}. {part}" for i, part in enumerate(split_instruction(instruction), 1))
    return "unexpected request"


class ChatServer:
    """An OpenAI-compatible ``POST /v1/chat/completions`` on 127.0.0.1 answering with ``responder(body)``."""

    def __init__(self, responder: Callable[[dict[str, Any]], str] = scripted_vlm, latency: float = 0.0):
        self.responder, self.latency = responder, latency
        self.requests = 0
        self._lock = threading.Lock()

    def app(self) -> Any:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict[str, Any]:
            body = await request.json()
            with self._lock:
                self.requests += 1
            if self.latency:
                await asyncio.sleep(self.latency)
            text = self.responder(body)
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
                    "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"} for i in range(int(body.get("n") or 1))]}

        return app

    def __enter__(self) -> "ChatServer":
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test chat server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class SDKChat(ChatBackend):
    """A ChatBackend over the OpenAI SDK (embedded PIL images sent as PNG data URLs)."""

    def __init__(self, base_url: str, model: str = "scripted"):
        self.base_url, self.model = base_url, model
        self._async: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for message in messages:
            parts = []
            for part in message["content"]:
                if part["type"] == "image":
                    buf = io.BytesIO()
                    part["image"].save(buf, format="PNG")
                    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    parts.append(part)
            out.append({"role": message["role"], "content": parts})
        return out

    def chat(self, messages, *, n=1, seed=None, **sampling):
        import openai

        client = openai.OpenAI(base_url=self.base_url, api_key="EMPTY", max_retries=0)
        r = client.chat.completions.create(model=self.model, messages=self._messages(messages), n=n, seed=seed,
                                           **sampling)
        return [c.message.content for c in r.choices]

    async def achat(self, messages, *, n=1, seed=None, **sampling):
        import openai

        loop = asyncio.get_running_loop()  # an async client belongs to one event loop
        if loop not in self._async:
            self._async[loop] = openai.AsyncOpenAI(base_url=self.base_url, api_key="EMPTY", max_retries=0)
        r = await self._async[loop].chat.completions.create(model=self.model, messages=self._messages(messages),
                                                            n=n, seed=seed, **sampling)
        return [c.message.content for c in r.choices]

    def config(self):
        return {"model": self.model, "base_url": self.base_url}


def build_backends(base_url: str, *, latency: float = 0.0, methods: tuple[str, ...] = ("raw", "rewrite", "plan",
                                                                                        "mira")) -> Backends:
    """Backends of a full evaluation: the fake editor and MIRA policy, VLM baselines and judge over HTTP."""
    vlm = SDKChat(base_url)
    policies: dict[str, Policy] = {"raw": PassthroughPolicy(), "rewrite": RewritePolicy(vlm),
                                   "plan": VLMPlanPolicy(vlm), "mira": SplitPolicy(latency)}
    return Backends(editor=TintEditor(latency), policies={m: policies[m] for m in methods},
                    judge=VIEScoreJudge(vlm, retries=2))


class Factory:
    """A picklable backend factory (Ray workers and subprocesses build their own backends)."""

    def __init__(self, base_url: str, latency: float = 0.0):
        self.base_url, self.latency = base_url, latency

    def __call__(self, device: Any = None) -> Backends:
        return build_backends(self.base_url, latency=self.latency)


COMPARED = ("key", "sample_id", "method", "seed", "stop_reason", "error", "steps", "editor_calls", "edits",
            "run_dir", "scores")


def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without timings, sorted by key (what must not depend on how the evaluation was run)."""
    return sorted(({k: r[k] for k in COMPARED} for r in records), key=lambda r: r["key"])
