"""EditScore (arXiv 2509.23909) as a MIRA judge, through the ``editscore`` package (``pip install 'mira-edit[eval]'``).

EditScore is a reward model for instruction-guided editing that answers VIEScore's questions with a fine-tuned
Qwen2.5-VL (local ``qwen25vl`` / ``qwen25vl_vllm`` backbones, weights from the hub) or with any model behind an
OpenAI-compatible endpoint (``backbone="openai"``, ``base_url=...``). Its scores (0-``score_range``) are reported on
0-10: ``sc = min(prompt_following, consistency)``, ``pq = perceptual_quality``, ``overall`` as EditScore computes it.

EditScore substitutes a random score when it cannot read its backbone's reply; this adapter detects that and returns
``JudgeScores(error=...)`` instead, like every MIRA judge.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from PIL import Image

from mira.agent import _describe
from mira.judges.base import Judge, JudgeScores

DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_LORA = "EditScore/EditScore-7B"
_GUESS_MARK = "guess_if_cannot_parse"


class EditScoreJudge(Judge):
    """``EditScoreJudge()`` (the released 7B reward model) or ``EditScoreJudge("gpt-4.1", backbone="openai")``."""

    name = "editscore"

    def __init__(
        self,
        model: str = DEFAULT_BASE_MODEL,
        *,
        backbone: str | None = None,
        lora_path: str | None = None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        score_range: int = 25,
        num_pass: int = 1,
        temperature: float = 0.7,
        seed: int = 42,
        **options: Any,
    ):
        try:
            from editscore import EditScore
        except ImportError:
            raise ImportError("the EditScore judge needs editscore: pip install 'mira-edit[eval]'") from None
        self.backbone = backbone or ("openai" if base_url else "qwen25vl")
        if self.backbone != "openai" and lora_path is None and model == DEFAULT_BASE_MODEL:
            lora_path = DEFAULT_LORA
        self.model, self.lora_path, self.score_range, self.num_pass = model, lora_path, score_range, num_pass
        url = (base_url or "https://api.openai.com/v1").rstrip("/") + "/chat/completions"
        self.base_url = base_url
        self._scorer = EditScore(
            backbone=self.backbone, model_name_or_path=model, lora_path=lora_path, openai_url=url,
            key=os.environ.get(api_key_env) or "EMPTY", score_range=score_range, num_pass=num_pass,
            temperature=temperature, seed=seed, **options,
        )
        self._lock = threading.Lock()  # local backbones are not thread-safe

    def score(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        try:
            with self._lock:
                out = self._scorer.evaluate([source.convert("RGB"), edited.convert("RGB")], instruction)
        except Exception as exc:
            return JudgeScores(error=f"EditScore failed: {_describe(exc)}")
        reasoning = {"sc_reasoning": str(out.get("SC_reasoning", "")), "pq_reasoning": str(out.get("PQ_reasoning", ""))}
        if any(_GUESS_MARK in text for text in reasoning.values()):
            return JudgeScores(details=reasoning, error="EditScore could not read its backbone's reply")
        try:
            following, consistency = float(out["prompt_following"]), float(out["consistency"])
            pq, overall = float(out["perceptual_quality"]), float(out["overall"])
        except (KeyError, TypeError, ValueError) as exc:
            return JudgeScores(details=reasoning, error=f"EditScore returned no scores: {_describe(exc)}")
        return JudgeScores(
            sc=min(following, consistency), pq=pq, overall=overall,
            details={"prompt_following": following, "consistency": consistency, **reasoning},
        )

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "backbone": self.backbone, "model": self.model, "lora_path": self.lora_path,
                "score_range": self.score_range, "num_pass": self.num_pass, "base_url": self.base_url}
