"""Learning in the testbed: the plain oracle (the teacher), its data, batched evaluation, and a one-minute smoke run of
the whole pipeline (data builder, short-prompt pre-training, SFT, GRPO, evaluation) with its report."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mira import MiraAgent
from mira.cli import app
from mira.protocol import STOP, Observation, parse_completion_strict
from mira.testbed.editor import TestbedEditor
from mira.testbed.edits import Add, Background, Recolor, Ref, Remove, apply_edit
from mira.testbed.language import parse_edit, plain_text, split_clauses
from mira.testbed.learning.config import LearningError, apply_overrides, check_resumable, full, smoke
from mira.testbed.oracle import OraclePolicy, by_cell, describe_changes
from mira.testbed.scene import Scene, Shape, read_scene
from mira.testbed.tasks import make_tasks


# -- the teacher: plain wordings, lists of changes -----------------------------------------------------------------
def test_both_plain_wordings_of_every_edit_parse_back_to_it():
    seen = set()
    for task in make_tasks(60, seed=3):
        scene = task.source
        for edit in task.edits:
            named = by_cell(scene, edit)
            texts = [plain_text(named, w) for w in (0, 1)]
            assert texts[0] != texts[1]
            for text in texts:
                assert parse_edit(text) == named, text
            seen.add(type(edit).__name__)
            scene = apply_edit(scene, edit)
    assert len(seen) == 6  # every kind of edit was exercised


def test_plain_text_refuses_relations():
    relation = Ref(kind="circle", relation="left of", anchor=Ref(kind="square"))
    with pytest.raises(ValueError, match="relations"):
        plain_text(Remove(relation))


def test_describe_changes_lists_units_in_reading_order():
    a = Scene("white", (Shape("circle", "red", "large", (0, 0)), Shape("square", "green", "small", (1, 1))))
    assert describe_changes(a, a) == "Nothing has changed yet."
    b = apply_edit(apply_edit(apply_edit(a, Recolor(Ref(kind="circle"), "blue")), Remove(Ref(kind="square"))),
                   Background("black"))
    b = apply_edit(b, Add("triangle", "yellow", "small", (2, 2)))
    assert describe_changes(a, b) == (
        "Changed: background white -> black; top left: large red circle -> large blue circle; "
        "center: small green square -> nothing; bottom right: nothing -> small yellow triangle.")


def test_describe_cells_lists_every_cell_then_the_background():
    from mira.testbed.learning.data import describe_cells

    scene = Scene("gray", (Shape("circle", "red", "large", (0, 0)), Shape("square", "green", "small", (2, 2))))
    assert describe_cells(scene) == (
        "top left: large red circle; top middle: nothing; top right: nothing; middle left: nothing; center: nothing; "
        "middle right: nothing; bottom left: nothing; bottom middle: nothing; bottom right: small green square; "
        "background gray.")


def test_the_plain_oracle_solves_noisy_tasks_and_reasons_with_the_changes():
    from mira.testbed.judge import TestbedJudge

    judge, editor = TestbedJudge(), TestbedEditor(error_rate=0.2)
    corrections = 0
    for i, task in enumerate(make_tasks(30, seed=5)):
        trajectory = MiraAgent(policy=OraclePolicy(plain=True), editor=editor, max_steps=20, seed=i).run(
            task.image, task.instruction)
        assert trajectory.stop_reason == "stop"
        assert judge.score(task.image, trajectory.final_image, task.instruction).details["exact"]
        current, clauses = trajectory.original, split_clauses(task.instruction)
        for step in trajectory.steps:
            assert parse_completion_strict(step.raw_completion).ok
            assert step.reasoning == describe_changes(read_scene(trajectory.original), read_scene(current))
            if not step.is_stop and step.action not in clauses:
                corrections += 1
                assert parse_edit(step.action).__class__.__name__  # a plain wording the editor understands
            current = step.image or current
    assert corrections > 0  # the editor erred and the oracle corrected it


def test_the_change_annotator_reads_both_images_of_the_annotator_prompt():
    from mira.data.prompts import annotator_messages
    from mira.testbed.learning.data import ChangeAnnotator

    task = make_tasks(1, seed=11)[0]
    done = task.states()[0]
    from mira.testbed.scene import render

    messages = annotator_messages(task.image, render(done), task.instruction, list(task.clauses[:1]), None)
    assert ChangeAnnotator().chat(messages, n=2) == [describe_changes(task.source, done)] * 2


# -- settings ------------------------------------------------------------------------------------------------------
def test_overrides_minutes_and_resuming_with_other_settings(tmp_path):
    config = apply_overrides(full(), ["sft_lr=1e-4", "eval_tasks=300", "grpo_generations=4"])
    assert (config.sft_lr, config.eval_tasks, config.grpo_generations) == (1e-4, 300, 4)
    scaled = config.with_minutes(19.0)
    assert scaled.pretrain_minutes + scaled.sft_minutes + scaled.grpo_minutes == pytest.approx(19.0)
    assert scaled.sft_minutes / scaled.pretrain_minutes == pytest.approx(config.sft_minutes / config.pretrain_minutes)
    for bad, message in (["lr=1"], "known key"), (["sft_steps=many"], "must be int"):
        with pytest.raises(LearningError, match=message):
            apply_overrides(full(), bad)
    check_resumable(config, tmp_path)
    check_resumable(scaled, tmp_path)  # other minutes: fine
    with pytest.raises(LearningError, match="other settings \\(sft_lr\\)"):
        check_resumable(dataclasses.replace(scaled, sft_lr=1.0), tmp_path)


# -- data ------------------------------------------------------------------------------------------------------------
def test_teacher_samples_hold_corrective_states_in_the_builder_format():
    from mira.data.export import features
    from mira.testbed.learning.data import teacher_dataset

    config = dataclasses.replace(smoke(), teacher_tasks=16, error_rate=0.5)
    dataset, counts = teacher_dataset(config)
    assert set(dataset.features) == set(features())
    assert counts["start"] == counts["stop"] == len(set(dataset["trajectory_id"]))
    assert counts["start"] + counts.get("continue", 0) + counts["stop"] == len(dataset)
    assert counts["after an editor error"] > 0 and counts["correction or rephrasing"] > 0
    row = dataset[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"] and len(row["images"]) == 2


# -- the tiny policy and batched decisions ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from mira.testbed.learning.data import language_text
    from mira.testbed.learning.model import build_policy

    folder = tmp_path_factory.mktemp("learning-policy") / "policy"
    config = smoke()
    build_policy(config, folder, language_text(config, n=50))
    return folder


def test_the_policy_sees_one_image_token_per_grid_cell(tiny_policy):
    from transformers import AutoProcessor

    task = make_tasks(1, seed=0)[0]
    processor = AutoProcessor.from_pretrained(tiny_policy)
    grid = processor.image_processor(images=[task.image], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 6]]  # 96x96 pixels: 6x6 patches of 16, merged 2x2 into 3x3 tokens
    words = processor.tokenizer.tokenize(" triangle purple diamond")
    assert len(words) == 3  # the testbed's words are single tokens


def test_batched_decisions_match_one_at_a_time_greedy_decoding(tiny_policy):
    from mira.policies.transformers import TransformersPolicy
    from mira.testbed.learning.evaluate import BatchedPolicy

    tasks = make_tasks(3, seed=1)
    observations = [Observation(t.instruction, tuple(t.clauses[:i]), t.image, t.image) for i, t in enumerate(tasks)]
    single = TransformersPolicy(str(tiny_policy), do_sample=False, max_new_tokens=12)
    batched = BatchedPolicy(str(tiny_policy), max_batch=2, max_new_tokens=12)
    assert batched.generate_batch(observations) == [single.generate(o)[0] for o in observations]


# -- the whole pipeline ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    pytest.importorskip("mira.train", reason="the trainers (mira.train) are not installed in this checkout")
    out = tmp_path_factory.mktemp("learning") / "run"
    # In its own process: training leaves library state behind (weight tying of later-loaded T5 encoders was seen
    # to break), which must not leak into the other tests of this session.
    code = ("import json, sys\n"
            "from mira.testbed.learning.config import smoke\n"
            "from mira.testbed.learning.pipeline import run\n"
            "lines = []\n"
            "report = run(smoke(), sys.argv[1], log=lines.append)\n"
            "print(json.dumps({'report': report, 'lines': lines}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, result["report"], result["lines"]


def test_the_smoke_run_leaves_every_artefact(smoke_run):
    out, report, lines = smoke_run
    done = json.loads((out / "progress.json").read_text())
    assert list(done) == ["policy", "data", "pretrain", "sft", "grpo", "evaluate"]
    assert (out / "report.md").read_text() == report
    for stage in ("pretrain", "sft", "grpo"):
        assert (out / stage / "config.json").is_file() and (out / stage / "processor_config.json").is_file()
        assert done[stage]["steps"] >= 1
    assert json.loads((out / "grpo" / "mira_training.json").read_text())["stage"] == "grpo"
    assert any(line.startswith("evaluate: MIRA-SFT+GRPO:") for line in lines)


def test_the_smoke_run_data_are_consistent(smoke_run):
    import datasets

    out, _, _ = smoke_run
    info = json.loads((out / "progress.json").read_text())["data"]
    sft = datasets.load_from_disk(str(out / "data" / "sft"))
    assert len(sft) == info["sft_samples"] == info["builder_samples"] + info["teacher_samples"]
    kinds = info["builder_kinds"]
    assert kinds["start"] == kinds["stop"] > 0 and set(sft["kind"]) == {"start", "continue", "stop"}
    assert set(sft["source"]) == {"jsonl", "testbed-teacher"}
    card = (out / "data" / "builder" / "dataset" / "README.md").read_text()
    assert "mira.testbed.judge:TestbedJudge" in card  # made by the real data builder
    pretrain = datasets.load_from_disk(str(out / "data" / "pretrain"))
    assert len(pretrain) == info["pretrain_samples"] == 2 * smoke().perception_pairs + len(sft)
    assert {m[0]["role"] for m in pretrain["messages"]} == {"user"}  # short prompts: no system prompt
    assert sorted({len(images) for images in pretrain["images"]}) == [1, 2]  # cell listings and two-image rows
    grpo = datasets.load_from_disk(str(out / "data" / "grpo"))
    assert {"prompt", "images", "instruction", "history"} <= set(grpo.features)


def test_the_smoke_report_holds_the_table_and_the_reward_curve(smoke_run):
    from mira.eval.runner import read_records

    out, report, _ = smoke_run
    config = smoke()
    methods = json.loads((out / "progress.json").read_text())["evaluate"]["methods"]
    assert list(methods) == ["single-shot", "static plan", "MIRA-SFT", "MIRA-SFT+GRPO", "closed loop (oracle)"]
    for name, m in methods.items():
        assert m["tasks"] == config.eval_tasks and 0.0 <= m["success"] <= 1.0 and 0.0 <= m["mean_sc"] <= 10.0
        assert f"| {name} | {m['success']:.1%} | {m['mean_sc']:.2f} | {m['calls']:.2f} |" in report
    records = read_records(out / "eval" / "results.jsonl").values()  # the evaluation harness's own files
    assert len(records) == 5 * config.eval_tasks and (out / "eval" / "gallery.html").is_file()
    for r in records:
        k = r["meta"]["clauses"]
        if r["method"] == "raw":
            assert r["editor_calls"] == 1
        if r["method"] == "plan":  # open loop: one call per clause whatever happens
            assert r["editor_calls"] == min(k, config.eval_max_steps)
    plan = [r for r in records if r["method"] == "plan"]
    assert methods["static plan"]["success"] == sum(r["scores"]["details"]["exact"] for r in plan) / len(plan)
    curve = json.loads((out / "progress.json").read_text())["grpo"]["curve"]
    assert [p["step"] for p in curve] == list(range(1, config.grpo_steps + 1))
    assert "GRPO reward curve" in report and report.count("\n| 1-1 |") == 1


def test_evaluation_editor_draws_differ_between_tasks_but_not_between_methods():
    from mira.testbed.learning.evaluate import ClausePlanPolicy, InputSeededEditor

    editor = InputSeededEditor(TestbedEditor(error_rate=0.5, error_modes=("noop",)))
    tasks = make_tasks(40, seed=4, clauses=(1, 1))
    executed = [editor.edit(t.image, t.clauses[0], seed=0) != t.image for t in tasks]
    assert 0 < sum(executed) < len(tasks)  # one seed for every task, yet errors fall on some tasks only
    again = [editor.edit(t.image, t.clauses[0], seed=0) != t.image for t in tasks]
    assert again == executed
    task = next(t for t in make_tasks(10, seed=4) if len(t.clauses) == 3)
    plan = ClausePlanPolicy()
    answers = [plan.generate(Observation(task.instruction, tuple(split_clauses(task.instruction)[:i])))[0]
               for i in range(4)]
    assert [parse_completion_strict(a).action for a in answers] == [*split_clauses(task.instruction), STOP]


def test_rerunning_resumes_and_the_cli_prints_the_same_report(smoke_run):
    out, report, _ = smoke_run
    result = CliRunner().invoke(app, ["testbed", "run", str(out), "--smoke"])
    assert result.exit_code == 0, result.output
    assert "done earlier" in result.output and report.strip() in result.output
    changed = CliRunner().invoke(app, ["testbed", "run", str(out), "--smoke", "--set", "seed=7"])
    assert changed.exit_code != 0 and "other settings (seed)" in " ".join(changed.output.split())


def test_edit_baseline_makes_the_reward_the_score_of_the_next_state():
    pytest.importorskip("mira.train", reason="the trainers (mira.train) are not installed in this checkout")
    from mira.protocol import format_completion
    from mira.testbed.learning.train import edit_baseline
    from mira.testbed.scene import render

    task = next(t for t in make_tasks(20, seed=2) if len(t.clauses) == 2)
    half = render(task.states()[0])
    answers = [format_completion(task.clauses[1], "x"), format_completion(STOP, "x"), "<think>no answer",
               format_completion(task.clauses[0], "x")]
    rewards = edit_baseline([None] * 4, answers, images=[[task.image, half]] * 4,
                            instruction=[task.instruction] * 4, history=[[task.clauses[0]]] * 4)
    assert rewards[0] == pytest.approx(0.5 ** 0.5) and rewards[1:] == [0.0, 0.0, 0.0]  # s(before), sqrt(SC x PQ)/10


def test_decision_diagnostics_find_the_teacher_faultless(tmp_path):
    """benchmarks/testbed_diagnostics.py on run folders laid out like an evaluation's: the plain oracle (the teacher
    whose reasoning the policy learns) perceives every state, stops only on finished tasks and its edits all help."""
    from pathlib import Path

    editor = TestbedEditor(error_rate=0.3)
    for i, task in enumerate(make_tasks(12, seed=10_000, clauses=(1, 3))):
        MiraAgent(policy=OraclePolicy(plain=True), editor=editor, max_steps=12, seed=i).run(
            task.image, task.instruction, run_dir=tmp_path / "runs" / "teacher" / task.id / "seed0")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "testbed_diagnostics.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    assert out.splitlines()[0] == "| decision | teacher |"
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1].strip(" |") for line in out.splitlines()[2:]}
    assert rows["perception, before any edit"] == "100.0% of 12"
    assert rows["perception, after an editor error"].startswith("100.0% of ")  # the editor erred at least once
    assert rows["<STOP> on a finished task"] == "100.0% of 12"
    assert rows["edits that raise SC (run without error)"].startswith("100.0%")
