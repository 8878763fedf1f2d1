"""Shared test setup: one CPU thread for tiny models, no hub access, tiny models built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- verifier-guided steps (issue 9): a tiny real FLUX.1-Kontext pipeline, built once per session ------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_kontext_pipeline():
    from mira.testing import tiny_flux_kontext_pipeline

    return tiny_flux_kontext_pipeline()
