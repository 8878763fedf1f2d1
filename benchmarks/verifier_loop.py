"""Verifier-guided steps against a seeded flaky editor, and detail preservation against a drifting editor.

Part 1 — success at equal editor-call budgets. A synthetic world: a 96x96 picture of four coloured squares; a task
asks for three of them to be recoloured ("make the top-left square red, the top-right square blue and the
bottom-right square yellow"). The editor is seeded and flaky: per call it does the edit (50%), nothing (15%), recolours
the wrong square (15%) or does the edit and also recolours another square (20%). The policy is a closed-loop oracle
(it reads the squares' colours exactly: it issues the next missing edit, corrects a damaged square first, rephrases
a retried edit, and stops when the picture is right), so the editor's flakiness is the only source of failure. The
verifier is exact: ``sc`` = 10 x the fraction of squares with the right colour. A task succeeds when all four
squares are right at the end. Every method runs the same tasks under the same editor-call budget.

Part 2 — untouched-region fidelity. Five local recolourings of a photograph (scikit-image's astronaut, 256x256) by an
editor that, like a diffusion re-render, slightly blurs, shifts and noises the whole picture at every call. PSNR and
SSIM of the pixels that no edit touched, against the original, after 1..5 steps, with and without
``preserve_details``; and how much of each recolouring survives.

    python benchmarks/verifier_loop.py [--tasks 200] [--budgets 4 6 9]
"""

from __future__ import annotations

import argparse
import random
import re
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mira import STOP, MiraAgent, Policy
from mira.editors.base import Editor
from mira.judges.base import Judge, JudgeScores
from mira.policies.baselines import StaticPlanPolicy
from mira.protocol import format_completion
from mira.strategies import StepStrategy, region_fidelity

# -- part 1: the squares world ---------------------------------------------------------------------------------
PALETTE = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
           "purple": (140, 60, 170), "orange": (240, 140, 30), "white": (240, 240, 240), "black": (25, 25, 25)}
SQUARES = {"top-left": (4, 4), "top-right": (52, 4), "bottom-left": (4, 52), "bottom-right": (52, 52)}
SIDE = 40
VERBS = ("make the {} square {}", "paint the {} square {}", "recolour the {} square to {}", "turn the {} square {}")
EDIT_RE = re.compile(r"(top-left|top-right|bottom-left|bottom-right) square (?:to )?(\w+)")


def draw(colours: dict[str, str]) -> Image.Image:
    img = Image.new("RGB", (96, 96), (128, 128, 128))
    d = ImageDraw.Draw(img)
    for name, (x, y) in SQUARES.items():
        d.rectangle([x, y, x + SIDE - 1, y + SIDE - 1], fill=PALETTE[colours[name]])
    return img


def read(img: Image.Image) -> dict[str, str]:
    """The palette colour nearest to each square's centre."""
    arr = np.asarray(img, dtype=np.float64)
    out = {}
    for name, (x, y) in SQUARES.items():
        mean = arr[y + 10:y + 30, x + 10:x + 30].reshape(-1, 3).mean(axis=0)
        out[name] = min(PALETTE, key=lambda c: float(((mean - PALETTE[c]) ** 2).sum()))
    return out


def targets(source: Image.Image, instruction: str) -> dict[str, str]:
    """What every square should look like when the instruction is done."""
    return {**read(source), **dict(EDIT_RE.findall(instruction))}


class ExactJudge(Judge):
    """sc = 10 x the fraction of squares with the colour the instruction asks for (the others: their original)."""

    name = "exact-squares"

    def score(self, source, edited, instruction):
        want, have = targets(source, instruction), read(edited)
        return JudgeScores.from_sc_pq(10.0 * sum(want[k] == have[k] for k in want) / len(want), 10.0)


class OraclePolicy(Policy):
    """Reads the squares exactly: corrects a damaged square first, then issues the next missing edit, rephrasing
    an edit it already issued; ``<STOP>`` when every square is right."""

    name = "oracle"

    def generate(self, observation, *, n=1, seed=None):
        want, have = targets(observation.original, observation.instruction), read(observation.current)
        original = read(observation.original)
        wrong = sorted(k for k in want if want[k] != have[k])
        if not wrong:
            return [format_completion(STOP, "every square is right")] * n
        wrong.sort(key=lambda k: want[k] != original[k])  # damaged squares (should have stayed) first
        square = wrong[0]
        tries = sum(square in h for h in observation.history)
        return [format_completion(VERBS[tries % len(VERBS)].format(square, want[square]), f"{square} is wrong")] * n


class FlakyEditor(Editor):
    """Seeded: the edit (50%), nothing (15%), the wrong square (15%), the edit plus another square (20%)."""

    name = "flaky"

    def edit(self, image, instruction, *, seed=None):
        square, colour = EDIT_RE.search(instruction).groups()
        rng = random.Random(f"{instruction}|{seed}")
        others = [s for s in SQUARES if s != square]
        roll = rng.random()
        colours = read(image)
        if roll < 0.50:
            colours[square] = colour
        elif roll < 0.65:
            pass
        elif roll < 0.80:
            colours[rng.choice(others)] = colour
        else:
            colours[square] = colours[rng.choice(others)] = colour
        return draw(colours)


def make_task(i: int) -> tuple[Image.Image, str]:
    rng = random.Random(i)
    colours = {s: rng.choice(list(PALETTE)) for s in SQUARES}
    goals = rng.sample(list(SQUARES), 3)
    wants = [(g, rng.choice([c for c in PALETTE if c != colours[g]])) for g in goals]
    parts = [f"the {g} square {c}" for g, c in wants]
    return draw(colours), "make " + ", ".join(parts[:-1]) + " and " + parts[-1]


METHODS = {
    "plain loop": {},
    "best-of-3": {"n_candidates": 3},
    "best-of-3, adaptive": {"n_candidates": 3, "adaptive_gain": 2.4},
    "rollback 2": {"rollback": 2},
    "rollback 2, needs progress": {"rollback": 2, "rollback_margin": -1.0},
    "adaptive best-of-3 + rollback 2": {"n_candidates": 3, "adaptive_gain": 2.4, "rollback": 2,
                                        "rollback_margin": -1.0},
}


def run_method(options: dict, budget: int, tasks: list[tuple[Image.Image, str]]) -> tuple[float, float, float]:
    """(success rate, editor calls per task, verifier calls per task)."""
    strategy = StepStrategy(score_key="sc", max_editor_calls=budget, **options)
    judge = ExactJudge()
    agent = MiraAgent(OraclePolicy(), FlakyEditor(), verifier=judge if strategy.needs_verifier else None,
                      strategy=strategy, max_steps=4 * budget)
    wins = calls = verifies = 0
    for i, (image, instruction) in enumerate(tasks):
        t = agent.run(image, instruction, seed=i)
        wins += judge.score(image, t.final_image, instruction).sc == 10.0
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
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 6, 9])
    args = parser.parse_args()

    tasks = [make_task(i) for i in range(args.tasks)]
    t0 = time.perf_counter()
    print(f"Part 1: {args.tasks} three-edit tasks, flaky editor (edit 50% / nothing 15% / wrong square 15% / "
          "edit + collateral 20%), oracle policy, exact verifier")
    head = f"{'method':34s}" + "".join(f" | budget {b:2d}: success  calls  verifs" for b in args.budgets)
    print(head + "\n" + "-" * len(head))
    for name, options in METHODS.items():
        cells = []
        for budget in args.budgets:
            success, calls, verifies = run_method(options, budget, tasks)
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
