"""Loading and checking MIRA-Editing datasets for the trainers.

A MIRA-Editing dataset (written by MIRA's data builder) holds one row per decision, in TRL's vision format:

- ``messages``: system / user / assistant turns built by :func:`mira.protocol.build_messages` and
  :func:`mira.protocol.assistant_message`, with image placeholders ``{"type": "image"}``;
- ``images``: ``[original, current]``, in placeholder order;
- metadata: ``trajectory_id``, ``step``, ``kind`` (start | continue | stop), ``source``, ``score``,
  ``protocol_version``.

GRPO rows carry a conversational ``prompt`` (the messages without the assistant turn) instead of ``messages``, plus
the columns the rewards read: ``instruction`` (the complex instruction C), ``history`` (the edits already applied)
and optionally ``action`` (the reference answer). The SFT layout is converted on the fly, so GRPO trains on the data
builder's output as is.

Every check fails with :class:`DatasetError`, whose one-line message names the dataset, the row and what to do.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from mira.protocol import PROTOCOL_VERSION, SYSTEM_PROMPT, parse_completion, read_user_text

SFT_COLUMNS = ("messages", "images", "protocol_version")
GRPO_COLUMNS = ("prompt", "images", "protocol_version")


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message says what is wrong and what to do."""


def load_splits(
    name: str,
    *,
    train_split: str = "train",
    test_split: str = "test",
    eval_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[Any, Any | None]:
    """(train, eval or None) from a ``save_to_disk`` folder or a hub id.

    The eval split is the dataset's ``test_split`` when it has one; otherwise, with ``eval_fraction > 0``, a seeded
    random ``eval_fraction`` of the trajectories (whole trajectories, so no state leaks between the two splits).
    """
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(name).expanduser()
    if path.exists():
        if not any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            raise DatasetError(f"'{name}' is not a dataset folder written by datasets' save_to_disk")
        try:
            data = load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
            raise DatasetError(f"could not read dataset '{name}': {_first_line(exc)}") from None
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise DatasetError(f"dataset folder '{name}' does not exist; check the path")
    else:
        try:
            data = load_dataset(name)
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(
                f"'{name}' is neither a dataset folder nor a loadable hub dataset ({_first_line(exc)})"
            ) from None

    if isinstance(data, DatasetDict):
        if train_split not in data:
            raise DatasetError(
                f"dataset '{name}' has no '{train_split}' split (it has: {', '.join(data)}); set dataset_train_split"
            )
        train, test = data[train_split], data.get(test_split)
    else:
        train, test = data, None
    if test is None and eval_fraction > 0:
        train, test = split_by_trajectory(train, eval_fraction, seed)
    return train, test


def split_by_trajectory(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Hold out ``fraction`` of the trajectories (all their steps), chosen with ``seed``."""
    if "trajectory_id" not in dataset.column_names:
        parts = dataset.train_test_split(test_size=fraction, seed=seed)
        return parts["train"], parts["test"]
    ids = sorted(dataset.unique("trajectory_id"))
    n_eval = max(1, round(fraction * len(ids)))
    if n_eval >= len(ids):
        raise DatasetError(
            f"eval_fraction {fraction} would hold out all {len(ids)} trajectories; lower it or add a test split"
        )
    held_out = set(random.Random(seed).sample(ids, n_eval))
    train = dataset.filter(lambda tid: tid not in held_out, input_columns="trajectory_id")
    test = dataset.filter(lambda tid: tid in held_out, input_columns="trajectory_id")
    return train, test


def prepare_sft_dataset(dataset: Any, *, validate_rows: int | None = 1000, name: str = "dataset") -> Any:
    """Check an SFT dataset (columns, protocol version, messages, images) and return it ready for TRL."""
    dataset = _prepare(dataset, SFT_COLUMNS, name)
    _check_rows(dataset, "messages", ("system", "user", "assistant"), validate_rows, name)
    return dataset


def prepare_grpo_dataset(
    dataset: Any, *, needs: tuple[str, ...] = (), validate_rows: int | None = 1000, name: str = "dataset"
) -> Any:
    """Check a GRPO dataset and return it with a conversational ``prompt`` column.

    ``needs`` are the extra columns the chosen rewards or rollouts read (``instruction``, ``history``). Rows in the
    SFT layout (``messages``, as the data builder writes them) become GRPO rows: ``prompt`` is the messages without
    the answer, whose parsed action goes to ``action``. Missing ``instruction`` / ``history`` columns are read back
    from the prompt with :func:`mira.protocol.read_user_text`.
    """
    from datasets import List, Value

    columns = set(dataset.column_names)
    added: dict[str, tuple[list[Any], Any]] = {}
    if "prompt" not in columns and "messages" in columns:
        conversations = dataset["messages"]
        prompts = [m[:-1] if m and m[-1].get("role") == "assistant" else m for m in conversations]
        added["prompt"] = (prompts, None)
        if "action" not in columns:
            added["action"] = ([_answer(m) for m in conversations], Value("string"))
        dataset = dataset.remove_columns(["messages"])
    has_prompt = "prompt" in added or "prompt" in columns
    if has_prompt and any(c in needs and c not in columns for c in ("instruction", "history")):
        prompts = added["prompt"][0] if "prompt" in added else dataset["prompt"]
        states = [read_state(p) for p in prompts]
        if None in states:
            raise DatasetError(
                f"{name}, row {states.index(None)}: the user turn is not one MIRA's protocol writes, so the "
                "instruction and history cannot be read from it; add 'instruction' and 'history' columns"
            )
        if "instruction" not in columns:
            added["instruction"] = ([state[0] for state in states], Value("string"))
        if "history" not in columns:
            added["history"] = ([list(state[1]) for state in states], List(Value("string")))
    for column, (values, feature) in added.items():
        dataset = dataset.add_column(column, values, feature=feature)
    dataset = _prepare(dataset, GRPO_COLUMNS + tuple(needs), name)
    _check_rows(dataset, "prompt", ("system", "user"), validate_rows, name)
    return dataset


def _answer(messages: list[dict[str, Any]]) -> str | None:
    """The parsed action of a conversation's final assistant turn, if it has one."""
    if not messages or messages[-1].get("role") != "assistant":
        return None
    return parse_completion(_text(messages[-1])).action


def read_state(prompt: list[dict[str, Any]]) -> tuple[str, tuple[str, ...]] | None:
    """(instruction, history) from a prompt's user turn; None when the protocol did not write it."""
    for message in prompt:
        if message.get("role") == "user":
            for part in message["content"]:
                state = read_user_text(part.get("text") or "") if part.get("type") == "text" else None
                if state is not None:
                    return state
    return None


def _text(message: dict[str, Any]) -> str:
    return "".join(part.get("text") or "" for part in message["content"] if part.get("type") == "text")


def _prepare(dataset: Any, required: tuple[str, ...], name: str) -> Any:
    from datasets import Image, List, Sequence, Value

    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"{name} has no column(s) {', '.join(missing)} (it has: {', '.join(dataset.column_names)}); "
            f"training needs {', '.join(required)} as written by MIRA's data builder"
        )
    if len(dataset) == 0:
        raise DatasetError(f"{name} is empty")
    versions = sorted(str(v) for v in dataset.unique("protocol_version"))
    if versions != [PROTOCOL_VERSION]:
        raise DatasetError(
            f"{name} was built with protocol version {', '.join(versions)} but this MIRA speaks version "
            f"{PROTOCOL_VERSION}; rebuild the dataset with this version of MIRA"
        )
    feature = dataset.features["images"]
    inner = getattr(feature, "feature", None)
    if isinstance(feature, (List, Sequence)) and isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
        dataset = dataset.cast_column("images", List(Image()))  # image paths -> images, decoded when read
    elif not (isinstance(feature, (List, Sequence)) and isinstance(inner, Image)):
        raise DatasetError(f"{name}: column 'images' must be a list of images (or image paths), got {feature}")
    return dataset


def _check_rows(dataset: Any, column: str, roles: tuple[str, ...], limit: int | None, name: str) -> None:
    """Check the messages and decode the images of ``limit`` rows spread over the dataset (all when None)."""
    from mira.images import InputError, load_image

    n = len(dataset)
    count = n if limit is None else min(n, limit)
    indices = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)}) if count else []
    table = dataset.select_columns([column, "images"]).with_format("arrow")[indices]  # images stay encoded
    for row, messages, images in zip(indices, table[column].to_pylist(), table["images"].to_pylist()):
        images = images or []
        got = [m.get("role") for m in messages or []]
        if tuple(got) != roles:
            raise DatasetError(f"{name}, row {row}: turns are {got}, expected {list(roles)}")
        if _text(messages[0]) != SYSTEM_PROMPT:
            raise DatasetError(
                f"{name}, row {row}: the system prompt differs from MIRA protocol version {PROTOCOL_VERSION}; "
                "rebuild the dataset with this version of MIRA"
            )
        placeholders = sum(p.get("type") == "image" for m in messages for p in m["content"])
        if placeholders != len(images):
            raise DatasetError(f"{name}, row {row}: {placeholders} image placeholders but {len(images)} images")
        for i, image in enumerate(images):
            source = image.get("bytes") or image.get("path")
            try:
                if source is None:
                    raise InputError("no bytes and no path")
                load_image(source)
            except InputError as exc:
                raise DatasetError(f"{name}, row {row}, image {i + 1} cannot be read: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
