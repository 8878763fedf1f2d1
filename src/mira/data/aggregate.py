"""Stage 2, aggregate: fuse a session's atomic turns into one complex instruction, plus permuted variants.

Two turns are *dependent* when their order matters; every order produced here keeps dependent turns in their
original relative order (orders are the linear extensions of the dependence graph). The deterministic heuristic
(:func:`dependencies`) calls turns i < j dependent when

- they refer to a common object word (``"add a hat to the dog"`` / ``"make the hat red"``), after dropping edit
  verbs, function words and attribute words (colours, materials, sizes, positions);
- turn j points back with a pronoun (``it``, ``them``, ``same`` ...): it depends on turn j-1;
- either turn edits the whole picture (style, lighting, season, "the image" ...).

When a chat backend is configured as ``aggregate.judge``, it may add dependences (never remove the heuristic's).
The fused instruction lists the turns in order, joining a turn that depends on an earlier one with "then".
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import AbstractSet, Any

from mira.data.backends import load_chat_spec
from mira.data.config import BuildConfig
from mira.data.prompts import dependence_messages, parse_pairs
from mira.data.records import Session, Task
from mira.data.store import StageStats
from mira.data.worker import ShardWorker, stable_seed
from mira.protocol import same_action

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?")

EDIT_VERBS = frozenset("""
make makes change changes turn turns add adds remove removes delete erase replace replaces put place paint painted
color colour recolor recolour colored coloured give let have swap move insert set convert transform modify edit
adjust alter draw fill cover hang dress show take get rid switch apply increase decrease reduce enlarge shrink
brighten darken rotate flip crop blur sharpen keep leave look looks looking appear become include fix restore
""".split())

FUNCTION_WORDS = frozenset("""
the a an of to in on at into onto with without and or but for from by as is are be been being was were it's its it
this that these those some any all every each more less very so like please can could would should will you your i me
my we our us they them their there here then now also just instead new than too not no yes up down out off over under
about around near next between through across behind inside outside top bottom left right middle center centre front
back side upper lower corner one ones other another same him her his he she which what who where when while
two three four five six seven eight nine ten several many few both
""".split())

ATTRIBUTE_WORDS = frozenset("""
red orange yellow green blue purple violet pink brown black white gray grey beige gold golden silver bronze cyan
magenta teal navy maroon turquoise dark light bright pale colorful colourful transparent wooden wood metal metallic
glass marble brick stone leather plastic fabric velvet striped spotted plain shiny matte big bigger biggest small
smaller smallest large larger tiny huge tall taller short shorter long longer wide narrow thin thick round square
old older young younger happy sad angry smiling open closed full empty wet dry clean dirty
""".split())

GLOBAL_WORDS = frozenset("""
image picture photo photograph scene style everything whole entire overall lighting weather season night daytime
sunset sunrise winter summer autumn fall filter brightness contrast saturation sepia cartoon painting sketch
watercolor watercolour anime vintage
""".split())

BACK_REFERENCES = frozenset("it its them their they same him her his he she".split())

MAX_ORDERS_ENUMERATED = 720
EXACT_UP_TO = 4


def _lemma(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _words(instruction: str) -> list[str]:
    return _WORD_RE.findall(instruction.lower())


def referred_objects(instruction: str) -> frozenset[str]:
    """Object words an instruction refers to (lemmatised), without verbs, function and attribute words."""
    skip = EDIT_VERBS | FUNCTION_WORDS | ATTRIBUTE_WORDS
    return frozenset(_lemma(w) for w in _words(instruction) if len(w) > 2 and w not in skip)


def is_global(instruction: str) -> bool:
    """Whether an instruction edits the whole picture (style, lighting, season ...)."""
    return any(w in GLOBAL_WORDS for w in _words(instruction))


def refers_back(instruction: str) -> bool:
    """Whether an instruction points back to something named earlier (``make it red``)."""
    return any(w in BACK_REFERENCES for w in _words(instruction))


def dependencies(turns: list[str]) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, of turns whose relative order must be kept (the heuristic described above)."""
    objects = [referred_objects(t) for t in turns]
    global_ = [is_global(t) for t in turns]
    deps: set[tuple[int, int]] = set()
    for j in range(1, len(turns)):
        if refers_back(turns[j]):
            deps.add((j - 1, j))
        for i in range(j):
            if global_[i] or global_[j] or objects[i] & objects[j]:
                deps.add((i, j))
    return deps


def linear_extensions(k: int, deps: set[tuple[int, int]], limit: int = MAX_ORDERS_ENUMERATED) -> list[tuple[int, ...]]:
    """Orders of ``range(k)`` that keep every pair of ``deps`` in order (at most ``limit``, lexicographic)."""
    before: dict[int, set[int]] = {j: set() for j in range(k)}
    for i, j in deps:
        before[j].add(i)
    out: list[tuple[int, ...]] = []

    def walk(prefix: tuple[int, ...], placed: frozenset[int]) -> None:
        if len(out) >= limit:
            return
        if len(prefix) == k:
            out.append(prefix)
            return
        for node in range(k):
            if node not in placed and before[node] <= placed:
                walk(prefix + (node,), placed | {node})

    walk((), frozenset())
    return out


def random_extension(k: int, deps: set[tuple[int, int]], rng: random.Random) -> tuple[int, ...]:
    """One order of ``range(k)`` that keeps ``deps``, built by placing a random ready turn at each position."""
    before: dict[int, set[int]] = {j: set() for j in range(k)}
    for i, j in deps:
        before[j].add(i)
    placed: list[int] = []
    while len(placed) < k:
        ready = [n for n in range(k) if n not in placed and before[n] <= set(placed)]
        placed.append(rng.choice(ready))
    return tuple(placed)


def choose_orders(k: int, deps: set[tuple[int, int]], n: int, rng: random.Random) -> list[tuple[int, ...]]:
    """The identity order, then up to ``n`` other valid orders drawn with ``rng``.

    Up to :data:`EXACT_UP_TO` turns every valid order is listed and ``n`` are sampled; beyond, orders are drawn
    one at a time (:func:`random_extension`) until ``n`` distinct ones are found or ``20 * n`` draws are spent.
    """
    identity = tuple(range(k))
    if k <= EXACT_UP_TO:
        others = [o for o in linear_extensions(k, deps) if o != identity]
        return [identity] + (rng.sample(others, n) if len(others) > n else others)
    found: list[tuple[int, ...]] = []
    seen = {identity}
    for _ in range(20 * n):
        if len(found) == n:
            break
        order = random_extension(k, deps, rng)
        if order not in seen:
            seen.add(order)
            found.append(order)
    return [identity] + found


def _clause(turn: str, first: bool) -> str:
    text = turn.strip().rstrip(" .!;,")
    if not first and text[:1].isupper() and text[1:2].islower() and text.split()[0].lower() != "i":
        text = text[0].lower() + text[1:]
    return text


def fuse(turns: list[str], deps: AbstractSet[tuple[int, int]] = frozenset()) -> str:
    """One complex instruction that asks for ``turns`` in order; a turn that depends on an earlier one gets "then"."""
    parts = [_clause(t, i == 0) for i, t in enumerate(turns)]
    text = parts[0]
    for j in range(1, len(parts)):
        if any(b == j for _, b in deps):
            text += f", then {parts[j]}"
        elif j == len(parts) - 1:
            text += f" and {parts[j]}"
        else:
            text += f", {parts[j]}"
    return text[:1].upper() + text[1:] + "."


def reorder_deps(deps: set[tuple[int, int]], order: tuple[int, ...]) -> set[tuple[int, int]]:
    """Dependences in the positions of ``order`` (``order[p]`` is the turn placed at position p)."""
    pos = {turn: p for p, turn in enumerate(order)}
    return {(min(pos[i], pos[j]), max(pos[i], pos[j])) for i, j in deps}


def session_rng(seed: int, session_id: str) -> random.Random:
    return random.Random(f"{seed}:{session_id}")


def aggregate_session(
    session: Session, *, permutations: int, seed: int, extra_deps: set[tuple[int, int]] | None = None
) -> list[Task]:
    """The session's tasks: its own order first, then up to ``permutations`` valid reorderings."""
    deps = dependencies(session.turns) | (extra_deps or set())
    orders = choose_orders(len(session.turns), deps, permutations, session_rng(seed, session.id))
    tasks = []
    for n, order in enumerate(orders):
        turns = [session.turns[i] for i in order]
        tasks.append(Task(
            id=f"{session.id}.o{n}", session_id=session.id, source=session.source, licence=session.licence,
            image=session.image, turns=turns, order=list(order), instruction=fuse(turns, reorder_deps(deps, order)),
            results=session.results if n == 0 else None,
        ))
    return tasks


def has_repeats(turns: list[str]) -> bool:
    """Whether two turns ask for the same edit (the agent's repeat rule would stop such a trajectory)."""
    return any(same_action(a, b) for i, a in enumerate(turns) for b in turns[i + 1:])


class AggregateWorker(ShardWorker):
    """Stage worker: sessions in, tasks out (the session's order and its permuted variants)."""

    def __init__(self, config: BuildConfig, work_dir: Path):
        super().__init__(config, work_dir)
        self.judge = load_chat_spec(config.aggregate.judge) if config.aggregate.judge else None
        self.concurrency = config.aggregate.concurrency if self.judge else 1

    async def handle(self, row: dict[str, Any], stats: StageStats) -> list[dict[str, Any]]:
        cfg = self.config.aggregate
        session = Session.from_dict(row)
        k = len(session.turns)
        if k < cfg.min_turns:
            stats.drop(f"fewer than {cfg.min_turns} turns")
            return []
        if k > cfg.max_turns:
            stats.drop(f"more than {cfg.max_turns} turns")
            return []
        if has_repeats(session.turns):
            stats.drop("repeated turn")
            return []
        extra = None
        if self.judge is not None:
            replies = await self.judge.achat(dependence_messages(session.turns), n=1, temperature=0.0,
                                             seed=stable_seed(self.config.seed, "dependence", session.id))
            extra = parse_pairs(replies[0], k) if replies else None
            if extra is None:
                stats.note("dependence judge reply unusable")
        tasks = aggregate_session(session, permutations=cfg.permutations, seed=self.config.seed, extra_deps=extra)
        if cfg.permutations and len(tasks) == 1:
            stats.note("no valid reordering")
        return [t.to_dict() for t in tasks]
