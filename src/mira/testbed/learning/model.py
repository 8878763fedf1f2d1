"""The policy a learning run starts from: a random-weight Qwen2.5-VL built with :mod:`mira.testing`, at the run's size.

- Tokenizer: the byte-level BPE of :func:`mira.testing.build_qwen_tokenizer`, trained on the testbed's own language
  as well (``vocab_size`` entries), so shape, colour and cell names are single tokens: instructions are short and
  copying a clause means copying a few tokens.
- Chat template: TRL's Qwen2.5-VL template (assistant-only loss works).
- Images: the processor resizes each 128x128 scene to 84x84 (``image_tokens=9``), so each of the 3x3 grid cells is
  one merged 28x28 patch: one image token per cell, 2 x 2 vision patches of 14x14 pixels each. Two images cost 18
  tokens of a ~350-token prompt.
- Sizes: text ``hidden_size`` x ``layers`` (head size ``hidden_size / heads``, multimodal RoPE sections in the
  Qwen2.5-VL proportions 1:1.5:1.5), a ``vision_depth``-layer vision tower of width ``vision_hidden_size`` with full
  attention.
"""

from __future__ import annotations

from pathlib import Path

from mira.testbed.learning.config import LearningConfig


def text_size(config: LearningConfig) -> dict:
    head_dim = config.hidden_size // config.heads
    quarter = head_dim // 8  # mrope sections (time, height, width) sum to head_dim / 2
    sections = [quarter, (head_dim // 2 - quarter) // 2, head_dim // 2 - quarter - (head_dim // 2 - quarter) // 2]
    return dict(hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
                num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.kv_heads,
                max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10_000.0, "mrope_section": sections})


def vision_size(config: LearningConfig) -> dict:
    return dict(depth=config.vision_depth, hidden_size=config.vision_hidden_size,
                intermediate_size=2 * config.vision_hidden_size, num_heads=max(1, config.vision_hidden_size // 64),
                fullatt_block_indexes=list(range(config.vision_depth)))


def build_policy(config: LearningConfig, folder: Path, language: list[str]) -> int:
    """Write the random-weight policy (model, processor, tokenizer, chat template) to ``folder``; its parameter count.

    The weights are drawn with :mod:`mira.testing`'s fixed seed.
    """
    from mira.testing import build_qwen_tokenizer, qwen2_5_vl_processor, tiny_qwen2_5_vl

    tokenizer = build_qwen_tokenizer(config.vocab_size, extra_text=language)
    processor = qwen2_5_vl_processor(tokenizer, min_tokens=config.image_tokens, max_tokens=config.image_tokens)
    model = tiny_qwen2_5_vl(tokenizer, text=text_size(config), vision=vision_size(config))
    model.generation_config.max_new_tokens = config.max_new_tokens
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())
