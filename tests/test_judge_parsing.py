"""Reading scores out of the shapes real VLM judges answer in."""

from __future__ import annotations

import pytest

from mira.judges.parsing import parse_scores
from mira.judges.prompts import PQ_NAMES, SC_NAMES

READABLE = [
    ("plain JSON", '{"reasoning": "The cup is red but the table is unchanged.", "score": [4, 9]}', [4, 9]),
    ("JSON in a json fence", 'Here is my evaluation:\n```json\n{"score": [7, 8], "reasoning": "ok"}\n```', [7, 8]),
    ("JSON in a bare fence", "```\n{\"score\": [6, 10]}\n```\nLet me know if you need more.", [6, 10]),
    ("VIEScore delimiters", '||V^=^V||\n{\n"score" : [5, 6],\n"reasoning" : "..."\n}\n||V^=^V||', [5, 6]),
    ("named keys", '{"edit_success": 8, "overediting": 6, "reasoning": "mostly fine"}', [8, 6]),
    ("named keys, other words", '{"instruction_following": 9, "no_over_editing": 7}', [9, 7]),
    ("nested named scores", '{"evaluation": {"scores": {"edit success": "8", "over-editing": "5"}}}', [8, 5]),
    ("named dicts", '{"edit_success": {"score": 3, "why": "cup not red"}, "overediting": {"score": 9}}', [3, 9]),
    ("list of criteria", '[{"name": "edit_success", "score": 6}, {"name": "overediting", "score": 8}]', [6, 8]),
    ("single quotes", "{'score': [7, 9], 'reasoning': 'good edit'}", [7, 9]),
    ("trailing comma", '{"score": [7, 9,], "reasoning": "good",}', [7, 9]),
    ("numbers as strings", '{"score": ["7", "8.5"]}', [7, 8.5]),
    ("fractions in JSON", '{"score": ["7/10", "4/5"]}', [7, 8]),
    ("bare list", "[6, 7]", [6, 7]),
    ("bare number", "8", [8]),
    ("comma separated", "7, 8", [7, 8]),
    ("score: 7", "Score: 7", [7]),
    ("scores label with list", "After careful inspection.\nScores: [3, 4]", [3, 4]),
    ("markdown labels", "**Edit success:** 7/10\n**Over-editing:** 9/10\nThe edit mostly works.", [7, 9]),
    ("prose with labels", "I would rate the edit success a 6 and the over-editing an 8, since the stove is black.",
     [6, 8]),
    ("prose with a scale", "The cup is red and nothing else changed. Overall I give this edit 9 out of 10.", [9]),
    ("percent-style scale", "Rating: 85/100", [8.5]),
    ("think block first", "<think>The image has 3 cups and 2 plates, 5 objects.</think>\n{\"score\": [2, 10]}",
     [2, 10]),
    ("closing think only", "3 cups are visible...</think>{\"score\": [6, 6]}", [6, 6]),
    ("JSON after prose with numbers", 'There are 2 cats and 1 dog.\n{"score": [8, 7], "reasoning": "fine"}', [8, 7]),
    ("range annotation", "Edit success (0-10): 7\nOver-editing (0-10): 8", [7, 8]),
    ("decimals", '{"score": [7.5, 6.25]}', [7.5, 6.25]),
]


@pytest.mark.parametrize("label,reply,expected", READABLE, ids=[r[0] for r in READABLE])
def test_readable_shapes(label, reply, expected):
    parsed = parse_scores(reply, SC_NAMES)
    assert parsed.ok, parsed.error
    assert parsed.values == expected


def test_quality_names_are_read_from_prose():
    parsed = parse_scores("Naturalness: 8\nArtifacts: 6 (slight blur on the left)", PQ_NAMES)
    assert parsed.values == [8, 6]


def test_reasoning_comes_from_the_json():
    parsed = parse_scores('{"reasoning": "The floor is wooden.", "score": [9, 9]}', SC_NAMES)
    assert parsed.reasoning == "The floor is wooden."


UNREADABLE = [
    ("empty", "", "empty"),
    ("whitespace", "   \n ", "empty"),
    ("refusal", "I'm sorry, but I can't assist with that request.", "no scores"),
    ("too many scores", '{"score": [7, 8, 9]}', "at most 2"),
    ("out of range", '{"score": [15, 8]}', "outside 0-10"),
    ("negative", "Score: -2", "outside 0-10"),
    ("prose without scores", "The edit turned the cup red and kept the saucer.", "no scores"),
    ("nan", '{"score": [NaN, 7]}', "outside"),
    ("not text", None, "not text"),
]


@pytest.mark.parametrize("label,reply,error", UNREADABLE, ids=[r[0] for r in UNREADABLE])
def test_unreadable_shapes_are_errors_not_exceptions(label, reply, error):
    parsed = parse_scores(reply, SC_NAMES)
    assert not parsed.ok
    assert error in parsed.error


def test_numbers_before_their_labels_are_not_misattributed():
    reply = "The edited image scores 7/10 for success and 9/10 for preservation."
    assert parse_scores(reply, SC_NAMES).values == [7, 9]
