import pytest

from mira.protocol import (
    PROTOCOL_VERSION,
    STOP,
    SYSTEM_PROMPT,
    Observation,
    assistant_message,
    build_messages,
    format_completion,
    parse_completion,
    parse_completion_strict,
    same_action,
)


def test_messages_order_and_placeholders():
    obs = Observation("make the stove black and the floor wooden", ("make the stove black",), "I0", "I1")
    msgs = build_messages(obs)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"][0]["text"] == SYSTEM_PROMPT
    content = msgs[1]["content"]
    kinds = [c["type"] for c in content]
    assert kinds.count("image") == 2
    # the current image comes after the instruction and the history
    first_img, last_img = kinds.index("image"), len(kinds) - 1 - kinds[::-1].index("image")
    texts_before_current = " ".join(c["text"] for c in content[:last_img] if c["type"] == "text")
    assert "make the stove black and the floor wooden" in texts_before_current
    assert "1. make the stove black" in texts_before_current
    assert first_img < last_img
    assert all("image" not in c for c in content if c["type"] == "image")
    assert obs.images == ["I0", "I1"]


def test_embedded_images_follow_placeholder_order():
    obs = Observation("x", (), "orig", "cur")
    imgs = [c["image"] for c in build_messages(obs, embed_images=True)[1]["content"] if c["type"] == "image"]
    assert imgs == ["orig", "cur"]


def test_prefix_is_stable_across_steps():
    """Everything before the growing history is identical between steps (prefix caching)."""
    a = build_messages(Observation("C", ()))
    b = build_messages(Observation("C", ("e1", "e2")))
    assert a[0] == b[0]
    assert a[1]["content"][:2] == b[1]["content"][:2]
    head_a, head_b = a[1]["content"][2]["text"], b[1]["content"][2]["text"]
    common = head_a.split("Edits applied so far:")[0]
    assert head_b.startswith(common + "Edits applied so far:")


def test_history_is_numbered_and_none_when_empty():
    assert "Edits applied so far: none" in build_messages(Observation("C"))[1]["content"][2]["text"]
    text = build_messages(Observation("C", ("a", "b", "c")))[1]["content"][2]["text"]
    assert "\n1. a\n2. b\n3. c" in text


@pytest.mark.parametrize("action", ["make the stove black", STOP, "remove the cup on the left"])
def test_round_trip_tolerant_and_strict(action):
    raw = format_completion(action, "the stove is still white")
    for parse in (parse_completion, parse_completion_strict):
        p = parse(raw)
        assert p.ok and p.action == action
        assert p.reasoning == "the stove is still white"
    assert assistant_message(action, "r")["content"][0]["text"] == format_completion(action, "r")


def test_format_rejects_empty_action():
    with pytest.raises(ValueError):
        format_completion("  ")


def test_version_is_exposed():
    assert isinstance(PROTOCOL_VERSION, str) and PROTOCOL_VERSION


TOLERANT_CASES = [
    ("<think>x</think><answer>make the sky blue</answer>", "make the sky blue"),
    ("<answer>make the sky blue</answer>", "make the sky blue"),
    ("<think>x</think>\n<answer>\n  make the sky blue \n</answer>\n", "make the sky blue"),
    ("<think>x</think><answer><STOP></answer>", STOP),
    ("<think>x</think><answer>STOP</answer>", STOP),
    ("<think>x</think><answer>[STOP]</answer>", STOP),
    ("<think>x</think><answer><stop></answer>", STOP),
    ("<think>x</think><answer>Done.</answer>", STOP),
    ("<STOP>", STOP),
    ("make the sky blue", "make the sky blue"),
    ("Edit: make the sky blue", "make the sky blue"),
    ("Next atomic edit: make the sky blue", "make the sky blue"),
    ('<answer>"make the sky blue"</answer>', "make the sky blue"),
    ("<answer>1. make the sky blue</answer>", "make the sky blue"),
    ("<answer>- make the sky blue</answer>", "make the sky blue"),
    ("<think>x</think>make the sky blue", "make the sky blue"),
    ("<think>x</think><answer>make the sky blue", "make the sky blue"),
    ("<answer>first</answer> then <answer>make the sky blue</answer>", "make the sky blue"),
    ("<ANSWER>make the sky blue</ANSWER>", "make the sky blue"),
    ("<answer>make   the\tsky blue</answer>", "make the sky blue"),
    ("<answer>make the sky blue\nand also more text</answer>", "make the sky blue"),
    ("<think>a</think><think>b</think><answer>make the sky blue</answer>", "make the sky blue"),
    ("<answer>**make the sky blue**</answer>", "make the sky blue"),
]

TOLERANT_ERRORS = [
    "",
    "   ",
    "<think>never closed and no answer",
    "<think>x</think><answer></answer>",
    "<think>x</think>",
    "<answer>" + "a" * 500 + "</answer>",
]


@pytest.mark.parametrize("raw,expected", TOLERANT_CASES)
def test_tolerant_parser(raw, expected):
    p = parse_completion(raw)
    assert p.error is None, p.error
    assert p.action == expected


@pytest.mark.parametrize("raw", TOLERANT_ERRORS)
def test_tolerant_parser_errors_are_data(raw):
    p = parse_completion(raw)
    assert not p.ok and p.error and p.action is None


def test_tolerant_parser_non_text():
    assert parse_completion(None).error  # type: ignore[arg-type]


STRICT_REJECT = [
    "<answer>make the sky blue</answer>",
    "make the sky blue",
    "<think></think><answer>make the sky blue</answer>",
    "<think>x</think><answer>make the sky blue</answer> trailing",
    "prefix <think>x</think><answer>make the sky blue</answer>",
    "<think>x</think><answer>STOP</answer>",
    "<think>x</think><answer>[<STOP>]</answer>",
    "<think>x</think><answer>line one\nline two</answer>",
    "<think>x</think><answer>a</answer><answer>b</answer>",
    "<think>x<answer>y</answer></think><answer>z</answer>",
    "<think>x</think><answer>" + "a" * 401 + "</answer>",
]


@pytest.mark.parametrize("raw", STRICT_REJECT)
def test_strict_parser_rejects(raw):
    p = parse_completion_strict(raw)
    assert not p.ok and p.error


def test_strict_accepts_surrounding_whitespace():
    assert parse_completion_strict("  <think>x</think> <answer>a b</answer>\n").action == "a b"


def test_same_action():
    assert same_action("Make the sky blue.", "make  the sky blue")
    assert not same_action("make the sky blue", "make the sky red")
    assert not same_action(None, "x")
