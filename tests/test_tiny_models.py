"""The tiny random-weight models of mira.testing: real classes, loadable with the ordinary loaders, deterministic."""

from __future__ import annotations

import filecmp

import pytest
import torch
from PIL import Image

from mira import testing
from mira.protocol import Observation, build_messages, format_completion

VLMS = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration"}
PIPELINES = {
    "flux-kontext": "FluxKontextPipeline",
    "qwen-image-edit": "QwenImageEditPipeline",
    "qwen-image-edit-plus": "QwenImageEditPlusPipeline",
}


def _same_tree(a, b) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def test_build_tiny_models_writes_every_model(tiny_models):
    assert set(tiny_models) == set(VLMS) | set(PIPELINES)
    assert all(path.name == name and path.is_dir() for name, path in tiny_models.items())


def test_build_tiny_models_keeps_existing_and_rejects_unknown(tiny_models, tmp_path):
    directory = tiny_models["qwen3_vl"].parent
    stamp = (directory / "qwen3_vl" / "config.json").stat().st_mtime_ns
    assert testing.build_tiny_models(directory, which=["qwen3_vl"]) == {"qwen3_vl": directory / "qwen3_vl"}
    assert (directory / "qwen3_vl" / "config.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown tiny model"):
        testing.build_tiny_models(tmp_path, which=["gpt-image"])


@pytest.mark.parametrize("name", sorted(VLMS))
def test_vlm_loads_with_auto_classes(tiny_models, name):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models[name])
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[name])
    assert type(model).__name__ == VLMS[name]
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert processor.chat_template == testing.trl_chat_template(name)
    assert processor.tokenizer.chat_template == testing.trl_chat_template(name)


@pytest.mark.parametrize("name", sorted(VLMS))
def test_vlm_chat_template_is_recognised_by_trl(tiny_models, name):
    from transformers import AutoProcessor
    from trl.chat_template_utils import get_training_chat_template

    processor = AutoProcessor.from_pretrained(tiny_models[name])
    training = get_training_chat_template(processor)
    assert training is not None and "{% generation %}" in training  # what assistant_only_loss needs


@pytest.mark.parametrize("name", sorted(VLMS))
def test_vlm_64px_image_is_four_tokens(tiny_models, name):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models[name])
    obs = Observation("make the stove black", (), Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64), "red"))
    inputs = processor.apply_chat_template(build_messages(obs, embed_images=True), add_generation_prompt=True,
                                           tokenize=True, return_dict=True, return_tensors="pt")
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_pad).sum()) == 8
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]


def test_qwen_tokenizer_layout_and_round_trip():
    tokenizer = testing.build_qwen_tokenizer()
    ids = tokenizer.convert_tokens_to_ids(list(testing.QWEN_SPECIAL_TOKENS))
    assert ids == list(range(len(testing.QWEN_SPECIAL_TOKENS)))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    text = format_completion("make the cabinets brown", "The stove is black; the floor is still tiled.")
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    assert tokenizer.tokenize("<|im_start|>user")[0] == "<|im_start|>"


def test_builds_are_deterministic(tiny_models, tmp_path):
    for name in ("qwen2_5_vl", "flux-kontext"):
        again = testing.BUILDERS[name](tmp_path / name)
        assert _same_tree(tiny_models[name], again), name


def test_builders_leave_global_rng_alone(tmp_path):
    state = torch.random.get_rng_state()
    testing.build_tiny_qwen3_vl(tmp_path / "q")
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipelines_load_and_run(tiny_models, small_qwen_conditioning, name):
    import diffusers

    cls = getattr(diffusers, PIPELINES[name])
    pipe = cls.from_pretrained(tiny_models[name])
    pipe.set_progress_bar_config(disable=True)
    image = Image.new("RGB", (64, 48), "red")
    extra = {"max_area": 64 * 48, "_auto_resize": False} if name == "flux-kontext" else {}
    out = pipe(image=[image] if name.endswith("plus") else image, prompt="make the stove black", height=48, width=64,
               num_inference_steps=2, generator=torch.Generator().manual_seed(0), max_sequence_length=64,
               **extra).images[0]
    assert out.size == (64, 48)
    assert type(pipe.text_encoder).__name__ in ("CLIPTextModel", "Qwen2_5_VLForConditionalGeneration")


def test_small_qwen_image_conditioning_restores_the_pipelines():
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    before = (edit.calculate_dimensions, plus.CONDITION_IMAGE_SIZE, plus.VAE_IMAGE_SIZE)
    with testing.small_qwen_image_conditioning(32 * 32):
        assert edit.calculate_dimensions(1024 * 1024, 1.0)[:2] == (32, 32)
        assert plus.VAE_IMAGE_SIZE == 32 * 32
    assert (edit.calculate_dimensions, plus.CONDITION_IMAGE_SIZE, plus.VAE_IMAGE_SIZE) == before


def test_trl_chat_template_unknown_name():
    with pytest.raises(FileNotFoundError, match="no chat template"):
        testing.trl_chat_template("no-such-model")
