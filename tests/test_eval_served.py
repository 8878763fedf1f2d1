"""Every backend served over HTTP on 127.0.0.1 (policy, editor, planner, judge): `mira eval` picks async mode.

Uses the served backends and loopback test servers of `mira.clients` / `mira.testing_servers` (skipped without them).
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from eval_helpers import photo_benchmark, scripted_vlm, split_instruction
from mira.cli import app
from mira.protocol import STOP, format_completion

servers = pytest.importorskip("mira.testing_servers")
pytest.importorskip("mira.clients.openai_chat")


def respond(body):
    """MIRA's policy prompt: the instruction's parts one per step, then STOP; anything else: the scripted VLM."""
    text = servers.user_text_of(body)
    if "Edits applied so far" not in text:
        return scripted_vlm(body)
    instruction = re.search(r"Instruction: (.*)", text).group(1)
    parts, done = split_instruction(instruction), len(re.findall(r"\n\d+\. ", text))
    return format_completion(parts[done] if done < len(parts) else STOP, f"{done} of {len(parts)} done")


def test_mira_eval_over_served_backends(tmp_path):
    bench = photo_benchmark(tmp_path / "bench", n=2)
    with servers.ScriptedOpenAIServer(respond) as server:
        url = server.base_url
        result = CliRunner().invoke(app, [
            "eval", "--benchmark", str(bench), "--methods", "raw,rewrite,plan,mira",
            "--policy", "openai:scripted", "--policy-option", f"base_url={url}",
            "--editor", "openai-images:scripted", "--editor-option", f"base_url={url}",
            "--judge", "openai:scripted", "--judge-option", f"base_url={url}",
            "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "(async)" in result.output
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 4
    for r in records:
        assert r["stop_reason"] == "stop" and r["scores"]["error"] is None, r
        if r["method"] in ("plan", "mira"):
            assert r["edits"] == split_instruction(r["instruction"]), r
