"""Ray mode on a local 2-worker cluster gives the same results as local mode."""

from __future__ import annotations

import pytest

from eval_helpers import ChatServer, Factory, comparable, photo_samples
from mira.eval.runner import EvalRunner

METHODS = ["raw", "rewrite", "plan", "mira"]


@pytest.mark.timeout(240)
def test_ray_mode_with_two_workers_matches_local_mode(ray_local, tmp_path):
    samples = photo_samples(3)
    with ChatServer() as server:
        options = dict(factory=Factory(server.base_url), seeds=[0, 1], benchmark="photos", progress=False)
        ray_records = EvalRunner(samples, METHODS, tmp_path / "ray", mode="ray", workers=2, worker_cpus=0.5,
                                 **options).run()
        local_records = EvalRunner(samples, METHODS, tmp_path / "local", mode="local", **options).run()
    assert len(ray_records) == len(samples) * len(METHODS) * 2
    assert comparable(ray_records) == comparable(local_records)
    assert len({r["worker"] for r in ray_records}) == 2  # both workers took items
    assert {r["worker"] for r in local_records} != {r["worker"] for r in ray_records}
    for record in ray_records:  # the driver wrote every run folder from what the workers sent back
        assert (tmp_path / "ray" / record["run_dir"] / "trajectory.json").is_file()


@pytest.mark.timeout(240)
def test_mira_eval_ray_mode_on_the_testbed_matches_local_mode(ray_local, tmp_path):
    """The command line's backend factory travels to the Ray workers, which build the registered backends."""
    import json

    from typer.testing import CliRunner

    from mira.cli import app
    from mira.testbed import export_benchmark

    bench = export_benchmark(tmp_path / "bench", n=4)
    common = ["eval", "--benchmark", str(bench), "--editor", "testbed", "--editor-option", "error_rate=0.3",
              "--methods", "raw,oracle=testbed-oracle", "--judge", "testbed", "--seeds", "0,1", "--no-progress"]
    ray_run = CliRunner().invoke(app, [*common, "--mode", "ray", "--workers", "2", "--worker-cpus", "0.5",
                                       "--worker-gpus", "0", "--out", str(tmp_path / "ray")])
    assert ray_run.exit_code == 0, ray_run.output
    local_run = CliRunner().invoke(app, [*common, "--mode", "local", "--out", str(tmp_path / "local")])
    assert local_run.exit_code == 0, local_run.output

    def records(name):
        return [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]

    assert len(records("ray")) == 4 * 2 * 2
    assert comparable(records("ray")) == comparable(records("local"))
    assert len({r["worker"] for r in records("ray")}) == 2
