"""GRPO rewards: plain callables ``f(prompts, completions, **columns) -> list[float | None]``, as TRL expects.

- :func:`format_reward`: 1 when a completion has exactly the protocol's format
  (:func:`mira.protocol.parse_completion_strict`), else 0.
- :class:`EditReward` (``edit_reward``): the sampled atomic instruction is executed by an editor on the current
  image I(t-1) and a judge scores the result against the complex instruction C. An edit earns its *progress*
  ``(s(I_t) - s(I_{t-1})) / 10``, where ``s(x)`` is the judge's overall 0-10 score of state ``x`` (edited from the
  original I0) against C; ``<STOP>`` earns the finished state's score ``s(I_{t-1}) / 10``. An unparseable answer, or
  the edit just applied asked for again (which the agent would not execute), earns 0.
- :func:`trajectory_reward`: the final image's score of a full rollout to ``<STOP>`` (see
  :class:`mira.train.grpo.TrajectoryRollout`), divided by 10.

A reward is ``None`` (TRL leaves it out) when the editor or the judge failed for that completion: a failed call is
data, not a crash. If every edit (or every judgement) of a batch fails, the reward raises instead, so that a broken
backend stops training rather than silently training on nothing.

:class:`EditEnvironment` holds the editor, the judge and their caches. Editor calls are deduplicated and cached per
(state, action) with a seed derived from both, so a group of completions that agree costs one edit. Distinct calls
run concurrently up to ``editor_workers`` / ``judge_workers`` (raise them for served backends, which are thread safe;
a local diffusers pipeline wants 1).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from mira.editors.base import Editor, EditorError
from mira.judges.base import Judge
from mira.protocol import STOP, parse_completion, parse_completion_strict, same_action
from mira.trajectory import image_sha256

def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a list of messages whose last one is the assistant's."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"] if completion else ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


def format_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 for a completion in the exact protocol format, 0.0 otherwise."""
    return [1.0 if parse_completion_strict(completion_text(c)).ok else 0.0 for c in completions]


def trajectory_reward(
    prompts: list[Any],
    completions: list[Any],
    trajectory_score: list[float | None] | None = None,
    rollout_edits: list[int] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """The judge's score (0-1) of the final image of each completion's rollout to ``<STOP>``."""
    if trajectory_score is None:
        raise ValueError("trajectory_reward needs rollout='trajectory', which provides the trajectory_score column")
    if log_metric is not None and rollout_edits:
        log_metric("trajectory/mean_edits", sum(rollout_edits) / len(rollout_edits))
    return list(trajectory_score)


class _LRU:
    """A small least-recently-used cache."""

    def __init__(self, size: int):
        self.size, self.data = size, OrderedDict()

    def get(self, key: Hashable) -> Any:
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        return None

    def put(self, key: Hashable, value: Any) -> None:
        if self.size <= 0:
            return
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)


class EditEnvironment:
    """An editor and a judge behind caches: executes atomic edits and scores states against a complex instruction.

    ``score`` values are the judge's overall 0-10 score divided by 10, or None when the judgement failed.
    """

    def __init__(
        self,
        editor: Editor,
        judge: Judge,
        *,
        seed: int = 0,
        editor_workers: int = 1,
        judge_workers: int = 1,
        image_cache_size: int = 256,
        score_cache_size: int = 65536,
    ):
        if editor_workers < 1 or judge_workers < 1:
            raise ValueError("editor_workers and judge_workers must be at least 1")
        self.editor, self.judge, self.seed = editor, judge, seed
        self.workers = {"edit": editor_workers, "judge": judge_workers}
        self._edits, self._scores = _LRU(image_cache_size), _LRU(score_cache_size)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._last_error = ""
        self.stats = {"edits": 0, "edit_cache_hits": 0, "edit_failures": 0, "judgements": 0, "judge_failures": 0}

    # -- keys ----------------------------------------------------------------------------------------------------
    def key(self, image: Image.Image) -> str:
        """Content hash of an image (memoised on the object, so a state shared by a group is hashed once)."""
        cached = getattr(image, "_mira_sha256", None)
        if cached is None:
            cached = image_sha256(image)
            try:
                image._mira_sha256 = cached  # type: ignore[attr-defined]
            except AttributeError:
                pass
        return cached

    def edit_seed(self, state: str, action: str) -> int:
        digest = hashlib.sha256(f"{self.seed}|{state}|{_action_key(action)}".encode()).hexdigest()
        return int(digest[:8], 16) % (2**31 - 1)

    # -- batched calls -------------------------------------------------------------------------------------------
    def edit(self, requests: list[tuple[Image.Image, str]]) -> list[Image.Image | None]:
        """Edited images for (state, action) pairs; None where the editor failed."""
        keys = [(self.key(img), _action_key(action)) for img, action in requests]
        first = {k: (img, action) for k, (img, action) in zip(keys, requests)}

        def run(item: tuple) -> Image.Image | None:
            (state, _), (img, action) = item
            try:
                out = self.editor.edit(img, action, seed=self.edit_seed(state, action))
            except Exception as exc:  # noqa: BLE001 - any editor failure is data for the reward
                self._last_error = f"{type(exc).__name__}: {exc}"
                return None
            return out if isinstance(out, Image.Image) else None

        results = self._cached(self._edits, first, run, "edit")
        return [results[k] for k in keys]

    def score(self, requests: list[tuple[Image.Image, Image.Image, str]]) -> list[float | None]:
        """Scores in [0, 1] of states (original, state, instruction); None where the judge failed."""
        keys = [(self.key(orig), self.key(state), text) for orig, state, text in requests]
        first = {k: r for k, r in zip(keys, requests)}

        def run(item: tuple) -> float | None:
            _, (orig, state, text) = item
            try:
                scores = self.judge.score(orig, state, text)
            except Exception as exc:  # noqa: BLE001 - a failed judgement is data
                self._last_error = f"{type(exc).__name__}: {exc}"
                return None
            if not scores.ok:
                self._last_error = f"judge: {scores.error or 'no overall score'}"
                return None
            return min(max(float(scores.overall) / 10.0, 0.0), 1.0)

        results = self._cached(self._scores, first, run, "judge")
        return [results[k] for k in keys]

    def _cached(self, cache: _LRU, work: dict[Hashable, Any], run: Callable[[tuple], Any], what: str) -> dict:
        """Results for every key of ``work``: cached ones, the rest computed by ``run`` (concurrently if allowed)."""
        results, todo = {}, []
        for key in work:
            hit = cache.get(key)
            if hit is not None:
                results[key] = hit
            else:
                todo.append((key, work[key]))
        if what == "edit":
            self.stats["edits"] += len(todo)
            self.stats["edit_cache_hits"] += len(work) - len(todo)
        else:
            self.stats["judgements"] += len(todo)
        if self.workers[what] > 1 and len(todo) > 1:
            if what not in self._pools:
                self._pools[what] = ThreadPoolExecutor(self.workers[what], thread_name_prefix=f"mira-{what}")
            outputs = list(self._pools[what].map(run, todo))
        else:
            outputs = [run(item) for item in todo]
        failures = sum(out is None for out in outputs)
        self.stats["edit_failures" if what == "edit" else "judge_failures"] += failures
        if todo and failures == len(todo):
            raise EditorError(f"every {what} call of this batch failed ({len(todo)}); last error: {self._last_error}")
        for (key, _), out in zip(todo, outputs):
            results[key] = out
            if out is not None:
                cache.put(key, out)
        return results

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False)
        self._pools.clear()


class EditReward:
    """Executed-edit reward (see the module doc); logged by TRL as ``rewards/edit_reward``.

    Reads the dataset columns ``images`` ([original, current]) and ``instruction``, and ``history`` when present.
    """

    __name__ = "edit_reward"

    def __init__(self, environment: EditEnvironment):
        self.environment = environment

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        images: list[list[Image.Image]] | None = None,
        instruction: list[str] | None = None,
        history: list[list[str] | None] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if images is None or instruction is None:
            raise ValueError("edit_reward needs the dataset columns 'images' and 'instruction'")
        env = self.environment
        calls_before = env.stats["edits"]
        actions = []
        for i, completion in enumerate(completions):
            action = parse_completion(completion_text(completion)).action
            last = (history[i] or [None])[-1] if history is not None else None
            actions.append(None if action is None or same_action(action, last) else action)
        states = [(imgs[0], imgs[-1], text) for imgs, text in zip(images, instruction)]
        before = env.score(states)
        edits = [i for i, a in enumerate(actions) if a is not None and a != STOP]
        edited = env.edit([(states[i][1], actions[i]) for i in edits])
        done = [(i, img) for i, img in zip(edits, edited) if img is not None]
        after = dict(zip([i for i, _ in done], env.score([(states[i][0], img, states[i][2]) for i, img in done])))

        rewards: list[float | None] = []
        for i, action in enumerate(actions):
            if action is None:
                rewards.append(0.0)
            elif action == STOP:
                rewards.append(before[i])
            elif after.get(i) is None or before[i] is None:
                rewards.append(None)
            else:
                rewards.append(after[i] - before[i])
        if log_metric is not None:
            n = max(len(actions), 1)
            log_metric("edit_reward/stop_rate", sum(a == STOP for a in actions) / n)
            log_metric("edit_reward/unscored_rate", sum(r is None for r in rewards) / n)
            log_metric("edit_reward/editor_calls", float(env.stats["edits"] - calls_before))
        return rewards


def _action_key(action: str) -> str:
    return " ".join(action.strip().rstrip(".!").lower().split())
