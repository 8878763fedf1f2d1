"""`mira eval`: a whole evaluation from the command line, resumed by running the same command again."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from eval_helpers import ChatServer, photo_benchmark
from mira import registry
from mira.cli import app
from mira.eval.commands import SpecFactory


@pytest.fixture
def registered(monkeypatch):
    """Test backends under registry names, as a plugin would add its own."""
    monkeypatch.setitem(registry.EDITORS, "tint", "eval_helpers:TintEditor")
    monkeypatch.setitem(registry.POLICIES, "split", "eval_helpers:SplitPolicy")
    monkeypatch.setitem(registry.CHAT_BACKENDS, "scripted", "eval_helpers:SDKChat")


def test_mira_eval_runs_scores_reports_and_resumes(registered, tmp_path):
    bench = photo_benchmark(tmp_path / "bench", n=2)
    out = tmp_path / "out"
    with ChatServer() as server:
        args = ["eval", "--benchmark", str(bench), "--editor", "tint", "--methods", "raw,rewrite,plan,good=split",
                "--planner", "scripted", "--planner-option", f"base_url={server.base_url}",
                "--judge", "viescore:scripted", "--judge-option", f"base_url={server.base_url}",
                "--seeds", "0,1", "--out", str(out), "--mode", "async", "--no-progress"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        requests = server.requests
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 0, again.output
        assert server.requests == requests
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 4 * 2
    assert "| good |" in again.output and "win vs raw" in again.output
    for name in ("report.md", "results.csv", "summary.json", "gallery.html", "eval.json"):
        assert (out / name).is_file()
    manifest = json.loads((out / "eval.json").read_text())
    assert list(manifest["methods"]) == ["raw", "rewrite", "plan", "good"]
    assert manifest["methods"]["plan"]["name"] == "vlm-plan"

    factory = SpecFactory(editor="tint", methods={"raw": "passthrough"}, judge="viescore:scripted")
    assert pickle.loads(pickle.dumps(factory)) == factory  # Ray ships it to its workers

    (out / "report.md").unlink()
    rerendered = CliRunner().invoke(app, ["eval", "--report-only", "--out", str(out)])
    assert rerendered.exit_code == 0 and (out / "report.md").is_file()


def test_mira_eval_on_the_testbed_world_ranks_the_closed_loop_first(tmp_path):
    """Real registered backends only: the testbed editor, the oracle policy, the exact testbed judge."""
    from mira.testbed import export_benchmark

    bench = export_benchmark(tmp_path / "bench", n=8)
    result = CliRunner().invoke(app, [
        "eval", "--benchmark", str(bench), "--editor", "testbed", "--editor-option", "error_rate=0.3",
        "--methods", "raw,oracle=testbed-oracle", "--judge", "testbed", "--max-steps", "10", "--seeds", "0,1",
        "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    raw, oracle = summary["methods"]["raw"], summary["methods"]["oracle"]
    assert oracle["sc"]["mean"] == 10.0 and raw["sc"]["mean"] < 10.0
    assert oracle["win_rate"]["losses"] == 0 and oracle["win_rate"]["wins"] > 0
    assert oracle["editor_calls"] > raw["editor_calls"] == 1
    by_clauses = summary["by"]["clauses"]  # one table per number of clauses, as the testbed reports them
    assert len(by_clauses) > 1 and all(s["methods"]["oracle"]["sc"]["mean"] == 10.0 for s in by_clauses.values())
    assert "## clauses = 1" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--benchmark", "complexedit"], "unknown benchmark 'complexedit'"),
    (["--benchmark", "BENCH", "--methods", "raw,bogus"], "unknown method 'bogus'"),
    (["--benchmark", "BENCH", "--seeds", "0,x"], "--seeds must be comma-separated integers"),
    (["--benchmark", "BENCH", "--judge", "vie-score", "--methods", "raw", "--editor", "tint"],
     "unknown judge 'vie-score'"),
    (["--report-only", "--out", "OUT"], "holds no results.jsonl"),
    ([], "give --benchmark"),
])
def test_mistakes_are_one_line_errors(registered, tmp_path, args, message):
    bench = photo_benchmark(tmp_path / "bench", n=1)
    args = [str(bench) if a == "BENCH" else str(tmp_path / "none") if a == "OUT" else a for a in args]
    result = CliRunner().invoke(app, ["eval", *args, "--out", str(tmp_path / "out"), "--no-progress"]
                                if "--out" not in args else ["eval", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_mira_eval_help_is_fast_and_imports_no_torch():
    code = "import sys; from mira.cli import app; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    help_text = subprocess.run([sys.executable, "-m", "mira.cli", "eval", "--help"], capture_output=True,
                               text=True).stdout
    for option in ("--benchmark", "--methods", "--judge", "--concurrency", "--mode", "--report-only"):
        assert option in help_text
