import json
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from mira import registry
from mira.cli import app

runner = CliRunner()


@pytest.fixture
def stripe_editor(monkeypatch):
    monkeypatch.setitem(registry.EDITORS, "stripe", "fakes:StripeEditor")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (48, 32), "orange").save(path)
    return path


def test_help_is_fast_and_light():
    code = "import sys, mira.cli; print(any(m.split('.')[0] in ('torch', 'transformers', 'diffusers') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    proc = subprocess.run([sys.executable, "-m", "mira.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "edit" in proc.stdout


def test_edit_end_to_end_with_passthrough(tmp_path, photo, stripe_editor):
    out, run_dir = tmp_path / "out.png", tmp_path / "run"
    result = runner.invoke(app, ["edit", str(photo), "make it blue and shiny", "--policy", "passthrough",
                                 "--editor", "stripe", "-o", str(out), "--run-dir", str(run_dir), "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (48, 32)
    data = json.loads((run_dir / "trajectory.json").read_text())
    assert data["stop_reason"] == "stop" and data["source_path"] == str(photo)
    assert data["config"]["agent"]["seed"] == 5
    (run_dir / "report.html").unlink()
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0 and (run_dir / "report.html").is_file()


def test_unknown_backend_is_one_line(photo):
    result = runner.invoke(app, ["edit", str(photo), "x", "--policy", "passthrough", "--editor", "nope"])
    assert result.exit_code == 2 and "unknown editor 'nope'" in result.output


def test_bad_output_suffix(photo, stripe_editor, tmp_path):
    result = runner.invoke(app, ["edit", str(photo), "x", "--policy", "passthrough", "--editor", "stripe",
                                 "-o", str(tmp_path / "out.txt")])
    assert result.exit_code == 2 and ".png" in result.output


def test_report_on_non_run_folder(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "trajectory.json" in result.output


def test_bad_editor_option(photo, stripe_editor):
    result = runner.invoke(app, ["edit", str(photo), "x", "--policy", "passthrough", "--editor", "stripe",
                                 "--editor-option", "novalue"])
    assert result.exit_code == 2 and "key=value" in result.output


@pytest.mark.slow
def test_edit_on_tiny_models_end_to_end(tiny_models, tmp_path):
    """The README's smoke run: a real Qwen2.5-VL policy driving a real FluxKontext pipeline, twice with one seed."""
    from mira import Trajectory

    runs = []
    for i, in_process in enumerate((False, True)):  # the installed command once, then the same app in-process
        out, run_dir = tmp_path / f"out{i}.png", tmp_path / f"run{i}"
        args = ["edit", "examples/coffee.jpg", "make the cup red and the table black",
                "--policy", str(tiny_models["qwen2_5_vl"]), "--editor", "flux-kontext",
                "--editor-model", str(tiny_models["flux-kontext"]), "--max-steps", "2", "--seed", "3",
                "--steps", "2", "--max-pixels", str(64 * 64), "--policy-option", "max_new_tokens=12",
                "-o", str(out), "--run-dir", str(run_dir)]
        if in_process:
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
        else:
            proc = subprocess.run([sys.executable, "-m", "mira.cli", *args], capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert "Traceback" not in proc.stderr
        assert out.is_file() and (run_dir / "trajectory.json").is_file() and (run_dir / "report.html").is_file()
        runs.append(Trajectory.load(run_dir))
    a, b = runs
    assert a.config["policy"]["model"] == str(tiny_models["qwen2_5_vl"])
    assert a.config["editor"]["name"] and a.steps
    assert [s.raw_completion for s in a.steps] == [s.raw_completion for s in b.steps]
    assert [s.seed for s in a.steps] == [s.seed for s in b.steps]
    assert a.stop_reason == b.stop_reason
    assert a.final_image.tobytes() == b.final_image.tobytes()
