"""HTTPEditor against MIRA's editor service, and OpenAIImagesEditor against an OpenAI-compatible images endpoint,
both real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
from PIL import Image

from mira.editors.base import EditorError
from mira.editors.remote import HTTPEditor, OpenAIImagesEditor, editor_app
from mira.registry import load_editor
from mira.testing_servers import Fault, LoopbackServer, ScriptedEditor, tint, unused_port
from mira.trajectory import image_to_png_bytes

FAST = {"backoff": 0.01, "max_retries": 2}


def photo() -> Image.Image:
    img = Image.new("RGB", (40, 24), (30, 60, 90))
    img.putpixel((1, 1), (255, 255, 255))
    return img


# -- MIRA's editor service ------------------------------------------------------------------------------------------
def test_http_editor_edits_sync_and_async(editor_server):
    editor = load_editor(editor_server.url, **FAST)
    assert isinstance(editor, HTTPEditor) and editor.name == "scripted-editor"
    assert editor.params() == {"latency": 0.0, "strength": 0.3}
    assert editor.config()["url"] == editor_server.url and editor.config()["remote"]["name"] == "scripted-editor"
    expected = tint(photo(), "make the sky blue").tobytes()
    assert editor.edit(photo(), "make the sky blue", seed=3).tobytes() == expected
    assert asyncio.run(editor.aedit(photo(), "make the sky blue", seed=4)).tobytes() == expected
    assert editor_server.editor.calls == [("make the sky blue", 3), ("make the sky blue", 4)]


def test_service_wire_format_and_input_errors(editor_server):
    health = httpx.get(editor_server.url + "/health").json()
    assert health["status"] == "ok" and health["protocol"] == "mira-editor/1"
    payload = {"image": base64.b64encode(image_to_png_bytes(photo())).decode(), "instruction": "x", "seed": 1}
    ok = httpx.post(editor_server.url + "/v1/edit", json=payload).json()
    assert ok["seed"] == 1 and ok["params"] == {"latency": 0.0, "strength": 0.3} and ok["seconds"] >= 0
    for bad, needle in [({**payload, "image": "%%%"}, "base64"),
                        ({**payload, "image": base64.b64encode(b"not an image").decode()}, "not an image"),
                        ({**payload, "instruction": "   "}, "instruction is empty"),
                        ({"instruction": "x"}, "image")]:
        response = httpx.post(editor_server.url + "/v1/edit", json=bad)
        assert response.status_code == 400 and needle in response.json()["error"]["message"], response.text


def test_bad_input_is_not_retried(editor_server):
    editor = HTTPEditor(editor_server.url, **FAST)
    n = len(editor_server.requests)
    with pytest.raises(EditorError, match="HTTP 400.*instruction is empty"):
        editor.edit(photo(), "  ")
    assert len(editor_server.requests) == n + 1


def test_service_requires_its_key(monkeypatch):
    monkeypatch.setenv("MIRA_EDITOR_KEY", "editor-secret-42")
    with LoopbackServer(editor_app(ScriptedEditor(), api_key="editor-secret-42")) as server:
        assert HTTPEditor(server.url, api_key_env="MIRA_EDITOR_KEY").edit(photo(), "x").size == (40, 24)
        with pytest.raises(EditorError, match="HTTP 401.*API key") as info:
            HTTPEditor(server.url, api_key="wrong-key-123", **FAST).edit(photo(), "x")
        assert "wrong-key-123" not in str(info.value)
    monkeypatch.delenv("MIRA_EDITOR_KEY")
    with pytest.raises(EditorError, match="MIRA_EDITOR_KEY"):
        HTTPEditor("http://127.0.0.1:1", api_key_env="MIRA_EDITOR_KEY")


class BrokenEditor(ScriptedEditor):
    name = "broken"

    def edit(self, image, instruction, *, seed=None):
        raise EditorError("CUDA out of memory")

    async def aedit(self, image, instruction, *, seed=None):
        return self.edit(image, instruction, seed=seed)


def test_editor_failure_on_the_server_is_retried_then_named():
    with LoopbackServer(editor_app(BrokenEditor())) as server:
        editor = HTTPEditor(server.url, **FAST)
        with pytest.raises(EditorError) as info:
            editor.edit(photo(), "x")
        assert f"editor service at {server.url} answered HTTP 500" in str(info.value)
        assert "CUDA out of memory" in str(info.value) and "3 attempts" in str(info.value)
        assert sum(r["path"] == "/v1/edit" for r in server.requests) == 3


def test_http_editor_faults(editor_server):
    editor = HTTPEditor(editor_server.url, timeout=0.3, **FAST)
    editor_server.inject(Fault(503, retry_after=0.05))
    assert editor.edit(photo(), "x").size == (40, 24)
    editor_server.inject(Fault(429, retry_after=0.01))
    assert asyncio.run(editor.aedit(photo(), "x")).size == (40, 24)

    editor_server.inject(Fault(200, delay=2), times=None)
    with pytest.raises(EditorError, match="timed out.*3 attempts"):
        editor.edit(photo(), "x")
    with pytest.raises(EditorError, match="timed out"):
        asyncio.run(editor.aedit(photo(), "x"))
    editor_server.clear_faults()

    for fault, reason in [(Fault(200, body="{oops"), "invalid JSON"),
                          (Fault(200, body=json.dumps({"image": "aGVsbG8="})), "not a readable image"),
                          (Fault(200, body=json.dumps([1, 2])), "no base64 image")]:
        editor_server.inject(fault)
        with pytest.raises(EditorError, match=f"sent a reply that could not be read.*{reason}"):
            editor.edit(photo(), "x")


def test_http_editor_connection_refused():
    url = f"http://127.0.0.1:{unused_port()}"
    with pytest.raises(EditorError, match=f"editor service at {url} could not connect.*3 attempts"):
        HTTPEditor(url, **FAST)
    editor = HTTPEditor(url, check=False, **FAST)
    with pytest.raises(EditorError, match="could not connect"):
        asyncio.run(editor.aedit(photo(), "x"))


def test_health_of_a_foreign_server_is_malformed(chat_server):
    chat_server.inject(Fault(200, body=json.dumps({"hello": "world"})))
    with pytest.raises(EditorError, match="not a mira-editor/1 answer"):
        HTTPEditor(chat_server.url, **FAST)


def test_service_limits_concurrent_edits():
    async def many(editor: HTTPEditor) -> None:
        await asyncio.gather(*(editor.aedit(photo(), f"edit {i}") for i in range(6)))

    class Counting(ScriptedEditor):
        running = peak = 0

        async def aedit(self, image, instruction, *, seed=None):
            Counting.running += 1
            Counting.peak = max(Counting.peak, Counting.running)
            try:
                return await super().aedit(image, instruction, seed=seed)
            finally:
                Counting.running -= 1

    with LoopbackServer(editor_app(Counting(latency=0.05), concurrency=2)) as server:
        asyncio.run(many(HTTPEditor(server.url)))
        assert server.max_in_flight >= 4 and Counting.peak == 2


# -- OpenAI images API --------------------------------------------------------------------------------------------
def test_openai_images_editor_sync_and_async(chat_server):
    chat_server.image_responder = lambda img, prompt: tint(img, prompt).resize((64, 64))
    editor = load_editor("openai-images:gpt-image-1", base_url=chat_server.base_url, api_key="sk-images-key-0000",
                         quality="low", **FAST)
    assert isinstance(editor, OpenAIImagesEditor) and editor.name == "gpt-image-1"
    out = editor.edit(photo(), "make the sky blue")
    assert out.size == (40, 24)  # keep_size: back to the input's size
    sent = chat_server.image_requests[-1]
    assert (sent["model"], sent["prompt"], sent["quality"]) == ("gpt-image-1", "make the sky blue", "low")
    assert sent["image"].tobytes() == photo().tobytes()
    assert asyncio.run(editor.aedit(photo(), "make the car red")).size == (40, 24)
    assert chat_server.requests[-1]["headers"]["authorization"] == "Bearer sk-images-key-0000"
    raw = OpenAIImagesEditor(base_url=chat_server.base_url, api_key="k" * 8, keep_size=False)
    assert raw.edit(photo(), "x").size == (64, 64)
    assert "sk-images-key-0000" not in repr(editor.config())


def test_openai_images_editor_faults(chat_server):
    editor = OpenAIImagesEditor(base_url=chat_server.base_url, api_key="sk-images-key-0000", **FAST)
    chat_server.inject(Fault(429, retry_after=0.01))
    assert editor.edit(photo(), "x").size == (40, 24)
    chat_server.inject(Fault(502), times=None)
    with pytest.raises(EditorError, match=f"image edits of 'gpt-image-1' at {chat_server.base_url} answered HTTP 502"):
        editor.edit(photo(), "x")
    chat_server.clear_faults()
    chat_server.inject(Fault(200, body=json.dumps({"data": [{"url": "https://example.invalid/x.png"}]})))
    with pytest.raises(EditorError, match="no base64 image"):
        editor.edit(photo(), "x")
    chat_server.inject(Fault(403, body=json.dumps({"error": {"message": "key sk-images-key-0000 is not allowed"}})))
    with pytest.raises(EditorError, match="HTTP 403") as info:
        asyncio.run(editor.aedit(photo(), "x"))
    assert "sk-images-key-0000" not in str(info.value)
