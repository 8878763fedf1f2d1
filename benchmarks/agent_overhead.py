"""Per-step overhead of the MIRA loop itself, with zero-latency backends at 1024x1024.

Everything except model calls is measured: observation building, parsing, seeds, step records, callbacks and the
run folder (PNG writes happen on a background thread and must not block the next step).

    python benchmarks/agent_overhead.py [--steps 32] [--trajectories 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from PIL import Image

from mira import MiraAgent, Policy, STOP
from mira.editors.base import Editor
from mira.protocol import format_completion


class InstantPolicy(Policy):
    name = "instant"

    def __init__(self, steps: int):
        self.steps = steps

    def generate(self, observation, *, n=1, seed=None):
        i = len(observation.history)
        action = STOP if i >= self.steps else f"make object {i} a slightly different colour"
        return [format_completion(action, "zero-latency policy")] * n


class InstantEditor(Editor):
    """Returns one of two precomputed images (a new image object per step, no pixel work)."""

    name = "instant"

    def __init__(self, size: int):
        self.images = [Image.new("RGB", (size, size), c) for c in ("red", "blue")]
        self.i = 0

    def edit(self, image, instruction, *, seed=None):
        self.i += 1
        return self.images[self.i % 2]


def measure(steps: int, size: int, with_run_dir: bool) -> tuple[float, float]:
    """(ms per step inside the loop, ms of the final save) for one trajectory."""
    stamps: list[float] = []
    agent = MiraAgent(policy=InstantPolicy(steps), editor=InstantEditor(size), max_steps=steps + 1,
                      callbacks=[lambda step, traj: stamps.append(time.perf_counter())])
    source = Image.new("RGB", (size, size), "gray")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        agent.run(source, "recolour every object", run_dir=tmp if with_run_dir else None)
        total = time.perf_counter() - t0
    loop = stamps[-1] - t0
    return loop / (steps + 1) * 1e3, (total - loop) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--trajectories", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    print(f"MIRA loop overhead, {args.size}x{args.size}, {args.steps} edits + STOP per trajectory, "
          f"median of {args.trajectories} trajectories")
    print(f"{'mode':<22}{'ms/step':>10}{'of a 1 s editor step':>24}{'final save ms':>16}")
    for label, with_dir in (("in memory", False), ("with run folder", True)):
        runs = [measure(args.steps, args.size, with_dir) for _ in range(args.trajectories)]
        per_step = statistics.median(r[0] for r in runs)
        save = statistics.median(r[1] for r in runs)
        print(f"{label:<22}{per_step:>10.2f}{per_step / 1000:>23.2%}{save:>16.0f}")
    print("target: <= 20 ms/step")


if __name__ == "__main__":
    main()
