"""A full evaluation on photographs: four methods, a judge served over HTTP on 127.0.0.1, resumable output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_helpers import ChatServer, Factory, build_backends, comparable, photo_benchmark, split_instruction
from mira.eval.benchmarks import load_local
from mira.eval.report import write_report
from mira.eval.runner import EvalRunner, RunnerError, read_records

METHODS = ["raw", "rewrite", "plan", "mira"]


@pytest.fixture(scope="module")
def server():
    with ChatServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return load_local(photo_benchmark(tmp_path_factory.mktemp("bench"), n=3))


@pytest.fixture(scope="module")
def evaluated(server, samples, tmp_path_factory):
    """One async evaluation, shared by the tests that only read its output."""
    out = tmp_path_factory.mktemp("eval")
    records = EvalRunner(samples, METHODS, out, backends=build_backends(server.base_url), seeds=[0, 1],
                         mode="async", concurrency=4, benchmark="photos", progress=False).run()
    return out, records


def test_every_method_sample_and_seed_is_run_and_scored(evaluated, samples):
    out, records = evaluated
    assert len(records) == len(samples) * len(METHODS) * 2
    assert len({r["key"] for r in records}) == len(records)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(records)
    for r in records:
        scores = r["scores"]
        assert scores["error"] is None, scores
        assert 0 <= scores["sc"] <= 10 and 0 <= scores["pq"] <= 10
        assert scores["overall"] == pytest.approx((scores["sc"] * scores["pq"]) ** 0.5)
        run = out / r["run_dir"]
        assert (run / "trajectory.json").is_file() and (run / "final.png").is_file()
        assert (run / "original.png").is_file() and (run / "report.html").is_file()


def test_methods_behave_as_specified(evaluated):
    _, records = evaluated
    by = {(r["sample_id"], r["method"], r["seed"]): r for r in records}
    for (sample_id, method, seed), r in by.items():
        atomic = split_instruction(r["instruction"])
        assert r["stop_reason"] == "stop", r
        if method == "raw":
            assert r["edits"] == [r["instruction"]]
        elif method == "rewrite":
            assert r["editor_calls"] == 1 and r["edits"][0].endswith("keeping everything else unchanged")
            assert not r["edits"][0].lower().startswith("prompt:")
        else:  # the VLM's plan (open loop) and the split policy both issue the atomic parts
            assert r["edits"] == atomic
            assert r["editor_calls"] == len(atomic)


def test_seeds_are_shared_across_methods_and_change_results(evaluated):
    out, records = evaluated
    traj = json.loads((out / "runs/plan/coffee/seed0/trajectory.json").read_text())
    traj1 = json.loads((out / "runs/plan/coffee/seed1/trajectory.json").read_text())
    mira = json.loads((out / "runs/mira/coffee/seed0/trajectory.json").read_text())
    assert [s["seed"] for s in traj["steps"][:-1]] == [s["seed"] for s in mira["steps"][:-1]]
    assert [s["seed"] for s in traj["steps"][:-1]] != [s["seed"] for s in traj1["steps"][:-1]]


def test_unreadable_judge_replies_were_retried(evaluated):
    _, records = evaluated
    attempts = [r["scores"]["details"]["attempts"]["sc"] for r in records]
    assert max(attempts) == 2 and min(attempts) == 1  # the scripted judge is unreadable on some first replies


def test_report_tables_and_gallery(evaluated, samples):
    out, _ = evaluated
    paths = write_report(out)
    summary = json.loads(paths["json"].read_text())
    assert list(summary["methods"]) == METHODS
    for method, stats in summary["methods"].items():
        assert stats["items"] == len(samples) * 2
        assert stats["overall"]["low"] <= stats["overall"]["mean"] <= stats["overall"]["high"]
        assert ("win_rate" in stats) == (method != "raw")
    assert summary["methods"]["raw"]["editor_calls"] == 1
    assert summary["methods"]["mira"]["editor_calls"] > 2
    table = paths["markdown"].read_text()
    assert "| mira |" in table and "win vs raw" in table
    csv_lines = paths["csv"].read_text().splitlines()
    assert csv_lines[0].startswith("method,items,sc_mean") and len(csv_lines) == 1 + len(METHODS)
    page = paths["gallery"].read_text()
    assert page.count("<tr>") == 1 + len(samples) * 2
    for method in METHODS:
        assert f'runs/{method}/coffee/seed0/final.png' in page


def test_rerun_resumes_without_calling_any_backend(evaluated, server, samples):
    out, records = evaluated
    requests = server.requests
    again = EvalRunner(samples, METHODS, out, backends=build_backends(server.base_url), seeds=[0, 1],
                       mode="async", benchmark="photos", progress=False).run()
    assert server.requests == requests
    assert again == records
    assert len((out / "results.jsonl").read_text().splitlines()) == len(records)


def test_a_torn_last_line_is_dropped_and_its_item_redone(server, samples, tmp_path):
    runner = dict(backends=build_backends(server.base_url), mode="async", benchmark="photos", progress=False)
    first = EvalRunner(samples[:2], ["raw"], tmp_path, **runner).run()
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # as if killed while writing the second record
    assert len(read_records(path)) == 1
    second = EvalRunner(samples[:2], ["raw"], tmp_path, **runner).run()
    assert comparable(second) == comparable(first)
    assert len(path.read_text().splitlines()) == 2


def test_local_mode_gives_the_same_results_as_async_mode(evaluated, server, samples, tmp_path):
    _, records = evaluated
    local = EvalRunner(samples[:2], METHODS, tmp_path, factory=Factory(server.base_url), seeds=[1], mode="local",
                       benchmark="photos", progress=False).run()
    same_items = [r for r in records if r["seed"] == 1 and r["sample_id"] in {s.id for s in samples[:2]}]
    assert len(local) == len(same_items) == 2 * len(METHODS)
    assert comparable(local) == comparable(same_items)


class DeviceFactory(Factory):
    def __init__(self, base_url):
        super().__init__(base_url)
        self.devices = []

    def __call__(self, device=None):
        self.devices.append(device)
        return super().__call__(device)


def test_local_mode_runs_one_worker_per_device(evaluated, server, samples, tmp_path):
    _, records = evaluated
    factory = DeviceFactory(server.base_url)
    local = EvalRunner(samples[:2], ["raw", "plan"], tmp_path, factory=factory, seeds=[0], mode="local",
                       devices=["cuda:0", "cuda:1"], benchmark="photos", progress=False).run()
    assert sorted(factory.devices) == ["cuda:0", "cuda:1"]
    same_items = [r for r in records if r["key"] in {x["key"] for x in local}]
    assert len(local) == len(same_items) == 4 and comparable(local) == comparable(same_items)


def test_new_methods_and_seeds_extend_an_evaluation(server, samples, tmp_path):
    options = dict(backends=build_backends(server.base_url), mode="async", benchmark="photos", progress=False)
    EvalRunner(samples[:1], ["raw"], tmp_path, **options).run()
    records = EvalRunner(samples[:1], ["raw", "mira"], tmp_path, seeds=[0, 3], **options).run()
    assert sorted(r["key"] for r in records) == sorted(
        f"{samples[0].id}/{m}/{s}" for m in ("raw", "mira") for s in (0, 3))
    manifest = json.loads((tmp_path / "eval.json").read_text())
    assert list(manifest["methods"]) == ["raw", "mira"] and manifest["seeds"] == [0, 3]


def test_a_different_judge_or_max_steps_is_refused(server, samples, tmp_path):
    options = dict(mode="async", benchmark="photos", progress=False)
    EvalRunner(samples[:1], ["raw"], tmp_path, backends=build_backends(server.base_url), **options).run()
    with pytest.raises(RunnerError, match="max_steps"):
        EvalRunner(samples[:1], ["raw"], tmp_path, backends=build_backends(server.base_url), max_steps=3,
                   **options).run()
    other = build_backends(server.base_url)
    other.judge.retries = 0
    other.judge.seed = 7
    with pytest.raises(RunnerError, match="judge"):
        EvalRunner(samples[:1], ["raw"], tmp_path, backends=other, **options).run()


def test_two_runners_cannot_share_a_folder(server, samples, tmp_path):
    from mira.eval.runner import ResultsStore

    store = ResultsStore(tmp_path)
    try:
        with pytest.raises(RunnerError, match="another evaluation"):
            EvalRunner(samples[:1], ["raw"], tmp_path, backends=build_backends(server.base_url),
                       progress=False).run()
    finally:
        store.close()


def test_failures_are_recorded_and_redone_on_request(samples, tmp_path):
    down = "http://127.0.0.1:9/v1"  # nothing listens there: every VLM call fails
    options = dict(mode="async", benchmark="photos", progress=False)
    records = EvalRunner(samples[:1], ["raw", "rewrite"], tmp_path, backends=build_backends(down), **options).run()
    by = {r["method"]: r for r in records}
    assert by["rewrite"]["stop_reason"] == "policy_error" and "VLM failed" in by["rewrite"]["error"]
    assert by["raw"]["stop_reason"] == "stop" and "judge backend failed" in by["raw"]["scores"]["error"]
    with ChatServer() as srv:
        fixed = build_backends(srv.base_url)
        fixed.judge.backend.base_url = fixed.policies["rewrite"].backend.base_url = srv.base_url
        again = EvalRunner(samples[:1], ["raw", "rewrite"], tmp_path, backends=fixed, redo_failed=True,
                           **options).run()
    assert all(r["scores"]["error"] is None and r["stop_reason"] == "stop" for r in again)
    assert len(read_records(tmp_path / "results.jsonl")) == 2


def test_a_missing_image_is_recorded_not_raised(server, samples, tmp_path):
    from dataclasses import replace

    broken = [replace(samples[0], image=str(tmp_path / "gone.png"))]
    records = EvalRunner(broken, ["raw"], tmp_path / "out", backends=build_backends(server.base_url),
                         progress=False).run()
    assert records[0]["stop_reason"] == "input_error" and "does not exist" in records[0]["error"]


def test_bad_runner_settings_are_refused(samples, tmp_path):
    with pytest.raises(RunnerError, match="mode"):
        EvalRunner(samples, ["raw"], tmp_path, backends=build_backends("http://127.0.0.1:9/v1"), mode="fast")
    with pytest.raises(RunnerError, match="factory"):
        EvalRunner(samples, ["raw"], tmp_path, backends=build_backends("http://127.0.0.1:9/v1"), mode="ray")
    with pytest.raises(RunnerError, match="distinct"):
        EvalRunner(samples, ["raw", "raw"], tmp_path, backends=build_backends("http://127.0.0.1:9/v1"))
    from dataclasses import replace

    with pytest.raises(RunnerError, match="used twice"):
        EvalRunner([samples[0], samples[0]], ["raw"], tmp_path, backends=build_backends("http://127.0.0.1:9/v1"))
    with pytest.raises(RunnerError, match="cannot name a folder"):
        EvalRunner([replace(samples[0], id="../up")], ["raw"], tmp_path,
                   backends=build_backends("http://127.0.0.1:9/v1"))
    with pytest.raises(RunnerError, match="no policy for method 'sft'"):
        EvalRunner(samples, ["sft"], Path(tmp_path), backends=build_backends("http://127.0.0.1:9/v1"),
                   progress=False).run()


def test_final_png_is_the_last_image_also_when_saved_elsewhere(samples, tmp_path):
    """final.png is a copy of the last step's file when that file is in the folder, else encoded from memory."""
    from PIL import Image

    from eval_helpers import SplitPolicy, TintEditor
    from mira.agent import MiraAgent

    traj = MiraAgent(policy=SplitPolicy(), editor=TintEditor()).run(samples[1].image, samples[1].instruction,
                                                                    run_dir=tmp_path / "a")
    traj.save(tmp_path / "b")  # the step images stay in a/
    for folder in ("a", "b"):
        assert Image.open(tmp_path / folder / "final.png").convert("RGB").tobytes() == traj.final_image.tobytes()
    last_step = tmp_path / "a" / traj.steps[-2].image_path
    assert (tmp_path / "a" / "final.png").read_bytes() == last_step.read_bytes()
