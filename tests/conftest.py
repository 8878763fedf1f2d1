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


# --- data builder (mira.data) ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def data_photos(tmp_path_factory):
    """Sample photographs from scikit-image, 64x48 PNGs."""
    from data_helpers import write_photos

    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def scripted_server():
    """(base_url, state) of an OpenAI-compatible chat server on 127.0.0.1 answering the builder's prompts by rule;
    ``state["requests"]`` counts requests, other keys steer replies (see data_helpers.scripted_reply)."""
    from data_helpers import ServerThread, scripted_app

    state: dict = {}
    with ServerThread(scripted_app(state)) as url:
        yield url, state


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session: 2 CPUs, loopback only, quiet; workers can import src/ and tests/."""
    import pathlib

    ray = pytest.importorskip("ray")
    here = pathlib.Path(__file__).resolve().parent
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(here.parent / "src"), str(here)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=256 * 1024 * 1024, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


# -- training (issue 7) -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def train_base_model(tmp_path_factory):
    """A tiny random Qwen2.5-VL policy folder to train from."""
    from mira.testing import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("train-base") / "qwen2_5_vl")
