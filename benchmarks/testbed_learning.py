"""Learning in the testbed: a tiny Qwen3-VL policy trained from random weights on the CPU (every core), then
compared with the raw editor, the open-loop plan and the oracle on held-out tasks (the same pipeline as `mira testbed
run`).

Stages: testbed sessions through the data builder + the plain oracle's closed-loop trajectories with a 20%-error
editor -> short-prompt pre-training -> SFT (mira.train) -> GRPO (mira.train, format + executed-edit rewards) ->
evaluation through MiraAgent. Prints the table (success, mean SC, editor calls per task, success by clauses) and
the GRPO reward curve; every stage resumes where it stopped.

    python benchmarks/testbed_learning.py runs/testbed-learning [--minutes 95] [--smoke] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from mira.testbed.learning.config import apply_overrides, full, smoke  # noqa: E402
from mira.testbed.learning.pipeline import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="run folder (data, checkpoints, evaluation, report.md)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a handful of steps (about a minute)")
    parser.add_argument("--minutes", type=float, help="training minutes in all, split over the stages")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    config = apply_overrides(smoke() if args.smoke else full(), args.settings)
    if args.minutes:
        config = config.with_minutes(args.minutes)
    start = time.monotonic()
    report = run(config, args.output, log=lambda text: print(f"[{(time.monotonic() - start) / 60:6.1f} min] {text}",
                                                              flush=True))
    print(report)
    print(f"{(time.monotonic() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
