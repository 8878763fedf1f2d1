"""DiffusersEditor on tiny FLUX.1-Kontext, Qwen-Image-Edit and Qwen-Image-Edit-Plus pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mira import MiraAgent, load_editor
from mira.editors import diffusers as diffusers_editors
from mira.editors.base import EditorError
from mira.editors.diffusers import DiffusersEditor
from mira.images import working_size
from mira.policies.transformers import TransformersPolicy

FAMILIES = ["flux-kontext", "qwen-image-edit", "qwen-image-edit-plus"]
FACTORIES = {
    "flux-kontext": DiffusersEditor.flux_kontext,
    "qwen-image-edit": DiffusersEditor.qwen_image_edit,
    "qwen-image-edit-plus": DiffusersEditor.qwen_image_edit_plus,
}

DEFAULT_DTYPE = "bfloat16" if torch.cuda.is_available() else "float32"  # what dtype="auto" picks

pytestmark = pytest.mark.usefixtures("small_qwen_conditioning")


@pytest.fixture
def photo():
    """A 100x60 image with some structure (5:3)."""
    pixels = np.zeros((60, 100, 3), dtype=np.uint8)
    pixels[:, :50] = (220, 40, 40)
    pixels[20:40, 30:70] = (40, 40, 220)
    return Image.fromarray(pixels)


def editor(tiny_models, family, **kwargs):
    return FACTORIES[family](str(tiny_models[family]), num_inference_steps=2, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_edit_returns_working_size_image_keeping_aspect(tiny_models, family, photo):
    out = editor(tiny_models, family, max_pixels=80 * 48).edit(photo, "make the square green", seed=0)
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    assert out.size == working_size(photo.size, 80 * 48) == (80, 48)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_pixels(tiny_models, family, photo):
    e = editor(tiny_models, family)
    first = np.asarray(e.edit(photo, "make the square green", seed=5))
    assert np.array_equal(first, np.asarray(e.edit(photo, "make the square green", seed=5)))
    assert not np.array_equal(first, np.asarray(e.edit(photo, "make the square green", seed=6)))
    assert first.shape == (48, 96, 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_defaults_and_params(tiny_models, family):
    e = FACTORIES[family](str(tiny_models[family]))
    params = e.params()
    assert e.name == family and params["model"] == str(tiny_models[family])
    expected = {"flux-kontext": (28, "guidance_scale", 2.5), "qwen-image-edit": (50, "true_cfg_scale", 4.0),
                "qwen-image-edit-plus": (40, "true_cfg_scale", 4.0)}[family]
    assert (params["num_inference_steps"], params[expected[1]]) == (expected[0], expected[2])
    assert (params.get("negative_prompt") == " ") == family.startswith("qwen")
    assert e.config()["offload"] == "none" and e.config()["dtype"] == DEFAULT_DTYPE


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_inferred_from_the_model_index(tiny_models, family):
    assert DiffusersEditor(str(tiny_models[family])).name == family


def test_family_is_inferred_from_hub_ids():
    assert DiffusersEditor("black-forest-labs/FLUX.1-Kontext-dev").name == "flux-kontext"
    assert DiffusersEditor("Qwen/Qwen-Image-Edit").name == "qwen-image-edit"
    assert DiffusersEditor("Qwen/Qwen-Image-Edit-2511").name == "qwen-image-edit-plus"
    assert DiffusersEditor("someone/other-editor").name == "diffusers"
    assert DiffusersEditor.qwen_image_edit_plus().model == "Qwen/Qwen-Image-Edit-2509"


def test_call_passes_what_each_pipeline_accepts(tiny_models, photo):
    kontext = editor(tiny_models, "flux-kontext", call_kwargs={"max_sequence_length": 32})
    kwargs = kontext._call_kwargs(kontext.pipeline, photo.resize((96, 48)), "x", seed=1)
    assert (kwargs["height"], kwargs["width"], kwargs["max_area"], kwargs["_auto_resize"]) == (48, 96, 96 * 48, False)
    assert kwargs["guidance_scale"] == 2.5 and "true_cfg_scale" not in kwargs and kwargs["max_sequence_length"] == 32
    plus = editor(tiny_models, "qwen-image-edit-plus")
    kwargs = plus._call_kwargs(plus.pipeline, photo, "x", seed=1)
    assert isinstance(kwargs["image"], list) and "max_area" not in kwargs and kwargs["negative_prompt"] == " "


def test_save_load_round_trip(tiny_models, tmp_path, photo):
    e = editor(tiny_models, "qwen-image-edit")
    e.pipeline.save_pretrained(tmp_path / "copy")
    copy = DiffusersEditor(str(tmp_path / "copy"), num_inference_steps=2)
    assert copy.name == "qwen-image-edit" and copy.pipeline is not e.pipeline
    assert np.array_equal(np.asarray(e.edit(photo, "x", seed=3)), np.asarray(copy.edit(photo, "x", seed=3)))


def test_editors_with_the_same_settings_share_one_pipeline(tiny_models):
    a = editor(tiny_models, "flux-kontext")
    b = DiffusersEditor(str(tiny_models["flux-kontext"]), guidance_scale=1.0)
    shared = a.pipeline
    assert b.pipeline is shared
    other = "float32" if DEFAULT_DTYPE == "bfloat16" else "bfloat16"
    c = editor(tiny_models, "flux-kontext", dtype=other)
    assert c.pipeline is not shared and str(c.pipeline.transformer.dtype) == f"torch.{other}"
    diffusers_editors.clear_pipeline_cache()
    assert a.pipeline is not shared and a.pipeline is b.pipeline


def test_pipeline_class_by_import_path(tiny_models, tmp_path, monkeypatch, photo):
    (tmp_path / "my_fork.py").write_text(
        "from diffusers import FluxKontextPipeline\n\n"
        "class CountingKontext(FluxKontextPipeline):\n"
        "    calls = []\n\n"
        "    def __call__(self, *args, **kwargs):\n"
        "        self.calls.append(kwargs)\n"
        "        return super().__call__(*args, **kwargs)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    e = DiffusersEditor(str(tiny_models["flux-kontext"]), pipeline_class="my_fork:CountingKontext",
                        num_inference_steps=2, guidance_scale=3.0)
    assert e.name == "diffusers"
    out = e.edit(photo, "make the square green", seed=0)
    assert type(e.pipeline).__name__ == "CountingKontext" and out.size == (96, 48)
    call = type(e.pipeline).calls[-1]
    assert call["prompt"] == "make the square green" and (call["height"], call["width"]) == (48, 96)
    assert call["guidance_scale"] == 3.0 and call["num_inference_steps"] == 2


def test_pipeline_class_by_diffusers_name(tiny_models):
    assert DiffusersEditor(str(tiny_models["flux-kontext"]), pipeline_class="FluxKontextPipeline").name == "flux-kontext"


def test_registry_names(tiny_models):
    e = load_editor("qwen-image-edit-plus", model=str(tiny_models["qwen-image-edit-plus"]))
    assert isinstance(e, DiffusersEditor) and e.name == "qwen-image-edit-plus"
    assert load_editor("diffusers", model=str(tiny_models["flux-kontext"])).name == "flux-kontext"


def test_vae_tiling_is_enabled(tiny_models):
    assert editor(tiny_models, "qwen-image-edit", vae_tiling=True).pipeline.vae.use_tiling


def test_missing_folder_is_a_clear_editor_error(tmp_path, photo):
    with pytest.raises(EditorError, match=r"editor model folder '.*nope' does not exist"):
        DiffusersEditor.flux_kontext(str(tmp_path / "nope")).edit(photo, "x")


def test_folder_without_model_index_is_an_editor_error(tmp_path, photo):
    with pytest.raises(EditorError, match="no model_index.json"):
        DiffusersEditor.flux_kontext(str(tmp_path)).edit(photo, "x")


def test_unreachable_hub_id_is_an_editor_error(photo):
    with pytest.raises(EditorError, match="could not load FluxKontextPipeline from 'no-org/no-kontext'"):
        DiffusersEditor.flux_kontext("no-org/no-kontext").edit(photo, "x")


def test_unknown_pipeline_class_is_an_editor_error(tiny_models, photo):
    with pytest.raises(EditorError, match="cannot import pipeline class 'NoSuchPipeline'"):
        DiffusersEditor(str(tiny_models["flux-kontext"]), pipeline_class="NoSuchPipeline").edit(photo, "x")
    with pytest.raises(EditorError, match="cannot import pipeline class 'nowhere.at_all:Pipe'"):
        DiffusersEditor(str(tiny_models["flux-kontext"]), pipeline_class="nowhere.at_all:Pipe").load()


def test_offload_needs_a_gpu(tiny_models, photo):
    with pytest.raises(EditorError, match="offload='group'.*CPU"):
        editor(tiny_models, "flux-kontext", offload="group", device="cpu").edit(photo, "x")


def test_bad_arguments():
    with pytest.raises(ValueError, match="offload must be one of"):
        DiffusersEditor.flux_kontext(offload="disk")
    with pytest.raises(ValueError, match="unknown diffusers family"):
        DiffusersEditor("a/b", family="dall-e")
    with pytest.raises(ValueError, match="needs a model"):
        DiffusersEditor(family="diffusers")
    with pytest.raises(ValueError, match="give a model"):
        DiffusersEditor()


def test_non_image_input_is_an_editor_error(tiny_models):
    with pytest.raises(EditorError, match="PIL image"):
        editor(tiny_models, "flux-kontext").edit(np.zeros((8, 8, 3)), "x")


def test_agent_runs_a_tiny_policy_with_a_tiny_editor(tiny_models, photo):
    policy = TransformersPolicy(str(tiny_models["qwen2_5_vl"]), max_new_tokens=8)
    agent = MiraAgent(policy=policy, editor=editor(tiny_models, "qwen-image-edit-plus"), max_steps=2)
    trajectory = agent.run(photo, "make the square green and the background white")
    assert trajectory.stop_reason in {"stop", "max_steps", "repeat", "policy_error"}
    assert trajectory.config["editor"]["name"] == "qwen-image-edit-plus"
    assert all(step.image.size == (96, 48) for step in trajectory.steps if step.image is not None)
