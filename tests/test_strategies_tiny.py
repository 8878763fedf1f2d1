"""Verifier-guided steps over a tiny random-weight FLUX.1-Kontext pipeline (real diffusers code path, CPU)."""

import asyncio

import numpy as np
import pytest
from PIL import Image

from mira import MiraAgent
from mira.editors.base import Editor
from mira.judges.base import Judge, JudgeScores
from mira.policies.baselines import StaticPlanPolicy
from mira.strategies import StepStrategy

pytestmark = pytest.mark.slow


class TinyKontextEditor(Editor):
    """Runs the pipeline at 64x64 for 2 steps, seeded through a torch generator."""

    name = "tiny-kontext"

    def __init__(self, pipe):
        self.pipe = pipe

    def edit(self, image, instruction, *, seed=None):
        import torch

        return self.pipe(image=image, prompt=instruction, height=64, width=64, num_inference_steps=2,
                         guidance_scale=2.5, max_sequence_length=32, max_area=64 * 64, _auto_resize=False,
                         generator=torch.Generator().manual_seed(seed)).images[0]


class BlueJudge(Judge):
    """sc = how blue the edited image is on average (0-10)."""

    name = "blue"

    def score(self, source, edited, instruction):
        arr = np.asarray(edited.convert("RGB"), dtype=np.float64)
        return JudgeScores.from_sc_pq(float(np.clip((arr[..., 2] - arr[..., :2].mean(-1)).mean() / 12.8 + 5, 0, 10)), 10)


def test_best_of_n_rollback_and_preservation_on_a_real_pipeline(tiny_kontext_pipeline, tmp_path):
    def make():
        return MiraAgent(StaticPlanPolicy(["make the wall blue", "make the floor blue"]),
                         TinyKontextEditor(tiny_kontext_pipeline), verifier=BlueJudge(),
                         strategy=StepStrategy(n_candidates=3, rollback=1, preserve_details=True, score_key="sc"))

    source = Image.new("RGB", (48, 40), "orange")
    t = make().run(source, "make the wall and the floor blue", run_dir=tmp_path / "run")
    assert t.stop_reason == "stop" and t.editor_calls >= 6
    for step in t.steps[:2]:
        produced = [c for c in step.candidates if "image_path" in c]
        assert len({c["seed"] for c in step.candidates}) == len(step.candidates)
        pictures = {Image.open(tmp_path / "run" / c["image_path"]).tobytes() for c in produced}
        assert len(pictures) == len(produced)  # each seed gave its own picture
        if step.image is not None:  # kept: the best candidate, resized back to the source's size
            chosen = max(produced, key=lambda c: c["score"])
            assert chosen.get("chosen") and step.image.size == source.size
            assert step.scores["sc"] == pytest.approx(chosen["score"])
    again = asyncio.run(make().arun(source, "make the wall and the floor blue"))  # CPU float sums vary slightly
    assert again.stop_reason == "stop" and [c["seed"] for c in again.steps[0].candidates] == \
        [c["seed"] for c in t.steps[0].candidates]
    assert [c["score"] for c in again.steps[0].candidates] == \
        pytest.approx([c["score"] for c in t.steps[0].candidates], abs=0.01)
