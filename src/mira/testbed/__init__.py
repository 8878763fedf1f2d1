"""The testbed world: image editing whose truth is computable on a CPU.

Scenes of flat shapes on a 3x3 grid (:mod:`~mira.testbed.scene`), atomic edits and referring expressions
(:mod:`~mira.testbed.edits`), a small natural language with paraphrases (:mod:`~mira.testbed.language`), random
multi-clause tasks and their export as sessions (:mod:`~mira.testbed.tasks`), an editor that fails like diffusion
editors (:mod:`~mira.testbed.editor`), an exact judge (:mod:`~mira.testbed.judge`), a scripted oracle policy
(:mod:`~mira.testbed.oracle`) and the baseline comparison (:mod:`~mira.testbed.demo`).

Example::

    from mira import MiraAgent
    from mira.testbed import OraclePolicy, TestbedEditor, TestbedJudge, make_tasks

    task = make_tasks(1, seed=0)[0]          # task.instruction: "Make the red circle blue and remove the square."
    traj = MiraAgent(policy=OraclePolicy(), editor=TestbedEditor(error_rate=0.2)).run(task.image, task.instruction)
    TestbedJudge().score(task.image, traj.final_image, task.instruction).sc   # 10.0 when the target is reached

Names are imported on first use, so ``import mira.testbed`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Scene": "scene", "Shape": "scene", "SceneReadError": "scene", "render": "scene", "read_scene": "scene",
    "random_scene": "scene",
    "Ref": "edits", "Recolor": "edits", "Remove": "edits", "Add": "edits", "Move": "edits", "Resize": "edits",
    "Background": "edits", "EditError": "edits", "apply_edit": "edits",
    "ParseError": "language", "parse_edit": "language", "parse_instruction": "language", "edit_text": "language",
    "Task": "tasks", "make_tasks": "tasks", "export_sessions": "tasks", "export_benchmark": "tasks",
    "TestbedEditor": "editor", "TestbedJudge": "judge", "OraclePolicy": "oracle",
    "run_baselines": "demo", "format_table": "demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mira.testbed' has no attribute '{name}'")
    return getattr(importlib.import_module(f"mira.testbed.{_EXPORTS[name]}"), name)
