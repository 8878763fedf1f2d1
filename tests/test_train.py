"""SFT and GRPO on a tiny real Qwen-VL policy (CPU): learning signals, saved policies, resuming, the CLI."""

from __future__ import annotations

import json
import os
import statistics

import pytest
import torch
import yaml
from datasets import Dataset
from train_support import ColorEditor, ColorJudge, builder_dataset, grpo_rows, image, sft_rows
from typer.testing import CliRunner

from mira.cli import app
from mira.protocol import PROTOCOL_VERSION, Observation, build_messages, format_completion
from mira.train.grpo import MiraGRPOConfig, train_grpo
from mira.train.sft import MiraSFTConfig, train_sft

pytestmark = pytest.mark.slow
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL flags rollout_func as experimental

TINY = dict(use_cpu=True, bf16=False, activation_checkpointing=False, report_to="none", disable_tqdm=True,
            logging_steps=1, save_strategy="no", dataloader_num_workers=0)
GRPO = dict(num_generations=4, per_device_train_batch_size=4, max_completion_length=24)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Dataset folders: SFT rows (with near misses), GRPO start states, GRPO start and finished states, and the
    data builder's export of two-edit trajectories."""
    root = tmp_path_factory.mktemp("train-data")
    builder_dataset().save_to_disk(root / "builder")
    Dataset.from_list(sft_rows(near_misses=True)).save_to_disk(root / "sft")
    Dataset.from_list([r for r in grpo_rows() if not r["history"]]).save_to_disk(root / "grpo-start")
    Dataset.from_list(grpo_rows()).save_to_disk(root / "grpo")
    return root


@pytest.fixture(scope="module")
def sft_policy(tmp_path_factory, train_base_model, data):
    """A full fine-tune on the near-miss set: it writes the exact answer format about half of the time."""
    out = tmp_path_factory.mktemp("sft") / "policy"
    config = MiraSFTConfig(
        output_dir=str(out), model_name_or_path=str(train_base_model), dataset_name=str(data / "sft"),
        max_steps=60, per_device_train_batch_size=4, learning_rate=1e-2, lr_scheduler_type="constant_with_warmup",
        warmup_steps=5, seed=0, **TINY,
    )
    return train_sft(config), out


def losses(trainer, key="loss"):
    return [h[key] for h in trainer.state.log_history if key in h]


def load(path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)


def answer_logprob(model, processor, answer: str, colour: str = "red") -> float:
    """log p(answer | start state of "make the cup <colour>") under the model, teacher-forced."""
    obs = Observation(f"make the cup {colour}", (), image(), image())
    prompt = build_messages(obs, embed_images=True)
    full = prompt + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    kw = dict(tokenize=True, return_dict=True, return_tensors="pt")
    n = processor.apply_chat_template([prompt], add_generation_prompt=True, **kw)["input_ids"].shape[1]
    inputs = processor.apply_chat_template([full], **kw)
    with torch.no_grad():
        logits = model(**inputs).logits[0, n - 1:-1]
    targets = inputs["input_ids"][0, n:]
    return logits.log_softmax(-1).gather(1, targets[:, None]).sum().item()


def test_sft_loss_falls_and_the_policy_is_saved_for_inference(sft_policy):
    trainer, out = sft_policy
    curve = losses(trainer)
    assert statistics.mean(curve[-5:]) < statistics.mean(curve[:5]) / 5, curve
    manifest = json.loads((out / "mira_training.json").read_text())
    assert manifest["protocol_version"] == PROTOCOL_VERSION and manifest["stage"] == "sft" and not manifest["lora"]

    model, processor = load(out)
    good = answer_logprob(model, processor, format_completion("make the cup red", "The cup is white."))
    unseen = answer_logprob(model, processor, format_completion("the table is wooden", "A wooden table."))
    assert good > unseen + 10  # the taught answer became far more likely than an untaught one


def test_the_sft_policy_drives_the_agent_and_mira_edit(sft_policy, tmp_path, monkeypatch):
    from mira import MiraAgent, registry
    from mira.policies.transformers import TransformersPolicy

    _, out = sft_policy
    editor = ColorEditor()
    policy = TransformersPolicy(str(out), do_sample=False, max_new_tokens=24)
    trajectory = MiraAgent(policy=policy, editor=editor, max_steps=2)(image(), "make the cup red")
    assert trajectory.steps and trajectory.steps[0].action.startswith("make the cup")  # a taught answer, parsed
    assert editor.calls >= 1 and trajectory.config["policy"]["model"] == str(out)

    monkeypatch.setitem(registry.EDITORS, "color", "train_support:ColorEditor")
    photo, result_path = tmp_path / "photo.png", tmp_path / "out.png"
    image().save(photo)
    result = CliRunner().invoke(app, ["edit", str(photo), "make the cup blue", "--policy", str(out), "--editor",
                                      "color", "--max-steps", "1", "--temperature", "0", "--policy-option",
                                      "max_new_tokens=24", "-o", str(result_path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "step 1:" in result.output and result_path.exists()


def test_lora_sft_merges_keeps_vision_frozen_and_is_reproducible(tmp_path, train_base_model, data):
    def run(name):
        config = MiraSFTConfig(
            output_dir=str(tmp_path / name), model_name_or_path=str(train_base_model),
            dataset_name=str(data / "builder"), use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
            max_steps=4, per_device_train_batch_size=2, learning_rate=5e-3, seed=7, eval_fraction=0.25,
            eval_strategy="steps", eval_steps=2, min_pixels=56 * 56, max_pixels=56 * 56, **{**TINY, "save_strategy": "steps", "save_steps": 2},
        )
        return train_sft(config), tmp_path / name

    trainer, out = run("a")
    assert losses(trainer, "eval_loss"), "the held-out trajectories were evaluated"
    assert (out / "adapter" / "adapter_config.json").exists() and not (out / "adapter_config.json").exists()
    assert json.loads((out / "mira_training.json").read_text())["merged"] is True

    merged, processor = load(out)
    base, _ = load(train_base_model)
    assert processor.image_processor.size["longest_edge"] == 56 * 56  # image limits travel with the policy
    params, base_params = dict(merged.named_parameters()), dict(base.named_parameters())
    changed = {n for n, p in params.items() if not torch.equal(p, base_params[n])}
    assert changed and all("language_model" in n and "proj" in n for n in changed)  # vision tower untouched

    from peft import PeftModel

    adapted = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    obs = Observation("make the cup red", (), image(), image())
    inputs = processor.apply_chat_template([build_messages(obs, embed_images=True)], add_generation_prompt=True,
                                           tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, adapted(**inputs).logits, atol=1e-4, rtol=1e-4)

    checkpoint, _ = load(out / "checkpoint-2")  # an adapter-only checkpoint loads as a policy too
    assert hasattr(checkpoint, "peft_config")
    from mira.policies.transformers import TransformersPolicy

    for folder in (out, out / "checkpoint-2"):
        completions = TransformersPolicy(str(folder), do_sample=False, max_new_tokens=8).generate(obs, n=2)
        assert len(completions) == 2 and all(isinstance(c, str) for c in completions)
    assert json.loads((out / "checkpoint-2" / "mira_training.json").read_text())["stage"] == "sft"

    again, _ = run("b")
    assert losses(again) == losses(trainer)  # same seed, same run


def test_qwen3_vl_lora_sft_runs(tmp_path, data):
    from mira.testing import build_tiny_qwen3_vl

    base = build_tiny_qwen3_vl(tmp_path / "qwen3_vl")
    config = MiraSFTConfig(
        output_dir=str(tmp_path / "out"), model_name_or_path=str(base), dataset_name=str(data / "sft"),
        use_peft=True, lora_r=4, max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2, **TINY,
    )
    trainer = train_sft(config)
    assert len(losses(trainer)) == 3 and any("lora_A" in n for n, _ in trainer.model.named_modules())
    model, _ = load(tmp_path / "out")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"


def test_grpo_format_reward_rises(tmp_path, sft_policy, data):
    _, policy = sft_policy
    config = MiraGRPOConfig(
        output_dir=str(tmp_path / "grpo"), model_name_or_path=str(policy), dataset_name=str(data / "grpo-start"),
        rewards=["format"], max_steps=15, learning_rate=5e-4, temperature=0.7, seed=0,
        **{**GRPO, "num_generations": 8, "per_device_train_batch_size": 16}, **TINY,
    )
    trainer = train_grpo(config)
    rewards = losses(trainer, "rewards/format_reward/mean")
    assert len(rewards) == 15
    assert statistics.mean(rewards[-5:]) > statistics.mean(rewards[:5]) + 0.1, rewards

    before, processor = load(policy)
    after, _ = load(tmp_path / "grpo")
    exact = format_completion("make the cup blue", "The cup is white.")
    near_miss = "<think>The cup is white.</think>make the cup blue"

    def margin(model):
        return answer_logprob(model, processor, exact, "blue") - answer_logprob(model, processor, near_miss, "blue")

    assert margin(after) > margin(before)  # the exact format gained probability over its near miss


def write_config(path, **options):
    path.write_text(yaml.safe_dump(options))
    return path


def test_grpo_cli_runs_the_editor_and_judge_and_resumes(tmp_path, sft_policy, data):
    _, policy = sft_policy
    out = tmp_path / "grpo"
    config = write_config(
        tmp_path / "grpo.yaml", output_dir=str(out), model_name_or_path=str(policy), dataset_name=str(data / "grpo"),
        editor="train_support:make_editor", judge="train_support:make_judge", max_steps=2, learning_rate=1e-3,
        shuffle_dataset=False,  # the first step samples a start state, where the policy's answer is an edit
        **GRPO, **{**TINY, "save_strategy": "steps", "save_steps": 1},
    )
    result = CliRunner().invoke(app, ["train", "grpo", str(config)])
    assert result.exit_code == 0, result.output
    assert f"policy saved to {out}" in result.output
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "rewards/edit_reward/mean" in h]
    assert len(logged) == 2 and all("rewards/format_reward/mean" in h for h in logged)
    assert sum(h["edit_reward/editor_calls"] for h in logged) >= 1  # the sampled actions were executed

    result = CliRunner().invoke(app, ["train", "grpo", str(config), "--set", "max_steps=3", "--resume"])
    assert result.exit_code == 0, result.output
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [h["step"] for h in state["log_history"] if "reward" in h] == [1, 2, 3]  # continued, not restarted
    assert json.loads((out / "mira_training.json").read_text())["stage"] == "grpo"
    load(out)


def test_grpo_trains_on_the_data_builders_export(tmp_path, sft_policy, data):
    _, policy = sft_policy
    config = MiraGRPOConfig(
        output_dir=str(tmp_path / "out"), model_name_or_path=str(policy), dataset_name=str(data / "builder"),
        max_steps=1, learning_rate=1e-3, **GRPO, **TINY,
    )
    trainer = train_grpo(config, editor=ColorEditor(), judge=ColorJudge())
    assert len(losses(trainer, "rewards/edit_reward/mean")) == len(losses(trainer, "rewards/format_reward/mean")) == 1


def test_grpo_trajectory_rollouts_with_lora(tmp_path, sft_policy, data):
    _, policy = sft_policy
    editor, judge = ColorEditor(), ColorJudge()
    config = MiraGRPOConfig(
        output_dir=str(tmp_path / "traj"), model_name_or_path=str(policy), dataset_name=str(data / "grpo"),
        rollout="trajectory", max_rollout_steps=2, use_peft=True, lora_r=4, max_steps=2, learning_rate=1e-3,
        **GRPO, **TINY,
    )
    trainer = train_grpo(config, editor=editor, judge=judge)
    scores = losses(trainer, "rewards/trajectory_reward/mean")
    edits = losses(trainer, "trajectory/mean_edits")
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert all(0.0 <= e <= 2.0 for e in edits) and editor.calls >= 1 and judge.calls >= 1
    assert json.loads((tmp_path / "traj" / "mira_training.json").read_text())["merged"] is True


@pytest.mark.parametrize(
    "options, message",
    [
        ({"learning_rat": 0.1}, "unknown option 'learning_rat'; did you mean 'learning_rate'"),
        ({"dataset_name": "/no/such/dataset"}, "dataset folder '/no/such/dataset' does not exist"),
        ({}, "protocol version 0 but this MIRA speaks version"),
    ],
)
def test_train_cli_errors_are_one_line(tmp_path, train_base_model, options, message):
    Dataset.from_list([dict(r, protocol_version="0") for r in sft_rows()]).save_to_disk(tmp_path / "old")
    config = write_config(tmp_path / "sft.yaml", **{
        "output_dir": str(tmp_path / "o"), "model_name_or_path": str(train_base_model),
        "dataset_name": str(tmp_path / "old"), **TINY, **options})
    result = CliRunner().invoke(app, ["train", "sft", str(config)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
