"""Tiny random-weight instances of the real model classes, built offline, for tests and smoke runs.

Every builder writes a folder with ``save_pretrained`` that the ordinary loaders read back:

- :func:`build_tiny_qwen2_5_vl`, :func:`build_tiny_qwen3_vl`: ``AutoProcessor.from_pretrained(path)`` and
  ``AutoModelForImageTextToText.from_pretrained(path)``; a 64x64 image becomes 4 image tokens;
- :func:`build_tiny_flux_kontext`, :func:`build_tiny_qwen_image_edit`, :func:`build_tiny_qwen_image_edit_plus`:
  ``FluxKontextPipeline`` / ``QwenImageEditPipeline`` / ``QwenImageEditPlusPipeline.from_pretrained(path)``.

Nothing is downloaded. Tokenizers are trained here on a short built-in English text (byte-level BPE for the Qwen and
CLIP tokenizers, Unigram for T5), and the Qwen-VL chat templates are read from the installed TRL package, so TRL
recognises them (assistant-only loss, tool parsing). Weights are random but seeded: a builder writes the same
files every time. The models cannot judge images; they exercise the real code paths.

Qwen-Image-Edit(-Plus) pipelines resize the condition image to about one megapixel whatever the input size, which
makes even a tiny pipeline slow on a CPU; wrap test calls in :func:`small_qwen_image_conditioning`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mira.protocol import STOP, SYSTEM_PROMPT, format_completion, user_text

SEED = 0

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")

CORPUS = """\
Make the stove black and the floor wooden. Turn the kitchen cabinets brown and keep the white fridge as it is.
Remove the cup on the left table. Add a small red vase with yellow flowers on the shelf next to the window.
Replace the blue sky with a warm orange sunset and add soft clouds above the mountains in the background.
Change the color of the car to dark green. Put a pair of sunglasses on the man in the middle of the photo.
Erase the text on the sign and write OPEN in large white letters. Make the dog sit on the grass instead of the road.
Recolor the fridge back to white. The previous edit also changed the wall, so restore the wall to light grey.
Brighten the room, add a lamp on the desk, and turn the wooden chair into a metal chair with a black seat.
Make it winter: cover the trees and the roof with snow, and give the people warm coats, scarves and hats.
Swap the apple in her hand for an orange. Remove the reflection from the glass door and sharpen the picture.
Move the cat to the right side of the sofa. Make the curtains long and green and hang a painting above the bed.
The current image shows a black stove, but the floor is still tiled and the cabinets are still white.
The instruction is now fully satisfied: the stove is black, the floor is wooden and the cabinets are brown.
Nothing is missing any more, so stop. The editor skipped the second part, so repeat it with a clearer request.
Original image, current image, instruction, edits applied so far, next atomic edit, one object, one region.
A photo of a street at night with wet asphalt, neon lights, a bicycle, a bus stop and a person with an umbrella.
A bowl of fruit on a marble counter: bananas, grapes, a pear and two lemons, lit by morning light from the left.
Portrait of a woman with curly hair, smiling, wearing a striped shirt, in front of a brick wall with green ivy.
Landscape with a lake, a small boat, pine trees, a wooden cabin and smoke rising from its chimney into the sky.
"""


def _training_text() -> list[str]:
    """Lines the tokenizers are trained on: the built-in text plus the protocol's own prompt and answer shapes."""
    history = ("make the stove black", "make the floor wooden")
    lines = CORPUS.splitlines() + SYSTEM_PROMPT.splitlines() + list(user_text("make the room blue", history))
    lines.append(format_completion("make the cabinets brown", "The stove and floor are done; cabinets remain."))
    lines.append(format_completion(STOP, "Everything asked for is visible."))
    return lines


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    """Random weights drawn inside the block are the same at every build; the caller's RNG state is restored."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        yield


# -- tokenizers ---------------------------------------------------------------------------------------------------
def _trained_model_state(backend: Any, trainer: Any, extra_text: Sequence[str] = ()) -> dict[str, Any]:
    """Train a ``tokenizers.Tokenizer`` in place on the built-in text (plus ``extra_text``) and return its serialized
    model section."""
    backend.train_from_iterator(_training_text() + list(extra_text), trainer=trainer)
    return json.loads(backend.to_str())["model"]


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def build_qwen_tokenizer(vocab_size: int = 1024, extra_text: Sequence[str] = ()) -> Any:
    """A ``Qwen2Tokenizer`` with a byte-level BPE trained here and the Qwen special tokens at the lowest ids.

    ``extra_text``: more lines to train the BPE on, e.g. a domain's sentences, so that its words become single tokens.
    """
    from tokenizers import AddedToken, trainers
    from transformers import Qwen2Tokenizer

    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS + QWEN_ADDED_TOKENS),
        initial_alphabet=_byte_alphabet(),
        show_progress=False,
    )
    state = _trained_model_state(Qwen2Tokenizer().backend_tokenizer, trainer, extra_text)
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=[tuple(m) for m in state["merges"]],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED_TOKENS])
    return tokenizer


def build_clip_tokenizer(vocab_size: int = 768) -> Any:
    """A ``CLIPTokenizer`` (lower-cased BPE with ``</w>`` word ends) trained here; ``<|startoftext|>`` is id 0.

    Every ``<char></w>`` symbol is reserved up front: the trainer would otherwise number them in hash order and
    break ties between merges differently on every run.
    """
    from tokenizers import trainers
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|startoftext|>", "<|endoftext|>"] + [c + "</w>" for c in alphabet],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    state = _trained_model_state(CLIPTokenizer().backend_tokenizer, trainer)
    return CLIPTokenizer(vocab=state["vocab"], merges=[tuple(m) for m in state["merges"]], model_max_length=77)


def build_t5_tokenizer(vocab_size: int = 400) -> Any:
    """A ``T5Tokenizer`` with a Unigram model trained here (``<pad>``, ``</s>``, ``<unk>`` = ids 0, 1, 2).

    Scores are rounded to two decimals and pieces ordered by score, then text: the trainer scores the characters it
    must keep in a different order on every run, and this gives them the same scores and ids every time.
    """
    from tokenizers import trainers
    from transformers import T5Tokenizer

    specials = ["<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)
    state = _trained_model_state(T5Tokenizer(extra_ids=0).backend_tokenizer, trainer)
    pieces = sorted(((p, round(s, 2)) for p, s in state["vocab"] if p not in specials), key=lambda v: (-v[1], v[0]))
    vocab = [(p, 0.0) for p in specials] + pieces
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


# -- chat templates -----------------------------------------------------------------------------------------------
def trl_chat_template(name: str) -> str:
    """The text of ``trl/chat_templates/<name>.jinja`` from the installed TRL (read, not imported: TRL is slow)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("TRL is not installed; `pip install trl` (the chat templates are read from it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "chat_templates" / f"{name}.jinja"
    if not path.exists():
        raise FileNotFoundError(f"the installed TRL has no chat template '{name}' ({path})")
    return path.read_text(encoding="utf-8")


# -- Qwen-VL policies ---------------------------------------------------------------------------------------------
TEXT_SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096)


def _token_ids(tokenizer: Any) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _special_ids(tokenizer: Any) -> dict[str, int]:
    return dict(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )


def _vocab_size(tokenizer: Any) -> int:
    return (len(tokenizer) + 63) // 64 * 64


def _generation_config(tokenizer: Any) -> Any:
    from transformers import GenerationConfig

    ids = _special_ids(tokenizer)
    eos = [ids["eos_token_id"], ids["bos_token_id"]]
    return GenerationConfig(bos_token_id=ids["bos_token_id"], eos_token_id=eos, pad_token_id=ids["pad_token_id"],
                            max_new_tokens=32)


def tiny_qwen2_5_vl(tokenizer: Any, *, text: dict[str, Any] | None = None,
                    vision: dict[str, Any] | None = None) -> Any:
    """A random ``Qwen2_5_VLForConditionalGeneration`` for ``tokenizer``: about 0.4 M parameters, or the sizes in
    ``text`` / ``vision`` (entries of the text and vision configs that replace the tiny defaults; the vision tower's
    output size follows the text hidden size)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text_size = {**TEXT_SIZE, "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0,
                                                  "mrope_section": [2, 3, 3]}, **(text or {})}
    vision_size = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                       spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(
        text_config=dict(**text_size, vocab_size=_vocab_size(tokenizer), **_special_ids(tokenizer)),
        vision_config={**vision_size, **(vision or {}), "out_hidden_size": text_size["hidden_size"]},
        **_token_ids(tokenizer),
        tie_word_embeddings=False,
    )
    with _seeded():
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = _generation_config(tokenizer)
    return model


def tiny_qwen3_vl(tokenizer: Any, *, text: dict[str, Any] | None = None,
                  vision: dict[str, Any] | None = None) -> Any:
    """A random ``Qwen3VLForConditionalGeneration`` for ``tokenizer``: about 0.4 M parameters, or the sizes in
    ``text`` / ``vision`` (entries of the text and vision configs that replace the tiny defaults; the vision tower's
    output size follows the text hidden size)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text_size = {**TEXT_SIZE, "head_dim": 16, "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0,
                                                                  "mrope_section": [4, 2, 2], "mrope_interleaved": True},
                 **(text or {})}
    vision_size = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                       temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0])
    config = Qwen3VLConfig(
        text_config=dict(**text_size, vocab_size=_vocab_size(tokenizer), **_special_ids(tokenizer)),
        vision_config={**vision_size, **(vision or {}), "out_hidden_size": text_size["hidden_size"]},
        **_token_ids(tokenizer),
        tie_word_embeddings=False,
    )
    with _seeded():
        model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config = _generation_config(tokenizer)
    return model


def _image_processor(patch_size: int, min_tokens: int = 4, max_tokens: int = 16) -> Any:
    """A ``Qwen2VLImageProcessor`` that maps a 64x64 image to about ``min_tokens`` image tokens."""
    from transformers import Qwen2VLImageProcessor

    unit = (patch_size * 2) ** 2  # one merged 2x2 patch = one image token
    return Qwen2VLImageProcessor(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                 size={"shortest_edge": min_tokens * unit, "longest_edge": max_tokens * unit})


def qwen2_5_vl_processor(tokenizer: Any, *, min_tokens: int = 4, max_tokens: int = 16) -> Any:
    """A ``Qwen2_5_VLProcessor`` with small image sizes and TRL's Qwen2.5-VL chat template.

    An image is resized to between ``min_tokens`` and ``max_tokens`` image tokens (one token = 28x28 pixels).
    """
    from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    template = trl_chat_template("qwen2_5_vl")
    tokenizer.chat_template = template
    return Qwen2_5_VLProcessor(image_processor=_image_processor(14, min_tokens, max_tokens), tokenizer=tokenizer,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=template)


def qwen3_vl_processor(tokenizer: Any, *, min_tokens: int = 4, max_tokens: int = 16) -> Any:
    """A ``Qwen3VLProcessor`` with small image sizes and TRL's Qwen3-VL chat template.

    An image is resized to between ``min_tokens`` and ``max_tokens`` image tokens (one token = 32x32 pixels).
    """
    from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

    template = trl_chat_template("qwen3_vl")
    tokenizer.chat_template = template
    return Qwen3VLProcessor(image_processor=_image_processor(16, min_tokens, max_tokens), tokenizer=tokenizer,
                            video_processor=Qwen3VLVideoProcessor(), chat_template=template)


def _save_policy(path: str | Path, model: Any, processor: Any) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_qwen2_5_vl(path: str | Path) -> Path:
    """Write a tiny Qwen2.5-VL checkpoint (model, processor, tokenizer, TRL chat template) to ``path``."""
    tokenizer = build_qwen_tokenizer()
    return _save_policy(path, tiny_qwen2_5_vl(tokenizer), qwen2_5_vl_processor(tokenizer))


def build_tiny_qwen3_vl(path: str | Path) -> Path:
    """Write a tiny Qwen3-VL checkpoint (model, processor, tokenizer, TRL chat template) to ``path``."""
    tokenizer = build_qwen_tokenizer()
    return _save_policy(path, tiny_qwen3_vl(tokenizer), qwen3_vl_processor(tokenizer))


# -- diffusers editors --------------------------------------------------------------------------------------------
def _save_pipeline(path: str | Path, pipeline: Any) -> Path:
    path = Path(path)
    pipeline.save_pretrained(path)
    return path


def tiny_flux_kontext_pipeline() -> Any:
    """A ``FluxKontextPipeline`` with a one-block guidance-distilled transformer, CLIP + T5 encoders and a small VAE."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tokenizer, t5_tokenizer = build_clip_tokenizer(), build_t5_tokenizer()
    with _seeded():
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
            guidance_embeds=True,
        )
    with _seeded():
        clip = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(clip_tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, projection_dim=32, hidden_act="gelu", max_position_embeddings=77,
            bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        ))
    with _seeded():
        t5 = T5EncoderModel(T5Config(
            vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        ))
    with _seeded():
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(4, 8, 8, 8), layers_per_block=1, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=1, sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
            shift_factor=0.0609, scaling_factor=1.5035,
        )
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip, tokenizer=clip_tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer,
    )


def _tiny_qwen_image_components() -> dict[str, Any]:
    """Components shared by the Qwen-Image-Edit pipelines; the text encoder is the tiny Qwen2.5-VL."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2VLProcessor, Qwen2VLVideoProcessor

    tokenizer = build_qwen_tokenizer()
    text_encoder = tiny_qwen2_5_vl(tokenizer)
    processor = Qwen2VLProcessor(image_processor=_image_processor(14), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor())
    with _seeded():
        transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
            joint_attention_dim=text_encoder.config.text_config.hidden_size, guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        )
    with _seeded():
        vae = AutoencoderKLQwenImage(
            base_dim=24, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True],
            latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
        )
    return dict(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                tokenizer=tokenizer, processor=processor, transformer=transformer)


def tiny_qwen_image_edit_pipeline() -> Any:
    """A ``QwenImageEditPipeline`` from tiny components."""
    from diffusers import QwenImageEditPipeline

    return QwenImageEditPipeline(**_tiny_qwen_image_components())


def tiny_qwen_image_edit_plus_pipeline() -> Any:
    """A ``QwenImageEditPlusPipeline`` from tiny components."""
    from diffusers import QwenImageEditPlusPipeline

    return QwenImageEditPlusPipeline(**_tiny_qwen_image_components())


def build_tiny_flux_kontext(path: str | Path) -> Path:
    """Write a tiny FLUX.1-Kontext pipeline to ``path``."""
    return _save_pipeline(path, tiny_flux_kontext_pipeline())


def build_tiny_qwen_image_edit(path: str | Path) -> Path:
    """Write a tiny Qwen-Image-Edit pipeline to ``path``."""
    return _save_pipeline(path, tiny_qwen_image_edit_pipeline())


def build_tiny_qwen_image_edit_plus(path: str | Path) -> Path:
    """Write a tiny Qwen-Image-Edit-Plus (2509-style, multi-image) pipeline to ``path``."""
    return _save_pipeline(path, tiny_qwen_image_edit_plus_pipeline())


BUILDERS: dict[str, Callable[[str | Path], Path]] = {
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
    "qwen3_vl": build_tiny_qwen3_vl,
    "flux-kontext": build_tiny_flux_kontext,
    "qwen-image-edit": build_tiny_qwen_image_edit,
    "qwen-image-edit-plus": build_tiny_qwen_image_edit_plus,
}


def build_tiny_models(directory: str | Path, which: list[str] | tuple[str, ...] | None = None) -> dict[str, Path]:
    """Build the tiny models named in ``which`` (default: all of :data:`BUILDERS`) under ``directory``.

    Each goes to ``directory/<name>``; folders that already exist are kept as they are. Returns name -> path.
    """
    directory = Path(directory)
    names = list(BUILDERS) if which is None else list(which)
    unknown = sorted(set(names) - set(BUILDERS))
    if unknown:
        raise ValueError(f"unknown tiny model(s) {unknown}; choose from {sorted(BUILDERS)}")
    paths = {}
    for name in names:
        path = directory / name
        if not path.exists():
            BUILDERS[name](path)
        paths[name] = path
    return paths


# -- test helpers -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def small_qwen_image_conditioning(pixels: int = 64 * 64) -> Iterator[None]:
    """Make Qwen-Image-Edit(-Plus) condition on images of about ``pixels`` instead of about one megapixel.

    diffusers 0.42 fixes those areas inside the pipeline modules (``calculate_dimensions(1024 * 1024, ...)`` in
    ``pipeline_qwenimage_edit``, ``CONDITION_IMAGE_SIZE`` / ``VAE_IMAGE_SIZE`` in ``pipeline_qwenimage_edit_plus``),
    so this patches those module globals for the duration of the block. The patch is process-wide and not
    thread-safe: use it in tests and smoke runs only.
    """
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    original = edit.calculate_dimensions

    def capped(target_area: float, ratio: float) -> Any:
        return original(min(target_area, pixels), ratio)

    saved = (edit.calculate_dimensions, plus.CONDITION_IMAGE_SIZE, plus.VAE_IMAGE_SIZE)
    edit.calculate_dimensions = capped
    plus.CONDITION_IMAGE_SIZE = min(plus.CONDITION_IMAGE_SIZE, pixels)
    plus.VAE_IMAGE_SIZE = min(plus.VAE_IMAGE_SIZE, pixels)
    try:
        yield
    finally:
        edit.calculate_dimensions, plus.CONDITION_IMAGE_SIZE, plus.VAE_IMAGE_SIZE = saved
