"""`mira edit` with verifier-guided steps (scripted editor and judge registered under test names)."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mira import registry
from mira.cli import app
from mira.judges.base import Judge, JudgeScores

runner = CliRunner()


class BrightnessJudge(Judge):
    """Scores the mean brightness of the edited image (0-10)."""

    name = "brightness"

    def score(self, source, edited, instruction):
        value = float(np.asarray(edited.convert("L")).mean()) / 25.5
        return JudgeScores(sc=value, pq=10.0, overall=value)


@pytest.fixture
def backends(monkeypatch):
    monkeypatch.setitem(registry.EDITORS, "stripe", "fakes:StripeEditor")
    monkeypatch.setitem(registry.EDITORS, "stripe2", "fakes:StripeEditor")
    monkeypatch.setattr(registry, "load_judge", lambda spec, **kw: BrightnessJudge(), raising=False)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (48, 32), "orange").save(path)
    return path


def edit(photo, tmp_path, *flags):
    args = ["edit", str(photo), "make it blue and shiny", "--policy", "passthrough", "--editor", "stripe",
            "-o", str(tmp_path / "out.png"), "--run-dir", str(tmp_path / "run"), *flags]
    return runner.invoke(app, args)


def test_best_of_with_verifier_writes_every_candidate(photo, tmp_path, backends):
    result = edit(photo, tmp_path, "--best-of", "3", "--verifier", "brightness", "--max-editor-calls", "5")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run" / "trajectory.json").read_text())
    cands = data["steps"][0]["candidates"]
    assert len(cands) == 3 and sum(bool(c.get("chosen")) for c in cands) == 1
    assert all((tmp_path / "run" / c["image_path"]).is_file() for c in cands)
    assert data["config"]["strategy"]["max_editor_calls"] == 5 and data["config"]["verifier"]["name"] == "brightness"
    assert "3 editor calls" in result.output


def test_routes_load_the_named_editors(photo, tmp_path, backends):
    result = edit(photo, tmp_path, "--route", "blue=stripe2", "--preserve-details")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run" / "trajectory.json").read_text())
    assert set(data["config"]["editors"]) == {"stripe", "stripe2"}
    assert data["steps"][0]["editor"] == "stripe2" and data["steps"][0]["extra"]["route"]["rule"] == "blue"


@pytest.mark.parametrize("flags, message", [
    (["--best-of", "2"], "--verifier"),
    (["--compare-with", "stripe2"], "--verifier"),
    (["--route", "no-editor"], "regex=editor"),
    (["--route", "blue=nope"], "unknown editor 'nope'"),
])
def test_bad_strategy_flags_are_one_line(photo, tmp_path, backends, flags, message):
    result = edit(photo, tmp_path, *flags)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_verifier_without_a_judge_registry_is_a_clear_error(photo, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.EDITORS, "stripe", "fakes:StripeEditor")
    monkeypatch.delattr(registry, "load_judge", raising=False)
    result = edit(photo, tmp_path, "--best-of", "2", "--verifier", "viescore")
    assert result.exit_code == 2 and "load_judge" in result.output
