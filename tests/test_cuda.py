"""The local backends on a CUDA device: bfloat16 weights, every offload mode, VAE tiling, the whole loop.

Skipped without a GPU. On a GPU the other tiny-model tests run there too (devices resolve to ``cuda``); these add what
only a GPU has: the ``auto`` dtype becoming bfloat16 and weights moving between the CPU and the device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mira import MiraAgent
from mira.editors.diffusers import OFFLOAD_MODES, DiffusersEditor, clear_pipeline_cache
from mira.policies.transformers import TransformersPolicy
from mira.protocol import Observation

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.usefixtures("small_qwen_conditioning")]

FAMILIES = ["flux-kontext", "qwen-image-edit", "qwen-image-edit-plus"]
INSTRUCTION = "make the square green"


@pytest.fixture(scope="module")
def photo():
    pixels = np.zeros((48, 96, 3), dtype=np.uint8)
    pixels[:, :48] = (220, 40, 40)
    pixels[12:36, 30:66] = (40, 40, 220)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def observation(photo):
    return Observation("make the square green and the background white", ("make the square green",), photo, photo)


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen3_vl"])
def test_policy_runs_in_bfloat16_on_the_gpu_and_is_seeded(tiny_models, name, observation):
    policy = TransformersPolicy(str(tiny_models[name]), max_new_tokens=8).load()
    parameter = next(policy.model.parameters())
    assert parameter.device.type == "cuda" and parameter.dtype == torch.bfloat16
    first = policy.generate(observation, n=3, seed=11)
    assert len(first) == 3 and all(isinstance(text, str) and text for text in first)
    assert policy.generate(observation, n=3, seed=11) == first


def _edit(tiny_models, family, photo, **kwargs):
    editor = DiffusersEditor(str(tiny_models[family]), family=family, num_inference_steps=2, **kwargs)
    return editor, np.asarray(editor.edit(photo, INSTRUCTION, seed=3), dtype=np.int16)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_offload_mode_gives_the_resident_pixels(tiny_models, family, photo):
    """Offloading moves weights, not results: each mode reproduces the resident pipeline's image."""
    resident, expected = _edit(tiny_models, family, photo)
    assert resident.pipeline.transformer.dtype == torch.bfloat16
    assert resident.pipeline.transformer.device.type == "cuda"
    for offload in (mode for mode in OFFLOAD_MODES if mode != "none"):
        _, pixels = _edit(tiny_models, family, photo, offload=offload)
        assert pixels.shape == expected.shape == (48, 96, 3)
        assert np.abs(pixels - expected).mean() < 1.0, offload
    clear_pipeline_cache()


@pytest.mark.parametrize("family", FAMILIES)
def test_model_offload_leaves_the_weights_on_the_cpu_between_calls(tiny_models, family, photo):
    editor, _ = _edit(tiny_models, family, photo, offload="model")
    assert editor.pipeline.transformer.device.type == "cpu"
    clear_pipeline_cache()


@pytest.mark.parametrize("family", FAMILIES)
def test_vae_tiling_on_a_large_image(tiny_models, family):
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 768, 3), dtype=np.uint8))
    editor = DiffusersEditor(str(tiny_models[family]), family=family, num_inference_steps=1, vae_tiling=True,
                             max_pixels=512 * 768)
    out = editor.edit(big, INSTRUCTION, seed=0)
    assert out.size == (768, 512) and editor.pipeline.vae.use_tiling
    clear_pipeline_cache()


def test_the_loop_on_the_gpu_with_an_offloaded_editor(tiny_models, photo, tmp_path):
    policy = TransformersPolicy(str(tiny_models["qwen3_vl"]), max_new_tokens=12)
    editor = DiffusersEditor(str(tiny_models["flux-kontext"]), family="flux-kontext", num_inference_steps=2,
                             offload="group")
    agent = MiraAgent(policy=policy, editor=editor, max_steps=2)
    trajectory = agent.run(photo, "make the square green and the background white", run_dir=tmp_path / "run")
    assert trajectory.stop_reason in {"stop", "max_steps", "repeat", "policy_error"}
    assert trajectory.config["editor"]["offload"] == "group" and trajectory.config["editor"]["dtype"] == "bfloat16"
    assert (tmp_path / "run" / "trajectory.json").is_file()
