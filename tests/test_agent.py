import asyncio
import json

import pytest
from PIL import Image

from fakes import ScriptedPolicy, StripeEditor, think
from mira import MiraAgent, MiraPipeline, STOP, Trajectory
from mira.agent import AgentCallback, step_seed
from mira.policies.baselines import PassthroughPolicy, StaticPlanPolicy
from mira.policies.base import PolicyError


@pytest.fixture
def image():
    return Image.new("RGB", (64, 48), (200, 200, 200))


def run(script, editor=None, **kw):
    agent = MiraAgent(policy=ScriptedPolicy(script), editor=editor or StripeEditor(), **kw)
    return agent, agent.run(Image.new("RGB", (64, 48), "gray"), "make a b and c d")


def test_stop_rule():
    agent, t = run([think("make a b"), think("make c d"), think(STOP)])
    assert t.stop_reason == "stop"
    assert [s.action for s in t.steps] == ["make a b", "make c d", STOP]
    assert t.edits == ["make a b", "make c d"] and t.editor_calls == 2
    assert t.steps[-1].image is None and t.final_image is t.steps[1].image
    # history grows step by step and the current image is the previous step's result
    calls = agent.policy.calls
    assert [c[0].history for c in calls] == [(), ("make a b",), ("make a b", "make c d")]
    assert calls[1][0].current is t.steps[0].image
    assert all(c[0].original is t.original for c in calls)


def test_max_steps_rule():
    _, t = run([think(f"edit {i}") for i in range(10)], max_steps=3)
    assert t.stop_reason == "max_steps" and len(t.steps) == 3 and t.editor_calls == 3


def test_repeat_rule_keeps_step_without_executing():
    agent, t = run([think("make a b"), think("Make a b.")])
    assert t.stop_reason == "repeat"
    assert len(t.steps) == 2 and t.steps[1].image is None
    assert t.steps[1].extra["not_executed"]
    assert len(agent.editor.calls) == 1


def test_unparseable_is_resampled_then_recovers():
    agent, t = run(["<think>oops", "", think("make a b"), think(STOP)], max_parse_retries=2)
    assert t.stop_reason == "stop"
    assert t.steps[0].parse_attempts == 3
    seeds = [seed for _, seed in agent.policy.calls[:3]]
    assert len(set(seeds)) == 3  # each resample gets its own seed


def test_unparseable_too_often_is_policy_error():
    _, t = run(["<think>x", "<think>y", "<think>z", think(STOP)], max_parse_retries=2)
    assert t.stop_reason == "policy_error" and "unparseable" in t.error
    assert t.steps == []


def test_policy_exception_keeps_completed_steps():
    _, t = run([think("make a b"), PolicyError("server down")])
    assert t.stop_reason == "policy_error" and "server down" in t.error
    assert len(t.steps) == 1 and t.steps[0].image is not None


def test_editor_failure_retried_once_then_succeeds():
    editor = StripeEditor(fail_times=1)
    _, t = run([think("make a b"), think(STOP)], editor=editor)
    assert t.stop_reason == "stop"
    assert len(editor.calls) == 2 and editor.calls[0][1] != editor.calls[1][1]
    assert t.steps[0].seed == editor.calls[1][1]


def test_editor_failure_twice_is_editor_error():
    editor = StripeEditor(fail_always=True)
    _, t = run([think("make a b"), think("make c d"), think(STOP)], editor=editor)
    assert t.stop_reason == "editor_error" and "out of memory" in t.error
    assert len(t.steps) == 1 and t.steps[0].image is None and t.steps[0].extra["editor_error"]
    assert len(editor.calls) == 2


def test_editor_returning_non_image_is_an_error():
    class Bad(StripeEditor):
        def edit(self, image, instruction, *, seed=None):
            return "not an image"

    _, t = run([think("make a b")], editor=Bad())
    assert t.stop_reason == "editor_error" and "not an image" in t.error


def test_seeds_are_deterministic_and_distinct():
    _, a = run([think("e1"), think("e2"), think(STOP)], seed=7)
    _, b = run([think("e1"), think("e2"), think(STOP)], seed=7)
    _, c = run([think("e1"), think("e2"), think(STOP)], seed=8)
    assert [s.seed for s in a.steps] == [s.seed for s in b.steps]
    assert a.steps[0].seed != a.steps[1].seed
    assert [s.seed for s in a.steps[:2]] != [s.seed for s in c.steps[:2]]
    assert a.steps[0].seed == step_seed(7, 1)
    assert a.final_image.tobytes() == b.final_image.tobytes()


def test_callbacks_see_every_step_in_order():
    seen = []

    class CB(AgentCallback):
        def on_run_start(self, t):
            seen.append("start")

        def on_decision(self, index, parsed, t):
            seen.append(f"decide{index}")

        def on_step(self, step, t):
            seen.append(f"step{step.index}")

        def on_run_end(self, t):
            seen.append("end")

    plain = []
    agent = MiraAgent(policy=ScriptedPolicy([think("a"), think(STOP)]), editor=StripeEditor(), callbacks=[CB()])
    agent.run(Image.new("RGB", (32, 32)), "do a", callbacks=[lambda s, t: plain.append(s.index)])
    assert seen == ["start", "decide1", "step1", "decide2", "step2", "end"]
    assert plain == [1, 2]


def test_async_run_matches_sync():
    script = [think("e1"), think("e2"), think(STOP)]
    sync = MiraAgent(policy=ScriptedPolicy(script), editor=StripeEditor(), seed=3).run(Image.new("RGB", (32, 32)), "x")
    agent = MiraAgent(policy=ScriptedPolicy(script), editor=StripeEditor(), seed=3)
    asyn = asyncio.run(agent.arun(Image.new("RGB", (32, 32)), "x"))
    assert [s.action for s in asyn.steps] == [s.action for s in sync.steps]
    assert asyn.final_image.tobytes() == sync.final_image.tobytes()


def test_run_folder_round_trip_and_report(tmp_path):
    agent = MiraAgent(policy=ScriptedPolicy([think("make <b>", "why & how"), think(STOP)]), editor=StripeEditor())
    t = agent.run(Image.new("RGB", (40, 30), "white"), "make <b>", run_dir=tmp_path / "run")
    run_dir = tmp_path / "run"
    for name in ("original.png", "step_001.png", "final.png", "trajectory.json", "report.html"):
        assert (run_dir / name).is_file(), name
    data = json.loads((run_dir / "trajectory.json").read_text())
    assert data["stop_reason"] == "stop" and data["protocol_version"]
    assert data["config"]["agent"]["max_steps"] == 8 and data["config"]["editor"]["name"] == "stripe"
    loaded = Trajectory.load(run_dir)
    assert [s.action for s in loaded.steps] == [s.action for s in t.steps]
    assert loaded.final_image.tobytes() == t.final_image.tobytes()
    assert loaded.source_sha256 == t.source_sha256
    html = (run_dir / "report.html").read_text()
    assert "make &lt;b&gt;" in html and "why &amp; how" in html and "step_001.png" in html


def test_trajectory_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="trajectory.json"):
        Trajectory.load(tmp_path)


def test_passthrough_baseline():
    editor = StripeEditor()
    t = MiraAgent(policy=PassthroughPolicy(), editor=editor).run(Image.new("RGB", (32, 32)), "do a and b")
    assert t.stop_reason == "stop" and editor.calls[0][0] == "do a and b" and t.editor_calls == 1


def test_static_plan_baseline():
    editor = StripeEditor()
    t = MiraAgent(policy=StaticPlanPolicy(["do a", "do b"]), editor=editor).run(Image.new("RGB", (32, 32)), "x")
    assert [c[0] for c in editor.calls] == ["do a", "do b"] and t.stop_reason == "stop"
    with pytest.raises(ValueError):
        StaticPlanPolicy([])


def test_pipeline_front_door(tmp_path):
    pipe = MiraPipeline(ScriptedPolicy([think("a"), think(STOP), think("b"), think(STOP)]), StripeEditor())
    out = pipe(image=[Image.new("RGB", (32, 32)), Image.new("RGB", (32, 32))], prompt="x", run_dir=tmp_path)
    assert len(out.images) == 2 and all(isinstance(i, Image.Image) for i in out.images)
    assert (tmp_path / "000" / "trajectory.json").exists() and (tmp_path / "001" / "report.html").exists()
    with pytest.raises(ValueError, match="one prompt per image"):
        pipe(image=[Image.new("RGB", (32, 32))], prompt=["a", "b"])


def test_invalid_max_steps():
    with pytest.raises(ValueError):
        MiraAgent(policy=ScriptedPolicy(), editor=StripeEditor(), max_steps=0)
