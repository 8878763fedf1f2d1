"""Small helpers shared by the torch backends (devices, dtypes, model locations, error messages)."""

from __future__ import annotations

import os
import threading

import torch

# transformers and diffusers build models inside process-wide contexts (meta-device initialisation, patched
# parameter registration); two loads in different threads at once can leave those patched, which broke weight tying
# of models loaded later. Every backend loads weights while holding this lock.
LOAD_LOCK = threading.RLock()

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def resolve_device(device: str | None) -> str:
    """``device`` as given, or ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """A torch dtype from a name; ``"auto"`` is bfloat16 on CUDA and float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype '{dtype}'; use 'auto', 'bfloat16', 'float16' or 'float32'")
    return _DTYPES[dtype]


def looks_local(model: str) -> bool:
    """Whether ``model`` names a local folder rather than a hub id (``org/name``)."""
    return os.path.exists(model) or model.startswith((".", "/", "~", "\\")) or model.count("/") > 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can be pages long)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
