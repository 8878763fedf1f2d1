"""Qwen2.5-VL / Qwen3-VL policies run in-process with transformers.

>>> policy = TransformersPolicy("Qwen/Qwen2.5-VL-7B-Instruct")
>>> policy.generate(observation, n=4, seed=0)   # four sampled completions in one batch

The checkpoint (hub id or local folder) is loaded on first use with ``AutoProcessor`` and
``AutoModelForImageTextToText``, so any image-text-to-text model whose processor has a chat template works; MIRA is
built for Qwen2.5-VL and Qwen3-VL. Messages are built only by :func:`mira.protocol.build_messages` and
rendered with the checkpoint's own chat template.

Sampling: ``n`` completions come from one ``generate`` call (``num_return_sequences=n``). With ``seed`` the call is
reproducible and leaves torch's global random state as it was. ``do_sample=False`` or ``temperature <= 0`` means
greedy decoding (the ``n`` completions are then identical). ``max_new_tokens=None`` takes the checkpoint's
``generation_config.max_new_tokens``, or 256 when it sets none. ``top_k=0`` turns top-k off, overriding checkpoints
whose ``generation_config.json`` sets it; other generation settings (repetition penalty, stop tokens) come from that
file.

Devices: ``device=None`` picks CUDA when available, else the CPU. ``dtype="auto"`` is bfloat16 on CUDA and float32
elsewhere. ``device_map`` (e.g. ``"auto"``) spreads a large model over several GPUs through accelerate and
replaces ``device``. ``min_pixels`` / ``max_pixels`` bound the area of each image the processor feeds the vision
tower; by default the checkpoint's processor config decides (Qwen2.5-VL: up to 12.8 megapixels, 16,384 tokens, per
image). ``max_pixels=1280 * 28 * 28`` caps a Qwen2.5-VL image at 1,280 tokens; two images are sent per decision.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

import torch

from mira.policies.base import Policy, PolicyError
from mira.protocol import Observation, build_messages
from mira.torch_utils import LOAD_LOCK, first_line, looks_local, resolve_device, resolve_dtype
from mira.vlm import ChatBackend

DEFAULT_MAX_NEW_TOKENS = 256


class TransformersPolicy(Policy, ChatBackend):
    """A Qwen-VL checkpoint as a MIRA policy and as a chat backend for judges and rewriters (see the module
    docstring for sampling and device rules)."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        attn_implementation: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 0,
        do_sample: bool = True,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ):
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        self.model_id = str(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.device_map = device_map
        self.attn_implementation = attn_implementation
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.do_sample = do_sample and temperature > 0
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    # -- loading --------------------------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The transformers model, loaded on first use."""
        return self.load()._model

    @property
    def processor(self) -> Any:
        """The transformers processor (tokenizer, image processor, chat template), loaded on first use."""
        return self.load()._processor

    def load(self) -> TransformersPolicy:
        """Load the processor and model now (otherwise the first :meth:`generate` does)."""
        with self._lock:
            self._load_locked()
        return self

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        path = os.path.expanduser(self.model_id)
        if looks_local(self.model_id) and not os.path.isdir(path):
            raise PolicyError(f"policy model folder '{self.model_id}' does not exist; check the path")
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model_kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.device_map is not None:
            model_kwargs["device_map"] = self.device_map
        if self.attn_implementation is not None:
            model_kwargs["attn_implementation"] = self.attn_implementation
        try:
            with LOAD_LOCK:
                processor = AutoProcessor.from_pretrained(path)
                model = AutoModelForImageTextToText.from_pretrained(path, **model_kwargs)
        except Exception as exc:
            where = "" if looks_local(self.model_id) else " (no local folder of that name; as a hub id)"
            raise PolicyError(f"could not load policy model '{self.model_id}'{where}: {first_line(exc)}") from exc
        if getattr(processor, "chat_template", None) is None:
            raise PolicyError(f"policy model '{self.model_id}' has no chat template in its processor")
        if self.min_pixels or self.max_pixels:
            self._bound_pixels(processor)
        if self.device_map is None:
            model = model.to(self.device)
        self._processor, self._model = processor, model.eval()

    def _bound_pixels(self, processor: Any) -> None:
        """Apply ``min_pixels`` / ``max_pixels`` to a Qwen-VL image processor (its ``size`` edges are pixel counts)."""
        size = getattr(processor.image_processor, "size", None)
        if getattr(size, "longest_edge", None) is None:
            raise PolicyError(f"min_pixels/max_pixels need a Qwen-VL image processor; '{self.model_id}' has "
                              f"{type(processor.image_processor).__name__}")
        bounds = {"shortest_edge": self.min_pixels or size.shortest_edge,
                  "longest_edge": self.max_pixels or size.longest_edge}
        processor.image_processor.size = type(size)(**bounds)

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        """``n`` raw completions for one decision, sampled in one batch; reproducible for a given ``seed``."""
        return self.chat(build_messages(observation, embed_images=True), n=n, seed=seed)

    def chat(self, messages: list[dict[str, Any]], *, n: int = 1, seed: int | None = None, **sampling: Any) -> list[str]:
        """``n`` completions of any chat in TRL's vision format (images embedded); ``sampling`` overrides the
        policy's generation settings for this call (e.g. ``max_new_tokens``, ``temperature``)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            self._load_locked()
            inputs = self._inputs(messages)
            kwargs = {**self._generation_kwargs(n), **sampling}
            try:
                with _seeded(seed):
                    output = self._model.generate(**inputs, **kwargs)
            except Exception as exc:
                raise PolicyError(f"generation with '{self.model_id}' failed: {first_line(exc)}") from exc
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        texts = self._processor.batch_decode(new_tokens, skip_special_tokens=True)
        return texts if len(texts) == n else texts[:1] * n

    def _inputs(self, messages: list[dict[str, Any]]) -> Any:
        try:
            inputs = self._processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        except Exception as exc:
            message = f"the processor of '{self.model_id}' could not encode the messages: {first_line(exc)}"
            raise PolicyError(message) from exc
        return inputs.to(self._model.device)

    def _generation_kwargs(self, n: int) -> dict[str, Any]:
        max_new_tokens = self.max_new_tokens or self._model.generation_config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if not self.do_sample:
            return {"max_new_tokens": max_new_tokens, "do_sample": False}
        return {"max_new_tokens": max_new_tokens, "do_sample": True, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k, "num_return_sequences": n}

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model_id,
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
        }


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Inside the block torch samples from ``seed``; torch's global random state is restored afterwards."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
