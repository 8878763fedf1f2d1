"""The VLM baselines: one-shot rewrite and a static plan executed open loop, over any chat backend."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from eval_helpers import TintEditor
from mira.agent import MiraAgent
from mira.policies.baselines import RewritePolicy, VLMPlanPolicy, parse_plan, parse_rewrite
from mira.registry import load_policy
from mira.vlm import ChatBackend


class EchoChat(ChatBackend):
    """Replies with ``reply(instruction)``; records every request."""

    def __init__(self, reply, fail: bool = False):
        self.reply, self.fail, self.requests = reply, fail, []

    def chat(self, messages, *, n=1, seed=None, **sampling):
        self.requests.append(messages)
        if self.fail:
            raise TimeoutError("read timed out")
        text = messages[-1]["content"][-1]["text"]
        instruction = text.split("Instruction: ", 1)[1].split("\n", 1)[0]
        return [self.reply(instruction)] * n


@pytest.fixture
def image():
    return Image.new("RGB", (48, 32), (120, 120, 120))


@pytest.mark.parametrize("reply,expected", [
    ("Make the cup red and the saucer blue.", "Make the cup red and the saucer blue."),
    ('Prompt: "Make the cup red"', "Make the cup red"),
    ("<think>The cup is white.</think>\nTurn the cup red", "Turn the cup red"),
    ("```\nRecolor the cup red\n```", "Recolor the cup red"),
    ("Edited prompt: make the cup red,\nkeep the table.\n\nThis prompt is clear.", "make the cup red, keep the table."),
    ("   ", ""),
])
def test_rewrite_replies_become_one_editor_prompt(reply, expected):
    assert parse_rewrite(reply) == expected


def test_rewrites_longer_than_an_action_are_cut_at_a_word():
    prompt = parse_rewrite("word " * 200)
    assert 380 < len(prompt) <= 400 and prompt.endswith("word")


@pytest.mark.parametrize("reply,expected", [
    ("1. make the cup red\n2. make the saucer blue", ["make the cup red", "make the saucer blue"]),
    ("Plan:\n- make the cup red\n- make the saucer blue\n", ["make the cup red", "make the saucer blue"]),
    ("Step 1: make the cup red\nStep 2: make the saucer blue", ["make the cup red", "make the saucer blue"]),
    ('["make the cup red", "make the saucer blue"]', ["make the cup red", "make the saucer blue"]),
    ("make the cup red\nmake the saucer blue", ["make the cup red", "make the saucer blue"]),
    ("1) **make the cup red**\n2) <STOP>", ["make the cup red"]),
    ("1. a\n2. b\n3. c\n4. d", ["a", "b", "c"]),
])
def test_plan_replies_become_atomic_edits(reply, expected):
    assert parse_plan(reply, max_edits=3) == expected


def test_rewrite_runs_the_rewritten_prompt_once_then_stops(image):
    chat = EchoChat(lambda instruction: f"Prompt: {instruction}, keep the rest")
    editor = TintEditor()
    traj = MiraAgent(policy=RewritePolicy(chat), editor=editor).run(image, "make the cup red and the table black")
    assert traj.stop_reason == "stop" and traj.edits == ["make the cup red and the table black, keep the rest"]
    assert len(chat.requests) == 1 and editor.calls == 1
    user = chat.requests[0][-1]["content"]
    assert user[0] == {"type": "image", "image": traj.original}


def test_an_empty_rewrite_falls_back_to_the_instruction(image):
    traj = MiraAgent(policy=RewritePolicy(EchoChat(lambda i: "")), editor=TintEditor()).run(image, "make it red")
    assert traj.edits == ["make it red"] and "gave no prompt" in traj.steps[0].reasoning


def test_vlm_plan_is_asked_once_and_executed_open_loop(image):
    chat = EchoChat(lambda instruction: "1. make the cup red\n2. make the table black\n3. make the wall white")
    traj = MiraAgent(policy=VLMPlanPolicy(chat), editor=TintEditor()).run(image, "a complex instruction")
    assert traj.edits == ["make the cup red", "make the table black", "make the wall white"]
    assert traj.stop_reason == "stop" and len(chat.requests) == 1


def test_one_plan_policy_serves_concurrent_trajectories(image):
    chat = EchoChat(lambda instruction: "\n".join(f"{i}. {instruction} part {i}" for i in (1, 2)))
    agent = MiraAgent(policy=VLMPlanPolicy(chat), editor=TintEditor(latency=0.01))

    async def both():
        return await asyncio.gather(agent.arun(image, "paint A"), agent.arun(image.copy(), "paint B"),
                                    agent.arun(image, "paint A", seed=5))

    a, b, a5 = asyncio.run(both())
    assert a.edits == a5.edits == ["paint A part 1", "paint A part 2"]
    assert b.edits == ["paint B part 1", "paint B part 2"]
    assert len(chat.requests) == 3


def test_a_failing_vlm_is_a_policy_error(image):
    traj = MiraAgent(policy=VLMPlanPolicy(EchoChat(None, fail=True)), editor=TintEditor()).run(image, "x")
    assert traj.stop_reason == "policy_error" and "read timed out" in traj.error


def test_baselines_resolve_from_policy_specs(monkeypatch):
    from mira import registry

    monkeypatch.setitem(registry.CHAT_BACKENDS, "echo", "test_baselines:EchoChat")
    plan = load_policy("plan:echo", reply=str, max_edits=2)
    rewrite = load_policy("rewrite:echo", reply=str)
    assert isinstance(plan, VLMPlanPolicy) and plan.max_edits == 2 and isinstance(rewrite, RewritePolicy)
    assert plan.config()["max_edits"] == 2 and rewrite.config()["prompt_version"] == "1"
