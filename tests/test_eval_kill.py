"""kill -9 at any moment, then the same command again: every item is recorded exactly once, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval_helpers import ChatServer, Factory, comparable, photo_benchmark
from mira.eval.benchmarks import load_local
from mira.eval.runner import EvalRunner

METHODS = ["raw", "rewrite", "plan", "mira"]
SCRIPT = """
import sys
from eval_helpers import Factory
from mira.eval.benchmarks import load_local
from mira.eval.runner import EvalRunner

bench, out, base_url, mode = sys.argv[1:5]
EvalRunner(load_local(bench), {methods!r}, out, factory=Factory(base_url, latency=0.03), seeds=[0, 1], mode=mode,
           concurrency=4, benchmark="photos", progress=False).run()
"""


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.timeout(180)
def test_kill_9_mid_run_then_rerun_records_every_item_exactly_once(tmp_path):
    bench = photo_benchmark(tmp_path / "bench", n=3)
    out = tmp_path / "out"
    script = tmp_path / "run_eval.py"
    script.write_text(SCRIPT.format(methods=METHODS))
    tests, src = Path(__file__).parent, Path(__file__).parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(src)])}
    total = 3 * len(METHODS) * 2
    with ChatServer() as server:
        kills = 0
        # kill after 0 (during start-up), 3, 9 and 15 records; alternate async and local mode between runs
        for round_, kill_at in enumerate([0, 3, 9, 15, None]):
            mode = "async" if round_ % 2 == 0 else "local"
            proc = subprocess.Popen([sys.executable, str(script), str(bench), str(out), server.base_url, mode],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if kill_at is not None and _lines(out / "results.jsonl") >= kill_at:
                    time.sleep(0.05 * round_)  # land somewhere inside the next items
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    break
                time.sleep(0.01)
            output = proc.communicate(timeout=60)[0].decode()
            if kill_at is None:
                assert proc.returncode == 0, output
        assert kills == 4

        keys = [json.loads(line)["key"] for line in (out / "results.jsonl").read_text().splitlines()]
        assert len(keys) == total and len(set(keys)) == total

        reference = EvalRunner(load_local(bench), METHODS, tmp_path / "reference", factory=Factory(server.base_url),
                               seeds=[0, 1], mode="async", benchmark="photos", progress=False).run()
    resumed = EvalRunner(load_local(bench), METHODS, out, factory=Factory("http://127.0.0.1:9/v1"), seeds=[0, 1],
                         mode="async", benchmark="photos", progress=False).run()
    assert comparable(resumed) == comparable(reference)
    for record in resumed:
        run = out / record["run_dir"]
        saved = json.loads((run / "trajectory.json").read_text())
        assert len(saved["steps"]) == record["steps"]
        assert (run / "final.png").is_file()
