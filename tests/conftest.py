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


# -- evaluation (issue 5): one local Ray cluster per test session, loopback only ---------------------------------------
@pytest.fixture(scope="session")
def local_ray():
    """A 2-CPU Ray cluster on 127.0.0.1 whose workers import mira and the test helpers (reused if already up)."""
    ray = pytest.importorskip("ray")
    from pathlib import Path

    if ray.is_initialized():
        yield ray
        return
    here = Path(__file__).parent
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    paths = [str(here), str(here.parent / "src"), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=256 * 1024 * 1024, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()
