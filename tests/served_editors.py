"""An editor over a tiny real diffusers pipeline, registered by the serve-editor tests (the library's own diffusers
editors are tested where they are written)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from mira.editors.base import Editor


class TinyKontextEditor(Editor):
    """``FluxKontextPipeline.from_pretrained(model)`` run for 2 steps at 64x64 on the CPU."""

    name = "tiny-flux-kontext"

    def __init__(self, model: str, **_: Any):
        from diffusers import FluxKontextPipeline

        self.pipe = FluxKontextPipeline.from_pretrained(model)
        self.pipe.set_progress_bar_config(disable=True)

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        import torch

        generator = torch.Generator("cpu").manual_seed(seed or 0)
        return self.pipe(image=image, prompt=instruction, num_inference_steps=2, height=64, width=64,
                         guidance_scale=2.5, generator=generator, max_area=64 * 64,
                         _auto_resize=False).images[0]

    def params(self) -> dict[str, Any]:
        return {"num_inference_steps": 2, "size": 64}
