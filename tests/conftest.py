"""Shared test setup: one CPU thread for tiny models, no hub access, tiny models built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- data builder (mira.data) ---------------------------------------------------------------------------------------
import pytest  # noqa: E402


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


@pytest.fixture(scope="session")
def tiny_vl_processor():
    """A tiny Qwen2.5-VL processor (locally trained byte-level BPE, TRL's Qwen2.5-VL training chat template)."""
    import json
    import pathlib

    pytest.importorskip("trl")
    import trl
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2_5_VLProcessor, Qwen2Tokenizer, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from mira.protocol import SYSTEM_PROMPT

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([SYSTEM_PROMPT, "make the cup red, the saucer blue and the table black"], trainers.BpeTrainer(
        vocab_size=500, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_tokens(special, special_tokens=True)
    template = (pathlib.Path(trl.__file__).parent / "chat_templates" / "qwen2_5_vl_training.jinja").read_text()
    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28),
                               tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=template)
