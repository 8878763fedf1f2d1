"""The testbed's small natural language: edits to text (with paraphrases) and text back to edits.

Generation (:func:`edit_text`, :func:`join_clauses`) picks among paraphrases with a seeded ``random.Random``; parsing
(:func:`parse_edit`, :func:`parse_instruction`) accepts every paraphrase generation produces and some more
("colour"/"color", "grey"/"gray", "centre"/"center", "big"/"large", "get rid of", "on the left of", ...).

Positions are grid cells named "top left", "top middle", "top right", "middle left", "center", "middle right",
"bottom left", "bottom middle", "bottom right"; "top", "left", "bottom", "right" alone name the middle cell of that
side. A shape added without a size is large.
"""

from __future__ import annotations

import random
import re

from mira.testbed.edits import Add, Background, Edit, Move, Recolor, Ref, Remove, Resize
from mira.testbed.scene import BACKGROUNDS, COLORS, SHAPES, Cell


class ParseError(ValueError):
    """Text that the testbed grammar does not understand; the message says which part."""


_CELL_NAMES: dict[Cell, tuple[str, ...]] = {
    (0, 0): ("top left", "top-left", "upper left"),
    (0, 1): ("top middle", "top center", "top"),
    (0, 2): ("top right", "top-right", "upper right"),
    (1, 0): ("middle left", "left", "center left"),
    (1, 1): ("center", "middle", "centre"),
    (1, 2): ("middle right", "right", "center right"),
    (2, 0): ("bottom left", "bottom-left", "lower left"),
    (2, 1): ("bottom middle", "bottom center", "bottom"),
    (2, 2): ("bottom right", "bottom-right", "lower right"),
}
_CORNERS = {(0, 0), (0, 2), (2, 0), (2, 2)}
_RELATION_WORDS = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above",),
    "below": ("below", "under", "beneath"),
}

_KIND_WORDS = {**{k: k for k in SHAPES}, "circles": "circle", "disc": "circle", "disk": "circle", "squares": "square",
               "triangles": "triangle", "diamonds": "diamond", "rhombus": "diamond"}
_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "smaller": "small",
               "large": "large", "big": "large", "huge": "large", "larger": "large", "bigger": "large"}
_COLOR_WORDS = {**{c: c for c in COLORS}, **{c: c for c in BACKGROUNDS}, "violet": "purple"}
_VERTICAL = {"top": 0, "upper": 0, "bottom": 2, "lower": 2}
_HORIZONTAL = {"left": 0, "right": 2}
_CENTER = {"center", "middle", "central"}
_NOUNS = {"shape", "object", "thing", "one", "figure", "item"}
_FILLER = {"the", "in", "at", "on", "of", "to", "corner", "cell", "side", "spot", "part", "image", "picture", "canvas",
           "grid", "that", "which", "is", "sits"}

_COLOR_RE = "|".join(_COLOR_WORDS)
_SIZE_RE = "|".join(_SIZE_WORDS)
_RELATION_RE = re.compile(r"\b(?:to the |on the )?(left|right) of\b|\b(above|below|under|beneath|underneath)\b")
_SPLIT_RE = re.compile(r"\s*[,;.]\s*|\s+(?:and then|and|then|after that)\s+")
_LEAD_RE = re.compile(r"^(?:and|then|also|finally|lastly|next|first|firstly|please|now|after that)\b\s*")


def normalise(text: str) -> str:
    """Lower case, British spellings and hyphens folded, punctuation other than , ; . dropped, spaces collapsed."""
    t = text.lower().replace("colour", "color").replace("centre", "center").replace("grey", "gray")
    t = re.sub(r"[^a-z0-9,;. ]+", " ", t.replace("-", " "))
    return re.sub(r"\s+", " ", t).strip(" .")


# -- generation ------------------------------------------------------------------------------------------------------
def cell_name(cell: Cell) -> str:
    """The canonical name of a cell ("top left", "center", ...)."""
    return _CELL_NAMES[cell][0]


def _place(cell: Cell, rng: random.Random, prepositions: tuple[str, ...]) -> str:
    name = rng.choice(_CELL_NAMES[cell])
    if name in ("left", "right") and "to" not in prepositions:
        return f"on the {name}"
    suffix = " corner" if cell in _CORNERS and rng.random() < 0.5 else ""
    return f"{rng.choice(prepositions)} the {name}{suffix}"


def ref_text(ref: Ref, rng: random.Random) -> str:
    """A referring expression for ``ref`` ("the red circle", "the shape in the center", "the circle above ...")."""
    noun = ref.kind or rng.choice(("shape", "object"))
    core = " ".join(w for w in (ref.size, ref.color, noun) if w)
    if ref.cell is not None:
        if (ref.cell in _CORNERS or ref.cell == (1, 1)) and rng.random() < 0.3:
            return f"the {rng.choice(_CELL_NAMES[ref.cell][:2])} {core}"
        return f"the {core} {_place(ref.cell, rng, ('in', 'at'))}"
    if ref.relation is not None and ref.anchor is not None:
        return f"the {core} {rng.choice(_RELATION_WORDS[ref.relation])} {ref_text(ref.anchor, rng)}"
    return f"the {core}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def edit_text(edit: Edit, rng: random.Random) -> str:
    """One paraphrase of ``edit`` as an atomic instruction (lower case, no final period)."""
    if isinstance(edit, Background):
        c = edit.color
        return rng.choice((f"change the background to {c}", f"make the background {c}",
                           f"set the background colour to {c}", f"paint the background {c}",
                           f"use a {c} background", f"turn the background {c}"))
    if isinstance(edit, Add):
        size = rng.choice(("", "large ", "big ")) if edit.size == "large" else rng.choice(("small ", "little "))
        desc = f"{size}{edit.color} {edit.kind}"
        verb = rng.choice(("add", "put", "place", "draw", "insert"))
        return f"{verb} {_article(desc)} {desc} {_place(edit.cell, rng, ('in', 'at'))}"
    ref = ref_text(edit.ref, rng)
    if isinstance(edit, Recolor):
        c = edit.color
        return rng.choice((f"make {ref} {c}", f"turn {ref} {c}", f"change the color of {ref} to {c}",
                           f"change the colour of {ref} to {c}", f"recolor {ref} to {c}", f"paint {ref} {c}",
                           f"change {ref} to {c}"))
    if isinstance(edit, Remove):
        return rng.choice((f"remove {ref}", f"delete {ref}", f"erase {ref}", f"get rid of {ref}",
                           f"take away {ref}", f"take {ref} out"))
    if isinstance(edit, Move):
        verb = rng.choice(("move", "shift", "drag", "relocate"))
        return f"{verb} {ref} {_place(edit.cell, rng, ('to',))}"
    if edit.size == "large":
        return rng.choice((f"make {ref} bigger", f"make {ref} larger", f"enlarge {ref}", f"scale up {ref}",
                           f"make {ref} large"))
    return rng.choice((f"make {ref} smaller", f"shrink {ref}", f"make {ref} small", f"scale down {ref}",
                       f"resize {ref} to small"))


_PLAIN_WORDINGS = {  # two fixed wordings per kind of edit: a rephrasing can always differ from the last request
    Recolor: ("make {ref} {value}", "change the colour of {ref} to {value}"),
    Remove: ("remove {ref}", "delete {ref}"),
    Add: ("add {value} in the {cell}", "put {value} in the {cell}"),
    Move: ("move {ref} to the {cell}", "drag {ref} to the {cell}"),
    Resize: ("make {ref} {value}", "resize {ref} to {value}"),
    Background: ("make the background {value}", "change the background to {value}"),
}


def plain_text(edit: Edit, wording: int = 0) -> str:
    """One of two fixed wordings (``wording`` 0 or 1) of ``edit``, with no random choice.

    References are written attributes first, then the cell ("the shape in the top left", "the red circle");
    relations are not supported here.
    """
    ref = getattr(edit, "ref", None)
    if ref is not None and ref.relation is not None:
        raise ValueError("plain_text does not write relations; name the shape by its cell")
    ref_words = None
    if ref is not None:
        core = " ".join(w for w in (ref.size, ref.color, ref.kind or "shape") if w)
        ref_words = f"the {core}" + (f" in the {cell_name(ref.cell)}" if ref.cell is not None else "")
    if isinstance(edit, Add):
        desc = f"{edit.size} {edit.color} {edit.kind}"
        value = f"{_article(desc)} {desc}"
    else:
        value = getattr(edit, "color", None) or getattr(edit, "size", None)
    cell = cell_name(edit.cell) if isinstance(edit, (Add, Move)) else None
    return _PLAIN_WORDINGS[type(edit)][wording].format(ref=ref_words, value=value, cell=cell)


def join_clauses(clauses: list[str], rng: random.Random) -> str:
    """A complex instruction made of atomic ``clauses``, joined the way people write lists of requests."""
    if not clauses:
        raise ValueError("an instruction needs at least one clause")
    if len(clauses) == 1:
        text = clauses[0]
    else:
        style = rng.choice(("list", "oxford", "then", "sentences"))
        if style == "list":
            text = ", ".join(clauses[:-1]) + " and " + clauses[-1]
        elif style == "oxford":
            text = ", ".join(clauses[:-1]) + (", and " if len(clauses) > 2 else " and ") + clauses[-1]
        elif style == "then":
            text = ", then ".join(clauses[:-1]) + (", and finally " if len(clauses) > 2 else ", then ") + clauses[-1]
        else:
            return " ".join(c[0].upper() + c[1:] + "." for c in clauses)
    return text[0].upper() + text[1:] + "."


# -- parsing ---------------------------------------------------------------------------------------------------------
def _position(words: list[str]) -> Cell | None:
    if not words:
        return None
    row = next((_VERTICAL[w] for w in words if w in _VERTICAL), 1)
    col = next((_HORIZONTAL[w] for w in words if w in _HORIZONTAL), 1)
    return row, col


def parse_position(text: str) -> Cell:
    """The cell a position phrase names ("the top left corner", "center", "the left side")."""
    words = normalise(text).split()
    unknown = [w for w in words if w not in _VERTICAL and w not in _HORIZONTAL and w not in _CENTER
               and w not in _FILLER]
    cell = _position([w for w in words if w not in _FILLER])
    if unknown or cell is None:
        raise ParseError(f"'{text}' is not a position; say e.g. 'top left', 'center' or 'bottom right'")
    return cell


def _simple_ref(text: str) -> Ref:
    kind = color = size = None
    position: list[str] = []
    named = False
    for w in text.split():
        if w in _KIND_WORDS:
            kind = _KIND_WORDS[w]
        elif w in _COLOR_WORDS:
            color = _COLOR_WORDS[w]
        elif w in _SIZE_WORDS:
            size = _SIZE_WORDS[w]
        elif w in _VERTICAL or w in _HORIZONTAL or w in _CENTER:
            position.append(w)
        elif w in _NOUNS:
            named = True
        elif w not in _FILLER:
            raise ParseError(f"unknown word '{w}' in '{text}'")
    if color is not None and color not in COLORS:
        raise ParseError(f"no shape is {color}; shapes are {', '.join(COLORS)}")
    cell = _position(position)
    if not (kind or color or size or cell or named):
        raise ParseError(f"'{text}' does not name a shape")
    return Ref(kind=kind, color=color, size=size, cell=cell)


def parse_ref(text: str) -> Ref:
    """The :class:`Ref` of a referring expression ("the red circle", "the circle left of the square", ...)."""
    t = normalise(text)
    m = _RELATION_RE.search(t)
    if m is None:
        return _simple_ref(t)
    word = m.group(1) or m.group(2)
    relation = {"left": "left of", "right": "right of", "above": "above"}.get(word, "below")
    head, anchor = _simple_ref(t[:m.start()]), _simple_ref(t[m.end():])
    return Ref(head.kind, head.color, head.size, head.cell, relation, anchor)


def _color(word: str, allowed: dict, what: str) -> str:
    color = _COLOR_WORDS[word]
    if color not in allowed:
        raise ParseError(f"'{word}' is not a {what} colour; choose one of {', '.join(allowed)}")
    return color


def _size(word: str) -> str:
    return {"up": "large", "down": "small", "enlarge": "large", "grow": "large", "shrink": "small"}.get(
        word, _SIZE_WORDS.get(word, "large"))


def _add(m: re.Match) -> Add:
    desc = _simple_ref(m["desc"])
    if desc.kind is None or desc.color is None:
        raise ParseError("say which shape and colour to add, e.g. 'add a red circle in the center'")
    return Add(desc.kind, desc.color, desc.size or "large", parse_position(m["pos"]))


_REF = r"(?P<ref>the\s.+?)"
_PATTERNS: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^(?:add|put|place|draw|insert|create|paint)\s(?:a|an|one|another)\s(?P<desc>.+?)"
                r"\s(?:in|at|on|to|into)\s(?P<pos>the\s.+)$"), _add),
    (re.compile(r"^(?:move|shift|drag|slide|relocate|put|place|bring)\s(?P<ref>the\s.+)"
                r"\s(?:to|into|in|at|onto)\s(?P<pos>the\s[a-z ]+)$"),
     lambda m: Move(parse_ref(m["ref"]), parse_position(m["pos"]))),
    (re.compile(r"^(?:remove|delete|erase|eliminate|get rid of|take away|take out)\s(?P<ref>the\s.+)$"),
     lambda m: Remove(parse_ref(m["ref"]))),
    (re.compile(rf"^take\s{_REF}\s(?:out|away)$"), lambda m: Remove(parse_ref(m["ref"]))),
    (re.compile(rf"^(?:make|turn)\s{_REF}\s(?P<size>{_SIZE_RE})$"),
     lambda m: Resize(parse_ref(m["ref"]), _size(m["size"]))),
    (re.compile(r"^(?P<size>enlarge|grow|shrink)\s(?P<ref>the\s.+)$"),
     lambda m: Resize(parse_ref(m["ref"]), _size(m["size"]))),
    (re.compile(r"^scale\s(?P<size>up|down)\s(?P<ref>the\s.+)$"), lambda m: Resize(parse_ref(m["ref"]), _size(m["size"]))),
    (re.compile(rf"^scale\s{_REF}\s(?P<size>up|down)$"), lambda m: Resize(parse_ref(m["ref"]), _size(m["size"]))),
    (re.compile(rf"^resize\s{_REF}\sto\s(?:be\s)?(?:a\s)?(?P<size>{_SIZE_RE})(?:\ssize)?$"),
     lambda m: Resize(parse_ref(m["ref"]), _size(m["size"]))),
    (re.compile(rf"^(?:change|set|switch)\sthe\scolor\sof\s{_REF}\sto\s(?P<color>{_COLOR_RE})$"),
     lambda m: Recolor(parse_ref(m["ref"]), _color(m["color"], COLORS, "shape"))),
    (re.compile(rf"^(?:make|turn|paint|color|recolor|change|fill)\s{_REF}\s(?:to\s|into\s|in\s)?(?:be\s)?"
                rf"(?P<color>{_COLOR_RE})$"),
     lambda m: Recolor(parse_ref(m["ref"]), _color(m["color"], COLORS, "shape"))),
]


def _clean(clause: str) -> str:
    t = normalise(clause)
    while (m := _LEAD_RE.match(t)) is not None and m.end() > 0:
        t = t[m.end():]
    return t.strip(" ,;.")


def parse_edit(clause: str) -> Edit:
    """The edit one atomic instruction asks for; raises :class:`ParseError` for text outside the grammar."""
    t = _clean(clause)
    if not t:
        raise ParseError("the instruction is empty")
    if re.search(r"\bbackground\b", t):
        words = [w for w in t.split() if w in _COLOR_WORDS]
        if not words:
            raise ParseError(f"say which colour the background should be ({', '.join(BACKGROUNDS)})")
        return Background(_color(words[-1], BACKGROUNDS, "background"))
    last: ParseError | None = None
    for pattern, build in _PATTERNS:
        m = pattern.match(t)
        if m is None:
            continue
        try:
            return build(m)  # type: ignore[operator]
        except ParseError as exc:
            last = exc
    raise last or ParseError(f"cannot understand '{clause.strip()}' as a testbed edit")


def split_clauses(instruction: str) -> list[str]:
    """The clauses of a complex instruction, split on commas, semicolons, periods, 'and' and 'then'."""
    pieces = (_clean(p) for p in _SPLIT_RE.split(normalise(instruction)))
    return [p for p in pieces if p]


def parse_instruction(instruction: str) -> list[tuple[str, Edit]]:
    """Every clause of a complex instruction with its edit; raises :class:`ParseError` naming the first bad clause."""
    clauses = split_clauses(instruction)
    if not clauses:
        raise ParseError("the instruction is empty")
    return [(clause, parse_edit(clause)) for clause in clauses]

