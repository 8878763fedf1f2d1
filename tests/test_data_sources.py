"""Stage 1 (sources) and the build config: readers of SEED-Data-Edit, MagicBrush and JSONL; broken rows counted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import TURNS, build_config, write_jsonl_source
from PIL import Image

from mira.data.config import DataBuildError, config_from_dict, load_config
from mira.data.records import Session
from mira.data.sources import SourcesWorker, plan_sources


def read_all(config, work):
    shards, plan_stats = plan_sources(config)
    worker = SourcesWorker(config, work)
    out, stats = worker.process(0, [ref for shard in shards for ref in shard], lambda n: None)
    worker.close()
    return {s["id"]: Session.from_dict(s) for s in out}, plan_stats, stats


def test_three_sources_become_sessions_and_broken_rows_are_counted(tmp_path, data_photos):
    config = config_from_dict(build_config(tmp_path, data_photos))
    sessions, plan_stats, stats = read_all(config, tmp_path / "work")

    assert plan_stats.dropped == {"malformed row": 1}  # the line that is not JSON
    assert stats.dropped == {"missing image": 1, "unreadable image": 1, "empty turn": 1}
    assert stats.kept == len(sessions) == 7

    coffee = sessions["local-coffee"]
    assert coffee.turns == TURNS["coffee"] and coffee.licence == "unspecified"
    assert [p.rsplit("/", 1)[1] for p in coffee.results] == ["coffee_1.png", "coffee_2.png", "coffee_3.png"]
    assert sessions["local-rocket"].results is None

    seed = [s for s in sessions.values() if s.source == "seed-data-edit"]
    assert sorted(len(s.turns) for s in seed) == [2, 3] and all(s.licence == "CC-BY-NC-4.0" for s in seed)
    assert all(len(s.results) == len(s.turns) for s in seed)

    brush = sessions["magicbrush-100"]
    assert brush.turns == TURNS["chelsea"] and brush.licence == "CC-BY-4.0" and len(brush.results) == 2
    # MagicBrush images are written out as PNGs, pixel for pixel
    assert np.array_equal(np.asarray(Image.open(brush.image)), np.asarray(Image.open(data_photos["chelsea"])))


def test_jsonl_rows_are_checked(tmp_path, data_photos):
    folder = tmp_path / "src"
    write_jsonl_source(folder, data_photos)
    photo = str(data_photos["rocket"])
    bad = [
        {"id": "no-image", "turns": ["make it red"]},
        {"id": "no-turns", "image": photo, "turns": []},
        {"id": "blank", "image": photo, "turns": ["make the rocket red", " "]},
        {"id": "results-mismatch", "image": photo, "turns": ["make the rocket red"], "results": []},
        {"id": "not-an-image", "image": str(folder / "sessions.jsonl"), "turns": ["make the rocket red"]},
        {"id": "local-rocket", "image": photo, "turns": ["a duplicate id"]},
        {"image": "coffee_1.png", "turns": ["make the cup green"], "licence": "CC0-1.0"},
    ]
    with open(folder / "sessions.jsonl", "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in bad) + "[1, 2]\n")
    config = config_from_dict({"work_dir": str(tmp_path / "w"), "sources": [{"kind": "jsonl",
                                                                              "path": str(folder / "sessions.jsonl")}]})
    sessions, plan_stats, stats = read_all(config, tmp_path / "w")

    assert plan_stats.dropped == {"duplicate session id": 1, "malformed row": 1}
    assert stats.dropped == {"malformed row": 2, "no turns": 1, "empty turn": 1, "unreadable image": 1}
    relative = [s for s in sessions.values() if s.id.startswith("jsonl-")]
    assert len(relative) == 1 and relative[0].licence == "CC0-1.0"
    assert relative[0].image == str(folder / "coffee_1.png")  # relative to the JSONL file's folder


def test_limit_and_sharding(tmp_path, data_photos):
    config = config_from_dict({"work_dir": str(tmp_path), "shard_size": 2, "sources": [
        {"kind": "jsonl", "path": str(write_jsonl_source(tmp_path / "a", data_photos)), "limit": 2}]})
    shards, stats = plan_sources(config)
    assert [len(s) for s in shards] == [2] and stats.kept == 2
    config.sources[0].limit = None
    shards, _ = plan_sources(config)
    assert [len(s) for s in shards] == [2, 1]


def test_magicbrush_gap_in_turns_is_dropped(tmp_path, data_photos):
    import datasets

    from data_helpers import write_magicbrush_source

    path = write_magicbrush_source(tmp_path, data_photos)
    ds = datasets.load_from_disk(str(path))["train"]
    ds = ds.map(lambda r: {"turn_index": 3 if r["img_id"] == "200" and r["turn_index"] == 2 else r["turn_index"]})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "gappy"))
    config = config_from_dict({"work_dir": str(tmp_path / "w"), "sources": [
        {"kind": "magicbrush", "path": str(tmp_path / "gappy")}]})
    sessions, _, stats = read_all(config, tmp_path / "w")
    assert list(sessions) == ["magicbrush-100"] and stats.dropped == {"missing turn": 1}


@pytest.mark.parametrize("data, message", [
    ({"sources": []}, "missing the required key 'work_dir'"),
    ({"work_dir": "w", "sources": []}, "no sources"),
    ({"work_dir": "w", "sources": [{"kind": "laion", "path": "x"}]}, "choose one of"),
    ({"work_dir": "w", "sources": [{"kind": "jsonl", "path": "x"}], "rewrite": {"atomic_variant": 2}},
     "unknown key 'atomic_variant' in rewrite"),
    ({"work_dir": "w", "sources": [{"kind": "jsonl", "path": "x"}], "shard_size": "big"}, "shard_size must be int"),
    ({"work_dir": "w", "sources": [{"kind": "jsonl", "path": "x"}], "synthesize": {"human_results": False}},
     "nothing could make trajectories"),
    ({"work_dir": "w", "sources": [{"kind": "seed-data-edit", "path": "x"}]}, "needs 'images'"),
])
def test_config_errors_say_what_is_wrong(data, message):
    with pytest.raises(DataBuildError, match=message):
        config_from_dict(data)


def test_yaml_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "build.yaml"
    path.write_text("work_dir: out\nsources:\n  - {kind: jsonl, path: s.jsonl}\n"
                    "  - {kind: magicbrush, path: osunlp/MagicBrush}\nrank: {judge: pkg.mod:make}\n")
    config = load_config(path)
    assert config.work_dir == str(tmp_path / "cfg" / "out")
    assert config.sources[0].path == str(tmp_path / "cfg" / "s.jsonl")
    assert config.sources[1].path == "osunlp/MagicBrush"  # a hub id stays a hub id
    assert config.rank.judge.name == "pkg.mod:make" and config.rank.judge.options == {}
    path.write_text("work_dir: [unclosed\n")
    with pytest.raises(DataBuildError, match="not valid YAML"):
        load_config(path)
