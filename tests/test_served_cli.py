"""The CLI over served backends: `mira serve-editor` in a real subprocess, `mira edit` with `openai:` / `http://`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from mira.agent import MiraAgent
from mira.batch import run_many
from mira.cli import app
from mira.editors.remote import HTTPEditor
from mira.policies.openai import OpenAIPolicy
from mira.testing_servers import plan_responder, tint, unused_port

SRC = Path(__file__).resolve().parents[1] / "src"
runner = CliRunner()


def photo(size=(64, 64)) -> Image.Image:
    img = Image.new("RGB", size, (120, 80, 40))
    img.putpixel((2, 2), (0, 0, 0))
    return img


def start_service(args: list[str], env: dict[str, str]):
    """Run `mira serve-editor ARGS` in a subprocess on a free port; return (process, url) once /health answers."""
    port = unused_port()
    pythonpath = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "mira.cli", "serve-editor", *args, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": pythonpath, **env},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve-editor exited with {proc.returncode}: {proc.communicate()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve-editor did not come up within 120 s")


def stop_service(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out + err


def test_serve_editor_subprocess_with_key_and_upstream_key(chat_server):
    upstream_key, service_key = "sk-upstream-SECRET-000111", "editor-SECRET-000222"
    proc, url = start_service(
        ["--editor", "openai-images:gpt-image-1", "--editor-option", f"base_url={chat_server.base_url}",
         "--api-key-env", "MIRA_EDITOR_KEY", "--log-level", "info"],
        {"OPENAI_API_KEY": upstream_key, "MIRA_EDITOR_KEY": service_key},
    )
    try:
        editor = HTTPEditor(url, api_key=service_key, backoff=0.01)
        assert editor.name == "gpt-image-1" and editor.config()["remote"]["base_url"] == chat_server.base_url
        assert editor.edit(photo(), "make the sky blue").tobytes() == tint(photo(), "make the sky blue").tobytes()
        assert chat_server.requests[-1]["headers"]["authorization"] == f"Bearer {upstream_key}"
        assert httpx.post(url + "/v1/edit", json={"image": "", "instruction": "x"}).status_code == 401
    finally:
        logs = stop_service(proc)
    assert f"serving gpt-image-1 at {url}" in logs and "POST /v1/edit" in logs
    assert upstream_key not in logs and service_key not in logs


@pytest.mark.slow
def test_serve_editor_with_a_tiny_diffusers_pipeline(tiny_models, chat_server, tmp_path):
    from mira.editors.diffusers import DiffusersEditor

    kontext = str(tiny_models["flux-kontext"])
    proc, url = start_service(["--editor", "flux-kontext", "--editor-model", kontext, "--device", "cpu",
                               "--steps", "2", "--max-pixels", "4096"], {})
    try:
        editor = HTTPEditor(url)
        local = DiffusersEditor.flux_kontext(kontext, device="cpu", num_inference_steps=2, max_pixels=4096)
        assert editor.name == "flux-kontext" and editor.params() == local.params()
        served = editor.edit(photo(), "make the sky blue", seed=5)
        assert served.size == (64, 64)
        assert served.tobytes() == local.edit(photo(), "make the sky blue", seed=5).tobytes()

        chat_server.responder = plan_responder(["make the sky blue", "make the car red"])
        agent = MiraAgent(policy=OpenAIPolicy("qwen", base_url=chat_server.base_url), editor=editor, max_steps=4)
        results = run_many(agent, [(photo(), "make the sky blue and the car red")] * 2, concurrency=2,
                           run_root=tmp_path)
        assert all(t.stop_reason == "stop" and len(t.edits) == 2 for t in results)
        saved = json.loads((tmp_path / "00001" / "trajectory.json").read_text())
        assert saved["config"]["editor"]["url"] == url and saved["steps"][0]["editor"] == "flux-kontext"
    finally:
        stop_service(proc)


def test_mira_edit_over_served_policy_and_editor(chat_server, editor_server, tmp_path):
    chat_server.responder = plan_responder(["make the sky blue", "make the car red"])
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    photo((48, 32)).save(source)
    result = runner.invoke(app, [
        "edit", str(source), "make the sky blue and the car red", "-o", str(out), "--run-dir", str(tmp_path / "run"),
        "--policy", "openai:Qwen/Qwen2.5-VL-7B-Instruct", "--policy-option", f"base_url={chat_server.base_url}",
        "--temperature", "0.3", "--editor", editor_server.url,
    ])
    assert result.exit_code == 0, result.output
    assert chat_server.chat_requests[0]["temperature"] == 0.3 and len(chat_server.chat_requests) == 3
    assert [c[0] for c in editor_server.editor.calls] == ["make the sky blue", "make the car red"]
    assert Image.open(out).size == (48, 32)


def test_served_failures_are_one_line(tmp_path, monkeypatch, editor_server):
    source = tmp_path / "in.png"
    photo().save(source)
    dead = f"http://127.0.0.1:{unused_port()}"
    result = runner.invoke(app, ["edit", str(source), "x", "--policy", "passthrough", "--editor", dead,
                                 "--editor-option", "max_retries=0"])
    assert result.exit_code == 2 and f"editor service at {dead} could not connect" in result.output
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = runner.invoke(app, ["edit", str(source), "x", "--policy", "openai:gpt-4.1", "--editor", editor_server.url])
    assert result.exit_code == 2 and "OPENAI_API_KEY" in result.output and "Traceback" not in result.output


def test_serve_editor_refuses_what_it_cannot_do(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["serve-editor", "--editor", "openai-images:x", "--port", str(port)])
        assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    result = runner.invoke(app, ["serve-editor", "--editor", "openai-images:x", "--api-key-env", "NOT_SET_ANYWHERE"])
    assert result.exit_code == 2 and "NOT_SET_ANYWHERE" in result.output
    result = runner.invoke(app, ["serve-editor", "--editor", "nope", "--port", str(unused_port())])
    assert result.exit_code == 2 and "unknown editor 'nope'" in result.output
