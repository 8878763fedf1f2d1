"""The MIRA server driven by the official OpenAI SDK and plain HTTP, on 127.0.0.1, with fake backends."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from serve_support import PHOTO, PLAN, GatedEditor, make_service, serve
from typer.testing import CliRunner

from mira.policies.base import Policy, PolicyError

KEY = "test-key"


def decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def sse_events(response: httpx.Response) -> list[dict]:
    """Data payloads of a server-sent event stream, up to ``[DONE]``."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            if line == "data: [DONE]":
                events.append({"type": "[DONE]"})
                break
            events.append(json.loads(line[len("data: "):]))
    return events


@pytest.fixture(scope="module")
def server():
    editor = GatedEditor()
    with serve(make_service(editor=editor, max_upload_bytes=200_000, max_upload_pixels=1_000_000),
               api_key=KEY) as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=30)


def test_images_edit_returns_the_edited_image(client):
    raw = client.images.with_raw_response.edit(model="mira", image=PHOTO.open("rb"),
                                               prompt="make the cup red, the saucer blue and the table black")
    response = raw.parse()
    assert raw.headers["x-mira-stop-reason"] == "stop"
    assert raw.headers["x-mira-steps"] == str(len(PLAN) + 1)
    assert len(response.data) == 1 and response.output_format == "png"
    out = decode(response.data[0].b64_json)
    source = Image.open(PHOTO).convert("RGB")
    assert out.format == "PNG" and out.size == source.size and response.size == "256x171"
    assert np.abs(pixels(out) - pixels(source)).sum() > 0


def test_raw_bytes_in_a_list_and_mira_options(client):
    # a list of one image is sent as `image[]`; raw bytes arrive named `upload` with an octet-stream type
    raw = client.images.with_raw_response.edit(model="mira", image=[PHOTO.read_bytes()], prompt="make it red",
                                               extra_body={"max_steps": 2, "seed": 11})
    assert raw.headers["x-mira-stop-reason"] == "max_steps" and raw.headers["x-mira-steps"] == "2"
    assert decode(raw.parse().data[0].b64_json).size == (256, 171)


def test_output_format_and_size(client):
    response = client.images.edit(image=PHOTO.read_bytes(), prompt="make the cup red", output_format="jpeg",
                                  output_compression=80, size="64x48")
    out = decode(response.data[0].b64_json)
    assert out.format == "JPEG" and out.size == (64, 48) and response.size == "64x48"


def test_same_seed_same_image_other_seed_other_image(client):
    def run(seed):
        response = client.images.edit(image=PHOTO.read_bytes(), prompt="make the cup red", extra_body={"seed": seed})
        return pixels(decode(response.data[0].b64_json))

    assert np.array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


@pytest.mark.parametrize(
    "kwargs, param, code",
    [
        ({"image": b"this is not an image", "prompt": "make it red"}, "image", "invalid_image"),
        ({"prompt": "make it red"}, "image", "invalid_image"),  # truncated JPEG (set below)
        ({"image": PHOTO.read_bytes(), "prompt": "   "}, "prompt", "invalid_value"),
        ({"image": PHOTO.read_bytes(), "prompt": "x" * 5000}, "prompt", "invalid_value"),
        ({"image": PHOTO.read_bytes(), "prompt": "make it red", "n": 2}, "n", "invalid_value"),
        ({"image": PHOTO.read_bytes(), "prompt": "make it red", "response_format": "url"}, "response_format",
         "invalid_value"),
        ({"image": PHOTO.read_bytes(), "prompt": "make it red", "mask": PHOTO.read_bytes()}, "mask",
         "invalid_value"),
        ({"image": [PHOTO.read_bytes(), PHOTO.read_bytes()], "prompt": "make it red"}, "image", "invalid_value"),
        ({"image": PHOTO.read_bytes(), "prompt": "make it red", "extra_body": {"max_steps": 99}}, "max_steps",
         "invalid_value"),
        ({"image": PHOTO.read_bytes(), "prompt": "make it red", "size": "7x7"}, "size", "invalid_value"),
    ],
)
def test_bad_requests_are_400_with_openai_bodies(client, kwargs, param, code):
    kwargs.setdefault("image", PHOTO.read_bytes()[:3000])
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(**kwargs)
    err = info.value
    assert err.status_code == 400
    assert set(err.body) == {"message", "type", "param", "code"}
    assert err.type == "invalid_request_error" and err.param == param and err.code == code
    assert err.body["message"] and "\n" not in err.body["message"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.images.edit(model="gpt-image-1", image=PHOTO.read_bytes(), prompt="make it red")
    assert info.value.code == "model_not_found" and "mira" in info.value.body["message"]


def test_missing_or_wrong_key_is_401(server):
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.images.edit(model="mira", image=PHOTO.read_bytes(), prompt="make it red")
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    response = httpx.post(f"{server}/v1/images/edits", files={"image": ("a.jpg", PHOTO.read_bytes())},
                          data={"prompt": "make it red"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["message"].startswith("missing API key")


def test_too_large_is_413(client, server):
    def noise_png(side):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    with pytest.raises(openai.APIStatusError) as info:  # ~270 kB, over the 200 kB image limit
        client.images.edit(image=noise_png(300), prompt="make it red")
    assert info.value.status_code == 413 and info.value.code == "image_too_large"
    assert "over the server's 195 KiB limit" in info.value.body["message"]
    with pytest.raises(openai.APIStatusError) as info:  # ~1.5 MB: refused from its Content-Length, unread
        client.images.edit(image=noise_png(700), prompt="make it red")
    assert info.value.status_code == 413 and info.value.code == "request_too_large"

    buf = io.BytesIO()
    Image.new("RGB", (1500, 1000), "white").save(buf, format="PNG")  # small file, 1.5 megapixels
    with pytest.raises(openai.APIStatusError) as info:
        client.images.edit(image=buf.getvalue(), prompt="make it red")
    assert info.value.status_code == 413 and info.value.code == "image_too_large"
    assert "1.5 megapixels" in info.value.body["message"]

    def chunks():  # no Content-Length: the limit applies while the body streams in
        boundary = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n\r\n"
        yield boundary
        for _ in range(40):
            yield b"\0" * 65536

    response = httpx.post(f"{server}/v1/images/edits", content=chunks(),
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_models_health_and_unknown_routes(client, server):
    assert [m.id for m in client.models.list().data] == ["mira"]
    health = httpx.get(f"{server}/health").json()  # no key needed
    assert health["status"] == "ok" and health["model"] == "mira" and health["max_queue"] == 8
    response = httpx.get(f"{server}/v1/nothing-here", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 404 and set(response.json()["error"]) == {"message", "type", "param", "code"}
    schema = httpx.get(f"{server}/openapi.json").json()
    form = schema["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"image", "prompt", "partial_images", "max_steps"} <= set(form["properties"])
    response = httpx.post(f"{server}/v1/images/edits", json={"prompt": "x"}, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400 and "multipart" in response.json()["error"]["message"]


# -- streaming -------------------------------------------------------------------------------------------------------
def test_openai_stream_sends_step_images_then_the_result(client):
    events = list(client.images.edit(model="mira", image=PHOTO.read_bytes(), prompt="make the cup red",
                                     stream=True, partial_images=2))
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]

    everything = list(client.images.edit(model="mira", image=PHOTO.read_bytes(), prompt="make the cup red",
                                         stream=True, partial_images=10))
    partials = [decode(e.b64_json) for e in everything[:-1]]
    final = decode(everything[-1].b64_json)
    assert len(partials) == len(PLAN)  # one per executed step, in step order
    assert np.array_equal(pixels(partials[0]), pixels(decode(events[0].b64_json)))
    assert np.array_equal(pixels(partials[1]), pixels(decode(events[1].b64_json)))
    assert np.array_equal(pixels(partials[-1]), pixels(final))
    assert np.array_equal(pixels(final), pixels(decode(events[-1].b64_json)))
    assert all(not np.array_equal(pixels(a), pixels(b)) for a, b in zip(partials, partials[1:]))
    plain = client.images.edit(model="mira", image=PHOTO.read_bytes(), prompt="make the cup red")
    assert np.array_equal(pixels(decode(plain.data[0].b64_json)), pixels(final))

    only_final = list(client.images.edit(model="mira", image=PHOTO.read_bytes(), prompt="make it", stream=True))
    assert [e.type for e in only_final] == ["image_edit.completed"]


def test_openai_stream_reports_bad_input_before_streaming(client):
    with pytest.raises(openai.BadRequestError):
        list(client.images.edit(model="mira", image=b"nope", prompt="make it red", stream=True, partial_images=1))


def test_mira_stream_delivers_every_step_in_order(server):
    with httpx.stream("POST", f"{server}/v1/mira/edits", headers={"Authorization": f"Bearer {KEY}"},
                      files={"image": ("upload", PHOTO.read_bytes(), "application/octet-stream")},
                      data={"instruction": "make the cup red and the saucer blue", "seed": "4"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    types = [e["type"] for e in events]
    assert types[:2] == ["mira.queued", "mira.started"] and types[-2:] == ["mira.completed", "[DONE]"]
    steps = [e for e in events if e["type"] == "mira.step"]
    decisions = [e for e in events if e["type"] == "mira.decision"]
    assert [s["index"] for s in steps] == [d["index"] for d in decisions] == [1, 2, 3, 4]
    for decision, step in zip(decisions, steps):
        assert types.index("mira.decision") < types.index("mira.step")
        assert decision["action"] == step["action"]
    assert [s["action"] for s in steps] == PLAN + ["<STOP>"]
    assert all(s["executed"] and s["image"] and s["seed"] is not None for s in steps[:-1])
    assert steps[-1]["stop"] and steps[-1]["image"] is None
    assert all(s["policy_seconds"] >= 0 and s["editor_seconds"] >= 0 for s in steps)
    final = events[-2]
    assert final["stop_reason"] == "stop" and final["id"] == events[0]["id"]
    assert final["trajectory"]["id"] == final["id"] and len(final["trajectory"]["steps"]) == 4
    assert final["trajectory"]["config"]["agent"]["seed"] == 4
    assert np.array_equal(pixels(decode(final["image"])), pixels(decode(steps[-2]["image"])))


def test_mira_edit_without_streaming(server):
    response = httpx.post(f"{server}/v1/mira/edits", headers={"Authorization": f"Bearer {KEY}"},
                          files={"image": ("a", PHOTO.read_bytes())},
                          data={"instruction": "make it red", "stream": "false", "max_steps": "1",
                                "output_format": "webp"}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["stop_reason"] == "max_steps"
    assert decode(body["image"]).format == "WEBP" and len(body["trajectory"]["steps"]) == 1
    response = httpx.post(f"{server}/v1/mira/edits", headers={"Authorization": f"Bearer {KEY}"},
                          files={"image": ("a", PHOTO.read_bytes())}, data={"instruction": ""})
    assert response.status_code == 400 and response.json()["error"]["param"] == "instruction"


# -- queue, timeouts, failures ---------------------------------------------------------------------------------------
def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_full_queue_is_503_with_retry_after():
    editor = GatedEditor()
    with serve(make_service(editor=editor, max_queue=1)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        editor.gate.clear()
        results: list[object] = []

        def edit():
            results.append(client.images.edit(image=PHOTO.read_bytes(), prompt="make it red"))

        threads = [threading.Thread(target=edit) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: httpx.get(f"{url}/health").json()["waiting"] == 1)
        with pytest.raises(openai.InternalServerError) as info:
            client.images.edit(image=PHOTO.read_bytes(), prompt="make it red")
        err = info.value
        assert err.status_code == 503 and err.code == "queue_full" and err.type == "server_error"
        assert int(err.response.headers["retry-after"]) >= 1
        editor.gate.set()
        for t in threads:
            t.join(timeout=30)
        assert len(results) == 2
        assert httpx.get(f"{url}/health").json()["completed"] == 2


def test_timeout_is_504_and_frees_the_worker():
    editor = GatedEditor(delay=0.3)
    with serve(make_service(editor=editor, timeout_s=0.5)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        with pytest.raises(openai.InternalServerError) as info:
            client.images.edit(image=PHOTO.read_bytes(), prompt="make it red")
        assert info.value.status_code == 504 and info.value.code == "timeout"
        wait_for(lambda: httpx.get(f"{url}/health").json()["cancelled"] == 1)
        done = client.images.edit(image=PHOTO.read_bytes(), prompt="make it red", extra_body={"max_steps": 1})
        assert decode(done.data[0].b64_json).size == (256, 171)


def test_client_that_leaves_cancels_its_edit():
    editor = GatedEditor()
    service = make_service(editor=editor)
    with serve(service) as url:
        editor.gate.clear()
        with httpx.stream("POST", f"{url}/v1/mira/edits", files={"image": ("a", PHOTO.read_bytes())},
                          data={"instruction": "make it red"}) as response:
            next(response.iter_lines())
            assert editor.entered.wait(10)
        # the server notices the disconnect on its own schedule; once it has, the running edit finishes its step,
        # sees the job cancelled and stops
        wait_for(lambda: any(job.cancelled for job in service._jobs))
        editor.gate.set()
        wait_for(lambda: httpx.get(f"{url}/health").json()["cancelled"] == 1)
        assert len(editor.calls) == 1


class BrokenPolicy(Policy):
    name = "broken"

    def generate(self, observation, *, n=1, seed=None):
        raise PolicyError("CUDA out of memory")


def test_backend_failure_is_500_for_openai_and_data_for_mira():
    with serve(make_service(policy=BrokenPolicy())) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        with pytest.raises(openai.InternalServerError) as info:
            client.images.edit(image=PHOTO.read_bytes(), prompt="make it red")
        assert info.value.status_code == 500 and info.value.code == "policy_error"
        assert "CUDA out of memory" in info.value.body["message"]
        with pytest.raises(openai.APIError, match="CUDA out of memory"):
            list(client.images.edit(image=PHOTO.read_bytes(), prompt="make it red", stream=True))
        body = httpx.post(f"{url}/v1/mira/edits", files={"image": ("a", PHOTO.read_bytes())},
                          data={"instruction": "make it red", "stream": "false"}).json()
        assert body["stop_reason"] == "policy_error" and "CUDA out of memory" in body["error"]


# -- the command -----------------------------------------------------------------------------------------------------
def test_serve_command_builds_the_server_from_flags(monkeypatch, tmp_path):
    import uvicorn

    from mira import registry
    from mira.cli import app
    from mira.serve.commands import running_server

    monkeypatch.setitem(registry.EDITORS, "stripe", "fakes:StripeEditor")
    monkeypatch.setenv("MIRA_API_KEY", "from-env")
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    result = CliRunner().invoke(app, ["serve", "--policy", "passthrough", "--editor", "stripe", "--no-ui",
                                      "--port", "9", "--max-queue", "0", "--max-steps", "1", "--model-name", "m1"])
    assert result.exit_code == 0, result.output
    assert started["host"] == "127.0.0.1" and started["port"] == 9
    with running_server(started["app"]) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="from-env", max_retries=0)
        raw = client.images.with_raw_response.edit(model="m1", image=PHOTO.read_bytes(), prompt="make it red")
        assert raw.headers["x-mira-steps"] == "1"
        assert httpx.get(f"{url}/health").json()["max_queue"] == 0
        assert httpx.get(f"{url}/ui/").status_code == 404

    result = CliRunner().invoke(app, ["serve", "--policy", "passthrough", "--editor", "nope"])
    assert result.exit_code == 2 and "unknown editor 'nope'" in result.output


def test_ui_command_launches_the_page_on_loopback(monkeypatch):
    import gradio as gr

    from mira import registry
    from mira.cli import app

    monkeypatch.setitem(registry.EDITORS, "stripe", "fakes:StripeEditor")
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(blocks=self, **kw))
    result = CliRunner().invoke(app, ["ui", "--policy", "passthrough", "--editor", "stripe", "--max-steps", "3",
                                      "--api-key", "pw"])
    assert result.exit_code == 0, result.output
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] == 7860
    assert launched["auth"]("anyone", "pw") and not launched["auth"]("anyone", "nope")
    ids = {getattr(block, "elem_id", None) for block in launched["blocks"].blocks.values()}
    assert {"mira-image", "mira-instruction", "mira-run", "mira-gallery", "mira-archive"} <= ids
    slider = next(b for b in launched["blocks"].blocks.values() if getattr(b, "elem_id", None) == "mira-max-steps")
    assert slider.value == 3

    result = CliRunner().invoke(app, ["ui", "--policy", "passthrough", "--editor", "stripe", "--max-steps", "40"])
    assert result.exit_code == 2 and "--max-steps 40 is over --max-steps-limit 32" in result.output


# -- the service without HTTP ----------------------------------------------------------------------------------------
def test_queue_positions_and_shutdown_of_the_service():
    import asyncio

    from mira.serve.service import Failed, Finished, Queued

    editor = GatedEditor()
    service = make_service(editor=editor, max_queue=4)
    request = service.prepare(PHOTO.read_bytes(), "make it red", max_steps=1)

    async def scenario():
        editor.gate.clear()
        jobs = [service.submit(request) for _ in range(3)]
        firsts = [await anext(job.events()) for job in jobs]
        assert [e.position for e in firsts if isinstance(e, Queued)] == [0, 1, 2]
        await asyncio.to_thread(editor.entered.wait, 10)
        closing = asyncio.create_task(asyncio.to_thread(service.close))
        ends = []
        for job in jobs:
            async for event in job.events():
                if isinstance(event, (Finished, Failed)):
                    ends.append(event)
        assert all(isinstance(e, Failed) and e.error.code == "shutting_down" for e in ends)
        editor.gate.set()
        await asyncio.wait_for(closing, 10)

    asyncio.run(scenario())
    assert len(editor.calls) == 1  # the running edit stopped after its step; the queued ones never started
