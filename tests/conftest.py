"""Shared test setup: one CPU thread for tiny models, no hub access, tiny models built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- tiny real models for the serving tests (issue 4) ----------------------------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_policy_and_kontext(tmp_path_factory):
    """Folders of a tiny Qwen2.5-VL policy and a tiny FLUX.1-Kontext pipeline, built once per test session."""
    from mira.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"), which=["qwen2_5_vl", "flux-kontext"])
