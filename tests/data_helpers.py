"""Test doubles and fixtures' building blocks for the data builder's tests.

- :class:`PILEditor`: a deterministic pure-PIL editor (paints a seeded rectangle per instruction);
- :class:`ChatJudge`: a judge that asks a chat endpoint for a score;
- :func:`scripted_app`: an OpenAI-compatible chat server that answers the builder's rewriter, dependence and
  annotator prompts and ChatJudge's requests by rule (scores measure how much the edited image changed);
- writers of tiny SEED-Data-Edit, MagicBrush and JSONL sources made from sample photos.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from PIL import Image, ImageDraw

from mira.data import prompts
from mira.editors.base import Editor, EditorError
from mira.judges.base import Judge, JudgeScores

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


def write_photos(folder: Path, size: tuple[int, int] = (64, 48)) -> dict[str, Path]:
    """Sample photographs shipped with scikit-image, downscaled, as PNG files."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in PHOTOS:
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size).save(path)
        out[name] = path
    return out


class PILEditor(Editor):
    """Paints a rectangle whose colour and place follow from the instruction and the seed; ``lazy`` returns the
    image unchanged; instructions containing ``fail_on`` raise; ``delay`` seconds per edit."""

    def __init__(self, name: str = "pil", delay: float = 0.0, lazy: bool = False, fail_on: str | None = None):
        self.name, self.delay, self.lazy, self.fail_on = name, delay, lazy, fail_on

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on and self.fail_on in instruction:
            raise EditorError(f"cannot do '{instruction}'")
        out = image.copy()
        if self.lazy:
            return out
        rng = random.Random(f"{seed}:{instruction}")
        w, h = out.size
        x0, y0 = rng.randrange(w // 2), rng.randrange(h // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        ImageDraw.Draw(out).rectangle([x0, y0, x0 + w // 3, y0 + h // 3], fill=colour)
        return out

    def params(self) -> dict[str, Any]:
        return {"lazy": self.lazy}


JUDGE_SYSTEM = "You rate image edits. Reply 'Score: N' with N from 0 to 10."


class ChatJudge(Judge):
    """Asks an OpenAI-compatible chat endpoint to rate (source, edited, instruction)."""

    name = "chat-judge"

    def __init__(self, base_url: str, model: str = "scripted"):
        from mira.clients.openai_chat import OpenAIChatBackend

        self.backend = OpenAIChatBackend(model=model, base_url=base_url, max_retries=0)

    def _messages(self, source: Image.Image, edited: Image.Image, instruction: str) -> list[dict[str, Any]]:
        return [{"role": "system", "content": [{"type": "text", "text": JUDGE_SYSTEM}]},
                {"role": "user", "content": [{"type": "image", "image": source}, {"type": "image", "image": edited},
                                             {"type": "text", "text": f"Instruction: {instruction}"}]}]

    def score(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        return self._parse(self.backend.chat(self._messages(source, edited, instruction))[0])

    async def ascore(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        return self._parse((await self.backend.achat(self._messages(source, edited, instruction)))[0])

    @staticmethod
    def _parse(reply: str) -> JudgeScores:
        m = re.search(r"Score:\s*([\d.]+)", reply)
        if m is None:
            return JudgeScores(error=f"unparseable judge reply: {reply[:40]}")
        value = float(m.group(1))
        return JudgeScores.from_sc_pq(value, value)


def _decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def change_score(a: Image.Image, b: Image.Image) -> float:
    """0-10: how much of the picture changed (10 when a fifth of it or more changed)."""
    if a.size != b.size:
        return 10.0
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max(axis=2) > 8
    return round(min(10.0, 50.0 * float(diff.mean())), 2)


def scripted_reply(messages: list[dict[str, Any]], n: int, state: dict[str, Any]) -> list[str]:
    system = messages[0]["content"] if isinstance(messages[0]["content"], str) else messages[0]["content"][0]["text"]
    user = messages[-1]["content"]
    texts = [p["text"] for p in user if p.get("type") == "text"] if isinstance(user, list) else [user]
    images = [p["image_url"]["url"] for p in user if isinstance(user, list) and p.get("type") == "image_url"]
    last = texts[-1]
    if system == prompts.REWRITER_SYSTEM:
        text = last.rsplit(": ", 1)[1]
        body = text.rstrip(".")
        low = body[:1].lower() + body[1:]
        if "UNPARSEABLE" in text:
            return ["I cannot help with that."] * n
        return [json.dumps([f"Kindly {low}.", text, f"Please {low}", f"Please {low}.", f"{body}, if you can."])] * n
    if system == prompts.DEPENDENCE_SYSTEM:
        return [state.get("dependence_reply", "[]")] * n
    if system == prompts.ANNOTATOR_SYSTEM:
        return [state.get("annotator_reply", f"Looking at both images: {last}")] * n
    if system == JUDGE_SYSTEM:
        return [f"Score: {change_score(_decode(images[0]), _decode(images[1]))}"] * n
    return ["?"] * n


def scripted_app(state: dict[str, Any]) -> Any:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body = await request.json()
        state["requests"] = state.get("requests", 0) + 1
        if state.get("latency"):
            await asyncio.sleep(state["latency"])
        replies = scripted_reply(body["messages"], body.get("n") or 1, state)
        return {
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": r}}
                        for i, r in enumerate(replies)],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app: Any):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the scripted server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


TURNS = {
    "astronaut": ["make the flag blue", "add a red hat to the astronaut", "make the hat bigger"],
    "chelsea": ["make the cat black", "add a ball next to the wall"],
    "coffee": ["make the cup red", "make the saucer blue", "make the table black"],
    "rocket": ["remove the clouds", "make the rocket white"],
    "immunohistochemistry": ["make the cells green", "add a scale bar"],
}


def write_jsonl_source(folder: Path, photos: dict[str, Path], *, with_results: bool = True) -> Path:
    """MIRA's JSONL format; the coffee session carries human results (made by PILEditor)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ("coffee", "rocket", "immunohistochemistry"):
        row: dict[str, Any] = {"id": f"local-{name}", "image": str(photos[name]), "turns": TURNS[name]}
        if with_results and name == "coffee":
            img, results = Image.open(photos[name]).convert("RGB"), []
            for i, turn in enumerate(TURNS[name], start=1):
                img = PILEditor("human").edit(img, turn, seed=1000 + i)
                img.save(folder / f"coffee_{i}.png")
                results.append(f"coffee_{i}.png")
            row["results"] = results
        rows.append(row)
    path = folder / "sessions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_seed_source(folder: Path, photos: dict[str, Path], *, broken: bool = True) -> Path:
    """SEED-Data-Edit's multi-turn layout: annotations/*.jsonl and an images folder of relative paths."""
    images = folder / "images" / "data" / "batch"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ("astronaut", "chelsea"):
        img = Image.open(photos[name]).convert("RGB")
        img.save(images / f"{name}.jpg")
        row = {"source_image": f"data/batch/{name}.jpg"}
        for i, turn in enumerate(TURNS[name], start=1):
            img = PILEditor("human").edit(img, turn, seed=i)
            img.save(images / f"{name}_edit{i}.jpg")
            row.update({f"instruction_{i}": turn, f"inverse_instruction_{i}": "undo", f"edit_image_{i}":
                        f"data/batch/{name}_edit{i}.jpg"})
        rows.append(row)
    if broken:
        (images / "truncated.jpg").write_bytes((images / "chelsea.jpg").read_bytes()[:200])
        rows += [
            {"source_image": "data/batch/nowhere.jpg", "instruction_1": "make it red", "edit_image_1": "x.jpg"},
            {"source_image": "data/batch/truncated.jpg", "instruction_1": "make the cat red",
             "edit_image_1": "data/batch/chelsea.jpg"},
            {"source_image": "data/batch/chelsea.jpg", "instruction_1": "   ",
             "edit_image_1": "data/batch/chelsea_edit1.jpg"},
        ]
    annotations = folder / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows] + (["{not json"] if broken else [])
    (annotations / "split_0001.jsonl").write_text("\n".join(lines) + "\n")
    return annotations


def write_magicbrush_source(folder: Path, photos: dict[str, Path]) -> Path:
    """A tiny stand-in for osunlp/MagicBrush (same columns), saved with ``save_to_disk``."""
    import datasets

    rows: dict[str, list[Any]] = {k: [] for k in ("img_id", "turn_index", "source_img", "mask_img", "instruction",
                                                  "target_img")}
    for img_id, name in (("100", "chelsea"), ("200", "rocket")):
        img = Image.open(photos[name]).convert("RGB")
        for i, turn in enumerate(TURNS[name], start=1):
            out = PILEditor("human").edit(img, turn, seed=i)
            for key, value in (("img_id", img_id), ("turn_index", i), ("source_img", img), ("mask_img", img),
                               ("instruction", turn), ("target_img", out)):
                rows[key].append(value)
            img = out
    feats = datasets.Features({"img_id": datasets.Value("string"), "turn_index": datasets.Value("int32"),
                               "source_img": datasets.Image(), "mask_img": datasets.Image(),
                               "instruction": datasets.Value("string"), "target_img": datasets.Image()})
    ds = datasets.Dataset.from_dict(rows, features=feats)
    path = folder / "magicbrush"
    datasets.DatasetDict({"train": ds}).save_to_disk(str(path))
    return path


def build_config(root: Path, photos: dict[str, Path], url: str | None = None, **sections: Any) -> dict[str, Any]:
    """A build config (as YAML would hold it) over tiny JSONL, SEED and MagicBrush sources under ``root``.

    With ``url``, the rewriter and the judge are the scripted server; ``sections`` override config sections.
    """
    sources = [
        {"kind": "jsonl", "path": str(write_jsonl_source(root / "jsonl", photos))},
        {"kind": "seed-data-edit", "path": str(write_seed_source(root / "seed", photos)),
         "images": str(root / "seed" / "images")},
        {"kind": "magicbrush", "path": str(write_magicbrush_source(root, photos))},
    ]
    config: dict[str, Any] = {
        "work_dir": str(root / "work"), "shard_size": 3, "sources": sources,
        "synthesize": {"editors": ["data_helpers:PILEditor",
                                   {"name": "data_helpers:PILEditor", "options": {"name": "lazy", "lazy": True}}]},
    }
    if url is not None:
        chat = {"name": "openai:scripted", "options": {"base_url": url}}
        config["rewrite"] = {"backend": chat}
        config["rank"] = {"judge": {"name": "data_helpers:ChatJudge", "options": {"base_url": url}}, "threshold": 1.0}
    config.update(sections)
    return config
