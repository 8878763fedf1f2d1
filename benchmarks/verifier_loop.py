"""Verifier-guided steps in the testbed world, and detail preservation against a drifting editor.

Part 1 — success at equal editor-call budgets, in the testbed world (:mod:`mira.testbed`): held-out three-clause
tasks, the seeded :class:`~mira.testbed.TestbedEditor` erring on a share of its calls (nothing happens, the wrong shape,
the wrong colour or destination, or a side effect on another shape), the testbed
:class:`~mira.testbed.OraclePolicy` (it reads the pixels, issues the next missing clause or a correction, stops when
the scene is the target), and the exact :class:`~mira.testbed.TestbedJudge` as verifier (its ``sc``: clauses
satisfied x shapes left alone). The editor is the only source of failure. A task succeeds when the final scene is
exactly the target. Every method runs the same tasks under the same editor-call budget.

Part 2 — untouched-region fidelity. Five local recolourings of a photograph (scikit-image's astronaut, 256x256) by an
editor that, like a diffusion re-render, slightly blurs, shifts and noises the whole picture at every call. PSNR and
SSIM of the pixels that no edit touched, against the original, after 1..5 steps, with and without
``preserve_details``; and how much of each recolouring survives.

    python benchmarks/verifier_loop.py [--tasks 300] [--error-rate 0.4] [--budgets 4 6 9]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image, ImageFilter

from mira import MiraAgent
from mira.editors.base import Editor
from mira.policies.baselines import StaticPlanPolicy
from mira.strategies import StepStrategy, region_fidelity
from mira.testbed import OraclePolicy, TestbedEditor, TestbedJudge, make_tasks
from mira.testbed.tasks import HELD_OUT_SEED

# -- part 1: the testbed world -----------------------------------------------------------------------------------
CLEAN_CLAUSE = 3.0  # sc gained by one clean clause of three (10/3); a side effect on another shape gains less

METHODS = {
    "plain loop": {},
    "best-of-3": {"n_candidates": 3},
    "best-of-3, adaptive": {"n_candidates": 3, "adaptive_gain": CLEAN_CLAUSE},
    "rollback 2": {"rollback": 2},
    "rollback 2, needs progress": {"rollback": 2, "rollback_margin": -0.1},
    "adaptive best-of-3 + rollback 2": {"n_candidates": 3, "adaptive_gain": CLEAN_CLAUSE, "rollback": 2,
                                        "rollback_margin": -0.1},
}


def run_method(options: dict, budget: int, tasks: list, error_rate: float) -> tuple[float, float, float]:
    """(success rate, editor calls per task, verifier calls per task)."""
    strategy = StepStrategy(score_key="sc", max_editor_calls=budget, **options)
    judge = TestbedJudge()
    agent = MiraAgent(OraclePolicy(), TestbedEditor(error_rate=error_rate),
                      verifier=judge if strategy.needs_verifier else None, strategy=strategy, max_steps=4 * budget)
    wins = calls = verifies = 0
    for i, task in enumerate(tasks):
        t = agent.run(task.image, task.instruction, seed=HELD_OUT_SEED + i)
        wins += bool(judge.score(task.image, t.final_image, task.instruction).details["exact"])
        calls += t.editor_calls
        verifies += sum(s.extra.get("verifier_calls", 0) for s in t.steps)
    n = len(tasks)
    return wins / n, calls / n, verifies / n


# -- part 2: detail preservation ---------------------------------------------------------------------------------
REGIONS = [((20, 150, 80, 230), (230, 30, 30)), ((180, 170, 240, 240), (30, 60, 230)), ((100, 20, 160, 70),
           (240, 220, 30)), ((190, 40, 245, 100), (30, 200, 60)), ((20, 30, 70, 90), (200, 40, 200))]


class DriftingEditor(Editor):
    """Tints one rectangle strongly; like a diffusion re-render, every call also blurs, shifts and noises the whole
    picture slightly."""

    name = "drifting"

    def edit(self, image, instruction, *, seed=None):
        rng = np.random.default_rng(seed)
        soft = np.asarray(image.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float64)
        arr = 0.5 * np.asarray(image, dtype=np.float64) + 0.5 * soft + rng.normal(0, 2.0, soft.shape)
        arr += rng.uniform(-1.5, 1.5, size=3)
        box, colour = REGIONS[int(instruction.split()[-1])]
        x0, y0, x1, y1 = box
        arr[y0:y1, x0:x1] = 0.35 * arr[y0:y1, x0:x1] + 0.65 * np.array(colour)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def tint_kept(img: Image.Image, index: int) -> float:
    """How far the rectangle's mean colour moved toward the tint, 1.0 = as far as a single clean edit moves it."""
    box, colour = REGIONS[index]
    x0, y0, x1, y1 = box
    mean = np.asarray(img, dtype=np.float64)[y0 + 4:y1 - 4, x0 + 4:x1 - 4].reshape(-1, 3).mean(axis=0)
    start = np.asarray(PHOTO, dtype=np.float64)[y0 + 4:y1 - 4, x0 + 4:x1 - 4].reshape(-1, 3).mean(axis=0)
    target = 0.35 * start + 0.65 * np.array(colour)
    return float(1 - np.linalg.norm(mean - target) / np.linalg.norm(start - target))


def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((256, 256), Image.Resampling.LANCZOS)


PHOTO = photo()


def preservation(preserve: bool) -> list[dict[str, float]]:
    plan = [f"recolour region {i}" for i in range(len(REGIONS))]
    strategy = StepStrategy(preserve_details=preserve)
    t = MiraAgent(StaticPlanPolicy(plan), DriftingEditor(), strategy=strategy, max_steps=6).run(PHOTO, "recolour")
    untouched = np.ones((256, 256), bool)
    margin = strategy.preserve_radius + 2 * strategy.preserve_feather + 2
    for (x0, y0, x1, y1), _ in REGIONS:
        untouched[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = False
    rows = []
    for k, step in enumerate(t.steps[:len(REGIONS)], start=1):
        kept = min(tint_kept(step.image, i) for i in range(k))
        rows.append({**region_fidelity(PHOTO, step.image, untouched), "kept": kept})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--error-rate", type=float, default=0.4)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 6, 9])
    args = parser.parse_args()

    tasks = make_tasks(args.tasks, HELD_OUT_SEED, clauses=(3, 3))
    t0 = time.perf_counter()
    print(f"Part 1: {args.tasks} held-out three-clause testbed tasks, TestbedEditor error rate {args.error_rate}, "
          "testbed oracle policy, TestbedJudge as verifier (sc)")
    head = f"{'method':34s}" + "".join(f" | budget {b:2d}: success  calls  verifs" for b in args.budgets)
    print(head + "\n" + "-" * len(head))
    for name, options in METHODS.items():
        cells = []
        for budget in args.budgets:
            success, calls, verifies = run_method(options, budget, tasks, args.error_rate)
            cells.append(f" |           {success:6.1%}  {calls:5.2f}  {verifies:6.2f}")
        print(f"{name:34s}" + "".join(cells))
    print(f"({time.perf_counter() - t0:.1f} s)\n")

    print("Part 2: untouched-region fidelity vs the original after k edits (256x256 photo, drifting editor)")
    plain, kept = preservation(False), preservation(True)
    print(f"{'k':>2s} | {'PSNR plain':>10s} {'PSNR preserved':>14s} | {'SSIM plain':>10s} {'SSIM preserved':>14s} |"
          f" {'edits kept plain':>16s} {'preserved':>9s}")
    def db(psnr: float) -> str:
        return f"{psnr:.2f} dB" if np.isfinite(psnr) else "identical"

    for k, (a, b) in enumerate(zip(plain, kept), start=1):
        print(f"{k:2d} | {db(a['psnr']):>10s} {db(b['psnr']):>14s} | {a['ssim']:10.4f} {b['ssim']:14.4f} |"
              f" {a['kept']:16.2f} {b['kept']:9.2f}")


if __name__ == "__main__":
    main()
