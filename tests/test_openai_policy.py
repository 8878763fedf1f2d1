"""OpenAIPolicy / OpenAIChatBackend against a real OpenAI-compatible server on 127.0.0.1 (the SDK does the HTTP)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image

from mira.agent import MiraAgent
from mira.clients.openai_chat import OpenAIChatBackend
from mira.clients.retry import ServiceError
from mira.policies.base import PolicyError
from mira.policies.openai import OpenAIPolicy
from mira.protocol import Observation, build_messages, parse_completion
from mira.registry import load_policy
from mira.testing_servers import Fault, ScriptedEditor, plan_responder, unused_port

FAST = {"backoff": 0.01, "max_retries": 3}


def photo(color=(200, 40, 40), size=(48, 32)) -> Image.Image:
    img = Image.new("RGB", size, color)
    img.putpixel((3, 5), (1, 2, 3))
    return img


def observation() -> Observation:
    return Observation("make the sky blue and the car red", ("make the sky blue",), photo(), photo((10, 200, 10)))


def decode_data_url(url: str) -> Image.Image:
    header, data = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def test_policy_sends_exactly_the_protocol_messages(chat_server):
    chat_server.responder = plan_responder(["make the sky blue", "make the car red"])
    policy = OpenAIPolicy("qwen-vl", base_url=chat_server.base_url, **FAST)
    obs = observation()
    [text] = policy.generate(obs, seed=11)
    assert parse_completion(text).action == "make the car red"

    sent = chat_server.chat_requests[-1]
    assert sent["model"] == "qwen-vl" and sent["seed"] == 11 and sent["n"] == 1
    expected = build_messages(obs)
    assert [m["role"] for m in sent["messages"]] == [m["role"] for m in expected]
    images = []
    for got, want in zip(sent["messages"], expected):
        assert len(got["content"]) == len(want["content"])
        for g, w in zip(got["content"], want["content"]):
            if w["type"] == "text":
                assert g == {"type": "text", "text": w["text"]}
            else:
                assert g["type"] == "image_url"
                images.append(decode_data_url(g["image_url"]["url"]))
    assert [im.tobytes() for im in images] == [obs.original.tobytes(), obs.current.tobytes()]


def test_candidates_sampling_and_top_up(chat_server):
    answers = iter([["a1", "a2"], ["a3"], ["b1", "b2", "b3"]])
    chat_server.responder = lambda request: next(answers)  # a server that ignores n at first
    backend = OpenAIChatBackend("m", base_url=chat_server.base_url, temperature=0.7, top_k=20, **FAST)
    messages = build_messages(observation(), embed_images=True)
    assert backend.chat(messages, n=3, seed=5, top_p=0.9) == ["a1", "a2", "a3"]
    first, second = chat_server.chat_requests[-2:]
    assert (first["n"], first["seed"], second["n"], second["seed"]) == (3, 5, 1, 7)
    assert first["temperature"] == 0.7 and first["top_p"] == 0.9 and first["top_k"] == 20
    assert asyncio.run(backend.achat(messages, n=3)) == ["b1", "b2", "b3"]
    assert "seed" not in chat_server.chat_requests[-1]


def test_image_policy_jpeg_and_max_pixels(chat_server):
    backend = OpenAIChatBackend("m", base_url=chat_server.base_url, image_format="jpeg", max_image_pixels=24 * 16)
    backend.chat(build_messages(observation(), embed_images=True))
    urls = [p["image_url"]["url"] for p in chat_server.chat_requests[-1]["messages"][1]["content"]
            if p["type"] == "image_url"]
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)
    assert all(decode_data_url(u).size == (24, 16) for u in urls)


def test_async_generate_and_agent_loop(chat_server, editor_server, tmp_path):
    from mira.editors.remote import HTTPEditor

    policy = OpenAIPolicy("qwen-vl", base_url=chat_server.base_url, name="served-qwen", **FAST)
    agent = MiraAgent(policy=policy, editor=HTTPEditor(editor_server.url), max_steps=4)
    traj = asyncio.run(agent.arun(photo(), "make the sky blue", run_dir=tmp_path / "run"))
    assert traj.stop_reason == "stop" and traj.edits == ["make the sky blue"]
    assert traj.config["policy"]["name"] == "served-qwen"
    assert traj.config["policy"]["base_url"] == chat_server.base_url
    assert (tmp_path / "run" / "step_001.png").exists() and (tmp_path / "run" / "trajectory.json").exists()


def test_registry_prefix_and_options(chat_server):
    policy = load_policy("openai:Qwen/Qwen2.5-VL-7B-Instruct", base_url=chat_server.base_url, temperature=0.2)
    assert isinstance(policy, OpenAIPolicy) and policy.name == "Qwen/Qwen2.5-VL-7B-Instruct"
    policy.generate(observation())
    assert chat_server.chat_requests[-1]["temperature"] == 0.2


def test_openai_api_without_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(PolicyError, match="OPENAI_API_KEY"):
        OpenAIPolicy("gpt-4.1")
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(PolicyError, match="MY_KEY"):
        OpenAIPolicy("gpt-4.1", api_key_env="MY_KEY")


# -- faults -------------------------------------------------------------------------------------------------------
def test_429_then_success_honours_retry_after(chat_server):
    import time

    chat_server.inject(Fault(429, retry_after=0.3))
    policy = OpenAIPolicy("m", base_url=chat_server.base_url, **FAST)
    t0 = time.perf_counter()
    assert policy.generate(observation())
    assert time.perf_counter() - t0 >= 0.3
    assert len(chat_server.chat_requests) == 1 and len(chat_server.requests) == 2


def test_async_429_then_success(chat_server):
    chat_server.inject(Fault(429, retry_after=0.05), times=2)
    policy = OpenAIPolicy("m", base_url=chat_server.base_url, **FAST)
    assert asyncio.run(policy.agenerate(observation()))
    assert len(chat_server.requests) == 3


def test_repeated_500_gives_up_naming_the_endpoint(chat_server):
    chat_server.inject(Fault(500), times=None)
    policy = OpenAIPolicy("m", base_url=chat_server.base_url, backoff=0.01, max_retries=2)
    with pytest.raises(PolicyError) as info:
        policy.generate(observation())
    message = str(info.value)
    assert chat_server.base_url in message and "HTTP 500" in message and "3 attempts" in message
    assert len(chat_server.requests) == 3
    with pytest.raises(PolicyError, match="HTTP 500"):
        asyncio.run(policy.agenerate(observation()))


def test_other_4xx_is_not_retried(chat_server):
    chat_server.inject(Fault(400, body=json.dumps({"error": {"message": "images are not supported"}})))
    policy = OpenAIPolicy("m", base_url=chat_server.base_url, **FAST)
    with pytest.raises(PolicyError, match="HTTP 400.*images are not supported"):
        policy.generate(observation())
    assert len(chat_server.requests) == 1


def test_timeout(chat_server):
    chat_server.inject(Fault(200, delay=3), times=None)
    policy = OpenAIPolicy("m", base_url=chat_server.base_url, timeout=0.3, backoff=0.01, max_retries=1)
    with pytest.raises(PolicyError, match="timed out.*2 attempts"):
        policy.generate(observation())
    with pytest.raises(PolicyError, match="timed out"):
        asyncio.run(policy.agenerate(observation()))


def test_connection_refused():
    base_url = f"http://127.0.0.1:{unused_port()}/v1"
    policy = OpenAIPolicy("m", base_url=base_url, backoff=0.01, max_retries=2)
    with pytest.raises(PolicyError, match=f"{base_url} could not connect.*3 attempts"):
        policy.generate(observation())
    with pytest.raises(PolicyError, match="could not connect"):
        asyncio.run(policy.agenerate(observation()))


@pytest.mark.parametrize("fault, reason", [
    (Fault(200, body="{not json"), "invalid JSON"),
    (Fault(200, body="<html>gateway</html>", content_type="text/html"), "no choices"),
    (Fault(200, body=json.dumps({"choices": []})), "no choices"),
    (Fault(200, body=json.dumps({"choices": [{"index": 0}]})), "no message text"),
])
def test_malformed_bodies_are_clear_errors(chat_server, fault, reason):
    chat_server.inject(fault)
    policy = OpenAIPolicy("m", base_url=chat_server.base_url, **FAST)
    with pytest.raises(PolicyError, match=f"{chat_server.base_url} sent a reply that could not be read.*{reason}"):
        policy.generate(observation())
    assert len(chat_server.requests) == 1


def test_agent_records_a_dead_endpoint_as_policy_error():
    policy = OpenAIPolicy("m", base_url=f"http://127.0.0.1:{unused_port()}/v1", backoff=0.01, max_retries=1)
    traj = MiraAgent(policy=policy, editor=ScriptedEditor()).run(photo(), "make the sky blue")
    assert traj.stop_reason == "policy_error" and "could not connect" in traj.error and not traj.steps


def test_api_key_never_leaks(chat_server, editor_server, tmp_path, monkeypatch, caplog):
    import logging

    from mira.editors.remote import HTTPEditor

    key = "sk-test-DoNotLeak0123456789"
    monkeypatch.setenv("MIRA_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    policy = OpenAIPolicy("m", base_url=chat_server.base_url, api_key_env="MIRA_TEST_KEY", **FAST)
    agent = MiraAgent(policy=policy, editor=HTTPEditor(editor_server.url), max_steps=3)

    chat_server.inject(Fault(429, retry_after=0.01, body=json.dumps({"error": {"message": f"slow down {key}"}})))
    traj = agent.run(photo(), "make the sky blue", run_dir=tmp_path / "run")
    assert traj.stop_reason == "stop"
    assert chat_server.requests[-1]["headers"]["authorization"] == f"Bearer {key}"  # the key was in use

    chat_server.inject(Fault(401, body=json.dumps({"error": {"message": f"Incorrect API key provided: {key}"}})))
    with pytest.raises(PolicyError) as info:
        policy.generate(observation())
    assert "HTTP 401" in str(info.value) and "API key" in str(info.value)
    traj.save(tmp_path / "run")

    assert key not in str(info.value) and key not in caplog.text and "slow down ***" in caplog.text
    assert key not in repr(policy.config()) and key not in repr(policy.backend.clients)
    for path in (tmp_path / "run").rglob("*"):
        assert key.encode() not in path.read_bytes(), path


def test_backend_errors_are_service_errors_for_other_users(chat_server):
    chat_server.inject(Fault(404))
    backend = OpenAIChatBackend("m", base_url=chat_server.base_url, **FAST)
    with pytest.raises(ServiceError, match="HTTP 404.*check the URL"):
        backend.chat([{"role": "user", "content": "score this"}])


def test_large_images_are_encoded_off_the_event_loop(chat_server, monkeypatch):
    import threading

    import mira.clients.openai_chat as openai_chat

    threads = []
    encode = openai_chat.encode_image
    monkeypatch.setattr(openai_chat, "encode_image",
                        lambda *a, **k: threads.append(threading.current_thread()) or encode(*a, **k))
    backend = OpenAIChatBackend("m", base_url=chat_server.base_url)
    small, large = observation(), Observation("x", (), photo(size=(600, 500)), photo((1, 2, 3), size=(600, 500)))
    asyncio.run(backend.achat(build_messages(small, embed_images=True)))
    assert threads == [threading.main_thread()] * 2
    asyncio.run(backend.achat(build_messages(large, embed_images=True)))
    assert len(threads) == 4 and threading.main_thread() not in threads[2:]
    sent = [p for p in chat_server.chat_requests[-1]["messages"][1]["content"] if p["type"] == "image_url"]
    assert decode_data_url(sent[1]["image_url"]["url"]).tobytes() == large.current.tobytes()
