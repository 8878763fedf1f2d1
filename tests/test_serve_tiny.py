"""`mira serve` on tiny random-weight real models (Qwen2.5-VL policy, FLUX.1-Kontext editor), OpenAI SDK as client."""

from __future__ import annotations

import base64
import io
import json
import queue
import re
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from PIL import Image
from serve_support import PHOTO

pytestmark = pytest.mark.slow


def wait_for_url(proc: subprocess.Popen, timeout: float = 180.0) -> str:
    """The server's base URL from uvicorn's start line (stderr is drained on a thread so the child never blocks)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert proc.poll() is None, "mira serve exited: " + "".join(seen)[-2000:]
            continue
        seen.append(line)
        match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
        if match:
            return match.group(1)
    raise AssertionError("mira serve did not start: " + "".join(seen)[-2000:])


def test_mira_serve_on_tiny_real_models(tiny_models):
    policy = str(tiny_models["qwen2_5_vl"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "mira.cli", "serve", "--policy", policy, "--editor", "flux-kontext",
         "--editor-model", str(tiny_models["flux-kontext"]), "--device", "cpu", "--steps", "2",
         "--max-pixels", str(64 * 64), "--policy-option", "max_new_tokens=12", "--max-steps", "2",
         "--port", "0", "--no-ui", "--api-key", "tiny-key"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        url = wait_for_url(proc)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="tiny-key", max_retries=0, timeout=120)
        raw = client.images.with_raw_response.edit(model="mira", image=PHOTO.read_bytes(), prompt="make the cup red")
        assert raw.headers["x-mira-stop-reason"] in ("stop", "max_steps", "repeat")
        out = Image.open(io.BytesIO(base64.b64decode(raw.parse().data[0].b64_json)))
        assert out.format == "PNG" and out.width * out.height <= 64 * 64 and out.width % 16 == 0

        events = list(client.images.edit(model="mira", image=PHOTO.read_bytes(), prompt="make the cup red",
                                         stream=True, partial_images=2))
        assert events[-1].type == "image_edit.completed"
        assert [e.partial_image_index for e in events[:-1]] == list(range(len(events) - 1))

        with httpx.stream("POST", f"{url}/v1/mira/edits", headers={"Authorization": "Bearer tiny-key"},
                          files={"image": ("upload", PHOTO.read_bytes())},
                          data={"instruction": "make the cup red", "seed": "3"}, timeout=120) as response:
            payloads = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        final = payloads[-1]
        assert final["type"] == "mira.completed"
        assert final["trajectory"]["config"]["policy"]["model"] == policy
        steps = [p for p in payloads if p["type"] == "mira.step"]
        assert [s["index"] for s in steps] == list(range(1, len(steps) + 1)) and steps
        assert [s["action"] for s in steps] == [s["action"] for s in final["trajectory"]["steps"]]
        assert all(s["policy_seconds"] > 0 for s in steps)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
