"""No-reference image quality (ARNIQA, TOPIQ, ...) as a MIRA judge.

The edited image alone is scored by a learned IQA model from ``pyiqa`` (``pip install pyiqa``: every metric it
knows) or, for ARNIQA, ``torchmetrics`` (``pip install torchmetrics``). Both download their weights on first use. The
metric's output is mapped linearly from its range to 0-10 and reported as ``pq``; these judges do not read the
instruction, so ``sc`` stays None and ``overall = pq``. Any callable that takes a float tensor ``[1, 3, H, W]`` in
0-1 and returns a score can stand in for the model (``IQAJudge(my_metric, low=0, high=1)``).
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

from PIL import Image

from mira.agent import _describe
from mira.judges.base import Judge, JudgeScores

# metric name -> (low, high) of its output, higher = better quality
RANGES: dict[str, tuple[float, float]] = {
    "arniqa": (0.0, 1.0),
    "arniqa-koniq": (0.0, 1.0),
    "arniqa-spaq": (0.0, 1.0),
    "topiq_nr": (0.0, 1.0),
    "topiq_nr-spaq": (0.0, 1.0),
    "musiq": (0.0, 100.0),
    "clipiqa": (0.0, 1.0),
}


def _build_metric(name: str, device: str | None) -> Callable[[Any], Any]:
    try:
        import pyiqa
    except ImportError:
        pyiqa = None
    if pyiqa is not None:
        return pyiqa.create_metric(name, device=device, as_loss=False)
    if name.startswith("arniqa"):
        try:
            from torchmetrics.image.arniqa import ARNIQA
        except ImportError:
            pass
        else:
            metric = ARNIQA(regressor_dataset="koniq10k", normalize=True)
            return metric.to(device) if device else metric
    raise ImportError(f"the IQA judge '{name}' needs pyiqa (pip install pyiqa) or, for ARNIQA, torchmetrics "
                      "(pip install torchmetrics)")


class IQAJudge(Judge):
    """Perceptual quality of the edited image from a no-reference IQA model, on 0-10."""

    def __init__(
        self,
        metric: str | Callable[[Any], Any] = "arniqa",
        *,
        device: str | None = None,
        low: float | None = None,
        high: float | None = None,
    ):
        self.metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", type(metric).__name__)
        default = RANGES.get(self.metric_name) if isinstance(metric, str) else (0.0, 1.0)
        if (low is None or high is None) and default is None:
            raise ValueError(f"the output range of IQA metric '{metric}' is unknown; pass low=... and high=...")
        self.low = default[0] if low is None else low
        self.high = default[1] if high is None else high
        if self.high <= self.low:
            raise ValueError("high must be greater than low")
        self.name = f"iqa:{self.metric_name}"
        self._metric = _build_metric(metric, device) if isinstance(metric, str) else metric
        self._device = device
        self._lock = threading.Lock()

    @classmethod
    def arniqa(cls, **options: Any) -> "IQAJudge":
        return cls("arniqa", **options)

    @classmethod
    def topiq(cls, **options: Any) -> "IQAJudge":
        return cls("topiq_nr", **options)

    def score(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        import numpy as np
        import torch

        pixels = torch.from_numpy(np.asarray(edited.convert("RGB"), dtype=np.float32) / 255.0)
        batch = pixels.permute(2, 0, 1).unsqueeze(0)
        if self._device:
            batch = batch.to(self._device)
        try:
            with self._lock, torch.no_grad():
                raw = float(torch.as_tensor(self._metric(batch)).float().mean())
        except Exception as exc:
            return JudgeScores(error=f"{self.name} failed: {_describe(exc)}")
        if math.isnan(raw) or math.isinf(raw):
            return JudgeScores(details={"metric": self.metric_name, "raw": str(raw)},
                               error=f"{self.name} returned {raw}")
        pq = min(10.0, max(0.0, 10.0 * (raw - self.low) / (self.high - self.low)))
        return JudgeScores(pq=pq, overall=pq, details={"metric": self.metric_name, "raw": raw})

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric_name, "low": self.low, "high": self.high}
