"""Training inputs: configs (YAML + overrides) and MIRA-Editing dataset checks. No model is loaded here."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from train_support import COLORS, grpo_rows, image, sft_rows

from mira.protocol import PROTOCOL_VERSION, STOP, Observation, assistant_message, build_messages
from mira.train.config import ConfigError, load_config
from mira.train.data import DatasetError, load_splits, prepare_grpo_dataset, prepare_sft_dataset

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def sft_config_cls():
    from mira.train.sft import MiraSFTConfig

    return MiraSFTConfig


@pytest.fixture(scope="module")
def grpo_config_cls():
    from mira.train.grpo import MiraGRPOConfig

    return MiraGRPOConfig


def write_yaml(tmp_path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


BASE = "output_dir: out\nmodel_name_or_path: m\ndataset_name: d\nuse_cpu: true\nbf16: false\n"


# -- configs -------------------------------------------------------------------------------------------------------
def test_yaml_fields_pass_through_to_trl_and_overrides_win(tmp_path, sft_config_cls):
    path = write_yaml(tmp_path, BASE + "learning_rate: 1e-5\nmax_steps: '7'\nuse_peft: 'true'\nlora_preset: all-linear\n")
    config = load_config(sft_config_cls, path, {"max_steps": 9, "lora_r": 4})
    assert config.learning_rate == 1e-5 and isinstance(config.learning_rate, float)  # YAML reads 1e-5 as text
    assert config.max_steps == 9 and config.lora_r == 4 and config.use_peft is True
    assert config.assistant_only_loss is True and config.max_length is None
    assert config.lora_targets() == "all-linear"


@pytest.mark.parametrize(
    "extra, overrides, message",
    [
        ("learning_rat: 0.1\n", {}, "did you mean 'learning_rate'"),
        ("", {"colour": 1}, "unknown option 'colour'"),
        ("max_steps: many\n", {}, "option 'max_steps' must be int"),
        ("lora_preset: vision\n", {}, "lora_preset 'vision' is unknown"),
        ("eval_fraction: 0.1\n", {}, "eval_strategy is 'no'"),
        ("min_pixels: 100\nmax_pixels: 10\n", {}, "min_pixels (100) is larger"),
    ],
)
def test_bad_sft_configs_fail_with_one_line(tmp_path, sft_config_cls, extra, overrides, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(sft_config_cls, write_yaml(tmp_path, BASE + extra), overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_config_needs_output_model_and_dataset(tmp_path, sft_config_cls):
    with pytest.raises(ConfigError, match="output_dir is required"):
        load_config(sft_config_cls, write_yaml(tmp_path, "model_name_or_path: m\n"))
    with pytest.raises(ConfigError, match="dataset_name is required"):
        load_config(sft_config_cls, write_yaml(tmp_path, "output_dir: o\nmodel_name_or_path: m\nuse_cpu: true\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(sft_config_cls, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(sft_config_cls, write_yaml(tmp_path, "- a\n- b\n"))


def test_grpo_config_rewards_follow_the_rollout_mode(tmp_path, grpo_config_cls):
    path = write_yaml(tmp_path, BASE)
    assert load_config(grpo_config_cls, path).rewards == ["format", "edit"]
    assert load_config(grpo_config_cls, path, {"rollout": "trajectory"}).rewards == ["format", "trajectory"]
    with pytest.raises(ConfigError, match="needs rollout: trajectory"):
        load_config(grpo_config_cls, path, {"rewards": ["trajectory"]})
    with pytest.raises(ConfigError, match="unknown reward 'beauty'"):
        load_config(grpo_config_cls, path, {"rewards": ["format", "beauty"]})
    with pytest.raises(ConfigError, match="rollout must be"):
        load_config(grpo_config_cls, path, {"rollout": "episode"})


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path, sft_config_cls, grpo_config_cls):
    cls = grpo_config_cls if path.name.startswith("grpo") else sft_config_cls
    config = load_config(cls, path, {"use_cpu": True, "bf16": False})  # bf16 needs a GPU here
    assert config.model_name_or_path and config.dataset_name and config.output_dir


# -- datasets ------------------------------------------------------------------------------------------------------
def test_sft_rows_pass_and_bad_ones_name_the_row():
    rows = sft_rows()
    assert len(prepare_sft_dataset(Dataset.from_list(rows))) == len(rows)

    old = [dict(r, protocol_version="0") for r in rows]
    with pytest.raises(DatasetError, match=f"protocol version 0 but this MIRA speaks version {PROTOCOL_VERSION}"):
        prepare_sft_dataset(Dataset.from_list(old))

    with pytest.raises(DatasetError, match="no column.* images"):
        prepare_sft_dataset(Dataset.from_list([{k: v for k, v in r.items() if k != "images"} for r in rows]))

    edited = [dict(r) for r in rows]
    edited[2] = dict(edited[2], messages=[dict(m) for m in edited[2]["messages"]])
    edited[2]["messages"][0] = {"role": "system", "content": [{"type": "text", "text": "You are a helpful bot."}]}
    with pytest.raises(DatasetError, match="row 2: the system prompt differs"):
        prepare_sft_dataset(Dataset.from_list(edited))

    one_image = [dict(r, images=r["images"][:1]) if i == 1 else r for i, r in enumerate(rows)]
    with pytest.raises(DatasetError, match="row 1: 2 image placeholders but 1 images"):
        prepare_sft_dataset(Dataset.from_list(one_image))

    no_answer = [dict(r, messages=r["messages"][:2]) for r in rows]
    with pytest.raises(DatasetError, match="row 0: turns are"):
        prepare_sft_dataset(Dataset.from_list(no_answer))


def test_unreadable_and_missing_images_are_reported(tmp_path):
    rows = sft_rows()
    png = io.BytesIO()
    image().save(png, format="PNG")
    broken = png.getvalue()[:40]  # a truncated PNG
    data = Dataset.from_list(rows).map(lambda r, i: {"images": [{"bytes": broken, "path": None}] * 2} if i == 3 else {},
                    with_indices=True)
    with pytest.raises(DatasetError, match="row 3, image 1 cannot be read"):
        prepare_sft_dataset(data)

    on_disk = []
    for i, row in enumerate(rows):
        paths = []
        for j, img in enumerate(row["images"]):
            paths.append(str(tmp_path / f"{i}-{j}.png"))
            img.save(paths[-1])
        on_disk.append(dict(row, images=paths))
    assert prepare_sft_dataset(Dataset.from_list(on_disk))[0]["images"][0].size == (56, 56)  # paths become images
    Path(on_disk[1]["images"][1]).unlink()
    with pytest.raises(DatasetError, match="row 1, image 2 cannot be read: .* does not exist"):
        prepare_sft_dataset(Dataset.from_list(on_disk))


def test_grpo_rows_and_sft_rows_become_prompts():
    data = prepare_grpo_dataset(Dataset.from_list(grpo_rows()), needs=("instruction", "history"))
    assert [m["role"] for m in data[0]["prompt"]] == ["system", "user"]

    rows = sft_rows()  # the data builder's layout: no instruction / history columns
    done = Observation("make the cup red", ("make the cup red", "make it shiny"), image(), image(COLORS["red"]))
    rows.append(dict(rows[0], messages=build_messages(done) + [assistant_message(STOP, "Done.")]))
    data = prepare_grpo_dataset(Dataset.from_list(rows), needs=("instruction", "history"))
    assert "messages" not in data.column_names
    assert all([m["role"] for m in p] == ["system", "user"] for p in data["prompt"])
    assert data["action"][0] == "make the cup red" and data["action"][-1] == STOP
    assert data["instruction"][1] == "make the cup blue" and data["history"][1] == []
    assert data["instruction"][-1] == "make the cup red" and data["history"][-1] == list(done.history)

    foreign = [dict(r, messages=[dict(m) for m in r["messages"]]) for r in sft_rows()]
    foreign[1]["messages"][1] = {"role": "user", "content": [
        {"type": "image", "text": None}, {"type": "text", "text": "Please edit: make it red"},
        {"type": "image", "text": None}]}
    with pytest.raises(DatasetError, match="row 1: the user turn is not one MIRA's protocol writes"):
        prepare_grpo_dataset(Dataset.from_list(foreign), needs=("instruction", "history"))
    with pytest.raises(DatasetError, match="no column.* prompt"):
        prepare_grpo_dataset(Dataset.from_list([{k: v for k, v in r.items() if k != "messages"} for r in rows]))


@pytest.mark.parametrize("history", [(), ("make the cup red",), ("a", "b. c", "3. d") * 4])
def test_the_user_turn_reads_back_into_instruction_and_history(history):
    from mira.protocol import read_user_text, user_text

    assert read_user_text(user_text("make it red and blue", history)[0]) == ("make it red and blue", history)
    assert read_user_text("Instruction: x") is None
    assert read_user_text(user_text("x", ("line one\nline two",))[0]) is None  # an edit is one line


def test_splits_keep_trajectories_whole_and_are_seeded(tmp_path):
    rows = [dict(r, trajectory_id=f"t{i // 2}") for i, r in enumerate(sft_rows(near_misses=True))]
    Dataset.from_list(rows).save_to_disk(tmp_path / "flat")
    train, test = load_splits(str(tmp_path / "flat"), eval_fraction=0.25, seed=3)
    assert set(train["trajectory_id"]).isdisjoint(test["trajectory_id"])
    assert len(train) + len(test) == len(rows) and len(set(test["trajectory_id"])) == 1
    assert load_splits(str(tmp_path / "flat"), eval_fraction=0.25, seed=3)[1]["trajectory_id"] == test["trajectory_id"]
    assert load_splits(str(tmp_path / "flat"))[1] is None

    DatasetDict(train=Dataset.from_list(rows[:6]), test=Dataset.from_list(rows[6:])).save_to_disk(tmp_path / "dict")
    train, test = load_splits(str(tmp_path / "dict"), eval_fraction=0.5)
    assert (len(train), len(test)) == (6, len(rows) - 6)  # a test split wins over eval_fraction
    with pytest.raises(DatasetError, match="no 'training' split .*train, test"):
        load_splits(str(tmp_path / "dict"), train_split="training")
    with pytest.raises(DatasetError, match="would hold out all"):
        load_splits(str(tmp_path / "flat"), eval_fraction=0.9)
    with pytest.raises(DatasetError, match="does not exist"):
        load_splits(str(tmp_path / "nothing" / "here"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not a dataset folder"):
        load_splits(str(tmp_path / "plain"))


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1 and config.mixed_precision == "bf16"


def test_editors_and_judges_resolve_from_names_and_import_paths(grpo_config_cls):
    from mira.testbed.editor import TestbedEditor
    from mira.testbed.judge import TestbedJudge
    from mira.train.grpo import _build

    assert isinstance(_build("editor", "testbed", {"error_rate": 0.0}), TestbedEditor)
    assert isinstance(_build("judge", "mira.testbed.judge:TestbedJudge", None), TestbedJudge)
    with pytest.raises(ConfigError, match="judge 'mira.testbed.judge:NoSuchJudge' is neither registered"):
        _build("judge", "mira.testbed.judge:NoSuchJudge", None)
    with pytest.raises(ConfigError, match="need a judge"):
        _build("judge", None, None)


def test_a_checkpoint_of_another_protocol_version_is_refused(tmp_path, sft_config_cls):
    from mira.train.common import check_base_model

    (tmp_path / "mira_training.json").write_text('{"protocol_version": "0"}')
    config = sft_config_cls(output_dir=str(tmp_path / "o"), model_name_or_path=str(tmp_path), dataset_name="d",
                            use_cpu=True, bf16=False)
    with pytest.raises(ConfigError, match="trained with protocol version 0"):
        check_base_model(config)
