"""Verifier-guided steps with tiny random-weight real backends: a Qwen2.5-VL policy asked for several phrasings
(``generate(obs, n=3)``) and a FLUX.1-Kontext DiffusersEditor sampled per seed, on the CPU."""

import asyncio

import numpy as np
import pytest
from PIL import Image

from mira import MiraAgent
from mira.editors.diffusers import DiffusersEditor
from mira.judges.base import Judge, JudgeScores
from mira.policies.transformers import TransformersPolicy
from mira.strategies import StepStrategy

pytestmark = pytest.mark.slow


class BlueJudge(Judge):
    """sc = how blue the edited image is on average (0-10)."""

    name = "blue"

    def score(self, source, edited, instruction):
        arr = np.asarray(edited.convert("RGB"), dtype=np.float64)
        return JudgeScores.from_sc_pq(float(np.clip((arr[..., 2] - arr[..., :2].mean(-1)).mean() / 12.8 + 5, 0, 10)), 10)


def test_phrasings_best_of_n_rollback_and_preservation_with_real_backends(tiny_models, tmp_path):
    def make():
        return MiraAgent(
            TransformersPolicy(str(tiny_models["qwen2_5_vl"]), max_new_tokens=12),
            DiffusersEditor.flux_kontext(str(tiny_models["flux-kontext"]), num_inference_steps=2, max_pixels=64 * 64),
            verifier=BlueJudge(), max_steps=2,
            strategy=StepStrategy(n_candidates=3, policy_candidates=3, rollback=1, preserve_details=True,
                                  score_key="sc"))

    source = Image.new("RGB", (48, 40), "orange")
    t = make().run(source, "make the wall blue", run_dir=tmp_path / "run")
    step = t.steps[0]  # random weights: the completions are gibberish, but three distinct parseable phrasings
    produced = [c for c in step.candidates if "image_path" in c]
    assert len({c["action"] for c in step.candidates}) == 3 and step.action in {c["action"] for c in produced}
    assert len({c["seed"] for c in step.candidates}) == len(step.candidates) >= 3
    pictures = {Image.open(tmp_path / "run" / c["image_path"]).tobytes() for c in produced}
    assert len(pictures) == len(produced)  # each call gave its own picture
    if step.image is not None:  # kept: the best candidate, resized back to the source's size
        assert max(produced, key=lambda c: c["score"]).get("chosen") and step.image.size == source.size
    again = asyncio.run(make().arun(source, "make the wall blue"))
    assert [c["action"] for c in again.steps[0].candidates] == [c["action"] for c in step.candidates]
    assert [c["score"] for c in again.steps[0].candidates] == \
        pytest.approx([c["score"] for c in step.candidates], abs=0.01)  # CPU float sums may differ slightly
