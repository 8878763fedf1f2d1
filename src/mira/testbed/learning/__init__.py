"""Learning in the testbed world: a tiny Qwen3-VL policy trained from random weights (short-prompt pre-training, SFT, GRPO) on
data from the real data builder and the plain oracle, then evaluated against the baselines on held-out tasks.

>>> from mira.testbed.learning import run, smoke
>>> print(run(smoke(), "runs/testbed-smoke"))      # every stage in about a minute; the report (Markdown)

``mira testbed run OUT [--smoke] [--minutes 90]`` and ``benchmarks/testbed_learning.py`` run the same pipeline.
Names are imported on first use, so importing this package stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LearningConfig": "config", "LearningError": "config", "full": "config", "smoke": "config", "PRESETS": "config",
    "apply_overrides": "config", "run": "pipeline", "make_report": "pipeline", "BatchedPolicy": "evaluate",
    "ChangeAnnotator": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mira.testbed.learning' has no attribute '{name}'")
    return getattr(importlib.import_module(f"mira.testbed.learning.{_EXPORTS[name]}"), name)
