"""Stage 7 (split and export): samples are exactly what inference sends; the dataset loads and feeds TRL."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from data_helpers import PILEditor, build_config
from rich.console import Console

from mira.agent import MiraAgent
from mira.data.build import build
from mira.data.config import config_from_dict
from mira.data.export import trajectory_samples, wordings
from mira.data.records import Selected
from mira.data.store import read_jsonl
from mira.policies.base import Policy
from mira.protocol import PROTOCOL_VERSION, STOP, assistant_message, build_messages, format_completion


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_photos, scripted_server):
    url, _ = scripted_server
    root = tmp_path_factory.mktemp("export")
    config = config_from_dict(build_config(root, data_photos, url, export={"variants_per_trajectory": 2,
                                                                           "num_shards": 2}))
    result = build(config, console=Console(file=open(root / "log.txt", "w")))
    selected = [Selected.from_dict(r) for p in sorted((root / "work" / "annotate").glob("shard-*.jsonl"))
                for r in read_jsonl(p)]
    return config, result, selected


class RecordingPolicy(Policy):
    """Replays a plan and records the messages the agent sends for each decision."""

    def __init__(self, plan):
        self.plan, self.sent = plan, []

    def generate(self, observation, *, n=1, seed=None):
        self.sent.append(build_messages(observation))
        i = len(observation.history)
        return [format_completion(self.plan[i] if i < len(self.plan) else STOP)]


def test_samples_are_the_messages_inference_sends(built):
    import datasets

    config, result, selected = built
    ds = datasets.load_from_disk(str(result.output))
    sel = next(s for s in selected if s.candidate.editor == "pil")
    rows = [r for r in ds if r["trajectory_id"] == sel.candidate.id and r["variant"] == 1]
    (instruction, edits), = [w for v, w in enumerate(wordings(sel, 2, config.seed)) if v == 1]

    policy = RecordingPolicy(edits)
    MiraAgent(policy=policy, editor=PILEditor()).run(sel.task.image, instruction)
    assert len(rows) == len(policy.sent) == len(edits) + 1
    for t, (row, sent) in enumerate(zip(sorted(rows, key=lambda r: r["step"]), policy.sent)):
        assert row["messages"][:-1] == [{**m, "content": [{"text": None, **c} for c in m["content"]]} for m in sent]
        assert row["messages"][-1] == assistant_message(edits[t] if t < len(edits) else STOP, sel.reasoning[t])
        assert row["kind"] == ("start" if t == 0 else "stop" if t == len(edits) else "continue")
        original, current = row["images"]
        assert np.array_equal(np.asarray(original), np.asarray(policy_image(sel, 0)))
        assert np.array_equal(np.asarray(current), np.asarray(policy_image(sel, t)))
        assert (row["editor"], row["seed"], row["protocol_version"]) == ("pil", sel.candidate.seed, PROTOCOL_VERSION)
        assert row["score"] == pytest.approx(sel.score)


def policy_image(sel, t):
    from mira.images import load_image

    return load_image(sel.task.image if t == 0 else sel.candidate.images[t - 1])


def test_every_trajectory_gives_start_continue_stop_samples(built):
    import datasets

    config, result, selected = built
    ds = datasets.load_from_disk(str(result.output))
    assert len(ds) == result.rows == sum(2 * (len(s.task.turns) + 1) for s in selected)
    kinds = Counter(ds["kind"])
    assert kinds["start"] == kinds["stop"] == 2 * len(selected)
    assert {c for c in ds.column_names} >= {"messages", "images", "trajectory_id", "step", "kind", "source", "score",
                                            "protocol_version"}
    assert len(list(Path(result.output).glob("data-*.arrow"))) == 2  # export.num_shards
    # the two wordings of a trajectory use different instructions when there are enough paraphrases
    sel = selected[0]
    (a, _), (b, _) = wordings(sel, 2, config.seed)
    assert a != b and {a, b} <= set(sel.task.instruction_variants)


def test_dataset_card(built):
    config, result, selected = built
    card = (Path(result.output) / "README.md").read_text()
    assert card.startswith("---\nlicense: other\n")
    assert f"| trajectories | {len(selected)} |" in card and f"| samples | {result.rows} |" in card
    steps = Counter(len(s.task.turns) for s in selected)
    for k, n in steps.items():
        assert f"| {k} | {n} |" in card
    assert "| seed-data-edit |" in card and "CC-BY-NC-4.0" in card and "CC-BY-4.0" in card
    assert "missing image: 1" in card and "malformed row: 1" in card


def test_trajectory_samples_without_reasoning_use_empty_think(built):
    _, _, selected = built
    sel = Selected(selected[0].task, selected[0].candidate)
    rows = trajectory_samples(sel, sel.task.instruction, sel.task.turns)
    assert rows[-1]["messages"][-1]["content"][0]["text"] == "<think></think><answer><STOP></answer>"
    assert rows[0]["images"] == [sel.task.image, sel.task.image]


def test_a_batch_through_trl_vision_collator(built, tiny_models):
    import datasets
    from transformers import AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    tiny_vl_processor = AutoProcessor.from_pretrained(tiny_models["qwen2_5_vl"])
    _, result, _ = built
    ds = datasets.load_from_disk(str(result.output))
    examples = [ds[0], ds[len(ds) - 1]]
    from mira.testing import trl_chat_template

    collator = DataCollatorForVisionLanguageModeling(tiny_vl_processor, assistant_only_loss=True,
                                                     chat_template=trl_chat_template("qwen2_5_vl_training"))
    batch = collator([dict(e) for e in examples])

    assert batch["input_ids"].shape == batch["labels"].shape and batch["input_ids"].shape[0] == 2
    assert batch["image_grid_thw"].shape[0] == 4  # [original, current] per sample
    tokenizer = tiny_vl_processor.tokenizer
    for i, example in enumerate(examples):
        trained = batch["labels"][i][batch["labels"][i] != -100]
        assert tokenizer.decode(trained) == example["messages"][-1]["content"][0]["text"] + "<|im_end|>\n"
