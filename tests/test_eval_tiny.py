"""Evaluation on tiny real models: a Qwen2.5-VL policy / planner / judge and a FLUX.1-Kontext pipeline, offline."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from eval_helpers import ChatServer, photo_benchmark
from mira import registry
from mira.cli import app
from mira.eval.commands import SpecFactory, method_specs


@pytest.mark.slow
def test_viescore_over_a_tiny_qwen_vl(tiny_models):
    from mira.judges.viescore import VIEScoreJudge
    from mira.registry import load_judge

    judge = load_judge(str(tiny_models["qwen2_5_vl"]), retries=1, max_new_tokens=12)
    assert isinstance(judge, VIEScoreJudge)
    source, edited = Image.new("RGB", (64, 64), (20, 40, 60)), Image.new("RGB", (64, 64), (200, 40, 60))
    scores = judge.score(source, edited, "make the square red")
    # random weights answer noise: the judgement is read or recorded as unreadable, never a backend failure
    assert scores.ok or ("unreadable reply" in scores.error and "backend failed" not in scores.error)
    assert scores.details["attempts"]["sc"] in (1, 2)


@pytest.mark.slow
def test_one_model_serves_the_mira_policy_and_both_baselines(tiny_models):
    policy = str(tiny_models["qwen2_5_vl"])
    factory = SpecFactory(editor="flux-kontext", editor_model=str(tiny_models["flux-kontext"]),
                          methods=method_specs("raw,rewrite,plan,mira", policy, policy),
                          policy_options=["max_new_tokens=8"], device="cpu")
    backends = factory(None)
    mira = backends.policies["mira"]
    assert backends.policies["rewrite"].backend is mira and backends.policies["plan"].backend is mira
    assert backends.judge is None


@pytest.mark.slow
def test_mira_eval_on_tiny_models(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.CHAT_BACKENDS, "scripted", "eval_helpers:SDKChat")
    bench = photo_benchmark(tmp_path / "bench", n=2)
    out = tmp_path / "out"
    with ChatServer() as server:
        result = CliRunner().invoke(app, [
            "eval", "--benchmark", str(bench), "--methods", "raw,rewrite,plan,mira",
            "--policy", str(tiny_models["qwen2_5_vl"]), "--policy-option", "max_new_tokens=12",
            "--editor", "flux-kontext", "--editor-model", str(tiny_models["flux-kontext"]), "--device", "cpu",
            "--steps", "2", "--max-pixels", str(64 * 64), "--max-steps", "2",
            "--judge", "viescore:scripted", "--judge-option", f"base_url={server.base_url}",
            "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 4 and len({r["key"] for r in records}) == 8
    for r in records:
        assert r["stop_reason"] in ("stop", "max_steps", "repeat", "policy_error"), r
        assert r["scores"]["error"] is None and 0 <= r["scores"]["overall"] <= 10
        final = Image.open(out / r["run_dir"] / "final.png")
        if r["editor_calls"]:
            assert final.size == (64, 48)  # the editor's working size at 64*64 pixels for a 3:2 photo
    assert all(r["editor_calls"] == 1 for r in records if r["method"] == "raw")
    manifest = json.loads((out / "eval.json").read_text())
    assert manifest["methods"]["rewrite"]["backend"]["model"] == str(tiny_models["qwen2_5_vl"])
    assert manifest["editor"]["name"] == "flux-kontext"
