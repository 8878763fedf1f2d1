"""The testbed world itself: rendering and reading back, edits, the grammar, tasks and session export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from mira.images import load_image, validate_instruction
from mira.testbed.edits import (
    Add, Background, EditError, Move, Recolor, Ref, Remove, Resize, apply_edit, distance, refer, unique_refs,
)
from mira.testbed.language import (
    ParseError, edit_text, join_clauses, normalise, parse_edit, parse_instruction, parse_position, parse_ref, split_clauses,
)
from mira.testbed.scene import (
    Scene, SceneReadError, Shape, add_noise, random_scene, read_scene, render, render_residual,
)
from mira.testbed.tasks import export_benchmark, export_sessions, is_order_free, make_tasks

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def scene(*shapes: tuple, background: str = "white") -> Scene:
    return Scene(background, tuple(Shape(*s) for s in shapes))


# a scene with two circles on either side of a square, a triangle below it
ROW = scene(("circle", "red", "large", (1, 0)), ("square", "blue", "small", (1, 1)),
            ("circle", "green", "small", (1, 2)), ("triangle", "yellow", "large", (2, 1)))


# -- scenes ----------------------------------------------------------------------------------------------------------
def test_render_then_read_is_exact_for_many_random_scenes():
    rng = random.Random(0)
    for _ in range(150):
        s = random_scene(rng, (0, 9))
        img = render(s)
        assert img.size == (128, 128) and img.mode == "RGB"
        assert read_scene(img) == s
        assert render_residual(img, s) == 0.0


def test_render_is_deterministic_and_every_attribute_is_visible():
    base = scene(("circle", "red", "large", (0, 0)))
    assert render(base).tobytes() == render(base).tobytes()
    variants = [scene(("square", "red", "large", (0, 0))), scene(("circle", "blue", "large", (0, 0))),
                scene(("circle", "red", "small", (0, 0))), scene(("circle", "red", "large", (0, 1))),
                scene(("circle", "red", "large", (0, 0)), background="gray")]
    for v in variants:
        assert render(v).tobytes() != render(base).tobytes()
        assert read_scene(render(v)) == v


def test_read_scene_survives_noise_and_resizing():
    rng = random.Random(1)
    for i in range(30):
        s = random_scene(rng, (1, 9))
        assert read_scene(add_noise(render(s), 12.0, i)) == s
        assert read_scene(render(s).resize((256, 256), Image.BICUBIC)) == s
        assert read_scene(render(s).resize((200, 200))) == s


def test_read_scene_refuses_images_that_are_not_scenes():
    with pytest.raises(SceneReadError, match="not a testbed scene"):
        read_scene(load_image(EXAMPLES / "cat.jpg"))
    with pytest.raises(SceneReadError, match="background"):
        read_scene(Image.new("RGB", (128, 128), (220, 20, 20)))


def test_scene_validates_its_contents():
    with pytest.raises(ValueError, match="share a cell"):
        scene(("circle", "red", "large", (0, 0)), ("square", "blue", "large", (0, 0)))
    with pytest.raises(ValueError, match="unknown shape colour"):
        Shape("circle", "pink", "large", (0, 0))
    with pytest.raises(ValueError, match="outside"):
        Shape("circle", "red", "large", (3, 0))
    with pytest.raises(ValueError, match="background"):
        Scene("red")
    assert Scene.from_dict(json.loads(json.dumps(ROW.to_dict()))) == ROW


# -- edits -----------------------------------------------------------------------------------------------------------
def test_each_edit_type_changes_exactly_what_it_says():
    red = Ref(kind="circle", color="red")
    recolored = apply_edit(ROW, Recolor(red, "purple"))
    assert recolored.at((1, 0)).color == "purple" and distance(recolored, ROW) == 1
    removed = apply_edit(ROW, Remove(red))
    assert removed.at((1, 0)) is None and len(removed.shapes) == 3
    added = apply_edit(ROW, Add("diamond", "orange", "small", (0, 2)))
    assert added.at((0, 2)) == Shape("diamond", "orange", "small", (0, 2)) and len(added.shapes) == 5
    moved = apply_edit(ROW, Move(red, (0, 0)))
    assert moved.at((1, 0)) is None and moved.at((0, 0)) == ROW.at((1, 0)).replace(cell=(0, 0))
    resized = apply_edit(ROW, Resize(red, "small"))
    assert resized.at((1, 0)).size == "small" and distance(resized, ROW) == 1
    bg = apply_edit(ROW, Background("black"))
    assert bg.background == "black" and bg.shapes == ROW.shapes


def test_edits_that_cannot_apply_raise():
    with pytest.raises(EditError, match="no shape"):
        apply_edit(ROW, Remove(Ref(kind="diamond")))
    with pytest.raises(EditError, match="taken"):
        apply_edit(ROW, Add("diamond", "orange", "small", (1, 1)))
    with pytest.raises(EditError, match="taken"):
        apply_edit(ROW, Move(Ref(kind="square"), (2, 1)))


def test_references_by_attributes_position_and_relation():
    assert Ref(kind="circle").resolve(ROW) == [ROW.at((1, 0)), ROW.at((1, 2))]
    assert Ref(color="green").resolve(ROW) == [ROW.at((1, 2))]
    assert Ref(cell=(2, 1)).resolve(ROW) == [ROW.at((2, 1))]
    square = Ref(kind="square")
    assert Ref(kind="circle", relation="left of", anchor=square).resolve(ROW) == [ROW.at((1, 0))]
    assert Ref(kind="circle", relation="right of", anchor=square).resolve(ROW) == [ROW.at((1, 2))]
    assert Ref(relation="below", anchor=square).resolve(ROW) == [ROW.at((2, 1))]
    assert Ref(kind="circle", relation="above", anchor=square).resolve(ROW) == []
    assert Ref(kind="circle", relation="left of", anchor=Ref(kind="diamond")).resolve(ROW) == []


def test_refer_always_names_the_shape_alone():
    rng = random.Random(2)
    for _ in range(100):
        s = random_scene(rng, (1, 9))
        for shape in s.shapes:
            assert refer(s, shape, rng).resolve(s) == [shape]
            for group in unique_refs(s, shape).values():
                assert all(r.resolve(s) == [shape] for r in group)


# -- the grammar -----------------------------------------------------------------------------------------------------
PARAPHRASES = {
    Recolor(Ref(kind="circle", color="red"), "blue"): [
        "make the red circle blue", "Turn the red circle blue.", "change the colour of the red circle to blue",
        "recolor the red circle to blue", "paint the red circle blue", "change the red circle to blue",
        "Please make the red circle blue!"],
    Remove(Ref(kind="square")): ["remove the square", "delete the square", "erase the square",
                                 "get rid of the square", "take away the square", "take the square out"],
    Add("triangle", "green", "small", (0, 0)): [
        "add a small green triangle in the top left corner", "put a little green triangle at the top-left",
        "place a small green triangle in the upper left", "draw a small green triangle in the top left"],
    Add("diamond", "orange", "large", (1, 1)): ["add an orange diamond in the center",
                                                "insert a big orange diamond in the middle",
                                                "put a large orange diamond at the centre"],
    Move(Ref(kind="circle", cell=(1, 0)), (2, 2)): [
        "move the circle on the left to the bottom right", "shift the circle in the middle left to the lower right",
        "drag the circle at the center left to the bottom-right corner"],
    Resize(Ref(color="yellow"), "small"): ["make the yellow shape smaller", "shrink the yellow object",
                                           "scale down the yellow shape", "resize the yellow shape to small"],
    Resize(Ref(kind="circle", relation="left of", anchor=Ref(kind="square")), "large"): [
        "make the circle left of the square bigger", "enlarge the circle to the left of the square",
        "scale up the circle on the left of the square", "make the circle left of the square larger"],
    Recolor(Ref(kind="triangle", relation="below", anchor=Ref(kind="square", color="blue")), "purple"): [
        "make the triangle below the blue square purple", "paint the triangle under the blue square violet",
        "turn the triangle beneath the blue square purple"],
    Background("gray"): ["change the background to gray", "make the background grey",
                         "set the background colour to gray", "use a gray background", "paint the background gray"],
}


@pytest.mark.parametrize("edit", list(PARAPHRASES), ids=lambda e: type(e).__name__)
def test_paraphrases_parse_back_to_the_same_edit(edit):
    for text in PARAPHRASES[edit]:
        assert parse_edit(text) == edit, text


def test_generated_text_parses_back_for_every_paraphrase():
    rng = random.Random(3)
    for _ in range(150):
        s = random_scene(rng, (2, 6))
        shape = rng.choice(s.shapes)
        free = s.free_cells[0]
        edits = [Recolor(refer(s, shape, rng), "purple"), Remove(refer(s, shape, rng)),
                 Move(refer(s, shape, rng), free), Resize(refer(s, shape, rng), "small"),
                 Add("diamond", "orange", rng.choice(("small", "large")), free), Background("black")]
        for edit in edits:
            for _ in range(4):
                assert parse_edit(edit_text(edit, rng)) == edit


def test_relation_references_resolve_in_the_scene():
    picked = parse_ref("the circle right of the square").resolve(ROW)
    assert picked == [ROW.at((1, 2))]
    edit = parse_edit("remove the square above the triangle")
    assert apply_edit(ROW, edit) == ROW.without((1, 1))
    # "above" means any higher row: three shapes fit, and the first in reading order is taken
    assert len(parse_ref("the shape above the triangle").resolve(ROW)) == 3


def test_positions_have_plain_names():
    assert parse_position("the top left corner") == (0, 0)
    assert parse_position("center") == (1, 1) == parse_position("the middle")
    assert parse_position("the left side") == (1, 0)
    assert parse_position("bottom") == (2, 1)
    assert parse_position("the lower right") == (2, 2)
    with pytest.raises(ParseError, match="not a position"):
        parse_position("the kitchen")


def test_text_outside_the_grammar_is_a_clear_parse_error():
    with pytest.raises(ParseError, match="unknown word 'cat'"):
        parse_edit("remove the cat")
    with pytest.raises(ParseError, match="'red' is not a background colour"):
        parse_edit("make the background red")
    with pytest.raises(ParseError, match="'gray' is not a shape colour"):
        parse_edit("make the circle gray")
    with pytest.raises(ParseError):
        parse_edit("make it look like a painting by Monet")
    with pytest.raises(ParseError, match="empty"):
        parse_instruction(" , and ")


def test_complex_instructions_split_into_their_clauses():
    rng = random.Random(4)
    clauses = ["make the red circle blue", "remove the square", "move the triangle to the center",
               "change the background to black"]
    for k in range(1, 5):
        for _ in range(10):
            text = join_clauses(clauses[:k], rng)
            assert split_clauses(text) == clauses[:k]
    assert split_clauses("First, make the red circle blue; then remove the square. Finally enlarge the triangle") == [
        "make the red circle blue", "remove the square", "enlarge the triangle"]


# -- tasks and sessions ----------------------------------------------------------------------------------------------
def test_tasks_are_deterministic_order_free_and_parse_back():
    tasks = make_tasks(60, seed=5)
    assert [t.instruction for t in tasks] == [t.instruction for t in make_tasks(60, seed=5)]
    assert {len(t.clauses) for t in tasks} == {1, 2, 3, 4}
    styles = set()
    for t in tasks:
        validate_instruction(t.instruction)
        parsed = parse_instruction(t.instruction)
        assert [edit for _, edit in parsed] == list(t.edits)
        assert [text for text, _ in parsed] == [normalise(c) for c in t.clauses]
        assert is_order_free(t.source, list(t.edits))
        assert t.states()[-1] == t.target and t.target != t.source
        assert read_scene(t.image) == t.source and read_scene(t.target_image) == t.target
        for e in t.edits:
            ref = getattr(e, "ref", None)
            styles.add(type(e).__name__ if ref is None else "relation" if ref.relation else
                       "cell" if ref.cell else "attributes")
    assert styles == {"Add", "Background", "relation", "cell", "attributes"}


def test_order_dependent_clauses_are_detected():
    s = scene(("circle", "red", "large", (0, 0)), ("circle", "blue", "large", (0, 2)))
    # after the first clause "the red circle" names two shapes: the result depends on the order
    edits = [Recolor(Ref(kind="circle", color="blue"), "red"), Remove(Ref(kind="circle", color="red"))]
    assert not is_order_free(s, edits)
    assert is_order_free(s, [Recolor(Ref(color="blue"), "green"), Remove(Ref(color="red"))])


def test_make_tasks_rejects_bad_ranges():
    with pytest.raises(ValueError, match="clause range"):
        make_tasks(3, 0, clauses=(0, 2))


def test_export_sessions_writes_the_data_builder_jsonl(tmp_path):
    path = export_sessions(tmp_path / "sessions", n=6, seed=7, clauses=(2, 3))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    for row in rows:
        assert 2 <= len(row["turns"]) <= 3 and len(row["results"]) == len(row["turns"])
        source = read_scene(load_image(path.parent / row["image"]))
        state = source
        for turn, result in zip(row["turns"], row["results"]):
            state = apply_edit(state, parse_edit(turn))
            assert read_scene(load_image(path.parent / result)) == state
        assert [e for _, e in parse_instruction(row["instruction"])] == [parse_edit(t) for t in row["turns"]]


def test_export_benchmark_writes_the_evaluation_samples(tmp_path):
    folder = export_benchmark(tmp_path / "bench", n=5, seed=8)
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        source = read_scene(load_image(folder / row["image"]))
        target = read_scene(load_image(folder / row["reference"]))
        assert row["clauses"] == len(row["atomic"]) and row["source"] == "testbed"
        assert [e for _, e in parse_instruction(row["instruction"])] == [parse_edit(a) for a in row["atomic"]]
        state = source
        for atomic in row["atomic"]:
            state = apply_edit(state, parse_edit(atomic))
        assert state == target
