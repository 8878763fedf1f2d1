"""Diffusers image-edit pipelines as MIRA editors: FLUX.1-Kontext, Qwen-Image-Edit, Qwen-Image-Edit-Plus, and any
other pipeline class that takes ``image=`` and ``prompt=`` (a fork such as Step1X-Edit included).

>>> editor = DiffusersEditor.flux_kontext()                         # black-forest-labs/FLUX.1-Kontext-dev
>>> editor = DiffusersEditor.qwen_image_edit(offload="group")       # on a 24 GB card
>>> editor = DiffusersEditor("path/to/fork", pipeline_class="step1x_edit.pipeline:Step1XEditPipeline")
>>> new = editor.edit(image, "make the stove black", seed=0)

Families and their defaults (every default can be overridden by the constructor's arguments):

==================== ============================ ===================== ===== =======================================
family               pipeline class               hub model             steps guidance
==================== ============================ ===================== ===== =======================================
flux-kontext         FluxKontextPipeline          FLUX.1-Kontext-dev    28    ``guidance_scale=2.5`` (distilled)
qwen-image-edit      QwenImageEditPipeline        Qwen/Qwen-Image-Edit  50    ``true_cfg_scale=4.0``, negative " "
qwen-image-edit-plus QwenImageEditPlusPipeline    Qwen-Image-Edit-2509  40    ``true_cfg_scale=4.0``, negative " "
diffusers            from the model's index       (required)            —     only what is passed
==================== ============================ ===================== ===== =======================================

Kontext's real classifier-free guidance is off unless ``true_cfg_scale > 1`` and a ``negative_prompt`` are given.
Qwen-Image-Edit-Plus receives the image as a one-element list (the pipeline's multi-image form).
``family="auto"`` reads the family from ``pipeline_class``, from a local folder's ``model_index.json`` or from the hub
id; anything unknown is the generic ``diffusers`` family.

GPU memory (bfloat16 weights, about; the run itself adds a few GB at 1 megapixel):

- FLUX.1-Kontext-dev: transformer 24 GB + T5-XXL 9.5 GB + CLIP/VAE 0.5 GB = ~34 GB with ``offload="none"``
  (40/48/80 GB cards). 24 GB cards: ``offload="group"`` (a few GB on the GPU, ~40 GB of CPU RAM) or
  ``offload="sequential"`` (slowest, least memory); ``offload="model"`` keeps the 24 GB transformer whole and does
  not fit.
- Qwen-Image-Edit / -Plus: 20B transformer 41 GB + Qwen2.5-VL-7B text encoder 16.6 GB + VAE 0.25 GB = ~58 GB with
  ``offload="none"`` (80 GB cards). 48 GB cards: ``offload="model"``. 24 GB cards: ``offload="group"`` (~64 GB
  of CPU RAM) or ``offload="sequential"``.
- ``vae_tiling=True`` bounds the VAE's activation memory at high resolutions on any card; ``max_pixels`` lowers the
  working resolution (and memory) further.

Offload modes: ``"none"`` (whole pipeline on ``device``), ``"model"`` (one component at a time on the GPU),
``"sequential"`` (one layer at a time), ``"group"`` (diffusers group offloading at leaf level with CUDA streams: close
to ``"model"`` in speed, close to ``"sequential"`` in memory). All but ``"none"`` need an accelerator.

Sizes: the input is resized (aspect kept) to the working size of :func:`mira.images.working_size` — at most
``max_pixels`` (default 1024²), sides multiples of 16 — and the output is requested at that same size
(``height``/``width`` always passed; Kontext also gets ``max_area`` and no automatic resizing of its condition
image). The edited image is returned at the working size, so the sizes of a trajectory stay stable from step to
step; resize the final image yourself if you need the input's exact size.

Qwen-Image-Edit(-Plus) in diffusers 0.42 always condition on a copy of the image resized to about one megapixel (a
fixed area inside the pipeline modules, not a call argument), so no option here changes it; tests and CPU smoke runs
shrink it with :func:`mira.testing.small_qwen_image_conditioning`.

Seeds: each call draws its noise from a CPU ``torch.Generator`` seeded with ``seed`` (a fresh random seed when None),
so a seed gives the same noise on any device. Pipelines are loaded on first use and cached per process: editors with
the same (pipeline class, model, dtype, device, offload, VAE tiling) share one pipeline, and calls on a shared
pipeline run one at a time. :func:`clear_pipeline_cache` frees them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mira.editors.base import Editor, EditorError
from mira.images import to_rgb, working_size
from mira.torch_utils import LOAD_LOCK, first_line, looks_local, resolve_device, resolve_dtype

OFFLOAD_MODES = ("none", "model", "sequential", "group")
DEFAULT_MAX_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class Family:
    """Defaults of one kind of edit pipeline."""

    name: str
    pipeline_class: str
    model: str | None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    negative_prompt: str | None = None
    image_as_list: bool = False


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("flux-kontext", "FluxKontextPipeline", "black-forest-labs/FLUX.1-Kontext-dev", 28, guidance_scale=2.5),
        Family("qwen-image-edit", "QwenImageEditPipeline", "Qwen/Qwen-Image-Edit", 50, true_cfg_scale=4.0,
               negative_prompt=" "),
        Family("qwen-image-edit-plus", "QwenImageEditPlusPipeline", "Qwen/Qwen-Image-Edit-2509", 40,
               true_cfg_scale=4.0, negative_prompt=" ", image_as_list=True),
        Family("diffusers", "DiffusionPipeline", None),
    )
}
# lower-cased hub-id fragments -> family, most specific first
_HUB_HINTS = (("kontext", "flux-kontext"), ("qwen-image-edit-25", "qwen-image-edit-plus"),
              ("qwen-image-edit", "qwen-image-edit"))


@dataclass
class _Loaded:
    pipeline: Any
    lock: threading.Lock


_CACHE: dict[tuple[str, ...], _Loaded] = {}
_CACHE_LOCK = threading.Lock()


def clear_pipeline_cache() -> None:
    """Drop every cached pipeline (editors load theirs again on their next call)."""
    with _CACHE_LOCK:
        _CACHE.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class DiffusersEditor(Editor):
    """A diffusers edit pipeline as a MIRA editor (see the module docstring for families, memory and sizes)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        family: str = "auto",
        pipeline_class: str | None = None,
        dtype: str | torch.dtype = "auto",
        device: str | None = None,
        offload: str = "none",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        true_cfg_scale: float | None = None,
        negative_prompt: str | None = None,
        max_pixels: int | None = None,
        vae_tiling: bool = False,
        call_kwargs: dict[str, Any] | None = None,
    ):
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, not '{offload}'")
        self.family = FAMILIES[_infer_family(family, model, pipeline_class)]
        self.model = model or self.family.model
        if self.model is None:
            raise ValueError("the generic diffusers editor needs a model: a hub id or a local pipeline folder")
        self.pipeline_class = pipeline_class or self.family.pipeline_class
        self.name = self.family.name
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.offload = offload
        self.num_inference_steps = num_inference_steps or self.family.num_inference_steps
        self.guidance_scale = guidance_scale if guidance_scale is not None else self.family.guidance_scale
        self.true_cfg_scale = true_cfg_scale if true_cfg_scale is not None else self.family.true_cfg_scale
        self.negative_prompt = negative_prompt if negative_prompt is not None else self.family.negative_prompt
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        self.vae_tiling = vae_tiling
        self.call_kwargs = dict(call_kwargs or {})

    # -- family shortcuts (the registry's "flux-kontext", "qwen-image-edit", "qwen-image-edit-plus") --------------
    @classmethod
    def flux_kontext(cls, model: str | None = None, **kwargs: Any) -> DiffusersEditor:
        """FLUX.1-Kontext-dev (or a Kontext checkpoint at ``model``)."""
        return cls(model, family="flux-kontext", **kwargs)

    @classmethod
    def qwen_image_edit(cls, model: str | None = None, **kwargs: Any) -> DiffusersEditor:
        """Qwen-Image-Edit (or a checkpoint of that pipeline at ``model``)."""
        return cls(model, family="qwen-image-edit", **kwargs)

    @classmethod
    def qwen_image_edit_plus(cls, model: str | None = None, **kwargs: Any) -> DiffusersEditor:
        """Qwen-Image-Edit-2509 (or another QwenImageEditPlusPipeline checkpoint at ``model``, e.g. 2511)."""
        return cls(model, family="qwen-image-edit-plus", **kwargs)

    # -- loading --------------------------------------------------------------------------------------------------
    @property
    def pipeline(self) -> Any:
        """The diffusers pipeline, loaded (or taken from the process cache) on first use."""
        return self._loaded().pipeline

    def load(self) -> DiffusersEditor:
        """Load the pipeline now (otherwise the first :meth:`edit` does)."""
        self._loaded()
        return self

    def _loaded(self) -> _Loaded:
        cls = _pipeline_class(self.pipeline_class)
        key = (f"{cls.__module__}:{cls.__qualname__}", self.model, str(self.dtype), self.device, self.offload,
               str(self.vae_tiling))
        with _CACHE_LOCK:
            if key not in _CACHE:
                _CACHE[key] = _Loaded(self._load(cls), threading.Lock())
            return _CACHE[key]

    def _load(self, cls: Any) -> Any:
        path = os.path.expanduser(self.model)
        if looks_local(self.model):
            if not os.path.isdir(path):
                raise EditorError(f"editor model folder '{self.model}' does not exist; check the path")
            if not os.path.isfile(os.path.join(path, "model_index.json")):
                raise EditorError(f"'{self.model}' is not a diffusers pipeline folder (it has no model_index.json)")
        if self.offload != "none" and self.device == "cpu":
            raise EditorError(f"offload='{self.offload}' moves weights between the CPU and a GPU, but the device is "
                              "the CPU; use offload='none' or a CUDA device")
        try:
            with LOAD_LOCK:
                pipeline = cls.from_pretrained(path, dtype=self.dtype)
        except Exception as exc:
            where = "" if looks_local(self.model) else " (no local folder of that name; as a hub id)"
            raise EditorError(f"could not load {cls.__name__} from '{self.model}'{where}: {first_line(exc)}") from exc
        self._place(pipeline)
        if self.vae_tiling:
            if not hasattr(getattr(pipeline, "vae", None), "enable_tiling"):
                raise EditorError(f"{cls.__name__} has no VAE with tiling; use vae_tiling=False")
            pipeline.vae.enable_tiling()
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _place(self, pipeline: Any) -> None:
        if self.offload == "none":
            pipeline.to(self.device)
        elif self.offload == "model":
            pipeline.enable_model_cpu_offload(device=self.device)
        elif self.offload == "sequential":
            pipeline.enable_sequential_cpu_offload(device=self.device)
        else:
            pipeline.enable_group_offload(onload_device=torch.device(self.device), offload_type="leaf_level",
                                          use_stream=self.device.startswith("cuda"))

    # -- editing --------------------------------------------------------------------------------------------------
    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        """Execute one instruction; returns the edited image at the working size (see the module docstring)."""
        if not isinstance(image, Image.Image):
            raise EditorError(f"the editor needs a PIL image, got {type(image).__name__}")
        loaded = self._loaded()
        size = working_size(image.size, self.max_pixels)
        source = to_rgb(image)
        if source.size != size:
            source = source.resize(size, Image.Resampling.LANCZOS)
        kwargs = self._call_kwargs(loaded.pipeline, source, instruction, seed)
        try:
            with loaded.lock:
                output = loaded.pipeline(**kwargs)
        except torch.cuda.OutOfMemoryError as exc:
            raise EditorError(f"{self.name} ran out of GPU memory at {size[0]}x{size[1]}; try offload='group', "
                              "vae_tiling=True or a smaller max_pixels") from exc
        except Exception as exc:
            raise EditorError(f"{type(loaded.pipeline).__name__} failed: {first_line(exc)}") from exc
        return _first_image(output, size)

    def _call_kwargs(self, pipeline: Any, image: Image.Image, instruction: str, seed: int | None) -> dict[str, Any]:
        """The pipeline call: MIRA's defaults the pipeline accepts, then ``call_kwargs`` on top."""
        width, height = image.size
        generator = torch.Generator("cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        defaults = {
            "image": [image] if self.family.image_as_list else image,
            "prompt": instruction,
            "height": height,
            "width": width,
            "max_area": width * height,
            "_auto_resize": False,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "true_cfg_scale": self.true_cfg_scale,
            "negative_prompt": self.negative_prompt,
            "generator": generator,
        }
        accepted = _call_parameters(pipeline)
        kwargs = {k: v for k, v in defaults.items() if v is not None and (accepted is None or k in accepted)}
        return {**kwargs, **self.call_kwargs}

    def params(self) -> dict[str, Any]:
        values = {
            "model": self.model,
            "pipeline_class": self.pipeline_class,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "true_cfg_scale": self.true_cfg_scale,
            "negative_prompt": self.negative_prompt,
            "max_pixels": self.max_pixels,
        }
        return {**{k: v for k, v in values.items() if v is not None}, **self.call_kwargs}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.params(), "dtype": str(self.dtype).removeprefix("torch."),
                "device": self.device, "offload": self.offload, "vae_tiling": self.vae_tiling}


def _infer_family(family: str, model: str | None, pipeline_class: str | None) -> str:
    """The family name for ``family="auto"`` (see the module docstring); validates explicit names."""
    if family != "auto":
        if family not in FAMILIES:
            raise ValueError(f"unknown diffusers family '{family}'; choose auto, {', '.join(FAMILIES)}")
        return family
    if pipeline_class:
        return _family_of_class(pipeline_class.replace(":", ".").rsplit(".", 1)[-1])
    if model is None:
        raise ValueError("give a model (hub id or local pipeline folder), a family or a pipeline_class")
    index = Path(os.path.expanduser(model)) / "model_index.json"
    if index.is_file():
        return _family_of_class(json.loads(index.read_text(encoding="utf-8")).get("_class_name", ""))
    lowered = model.lower()
    return next((name for hint, name in _HUB_HINTS if hint in lowered), "diffusers")


def _family_of_class(class_name: str) -> str:
    return next((f.name for f in FAMILIES.values() if f.pipeline_class == class_name), "diffusers")


def _pipeline_class(spec: str) -> Any:
    """A pipeline class from a diffusers class name (``FluxKontextPipeline``) or ``package.module:Class``."""
    module_name, _, attr = spec.rpartition(":") if ":" in spec else ("diffusers", "", spec)
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EditorError(f"cannot import pipeline class '{spec}': {first_line(exc)}") from exc
    if not hasattr(cls, "from_pretrained"):
        raise EditorError(f"'{spec}' is not a pipeline class (it has no from_pretrained)")
    return cls


def _call_parameters(pipeline: Any) -> set[str] | None:
    """Names the pipeline's ``__call__`` accepts, or None when it takes ``**kwargs``."""
    parameters = inspect.signature(pipeline.__call__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def _first_image(output: Any, size: tuple[int, int]) -> Image.Image:
    """The first image of a pipeline output, at ``size``."""
    images = getattr(output, "images", None)
    if images is None and isinstance(output, (tuple, list)) and output:
        images = output[0]
    image = images[0] if isinstance(images, (list, tuple)) and images else None
    if not isinstance(image, Image.Image):
        raise EditorError(f"the pipeline returned {type(image).__name__}, not a PIL image; leave output_type as 'pil'")
    image = to_rgb(image)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
