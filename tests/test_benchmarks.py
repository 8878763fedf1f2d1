"""Benchmarks: the local format, the Hugging Face loaders (on tiny local datasets), the paper-style mix."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from eval_helpers import photo_samples
from mira.eval.benchmarks import (BenchmarkError, build_mix, join_instructions, load_benchmark, load_compbench,
                                  load_complex_edit, load_gedit_bench, load_local, load_magicbrush, write_local)


def _img(value: int) -> Image.Image:
    return Image.new("RGB", (16, 16), (value, value, value))


def test_local_format_round_trip(tmp_path):
    samples = photo_samples(2)
    samples[0].meta = {"complexity": 3}
    samples[1].reference = samples[1].image
    write_local(tmp_path, samples)
    loaded = load_local(tmp_path)
    assert [s.id for s in loaded] == [s.id for s in samples]
    assert loaded[0].instruction == samples[0].instruction and loaded[0].atomic == samples[0].atomic
    assert loaded[0].meta == {"complexity": 3} and loaded[0].reference is None
    assert loaded[1].load_image().tobytes() == samples[1].image.tobytes()
    assert Image.open(loaded[1].reference).size == samples[1].image.size
    assert load_benchmark(str(tmp_path / "samples.jsonl"), limit=1)[0].id == samples[0].id


@pytest.mark.parametrize("lines,message", [
    (['{"image": "a.png", "instruction": "x"}', "{oops"], r"samples.jsonl:2 is not valid JSON"),
    (['{"image": "a.png"}'], r":1 needs an \"image\" path and an \"instruction\""),
    (['{"image": "missing.png", "instruction": "x"}'], "does not exist"),
    (['{"id": "a", "image": "a.png", "instruction": "x"}', '{"id": "a", "image": "a.png", "instruction": "y"}'],
     "used twice"),
    (['{"image": "a.png", "instruction": "x", "atomic": "not a list"}'], "must be a list"),
    ([], "holds no samples"),
])
def test_bad_local_benchmarks_say_which_line_and_what_to_fix(tmp_path, lines, message):
    _img(0).save(tmp_path / "a.png")
    (tmp_path / "samples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchmarkError, match=message):
        load_local(tmp_path)


def test_unknown_benchmarks_and_options_are_refused(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown benchmark 'complexedit'"):
        load_benchmark("complexedit")
    with pytest.raises(BenchmarkError, match="not a benchmark"):
        load_benchmark(str(tmp_path))
    with pytest.raises(BenchmarkError, match="complexity levels run from 1 to 8"):
        load_benchmark("complex-edit", complexity=9)


def test_join_instructions():
    assert join_instructions(["Make the cup red.", "Make the saucer blue", "Add a TV"]) == \
        "Make the cup red, make the saucer blue and add a TV."
    assert join_instructions(["Remove the cat"]) == "Remove the cat."


def test_magicbrush_sessions_become_complex_instructions(tmp_path):
    from datasets import Dataset

    rows = {  # two sessions, stored out of turn order, and a one-turn session that is skipped
        "img_id": ["17", "17", "17", "42", "42", "99"],
        "turn_index": [2, 1, 3, 1, 2, 1],
        "source_img": [_img(2), _img(1), _img(3), _img(10), _img(11), _img(50)],
        "mask_img": [_img(0)] * 6,
        "instruction": ["Make the sofa green", "Put a cat on the sofa", "Add a lamp", "Remove the car",
                        "Make the sky pink", "Add a hat"],
        "target_img": [_img(3), _img(2), _img(4), _img(11), _img(12), _img(51)],
    }
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "mb"))
    samples = load_magicbrush(source=str(tmp_path / "mb"), split="dev")
    assert [s.id for s in samples] == ["magicbrush-17", "magicbrush-42"]
    first = samples[0]
    assert first.atomic == ["Put a cat on the sofa", "Make the sofa green", "Add a lamp"]
    assert first.instruction == "Put a cat on the sofa, make the sofa green and add a lamp."
    assert first.image.getpixel((0, 0)) == (1, 1, 1) and first.reference.getpixel((0, 0)) == (4, 4, 4)


def test_complex_edit_levels(tmp_path):
    from datasets import Dataset, DatasetDict

    def edit(k):
        return {"compound": [{"compound_instruction": f"img{k} level {c}"} for c in range(1, 9)],
                "sequence": [{"instruction": f"img{k} step {c}"} for c in range(1, 9)]}

    data = Dataset.from_dict({"image": [_img(1), _img(2)], "edit": [edit(0), edit(1)]})
    DatasetDict({"test_real": data}).save_to_disk(str(tmp_path / "ce"))
    samples = load_complex_edit(source=str(tmp_path / "ce"), complexity=[2, 8])
    assert [s.id for s in samples] == ["complex-edit-test_real-0000-c2", "complex-edit-test_real-0000-c8",
                                       "complex-edit-test_real-0001-c2", "complex-edit-test_real-0001-c8"]
    assert samples[0].instruction == "img0 level 2" and samples[0].atomic == ["img0 step 1", "img0 step 2"]
    assert samples[1].meta == {"source": "complex-edit", "complexity": 8} and len(samples[1].atomic) == 8
    assert len(load_complex_edit(source=str(tmp_path / "ce"), limit=1)) == 1


def test_gedit_bench_language_and_task_filters(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({
        "key": ["a", "b", "c"], "task_type": ["color_alter", "subject-add", "color_alter"],
        "instruction": ["make it red", "add a dog", "把它变红"], "instruction_language": ["en", "en", "cn"],
        "input_image": [_img(1), _img(2), _img(3)],
    }).save_to_disk(str(tmp_path / "ge"))
    assert [s.id for s in load_gedit_bench(source=str(tmp_path / "ge"))] == ["gedit-a", "gedit-b"]
    only = load_gedit_bench(source=str(tmp_path / "ge"), task_types=["color_alter"], language="cn")
    assert [(s.id, s.instruction) for s in only] == [("gedit-c", "把它变红")]


def test_compbench_and_the_paper_style_mix(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({
        "image_path": [f"{i:03d}.png" for i in range(6)],
        "task": ["multi_object_add", "add", "multi_object_remove", "multi_object_add", "remove", "multi_object_add"],
        "instruction": [f"compbench {i}" for i in range(6)],
        "input_image": [_img(i) for i in range(6)], "edited_image": [_img(100 + i) for i in range(6)],
    }).save_to_disk(str(tmp_path / "cb"))
    comp = load_compbench(source=str(tmp_path / "cb"), tasks=["multi_object_add", "multi_object_remove"])
    assert [s.instruction for s in comp] == ["compbench 0", "compbench 2", "compbench 3", "compbench 5"]
    photos = photo_samples(4)
    mix = build_mix(tmp_path / "mix", [photos, comp], n=5, seed=0)
    loaded = load_local(mix)
    assert len(loaded) == 5
    assert sum(s.id.startswith("compbench") for s in loaded) == 2
    again = build_mix(tmp_path / "mix2", [photo_samples(4), comp], n=5, seed=0)
    assert (mix / "samples.jsonl").read_text() == (again / "samples.jsonl").read_text()
    assert json.loads((mix / "samples.jsonl").read_text().splitlines()[-1])["source"] == "compbench"
    with pytest.raises(BenchmarkError, match="fewer than its share"):
        build_mix(tmp_path / "mix3", [photos, comp], n=20)


def test_missing_hub_datasets_fail_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BenchmarkError, match="source=<local copy>"):
        load_gedit_bench(source="stepfun-ai/GEdit-Bench-not-cached")
