"""Stage 3 (rewrite): template and chat-model paraphrases, two levels, N variants, deduplicated."""

from __future__ import annotations

import asyncio

from mira.data.config import config_from_dict
from mira.data.records import Task
from mira.data.rewrite import RewriteWorker, TemplateParaphraser, dedupe_key, select_variants
from mira.protocol import parse_completion_strict


def task(tid, turns):
    return Task(id=tid, session_id="s", source="jsonl", licence="x", image="/x.png", turns=turns,
                order=list(range(len(turns))), instruction=" and ".join(turns) + ".")


def config(url=None, **rewrite):
    data = {"work_dir": "w", "sources": [{"kind": "jsonl", "path": "x"}], "rewrite": rewrite}
    if url:
        data["rewrite"]["backend"] = {"name": "openai:rewriter", "options": {"base_url": url}}
    return config_from_dict(data)


def rewrite(cfg, rows):
    worker = RewriteWorker(cfg, "/tmp")
    try:
        out, stats = worker.process(0, [r.to_dict() for r in rows], lambda n: None)
    finally:
        worker.close()
    return [Task.from_dict(r) for r in out], stats


def test_select_variants_dedupes_and_keeps_only_usable_ones():
    got = select_variants("Make the cup red", ["make the cup red!", "Paint the cup red", "paint  the cup red.",
                                               "Turn the cup red\nand the plate blue", "<STOP>", "Color the cup red",
                                               "Recolor the cup red"], 2, complex_instruction=False)
    assert got == ["Make the cup red", "Paint the cup red", "Color the cup red"]
    assert dedupe_key("Paint,  the cup RED!") == dedupe_key("paint the cup red")


def test_template_paraphraser_is_deterministic_and_usable():
    para = TemplateParaphraser()
    a = asyncio.run(para.paraphrase("Remove the cup", 3, complex_instruction=False, seed=1))
    assert a == asyncio.run(para.paraphrase("Remove the cup", 3, complex_instruction=False, seed=1))
    assert a != asyncio.run(para.paraphrase("Remove the cup", 3, complex_instruction=False, seed=2))
    chosen = select_variants("Remove the cup", a, 3, complex_instruction=False)
    assert len(chosen) == 4 and all(parse_completion_strict(f"<think>x</think><answer>{v}</answer>").ok
                                    for v in chosen)


def test_template_rewrite_fills_both_levels():
    tasks, stats = rewrite(config(atomic_variants=2, complex_variants=3), [task("a", ["remove the cup",
                                                                                      "make the table black"])])
    (t,) = tasks
    assert t.instruction_variants[0] == t.instruction and len(t.instruction_variants) == 4
    assert [len(v) for v in t.turn_variants] == [3, 3]
    assert [v[0] for v in t.turn_variants] == t.turns
    for variants in [t.instruction_variants, *t.turn_variants]:
        assert len({dedupe_key(v) for v in variants}) == len(variants)
    assert not stats.dropped


def test_chat_rewrite_dedupes_and_paraphrases_each_text_once(scripted_server):
    url, state = scripted_server
    before = state.get("requests", 0)
    turns = ["make the cup red", "make the saucer blue"]
    tasks, stats = rewrite(config(url, atomic_variants=5, complex_variants=1),
                           [task("a", turns), task("b", turns[::-1])])
    # 2 distinct atomic turns + 2 fused instructions; the turns shared by both tasks are asked for once
    assert state["requests"] - before == 4
    a, b = tasks
    # the server repeats the original and sends "Please x" twice (with and without a period): both removed
    assert a.turn_variants[0] == ["make the cup red", "Kindly make the cup red.", "Please make the cup red",
                                  "make the cup red, if you can."]
    assert b.turn_variants[1] == a.turn_variants[0]
    assert len(a.instruction_variants) == 2
    assert stats.notes == {"fewer variants than asked": 2}  # 5 asked, 3 new ones offered per turn


def test_unusable_reply_keeps_the_original(scripted_server):
    url, _ = scripted_server
    tasks, stats = rewrite(config(url, atomic_variants=2, complex_variants=0), [task("a", ["make it UNPARSEABLE"])])
    assert tasks[0].turn_variants == [["make it UNPARSEABLE"]]
    assert tasks[0].instruction_variants == [tasks[0].instruction]
    assert stats.notes == {"rewriter reply unusable": 1}
