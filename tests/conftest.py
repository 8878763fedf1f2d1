"""Shared test setup: one CPU thread for tiny models, no hub access, tiny models built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """name -> folder of every tiny model of :mod:`mira.testing`, built once per test session."""
    from mira.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def small_qwen_conditioning():
    """Qwen-Image-Edit(-Plus) condition on ~64x64 images instead of ~1 MP while the test runs."""
    from mira.testing import small_qwen_image_conditioning

    with small_qwen_image_conditioning():
        yield
