"""Stages 4-6: synthesize candidates with editors (human results reused), rank them with a judge, annotate steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_helpers import PILEditor, write_jsonl_source
from PIL import Image

from mira.agent import step_seed
from mira.data.aggregate import aggregate_session
from mira.data.annotate import AnnotateWorker, template_reasoning
from mira.data.config import config_from_dict
from mira.data.rank import RankWorker
from mira.data.records import Candidates, Selected, Session, Task
from mira.data.synthesize import SynthesizeWorker

LAZY = {"name": "data_helpers:PILEditor", "options": {"name": "lazy", "lazy": True}}


@pytest.fixture()
def coffee_tasks(tmp_path, data_photos):
    """The coffee session (3 turns, human results) as its own order plus one permutation."""
    path = write_jsonl_source(tmp_path / "src", data_photos)
    row = json.loads(path.read_text().splitlines()[0])
    folder = path.parent
    session = Session(row["id"], "jsonl", row["image"], row["turns"], [str(folder / r) for r in row["results"]])
    return aggregate_session(session, permutations=1, seed=0)


def make_config(tmp_path, **sections):
    return config_from_dict({"work_dir": str(tmp_path / "work"), "sources": [{"kind": "jsonl", "path": "x"}],
                             **sections})


def run(worker_cls, config, rows):
    worker = worker_cls(config, Path(config.work_dir))
    try:
        return worker.process(0, rows, lambda n: None)
    finally:
        worker.close()


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_synthesize_runs_every_editor_and_reuses_human_results(tmp_path, coffee_tasks):
    config = make_config(tmp_path, synthesize={"editors": ["data_helpers:PILEditor", LAZY], "samples_per_editor": 2})
    out, stats = run(SynthesizeWorker, config, [t.to_dict() for t in coffee_tasks])
    own, permuted = (Candidates.from_dict(r) for r in out)

    assert [c.editor for c in own.candidates] == ["human", "pil", "pil", "lazy", "lazy"]
    assert [c.editor for c in permuted.candidates] == ["pil", "pil", "lazy", "lazy"]
    assert own.candidates[0].images == own.task.results
    pil_a, pil_b = own.candidates[1:3]
    assert pil_a.seed != pil_b.seed
    assert pil_a.step_seeds == [step_seed(pil_a.seed, i) for i in (1, 2, 3)]  # the agent's per-step seeds
    run_dir = Path(pil_a.run_dir)
    assert {"trajectory.json", "report.html", "candidate.json"} <= {p.name for p in run_dir.iterdir()}
    recorded = json.loads((run_dir / "trajectory.json").read_text())
    assert [s["action"] for s in recorded["steps"]] == own.task.turns + ["<STOP>"]
    # an editor's images are its edits replayed with the recorded seeds
    img = Image.open(own.task.image).convert("RGB")
    for turn, seed, path in zip(own.task.turns, pil_a.step_seeds, pil_a.images):
        img = PILEditor().edit(img, turn, seed=seed)
        assert np.array_equal(np.asarray(img), pixels(path))
    assert stats.notes == {"candidates": 9}


def test_synthesize_resumes_from_finished_candidates(tmp_path, coffee_tasks, monkeypatch):
    config = make_config(tmp_path, synthesize={"editors": ["data_helpers:PILEditor"], "human_results": False})
    rows = [coffee_tasks[0].to_dict()]
    first, _ = run(SynthesizeWorker, config, rows)

    calls = []
    monkeypatch.setattr(PILEditor, "edit", lambda self, *a, **k: calls.append(a))
    again, stats = run(SynthesizeWorker, config, rows)
    assert again == first and not calls and stats.notes["candidates reused from an earlier run"] == 1

    # a candidate folder without its candidate.json (a killed run) is redone from its seed
    marker = Path(Candidates.from_dict(first[0]).candidates[0].run_dir) / "candidate.json"
    marker.unlink()
    monkeypatch.undo()
    redone, _ = run(SynthesizeWorker, config, rows)
    assert redone == first


def test_failed_editors_are_counted_and_tasks_without_candidates_dropped(tmp_path, coffee_tasks):
    failing = {"name": "data_helpers:PILEditor", "options": {"name": "picky", "fail_on": "saucer"}}
    config = make_config(tmp_path, synthesize={"editors": [failing], "editor_retries": 0})
    out, stats = run(SynthesizeWorker, config, [t.to_dict() for t in coffee_tasks])
    assert [Candidates.from_dict(r).candidates[0].editor for r in out] == ["human"]
    assert stats.dropped == {"no candidate succeeded": 1}
    assert stats.notes["picky: editor run ended with editor_error"] == 2


@pytest.mark.slow
def test_synthesize_with_the_tiny_flux_kontext_editor(tmp_path, coffee_tasks, tiny_models):
    kontext = {"name": "flux-kontext", "options": {"model": str(tiny_models["flux-kontext"]), "device": "cpu",
                                                   "num_inference_steps": 2}}
    config = make_config(tmp_path, synthesize={"editors": [kontext], "human_results": False})
    rows = [coffee_tasks[1].to_dict()]
    out, _ = run(SynthesizeWorker, config, rows)
    (cand,) = Candidates.from_dict(out[0]).candidates
    assert cand.editor == "flux-kontext" and cand.editor_config["num_inference_steps"] == 2 and len(cand.images) == 3
    assert Image.open(cand.images[-1]).size == Image.open(coffee_tasks[1].image).size
    first = [pixels(p) for p in cand.images]
    assert not np.array_equal(first[0], pixels(coffee_tasks[1].image))

    # redo the run: the recorded seeds give the same images (up to CPU float rounding: at most 2 levels in 255)
    (Path(cand.run_dir) / "candidate.json").unlink()
    again, _ = run(SynthesizeWorker, config, rows)
    assert again == out
    assert all(np.abs(a.astype(int) - pixels(p)).max() <= 2 for a, p in zip(first, cand.images))


def synthesized(tmp_path, coffee_tasks):
    config = make_config(tmp_path, synthesize={"editors": [LAZY, "data_helpers:PILEditor"]})
    out, _ = run(SynthesizeWorker, config, [t.to_dict() for t in coffee_tasks])
    return out


def test_rank_keeps_the_best_candidate_and_drops_weak_tasks(tmp_path, coffee_tasks, scripted_server):
    url, _ = scripted_server
    rows = synthesized(tmp_path, coffee_tasks)
    judge = {"name": "data_helpers:ChatJudge", "options": {"base_url": url}}
    out, stats = run(RankWorker, make_config(tmp_path, rank={"judge": judge, "threshold": 1.0}), rows)
    own, permuted = (Selected.from_dict(r) for r in out)
    assert permuted.candidate.editor == "pil"  # the lazy editor changed nothing: score 0
    scores = {r["editor"]: r["overall"] for r in permuted.ranking}
    assert scores["lazy"] == 0 and scores["pil"] == permuted.score > 1.0
    assert own.ranking[0]["editor"] == "human" and own.score == max(r["overall"] for r in own.ranking)
    assert not stats.dropped

    strict, stats = run(RankWorker, make_config(tmp_path, rank={"judge": judge, "threshold": 10.5}), rows)
    assert strict == [] and stats.dropped == {"best score below threshold": 2}


def test_rank_without_a_judge_keeps_the_first_candidate(tmp_path, coffee_tasks):
    out, _ = run(RankWorker, make_config(tmp_path), synthesized(tmp_path, coffee_tasks))
    assert [Selected.from_dict(r).candidate.editor for r in out] == ["human", "lazy"]
    assert all(Selected.from_dict(r).score is None for r in out)


def test_annotate_template_and_vlm(tmp_path, coffee_tasks, scripted_server):
    url, state = scripted_server
    ranked, _ = run(RankWorker, make_config(tmp_path), synthesized(tmp_path, coffee_tasks))
    out, _ = run(AnnotateWorker, make_config(tmp_path), ranked)
    sel = Selected.from_dict(out[0])
    turns = sel.task.turns
    assert sel.reasoning == [template_reasoning(turns, t) for t in range(4)]
    assert turns[0] in sel.reasoning[0] and "still the original" in sel.reasoning[0]
    assert sel.reasoning[1].startswith(f"The current image already shows: {turns[0]}.")
    assert sel.reasoning[3].endswith("so I stop.")

    vlm = make_config(tmp_path, annotate={"backend": {"name": "openai:m", "options": {"base_url": url}}})
    out, stats = run(AnnotateWorker, vlm, ranked)
    sel = Selected.from_dict(out[0])
    assert sel.reasoning[0] == f"Looking at both images: The next step is the edit: {turns[0]}"
    assert sel.reasoning[3].startswith("Looking at both images: Every requested change")

    state["annotator_reply"] = "   "
    try:
        out, stats = run(AnnotateWorker, vlm, ranked[:1])
    finally:
        state.pop("annotator_reply")
    assert Selected.from_dict(out[0]).reasoning == [template_reasoning(turns, t) for t in range(4)]
    assert stats.notes == {"annotator reply unusable (template used)": 4}


@pytest.mark.slow
def test_local_transformers_chat_backend_rewrites_and_annotates(tmp_path, coffee_tasks, tiny_models):
    """The tiny random-weight Qwen2.5-VL as the rewriter and the annotator, in-process: the real path runs; its
    replies are noise, which the stages count and replace (template reasoning) instead of failing."""
    from mira.data.rewrite import RewriteWorker

    local = {"name": "mira.policies.transformers:TransformersPolicy",
             "options": {"model": str(tiny_models["qwen2_5_vl"]), "device": "cpu", "max_new_tokens": 12}}
    config = make_config(tmp_path, rewrite={"backend": local, "atomic_variants": 1, "complex_variants": 1},
                         annotate={"backend": local})
    out, stats = run(RewriteWorker, config, [coffee_tasks[0].to_dict()])
    task = Task.from_dict(out[0])
    assert task.instruction_variants[0] == task.instruction and [v[0] for v in task.turn_variants] == task.turns
    assert stats.kept == 1 and stats.notes["rewriter reply unusable"] >= 1

    ranked, _ = run(RankWorker, make_config(tmp_path), synthesized(tmp_path, coffee_tasks)[:1])
    out, stats = run(AnnotateWorker, config, ranked)
    reasoning = Selected.from_dict(out[0]).reasoning
    assert len(reasoning) == 4 and all(isinstance(r, str) and r.strip() for r in reasoning)
    assert stats.kept == 1
