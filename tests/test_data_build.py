"""The whole builder: `mira data build`, resuming, --redo, kill -9 during synthesize, and --ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from data_helpers import PILEditor, build_config
from rich.console import Console
from typer.testing import CliRunner

from mira.cli import app
from mira.data.build import build
from mira.data.config import config_from_dict

HERE = Path(__file__).resolve().parent


def dataset_rows(path):
    """Every row of a saved dataset, images as their stored bytes."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    return ds.cast_column("images", datasets.List(datasets.Image(decode=False))).to_list()


def flat(result):
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def quiet():
    return Console(file=open(os.devnull, "w"))


def test_cli_build_resume_and_redo(tmp_path, data_photos, scripted_server, monkeypatch):
    url, state = scripted_server
    config = build_config(tmp_path, data_photos, url)
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()

    result = runner.invoke(app, ["data", "build", str(path)])
    assert result.exit_code == 0, result.output
    assert "sources: 10 in, 7 out" in flat(result) and "unreadable image" in flat(result)
    rows = dataset_rows(tmp_path / "work" / "dataset")
    assert rows and f"{len(rows)} samples" in flat(result)

    # a second run resumes: no model request, no edit, same dataset
    requests = state["requests"]
    monkeypatch.setattr(PILEditor, "edit", lambda *a, **k: pytest.fail("the editor ran again"))
    result = runner.invoke(app, ["data", "build", str(path)])
    assert result.exit_code == 0 and state["requests"] == requests
    assert dataset_rows(tmp_path / "work" / "dataset") == rows

    # changed settings are refused with a one-line hint, then rebuilt from that stage on with --redo
    config["rank"]["threshold"] = 9.5
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["data", "build", str(path)])
    assert result.exit_code == 2 and "--redo rank" in flat(result) and "Traceback" not in result.output
    result = runner.invoke(app, ["data", "build", str(path), "--redo", "rank"])
    assert result.exit_code == 0, result.output
    assert state["requests"] > requests  # the judge ran again; synthesize did not (the editor is disabled)
    strict = dataset_rows(tmp_path / "work" / "dataset")
    assert 0 < len(strict) < len(rows) and all(r["score"] >= 9.5 for r in strict)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "build", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "does not exist" in flat(result) and "Traceback" not in result.output
    (tmp_path / "c.yaml").write_text(f"work_dir: {tmp_path}\nsources: [{{kind: jsonl, path: nowhere.jsonl}}]\n")
    result = runner.invoke(app, ["data", "build", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2 and "nowhere.jsonl' does not exist" in flat(result)
    result = runner.invoke(app, ["data", "build", str(tmp_path / "c.yaml"), "--redo", "everything"])
    assert result.exit_code == 2 and "is not a stage" in flat(result)


@pytest.mark.timeout(240)
def test_kill_during_synthesize_then_resume_equals_an_uninterrupted_run(tmp_path, data_photos, scripted_server):
    url, _ = scripted_server
    slow = {"editors": [{"name": "data_helpers:PILEditor", "options": {"delay": 0.05}}, "data_helpers:PILEditor"]}
    whole = config_from_dict(build_config(tmp_path / "whole", data_photos, url, synthesize=slow))
    build(whole, console=quiet())

    root = tmp_path / "killed"
    config = build_config(root, data_photos, url, synthesize=slow)
    (root / "build.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE)])}
    proc = subprocess.Popen([sys.executable, "-m", "mira.cli", "data", "build", str(root / "build.yaml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = root / "work" / "synthesize" / "runs"
    deadline = time.monotonic() + 120
    while len(list(runs.glob("*/*/candidate.json"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (root / "work" / "synthesize" / "manifest.json").read_text().count('"complete": true')

    result = build(config_from_dict(config), console=quiet())
    assert result.stages["synthesize"].notes["candidates reused from an earlier run"] >= 3
    assert dataset_rows(result.output) == dataset_rows(whole.output_dir)


@pytest.mark.timeout(240)
def test_ray_build_equals_local_build(tmp_path, data_photos, ray_local):
    sections = {"ray": {"actors": 2, "num_cpus": 0.5}, "rank": {"judge": None}}
    local = config_from_dict(build_config(tmp_path / "local", data_photos, **sections))
    build(local, console=quiet())
    spread = config_from_dict(build_config(tmp_path / "ray", data_photos, **sections))
    result = build(spread, use_ray=True, console=quiet())
    assert result.rows > 0
    assert dataset_rows(result.output) == dataset_rows(local.output_dir)
