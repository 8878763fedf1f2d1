"""Reading scores out of a judge's free-form reply.

Judges are asked for ``{"reasoning": "...", "score": [a, b]}`` but answer in many shapes. :func:`parse_scores` tries,
in order, and takes the first shape that yields scores:

1. JSON (or a Python-style dict / list) in a fenced code block or anywhere in the text, after dropping ``<think>``
   blocks; trailing commas and single quotes are tolerated. Scores come from a ``score`` / ``scores`` / ``rating`` key
   (a number, a list, or a dict of named scores), else from keys that name the criteria (``"edit_success": 7``,
   ``"no_artifacts": {"score": 9}``), also one level down (``{"evaluation": {...}}``);
2. labelled numbers in prose: ``Edit success: 7``, ``over-editing an 8/10``, ``**Naturalness** - 6.5``;
3. numbers written against a scale: ``7/10``, ``85/100``, ``4 out of 5``;
4. a ``score`` label followed by one or more numbers: ``Score: 7``, ``Final score = 7 and 8``;
5. a reply that is nothing but numbers: ``7``, ``7, 8``, ``[7 8]``.

A value written against a scale (``4/5``) is converted to 0-10; any other value outside 0-10 makes the reply
unreadable (the judge is resampled) rather than being clipped. One to ``len(names)`` values are accepted (a judge
that gives one number for a criterion is taken at its word); more is an error. Nothing here raises on bad input: the
result carries ``error`` instead.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

NUMBER = r"[-+]?\d+(?:\.\d+)?"
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_SCALE_RE = re.compile(rf"({NUMBER})\s*(?:/|out\s+of)\s*(100|10|5)\b(?!\s*[/.]\d)", re.IGNORECASE)
_RANGE_RE = re.compile(r"\(?\b[01]\s*(?:-|–|to)\s*(?:100|10|5)\b\)?", re.IGNORECASE)
_SCORE_LABEL_RE = re.compile(
    rf"\b(?:final\s+)?(?:scores?|ratings?)\b[^0-9\n\[]{{0,15}}?\[?\s*({NUMBER}(?:\s*/\s*(?:100|10|5))?"
    rf"(?:\s*(?:,|;|and|&)\s*{NUMBER}(?:\s*/\s*(?:100|10|5))?)*)",
    re.IGNORECASE,
)
_GAP = r"(?:[\s:=*_\"'(),-]|\b(?:is|of|a|an|at|gets?|scored?|scores|rating|rated)\b)*?"
_ONLY_NUMBERS_RE = re.compile(rf"\A[\s\[\(]*{NUMBER}(?:\s*(?:,|;|\s|and)\s*{NUMBER})*[\s\]\).]*\Z", re.IGNORECASE)
_REASONING_KEYS = ("reasoning", "reason", "explanation", "rationale", "analysis", "justification", "comment")
_SCORE_KEYS = ("score", "scores", "rating", "ratings", "final_score", "finalscore")

# criterion name -> the words a judge may use for it (matched case-, space-, dash- and underscore-insensitively)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "edit_success": ("edit success", "editing success", "success", "instruction following", "prompt following",
                     "instruction compliance", "semantic"),
    "overediting": ("overediting", "over editing", "over-editing", "consistency", "preservation"),
    "naturalness": ("naturalness", "natural"),
    "artifacts": ("artifacts", "artifact", "artefacts", "artefact"),
}


@dataclass
class ParsedScores:
    """Scores read from one reply, on 0-10, in the order of the requested names (fewer if the judge gave fewer)."""

    raw: str
    values: list[float] = field(default_factory=list)
    reasoning: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.values)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _to_number(value: Any, scale: float) -> float | None:
    """A number from an int / float / numeric string (``"7"``, ``"7/10"``, ``"8.5 out of 10"``), on 0-``scale``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if (m := _SCALE_RE.fullmatch(text)) is not None:
            return float(m.group(1)) * scale / float(m.group(2))
        try:
            return float(text)
        except ValueError:
            return None
    if isinstance(value, dict):
        for k in _SCORE_KEYS + ("value",):
            for key, v in value.items():
                if _key(key) == _key(k):
                    return _to_number(v, scale)
    return None


def _numbers(value: Any, scale: float) -> list[float] | None:
    if isinstance(value, (list, tuple)):
        out = [_to_number(v, scale) for v in value]
        return out if out and all(v is not None for v in out) else None  # type: ignore[return-value]
    number = _to_number(value, scale)
    return None if number is None else [number]


def _from_object(obj: Any, names: tuple[str, ...], scale: float, depth: int = 0) -> list[float] | None:
    """Scores from a parsed JSON value (see the module docstring for the keys looked at)."""
    if isinstance(obj, (list, tuple)):
        if all(isinstance(v, dict) for v in obj) and obj:  # [{"name": "edit_success", "score": 7}, ...]
            merged: dict[str, Any] = {}
            for item in obj:
                label = next((str(v) for k, v in item.items() if _key(k) in ("name", "criterion", "aspect")), None)
                if label is not None:
                    merged[label] = item
            return _from_object(merged, names, scale, depth + 1) if merged else None
        return _numbers(obj, scale)
    if not isinstance(obj, dict):
        return _numbers(obj, scale)
    keys = {_key(k): k for k in obj}
    for score_key in _SCORE_KEYS:
        if score_key.replace("_", "") in keys:
            value = obj[keys[score_key.replace("_", "")]]
            if isinstance(value, dict):
                named = _named(value, names, scale)
                if named:
                    return named
            found = _numbers(value, scale)
            if found:
                return found
    named = _named(obj, names, scale)
    if named:
        return named
    if depth < 2:
        for value in obj.values():
            if isinstance(value, (dict, list)):
                found = _from_object(value, names, scale, depth + 1)
                if found:
                    return found
    return None


def _named(obj: dict[str, Any], names: tuple[str, ...], scale: float) -> list[float] | None:
    out: list[float] = []
    for name in names:
        words = [_key(w) for w in SYNONYMS.get(name, (name,))] + [_key(name)]
        match = next((v for k, v in obj.items() if any(w in _key(k) for w in words)), None)
        number = _to_number(match, scale) if match is not None else None
        if number is not None:
            out.append(number)
    return out or None


def _reasoning_of(obj: Any) -> str:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if _key(key) in _REASONING_KEYS and isinstance(value, str):
                return value.strip()
    return ""


def _balanced(text: str) -> list[str]:
    """Outermost ``{...}`` and ``[...]`` spans in order, skipping brackets inside double-quoted strings."""
    pairs = {"{": "}", "[": "]"}
    spans, stack, start, in_string, escaped = [], [], -1, False, False
    for i, ch in enumerate(text):
        if in_string:
            escaped = not escaped and ch == "\\"
            if ch == '"' and not escaped:
                in_string = False
            continue
        if ch == '"' and stack:
            in_string, escaped = True, False
        elif ch in pairs:
            if not stack:
                start = i
            stack.append(pairs[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                spans.append(text[start : i + 1])
    return spans


def _load(text: str) -> Any:
    """JSON, JSON with trailing commas, or a Python literal; None if none of them reads."""
    for candidate in (text, re.sub(r",\s*([}\]])", r"\1", text)):
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            pass
        try:
            return ast.literal_eval(candidate)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    return None


def _structured(body: str, names: tuple[str, ...], scale: float) -> tuple[list[float], str] | None:
    blocks = _FENCE_RE.findall(body)
    for chunk in [*blocks, body]:
        for span in _balanced(chunk):
            obj = _load(span)
            if obj is None:
                continue
            found = _from_object(obj, names, scale)
            if found:
                return found, _reasoning_of(obj)
    return None


def _labelled(body: str, names: tuple[str, ...], scale: float) -> list[float] | None:
    out = []
    for name in names:
        words = sorted(SYNONYMS.get(name, (name,)), key=len, reverse=True)
        alternatives = "|".join(r"[\s_-]*".join(map(re.escape, re.split(r"[\s_-]+", w))) for w in words)
        pattern = rf"(?:{alternatives})\w*{_GAP}({NUMBER}(?:\s*(?:/|out\s+of)\s*(?:100|10|5))?)"
        m = re.search(pattern, body, re.IGNORECASE)
        if m is not None:
            number = _to_number(m.group(1), scale)
            if number is not None:
                out.append(number)
    return out or None


def _split_numbers(text: str, scale: float) -> list[float]:
    parts = re.findall(rf"{NUMBER}(?:\s*/\s*(?:100|10|5)\b)?", text)
    return [n for n in (_to_number(p, scale) for p in parts) if n is not None]


def _body(raw: str) -> str:
    body = _THINK_RE.sub(" ", raw)
    lower = body.lower()
    if "</think>" in lower:  # an opening tag the chat template added, or reasoning that never opened
        body = body[lower.rindex("</think>") + len("</think>"):]
    elif "<think>" in lower:  # reasoning that never closed: the scores, if any, are inside it
        body = body[lower.index("<think>") + len("<think>"):]
    return body.strip()


def parse_scores(raw: Any, names: tuple[str, ...], *, scale: float = 10.0) -> ParsedScores:
    """Read up to ``len(names)`` scores on 0-``scale`` from a judge's reply (see the module docstring)."""
    if not isinstance(raw, str):
        return ParsedScores(raw=str(raw), error=f"reply is {type(raw).__name__}, not text")
    body = _body(raw)
    if not body:
        return ParsedScores(raw=raw, error="empty reply")
    values: list[float] | None = None
    reasoning = ""
    if (structured := _structured(body, names, scale)) is not None:
        values, reasoning = structured
    prose = _RANGE_RE.sub(" ", body)  # "Naturalness (0-10): 7" must not read as 0
    if values is None:
        values = _labelled(prose, names, scale)
    if values is None:
        scaled = [float(m.group(1)) * scale / float(m.group(2)) for m in _SCALE_RE.finditer(prose)]
        values = scaled or None
    if values is None and (m := _SCORE_LABEL_RE.search(prose)) is not None:
        values = _split_numbers(m.group(1), scale) or None
    if values is None and _ONLY_NUMBERS_RE.match(prose):
        values = _split_numbers(prose, scale) or None
    reasoning = reasoning or body[:500]
    if not values:
        return ParsedScores(raw=raw, reasoning=reasoning, error="no scores found in the reply")
    if len(values) > len(names):
        return ParsedScores(raw=raw, reasoning=reasoning,
                            error=f"expected at most {len(names)} scores ({', '.join(names)}), found {len(values)}")
    for v in values:
        if math.isnan(v) or not 0.0 <= v <= scale:
            return ParsedScores(raw=raw, reasoning=reasoning, error=f"score {v:g} is outside 0-{scale:g}")
    return ParsedScores(raw=raw, values=[round(v, 4) for v in values], reasoning=reasoning)
