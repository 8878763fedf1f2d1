"""The server on tiny random-weight real models (Qwen2.5-VL policy, FLUX.1-Kontext editor), OpenAI SDK as client."""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest
from PIL import Image
from serve_support import PHOTO, serve

pytest.importorskip("mira.policies.transformers", reason="mira.policies.transformers is not in this checkout yet")
pytest.importorskip("mira.editors.diffusers", reason="mira.editors.diffusers is not in this checkout yet")

pytestmark = pytest.mark.slow


def test_tiny_real_models_behind_the_openai_api(tiny_policy_and_kontext):
    from mira.agent import MiraAgent
    from mira.cli import build_backends
    from mira.serve.service import EditService, ServiceConfig

    paths = tiny_policy_and_kontext
    policy, editor = build_backends(str(paths["qwen2_5_vl"]), "flux-kontext", str(paths["flux-kontext"]), "cpu",
                                    "float32", "none", 2, None, 64 * 64, None, None, None)
    service = EditService(MiraAgent(policy=policy, editor=editor), ServiceConfig(default_max_steps=2))
    with serve(service) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        raw = client.images.with_raw_response.edit(model="mira", image=PHOTO.read_bytes(), prompt="make the cup red")
        assert raw.headers["x-mira-stop-reason"] in ("stop", "max_steps", "repeat")
        out = Image.open(io.BytesIO(base64.b64decode(raw.parse().data[0].b64_json)))
        assert out.format == "PNG" and out.width * out.height <= 64 * 64 * 2

        events = list(client.images.edit(model="mira", image=PHOTO.read_bytes(), prompt="make the cup red",
                                         stream=True, partial_images=2))
        assert events[-1].type == "image_edit.completed"
        assert [e.partial_image_index for e in events[:-1]] == list(range(len(events) - 1))

        with httpx.stream("POST", f"{url}/v1/mira/edits", files={"image": ("a", PHOTO.read_bytes())},
                          data={"instruction": "make the cup red"}, timeout=120) as response:
            payloads = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        final = payloads[-1]
        assert final["type"] == "mira.completed"
        assert final["trajectory"]["config"]["policy"]["name"] == policy.name
        assert final["trajectory"]["config"]["editor"]["name"] == editor.name
        steps = [p for p in payloads if p["type"] == "mira.step"]
        assert [s["index"] for s in steps] == list(range(1, len(steps) + 1))
        assert all(s["policy_seconds"] > 0 for s in steps)
