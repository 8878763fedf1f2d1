"""TransformersPolicy on tiny Qwen2.5-VL and Qwen3-VL checkpoints: the real processor, chat template and generate."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image

from mira import load_policy
from mira.policies.base import PolicyError
from mira.policies.transformers import TransformersPolicy
from mira.protocol import Observation
from mira.testing import trl_chat_template

NAMES = ["qwen2_5_vl", "qwen3_vl"]
DEFAULT_DTYPE = "bfloat16" if torch.cuda.is_available() else "float32"  # what dtype="auto" picks


@pytest.fixture(scope="module")
def observation():
    return Observation(
        "make the stove black and the floor wooden",
        ("make the stove black",),
        Image.new("RGB", (64, 64), (200, 30, 30)),
        Image.new("RGB", (80, 60), (30, 30, 200)),
    )


@pytest.fixture(scope="module", params=NAMES)
def policy(request, tiny_models):
    return TransformersPolicy(str(tiny_models[request.param]), max_new_tokens=12).load()


def test_generate_returns_n_strings(policy, observation):
    out = policy.generate(observation, n=3, seed=0)
    assert len(out) == 3 and all(isinstance(text, str) and text for text in out)


def test_same_seed_same_output_and_different_seeds_differ(policy, observation):
    first = policy.generate(observation, n=2, seed=7)
    assert policy.generate(observation, n=2, seed=7) == first
    assert policy.generate(observation, n=2, seed=8) != first


def test_seeded_generation_leaves_global_rng_alone(policy, observation):
    state = torch.random.get_rng_state()
    policy.generate(observation, n=1, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_greedy_returns_n_copies(tiny_models, observation):
    greedy = TransformersPolicy(str(tiny_models["qwen2_5_vl"]), max_new_tokens=8, do_sample=False)
    out = greedy.generate(observation, n=3, seed=1)
    assert len(out) == 3 and len(set(out)) == 1
    assert greedy.generate(observation, n=1, seed=2) == out[:1]
    assert TransformersPolicy(str(tiny_models["qwen2_5_vl"]), temperature=0).config()["do_sample"] is False


def test_chat_template_is_trls(policy):
    name = "qwen2_5_vl" if type(policy.model).__name__.startswith("Qwen2_5") else "qwen3_vl"
    assert policy.processor.chat_template == trl_chat_template(name)


def test_messages_carry_both_images_in_protocol_order(policy, observation, monkeypatch):
    seen = {}
    apply = policy.processor.apply_chat_template

    def spy(messages, **kwargs):
        seen["messages"], seen["kwargs"] = messages, kwargs
        seen["inputs"] = apply(messages, **kwargs)
        return seen["inputs"]

    monkeypatch.setattr(policy.processor, "apply_chat_template", spy)
    policy.generate(observation, n=1, seed=0)
    images = [part["image"] for msg in seen["messages"] for part in msg["content"] if part["type"] == "image"]
    assert images == [observation.original, observation.current]
    assert seen["kwargs"]["add_generation_prompt"] is True
    assert seen["inputs"]["image_grid_thw"].shape[0] == 2
    vision_start = policy.processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert int((seen["inputs"]["input_ids"] == vision_start).sum()) == 2
    prompt = policy.processor.tokenizer.decode(seen["inputs"]["input_ids"][0])
    assert prompt.endswith("<|im_start|>assistant\n") and "make the stove black and the floor wooden" in prompt


def test_pixel_bounds_reach_the_processor(tiny_models, observation):
    policy = TransformersPolicy(str(tiny_models["qwen2_5_vl"]), max_new_tokens=4, min_pixels=16 * 28 * 28,
                                max_pixels=16 * 28 * 28)
    size = policy.processor.image_processor.size
    assert (size.shortest_edge, size.longest_edge) == (16 * 28 * 28, 16 * 28 * 28)
    assert len(policy.generate(observation, n=1, seed=0)) == 1


def test_config_records_model_and_sampling(tiny_models):
    config = TransformersPolicy(str(tiny_models["qwen3_vl"]), temperature=0.5, top_p=0.8).config()
    assert config["model"] == str(tiny_models["qwen3_vl"]) and config["dtype"] == DEFAULT_DTYPE
    assert (config["temperature"], config["top_p"], config["do_sample"]) == (0.5, 0.8, True)


def test_registry_builds_a_transformers_policy_from_a_path(tiny_models):
    policy = load_policy(str(tiny_models["qwen3_vl"]), max_new_tokens=5)
    assert isinstance(policy, TransformersPolicy) and policy.max_new_tokens == 5


def test_missing_folder_is_a_clear_policy_error(tmp_path, observation):
    with pytest.raises(PolicyError, match="does not exist"):
        TransformersPolicy(str(tmp_path / "nope")).generate(observation)


def test_unreachable_hub_id_is_a_policy_error(observation):
    with pytest.raises(PolicyError, match="could not load policy model 'no-such-org/no-such-model' \\(no local"):
        TransformersPolicy("no-such-org/no-such-model").generate(observation)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dtype"):
        TransformersPolicy("x/y", dtype="int3")
    with pytest.raises(ValueError, match="max_new_tokens"):
        TransformersPolicy("x/y", max_new_tokens=0)


def test_import_mira_does_not_import_torch():
    code = "import sys, mira, mira.registry; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

