"""Stage 2 (aggregate): fused instructions and the permutation rules."""

from __future__ import annotations

import pytest

from mira.data.aggregate import (
    AggregateWorker,
    aggregate_session,
    dependencies,
    fuse,
    linear_extensions,
    referred_objects,
)
from mira.data.config import config_from_dict
from mira.data.records import Session, Task


def session(turns, sid="s1", results=None):
    return Session(id=sid, source="jsonl", image="/x.png", turns=turns, results=results)


def keeps_order(order, i, j):
    return order.index(i) < order.index(j)


def test_referred_objects_ignore_verbs_colours_and_function_words():
    assert referred_objects("Make the wooden table black") == {"table"}
    assert referred_objects("add two red hats to the dogs") == {"hat", "dog"}
    assert referred_objects("Remove the glasses from the man") == {"glass", "man"}


def test_dependencies():
    turns = ["add a hat to the dog", "make the wall blue", "make the hat red", "make it shiny"]
    assert dependencies(turns) == {(0, 2), (2, 3)}  # shared object; pronoun -> previous turn
    # a global edit keeps its place against every other edit; the two local ones stay free
    assert dependencies(["make the sofa red", "make the image look like winter", "remove the cat"]) == {(0, 1), (1, 2)}
    assert dependencies(["make the cup red", "make the saucer blue"]) == set()


def test_linear_extensions_keep_dependent_pairs():
    orders = linear_extensions(4, {(0, 2), (2, 3)})
    assert len(orders) == len(set(orders)) == 4  # 4!/(3!) placements of turn 1 around the chain 0 < 2 < 3
    assert all(keeps_order(o, 0, 2) and keeps_order(o, 2, 3) for o in orders)
    assert linear_extensions(3, {(0, 1), (1, 2)}) == [(0, 1, 2)]


def test_permuted_tasks_keep_same_object_edits_in_order():
    turns = ["make the flag blue", "add a red hat to the astronaut", "make the hat bigger", "remove the moon"]
    tasks = aggregate_session(session(turns, results=["1", "2", "3", "4"]), permutations=5, seed=0)
    assert tasks[0].order == [0, 1, 2, 3] and tasks[0].results == ["1", "2", "3", "4"]
    assert len(tasks) == 6 and len({tuple(t.order) for t in tasks}) == 6
    for task in tasks:
        assert keeps_order(task.order, 1, 2)  # the hat is added before it is made bigger
        assert task.turns == [turns[i] for i in task.order]
        assert task.id == f"s1.o{tasks.index(task)}" and task.session_id == "s1"
        # the fused instruction asks for every turn, in the task's order
        positions = [task.instruction.lower().index(t.lower()) for t in task.turns]
        assert positions == sorted(positions)
    assert all(t.results is None for t in tasks[1:])  # human images only match the session's own order


def test_permutations_are_deterministic_per_seed():
    turns = ["make the cup red", "make the saucer blue", "make the table black", "remove the spoon"]
    a = [t.order for t in aggregate_session(session(turns), permutations=3, seed=0)]
    assert a == [t.order for t in aggregate_session(session(turns), permutations=3, seed=0)]
    others = {tuple(tuple(t.order) for t in aggregate_session(session(turns), permutations=3, seed=s))
              for s in range(5)}
    assert len(others) > 1


def test_fuse():
    assert fuse(["Make the cup red.", "Make the saucer blue"]) == "Make the cup red and make the saucer blue."
    assert fuse(["add a hat to the dog", "make the wall blue", "Make the hat red"], {(0, 2)}) == (
        "Add a hat to the dog, make the wall blue, then make the hat red.")
    assert fuse(["Make the sky look like NYC at night"]) == "Make the sky look like NYC at night."


def run_worker(config, rows):
    worker = AggregateWorker(config, "/tmp")
    try:
        return worker.process(0, rows, lambda n: None)
    finally:
        worker.close()


def test_worker_drops_short_long_and_repeated_sessions():
    config = config_from_dict({"work_dir": "w", "sources": [{"kind": "jsonl", "path": "x"}],
                               "aggregate": {"min_turns": 2, "max_turns": 3, "permutations": 1}})
    rows = [session(t, sid=str(i)).to_dict() for i, t in enumerate([
        ["make the cup red"],
        ["make the cup red", "make the saucer blue", "make the table black", "remove the spoon"],
        ["make the cup red", "remove the spoon", "Make the cup red."],
        ["make the cup red", "make the saucer blue"],
        ["make the image darker", "make the cup red"],
    ])]
    out, stats = run_worker(config, rows)
    assert stats.dropped == {"fewer than 2 turns": 1, "more than 3 turns": 1, "repeated turn": 1}
    assert [Task.from_dict(r).id for r in out] == ["3.o0", "3.o1", "4.o0"]
    assert stats.notes == {"no valid reordering": 1}


@pytest.mark.parametrize("reply, note", [("[[1, 3]]", None), ("they all depend on each other", True)])
def test_llm_judge_adds_dependences(scripted_server, reply, note):
    url, state = scripted_server
    state["dependence_reply"] = reply
    config = config_from_dict({"work_dir": "w", "sources": [{"kind": "jsonl", "path": "x"}], "aggregate": {
        "permutations": 10, "judge": {"name": "openai:judge", "options": {"base_url": url}}}})
    turns = ["make the cup red", "make the saucer blue", "make the table black"]
    try:
        out, stats = run_worker(config, [session(turns).to_dict()])
    finally:
        state.pop("dependence_reply")
    orders = [Task.from_dict(r).order for r in out]
    if note:
        assert stats.notes == {"dependence judge reply unusable": 1} and len(orders) == 6
    else:
        assert len(orders) == 3 and all(keeps_order(o, 0, 2) for o in orders)


def test_long_sessions_draw_valid_orders():
    turns = ["make the cup red", "make the saucer blue", "make the table black", "remove the spoon",
             "make the cup shiny", "add a vase"]
    tasks = aggregate_session(session(turns), permutations=3, seed=0)
    assert len(tasks) == 4 and len({tuple(t.order) for t in tasks}) == 4
    assert all(keeps_order(t.order, 0, 4) for t in tasks)  # both touch the cup
