"""What a learned testbed policy gets right, decision by decision, read from an evaluation's run folders.

For every decision of each learned method in ``EVAL/runs/<method>/`` (the ``eval`` folder of ``mira testbed run``):

- **perception**: is the reasoning exactly the list of changes between the original and the current image
  (``describe_changes`` of the scenes read from the pixels)? Split by states before any edit, states whose image
  matches a faultless run of the edits so far, and states after an editor error;
- **actions**: is the edit one of the instruction's clauses word for word, and does it help (run without error on
  the current scene, does the exact judge's SC rise)?
- **stops**: how many ``<STOP>`` answers come on a finished task (the final scene is the target)?

    python benchmarks/testbed_diagnostics.py runs/testbed-learning/eval [--methods mira-sft mira-grpo]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from PIL import Image

from mira.protocol import STOP
from mira.testbed.edits import EditError, run_edits
from mira.testbed.judge import TestbedJudge
from mira.testbed.language import ParseError, normalise, parse_edit, split_clauses
from mira.testbed.oracle import describe_changes
from mira.testbed.scene import read_scene, render

BASELINES = {"raw", "plan", "oracle"}


def faultless(original, history: list[str]):
    """The scene a faultless editor makes of ``history``, or None when an edit is outside the grammar."""
    try:
        return run_edits(original, [parse_edit(h) for h in history])[0]
    except ParseError:
        return None


def helps(judge: TestbedJudge, source: Image.Image, current, action: str, instruction: str) -> bool:
    """Whether ``action``, run without error on ``current``, raises the exact judge's SC."""
    try:
        after = run_edits(current, [parse_edit(action)])[0]
    except (ParseError, EditError):
        return False
    before = judge.score(source, render(current), instruction).sc
    return judge.score(source, render(after), instruction).sc > before + 1e-9


def diagnose(folder: Path) -> Counter:
    judge, counts = TestbedJudge(), Counter()
    for path in sorted(folder.glob("*/*/trajectory.json")):
        trajectory = json.loads(path.read_text())
        run = path.parent
        source = Image.open(run / "original.png").convert("RGB")
        original = read_scene(source)
        clauses = {normalise(c) for c in split_clauses(trajectory["instruction"])}
        current, history = original, []
        for step in trajectory["steps"]:
            state = "start" if not history else ("clean" if faultless(original, history) == current else "error")
            counts[f"states {state}"] += 1
            counts[f"perceived {state}"] += (step["reasoning"] or "").strip() == describe_changes(original, current)
            action = step["action"]
            if action == STOP:
                counts["stops"] += 1
                counts["stops when done"] += bool(judge.score(source, render(current), trajectory["instruction"])
                                                  .details["exact"])
                break
            if action is None:
                counts["unusable answers"] += 1
                continue
            counts["edits"] += 1
            counts["edits copying a clause"] += normalise(action).strip(" .") in clauses
            counts["edits that help"] += helps(judge, source, current, action, trajectory["instruction"])
            history.append(action)
            if step.get("image_path"):
                current = read_scene(Image.open(run / Path(step["image_path"]).name).convert("RGB"))
    return counts


def share(counts: Counter, part: str, whole: str) -> str:
    return f"{counts[part] / counts[whole]:.1%} of {counts[whole]}" if counts[whole] else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path, help="the evaluation folder (holds runs/<method>/)")
    parser.add_argument("--methods", nargs="*", help="methods to read (default: every non-baseline method)")
    args = parser.parse_args()
    runs = args.eval_dir / "runs"
    methods = args.methods or sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in BASELINES)
    rows = [("perception, before any edit", "perceived start", "states start"),
            ("perception, after faultless edits", "perceived clean", "states clean"),
            ("perception, after an editor error", "perceived error", "states error"),
            ("edits copying a clause", "edits copying a clause", "edits"),
            ("edits that raise SC (run without error)", "edits that help", "edits"),
            ("<STOP> on a finished task", "stops when done", "stops")]
    results = {m: diagnose(runs / m) for m in methods}
    print("| decision | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for label, part, whole in rows:
        print(f"| {label} | " + " | ".join(share(results[m], part, whole) for m in methods) + " |")


if __name__ == "__main__":
    main()
