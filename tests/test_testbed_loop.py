"""The testbed's backends in MIRA's loop: the noisy editor, the exact judge, the oracle policy, the baselines, the CLI."""

from __future__ import annotations

import asyncio
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from mira import registry
from mira.agent import MiraAgent
from mira.cli import app
from mira.editors.base import EditorError
from mira.policies.base import PolicyError
from mira.protocol import STOP, Observation, parse_completion_strict
from mira.testbed.demo import format_table, run_baselines
from mira.testbed.edits import apply_edit, distance
from mira.testbed.editor import ERROR_MODES, TestbedEditor
from mira.testbed.judge import TestbedJudge
from mira.testbed.language import parse_edit
from mira.testbed.oracle import OraclePolicy
from mira.testbed.scene import Scene, Shape, add_noise, read_scene, render
from mira.testbed.tasks import make_tasks

runner = CliRunner()

SCENE = Scene("white", (Shape("circle", "red", "large", (0, 0)), Shape("square", "blue", "small", (1, 1)),
                        Shape("triangle", "green", "large", (2, 2))))
IMAGE = render(SCENE)
RECOLOR = "make the red circle yellow"


def edited(editor: TestbedEditor, instruction: str, seed: int = 0, image: Image.Image = IMAGE) -> Scene:
    return read_scene(editor.edit(image, instruction, seed=seed))


def changed_cells(a: Scene, b: Scene) -> set:
    return {c for c in {s.cell for s in a.shapes + b.shapes} if a.at(c) != b.at(c)}


# -- editor ----------------------------------------------------------------------------------------------------------
def test_editor_without_errors_executes_the_instruction_from_pixels():
    editor = TestbedEditor(error_rate=0.0)
    assert edited(editor, RECOLOR) == SCENE.with_shape(SCENE.at((0, 0)).replace(color="yellow"))
    assert edited(editor, "Move the triangle to the top right.") == SCENE.without((2, 2)).with_shape(
        SCENE.at((2, 2)).replace(cell=(0, 2)))
    assert edited(editor, "paint a poodle on the moon") == SCENE  # outside the grammar: ignored
    assert edited(editor, "remove the diamond") == SCENE  # nothing matches: ignored


def test_editor_error_noop():
    editor = TestbedEditor(error_rate=1.0, error_modes=["noop"])
    assert edited(editor, RECOLOR) == SCENE


def test_editor_error_wrong_object():
    editor = TestbedEditor(error_rate=1.0, error_modes=["wrong_object"])
    for seed in range(5):
        out = edited(editor, RECOLOR, seed)
        assert out.at((0, 0)) == SCENE.at((0, 0))
        (cell,) = changed_cells(SCENE, out)
        assert out.at(cell).color == "yellow"
        added = edited(editor, "add a purple diamond in the top right corner", seed)
        (cell,) = changed_cells(SCENE, added)
        assert cell != (0, 2) and added.at(cell).kind == "diamond"


def test_editor_error_wrong_value():
    editor = TestbedEditor(error_rate=1.0, error_modes=["wrong_value"])
    for seed in range(5):
        out = edited(editor, RECOLOR, seed)
        assert changed_cells(SCENE, out) == {(0, 0)} and out.at((0, 0)).color not in ("red", "yellow")
        moved = edited(editor, "move the square to the bottom left", seed)
        assert moved.at((1, 1)) is None and moved.at((2, 0)) is None and len(moved.shapes) == 3
        bg = edited(editor, "make the background black", seed)
        assert bg.background == "gray" and bg.shapes == SCENE.shapes


def test_editor_error_side_effect():
    editor = TestbedEditor(error_rate=1.0, error_modes=["side_effect"])
    for seed in range(5):
        out = edited(editor, RECOLOR, seed)
        assert out.at((0, 0)).color == "yellow"
        (other,) = changed_cells(SCENE, out) - {(0, 0)}
        assert out.at(other).color != SCENE.at(other).color


def test_editor_resize_has_no_wrong_value_and_falls_back_to_another_mode():
    editor = TestbedEditor(error_rate=1.0, error_modes=["wrong_value", "noop"])
    assert edited(editor, "make the square bigger") == SCENE


def test_editor_errs_at_its_rate_and_is_seeded():
    editor = TestbedEditor(error_rate=0.3)
    right = SCENE.with_shape(SCENE.at((0, 0)).replace(color="yellow"))
    outcomes = [edited(editor, RECOLOR, seed) == right for seed in range(300)]
    assert 0.6 < sum(outcomes) / len(outcomes) < 0.8
    assert [edited(editor, RECOLOR, seed) for seed in range(20)] == [edited(editor, RECOLOR, s) for s in range(20)]


def test_editor_executes_only_part_of_a_complex_instruction():
    text = "make the red circle yellow, remove the square and make the triangle purple"
    assert changed_cells(SCENE, edited(TestbedEditor(0.0, partial="first"), text)) == {(0, 0)}
    assert changed_cells(SCENE, edited(TestbedEditor(0.0, partial="all"), text)) == {(0, 0), (1, 1), (2, 2)}
    sizes = {len(changed_cells(SCENE, edited(TestbedEditor(0.0, partial="random"), text, seed))) for seed in range(40)}
    assert sizes == {1, 2, 3}
    assert len(changed_cells(SCENE, edited(TestbedEditor(0.0, partial="random", keep_rate=0.0), text))) == 1


def test_editor_options_and_bad_input():
    with pytest.raises(ValueError, match="partial"):
        TestbedEditor(partial="half")
    with pytest.raises(ValueError, match="error_modes"):
        TestbedEditor(error_modes=["explode"])
    with pytest.raises(EditorError, match="testbed scenes"):
        TestbedEditor().edit(Image.effect_noise((128, 128), 80).convert("RGB"), RECOLOR, seed=0)
    editor = registry.load_editor("testbed", error_rate=0.5, partial="first")
    assert isinstance(editor, TestbedEditor) and editor.config()["error_rate"] == 0.5
    assert set(editor.params()["error_modes"]) == set(ERROR_MODES)
    noisy = TestbedEditor(0.0, noise=10.0).edit(IMAGE, RECOLOR, seed=1)
    assert noisy.tobytes() != render(read_scene(noisy)).tobytes() and read_scene(noisy).at((0, 0)).color == "yellow"


# -- judge -----------------------------------------------------------------------------------------------------------
def test_judge_gives_ten_to_a_perfect_edit():
    judge = TestbedJudge()
    for task in make_tasks(20, seed=11):
        scores = judge.score(task.image, task.target_image, task.instruction)
        assert scores.ok and scores.sc == 10.0 and scores.pq == 10.0 and scores.overall == 10.0
        assert scores.details["exact"] and scores.details["satisfied"] == len(task.clauses)
    untouched = judge.score(IMAGE, IMAGE, RECOLOR)
    assert untouched.sc == 0.0 and not untouched.details["exact"]
    nothing_to_do = judge.score(IMAGE, IMAGE, "remove the diamond")  # no diamond: leaving the image alone is right
    assert nothing_to_do.sc == 10.0 and nothing_to_do.details["inapplicable"] == 1


def test_judge_penalises_missing_clauses_and_unintended_changes():
    judge = TestbedJudge()
    two = "make the red circle yellow and remove the square"
    half = render(SCENE.with_shape(SCENE.at((0, 0)).replace(color="yellow")))
    scores = judge.score(IMAGE, half, two)
    assert scores.sc == pytest.approx(5.0) and scores.details["satisfied"] == 1 and scores.details["clauses"] == 2
    done_plus = SCENE.with_shape(SCENE.at((0, 0)).replace(color="yellow")).with_shape(
        SCENE.at((2, 2)).replace(color="purple"))
    scores = judge.score(IMAGE, render(done_plus), RECOLOR)
    assert 0.0 < scores.sc < 10.0 and scores.details["unintended"] == ["bottom right"]
    worse = done_plus.with_background("black")
    assert judge.score(IMAGE, render(worse), RECOLOR).sc < scores.sc


def test_judge_pq_drops_for_noisy_images_and_errors_are_data():
    judge = TestbedJudge()
    target = render(SCENE.with_shape(SCENE.at((0, 0)).replace(color="yellow")))
    noisy = judge.score(IMAGE, add_noise(target, 12.0, 0), RECOLOR)
    assert noisy.sc == 10.0 and 7.0 < noisy.pq < 10.0
    assert "grammar" in judge.score(IMAGE, target, "make it look like a Monet").error
    assert "not a testbed scene" in judge.score(IMAGE, Image.effect_noise((128, 128), 80).convert("RGB"), RECOLOR).error


# -- oracle ----------------------------------------------------------------------------------------------------------
def decision(observation: Observation, seed: int = 0) -> str:
    (completion,) = OraclePolicy().generate(observation, seed=seed)
    parsed = parse_completion_strict(completion)
    assert parsed.ok, completion
    return parsed.action


def test_oracle_issues_the_next_clause_then_stops():
    text = "make the red circle yellow and remove the square"
    assert decision(Observation(text, (), IMAGE, IMAGE)) == "make the red circle yellow"
    step1 = render(SCENE.with_shape(SCENE.at((0, 0)).replace(color="yellow")))
    assert decision(Observation(text, ("make the red circle yellow",), IMAGE, step1)) == "remove the square"
    done = render(read_scene(step1).without((1, 1)))
    assert decision(Observation(text, ("make the red circle yellow", "remove the square"), IMAGE, done)) == STOP


def test_oracle_corrects_a_wrong_edit():
    # the editor turned the triangle yellow instead of the circle
    wrong = SCENE.with_shape(SCENE.at((2, 2)).replace(color="yellow"))
    action = decision(Observation(RECOLOR, (RECOLOR,), IMAGE, render(wrong)))
    target = SCENE.with_shape(SCENE.at((0, 0)).replace(color="yellow"))
    assert distance(apply_edit(wrong, parse_edit(action)), target) < distance(wrong, target)


def test_oracle_rephrases_instead_of_repeating_an_ignored_edit():
    for seed in range(10):
        action = decision(Observation(RECOLOR, (RECOLOR,), IMAGE, IMAGE), seed)
        assert action.lower() != RECOLOR and parse_edit(action).color == "yellow"


def test_oracle_refuses_images_that_are_not_scenes():
    noise = Image.effect_noise((128, 128), 80).convert("RGB")
    with pytest.raises(PolicyError, match="testbed scenes"):
        OraclePolicy().generate(Observation(RECOLOR, (), noise, noise))
    assert registry.load_policy("testbed-oracle").name == "testbed-oracle"


def test_oracle_in_the_real_agent_solves_tasks_with_a_noisy_editor(tmp_path):
    editor = TestbedEditor(error_rate=0.3, noise=4.0)
    judge = TestbedJudge()
    tasks = make_tasks(30, seed=12)
    solved = 0
    for i, task in enumerate(tasks):
        traj = MiraAgent(policy=OraclePolicy(), editor=editor, max_steps=14, seed=i).run(
            task.image, task.instruction, run_dir=tmp_path / task.id if i == 0 else None)
        scores = judge.score(task.image, traj.final_image, task.instruction)
        solved += traj.stop_reason == "stop" and scores.details["exact"]
    assert solved / len(tasks) >= 0.9
    assert (tmp_path / tasks[0].id / "trajectory.json").is_file()


def test_oracle_runs_through_the_async_loop_too():
    task = make_tasks(1, seed=13, clauses=(3, 3))[0]
    agent = MiraAgent(policy=OraclePolicy(), editor=TestbedEditor(0.0), max_steps=6)
    traj = asyncio.run(agent.arun(task.image, task.instruction))
    assert traj.stop_reason == "stop" and read_scene(traj.final_image) == task.target and traj.editor_calls == 3


# -- baselines and CLI -----------------------------------------------------------------------------------------------
def test_baselines_rank_as_expected():
    results = {r.name: r for r in run_baselines(n=24, seed=10_000, error_rate=0.2)}
    single, static, oracle = results["single-shot"], results["static plan"], results["closed loop (oracle)"]
    assert set(single.calls) == {1}
    assert static.calls == static.clauses
    assert oracle.rate() >= 0.9 and oracle.rate() > static.rate() > single.rate()
    assert min(oracle.calls) >= 1 and sum(oracle.calls) >= sum(static.calls)
    table = format_table(list(results.values()), 0.2)
    assert table.count("\n") == 5 and "closed loop (oracle)" in table


def test_cli_testbed_demo_and_export(tmp_path):
    result = runner.invoke(app, ["testbed", "demo", "--n", "4", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "| static plan |" in result.output
    bad = runner.invoke(app, ["testbed", "demo", "--min-clauses", "3", "--max-clauses", "2"])
    assert bad.exit_code == 2 and "--min-clauses 3 is above" in bad.output
    result = runner.invoke(app, ["testbed", "export", str(tmp_path / "s"), "--n", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "s" / "sessions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all((tmp_path / "s" / r["image"]).is_file() for r in rows)
    result = runner.invoke(app, ["testbed", "benchmark", str(tmp_path / "b"), "--n", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["id"].startswith("testbed-10000-") for r in rows)


def test_cli_edit_runs_the_oracle_on_a_testbed_image(tmp_path):
    task = make_tasks(1, seed=14, clauses=(2, 2))[0]
    task.image.save(tmp_path / "scene.png")
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["edit", str(tmp_path / "scene.png"), task.instruction, "--policy", "testbed-oracle",
                                 "--editor", "testbed", "--editor-option", "error_rate=0", "-o", str(out),
                                 "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert read_scene(Image.open(out)) == task.target


@pytest.mark.slow
def test_a_real_qwen_vl_policy_runs_in_the_testbed_unchanged(tiny_models):
    """The learned-policy path: a tiny random-weight Qwen2.5-VL drives the testbed editor and is judged exactly."""
    from mira.policies.transformers import TransformersPolicy

    task = make_tasks(1, seed=15, clauses=(2, 2))[0]
    policy = TransformersPolicy(str(tiny_models["qwen2_5_vl"]), max_new_tokens=16)
    traj = MiraAgent(policy=policy, editor=TestbedEditor(0.2), max_steps=3, seed=1).run(task.image, task.instruction)
    assert traj.steps and traj.stop_reason in ("stop", "max_steps", "repeat", "policy_error")
    for step in traj.steps:
        if step.image is not None:
            read_scene(step.image)  # whatever the policy said, the editor's output is a testbed scene
    scores = TestbedJudge().score(task.image, traj.final_image, task.instruction)
    assert scores.ok and 0.0 <= scores.sc <= 10.0 and scores.pq == 10.0
