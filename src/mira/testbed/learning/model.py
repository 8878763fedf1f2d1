"""The policy a learning run starts from: a random-weight Qwen3-VL built with :mod:`mira.testing`, at the run's size.

- Tokenizer: the byte-level BPE of :func:`mira.testing.build_qwen_tokenizer`, trained on the testbed's own language
  as well (``vocab_size`` entries), so shape, colour and cell names are single tokens: instructions are short and
  copying a clause means copying a few tokens.
- Chat template: TRL's Qwen3-VL template (assistant-only loss works).
- Images: the processor resizes each 128x128 scene to 96x96 (``image_tokens=9``), so each of the 3x3 grid cells is
  one merged 32x32 patch: one image token per cell, made of 2 x 2 vision patches of 16x16 pixels. Two images cost 18
  tokens of a ~350-token prompt.
- Why Qwen3-VL: its vision tower adds learned absolute position embeddings to the patches (``num_position_embeddings``
  = the 6x6 patch grid) and feeds vision features into the first language layer (deepstack), so an image token says
  which cell it shows and the language model can find "the top left cell" by content. With Qwen2.5-VL (rotary
  positions only) the same tiny model trained on listing the cells of scenes stayed at the prior (67% of colour words
  right after 600 steps of 16 scenes) where Qwen3-VL reached 88%, and the first learning run with Qwen2.5-VL had not
  begun to read the images after 22K samples.
- Sizes: text ``hidden_size`` x ``layers`` (head size ``hidden_size / heads``, multimodal RoPE sections in Qwen3-VL's
  proportions 24:20:20, interleaved), a ``vision_depth``-layer vision tower of width ``vision_hidden_size``.
"""

from __future__ import annotations

from pathlib import Path

from mira.testbed.learning.config import LearningConfig


def text_size(config: LearningConfig) -> dict:
    head_dim = config.hidden_size // config.heads
    half = head_dim // 2  # mrope sections (time, height, width) sum to head_dim / 2
    height = width = half * 20 // 64
    return dict(hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
                num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.kv_heads,
                head_dim=head_dim, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10_000.0, "mrope_interleaved": True,
                                 "mrope_section": [half - height - width, height, width]})


def vision_size(config: LearningConfig) -> dict:
    side = 2 * round(config.image_tokens ** 0.5)  # patches per side: 2 x 2 patches merge into one token
    return dict(depth=config.vision_depth, hidden_size=config.vision_hidden_size,
                intermediate_size=2 * config.vision_hidden_size, num_heads=max(1, config.vision_hidden_size // 64),
                num_position_embeddings=side * side, deepstack_visual_indexes=[0])


def build_policy(config: LearningConfig, folder: Path, language: list[str]) -> int:
    """Write the random-weight policy (model, processor, tokenizer, chat template) to ``folder``; its parameter count.

    The weights are drawn with :mod:`mira.testing`'s fixed seed.
    """
    from mira.testing import build_qwen_tokenizer, qwen3_vl_processor, tiny_qwen3_vl

    tokenizer = build_qwen_tokenizer(config.vocab_size, extra_text=language)
    processor = qwen3_vl_processor(tokenizer, min_tokens=config.image_tokens, max_tokens=config.image_tokens)
    model = tiny_qwen3_vl(tokenizer, text=text_size(config), vision=vision_size(config))
    model.generation_config.max_new_tokens = config.max_new_tokens
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())
