"""Many trajectories at once: ``K`` concurrent :meth:`MiraAgent.arun` loops over one event loop.

This is what makes served backends pay off: while one trajectory waits for its policy or editor, the others proceed
(the evaluation runner's ``async`` mode does the same with judging and result files added to each item)::

    from mira.batch import BatchItem, run_many
    agent = MiraAgent(policy=OpenAIPolicy("Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://gpu1:8000/v1"),
                      editor=load_editor("http://gpu2:8100"))
    items = [BatchItem("a.png", "make the sky blue, the car red", id="a"), ("b.png", "remove the cup")]
    trajectories = run_many(agent, items, concurrency=32, run_root="runs/batch", resume=True)

- ``items``: :class:`BatchItem` s, ``(image, instruction)`` tuples or dicts with the fields of :class:`BatchItem`.
- Results come back in the order of ``items``. Backend failures are already data (``stop_reason`` policy_error /
  editor_error); an item that raises (an unreadable image, an empty instruction) raises out of ``run_many`` and
  cancels the rest, or, with ``return_exceptions=True``, takes its exception's place in the results.
- ``run_root``: each item gets the run folder ``run_root/<id>`` (``id`` defaults to the item's index, ``00000``...).
  With ``resume=True`` an item whose folder already holds a trajectory is loaded, not run again.
- ``on_result(index, result)`` is called as each item finishes (progress bars, streaming writes).

Concurrency is for backends that serve requests in parallel (HTTP endpoints, natively async backends); backends
that run in-process on one GPU should keep ``concurrency=1``, or be served (``mira serve-editor``).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Union

from mira.agent import MiraAgent
from mira.images import ImageSource
from mira.trajectory import Trajectory

_SAFE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch: an image and an instruction, with an optional id (its folder name) and overrides."""

    image: ImageSource
    instruction: str
    id: str | None = None
    seed: int | None = None
    max_steps: int | None = None


ItemLike = Union[BatchItem, tuple, dict]
Result = Union[Trajectory, BaseException]


def as_item(item: ItemLike) -> BatchItem:
    if isinstance(item, BatchItem):
        return item
    if isinstance(item, dict):
        return BatchItem(**item)
    if isinstance(item, tuple):
        return BatchItem(*item)
    raise TypeError(f"a batch item must be a BatchItem, an (image, instruction) tuple or a dict, got {type(item)}")


def _run_dirs(items: list[BatchItem], run_root: str | Path | None) -> list[Path | None]:
    if run_root is None:
        return [None] * len(items)
    ids = [item.id if item.id is not None else f"{i:05d}" for i, item in enumerate(items)]
    for item_id in ids:
        if not _SAFE_ID.match(item_id):
            raise ValueError(f"item id '{item_id}' cannot name a folder; use letters, digits, '.', '_' and '-'")
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"item id '{duplicate}' is used twice; ids name run folders and must be unique")
    return [Path(run_root) / item_id for item_id in ids]


def _saved(run_dir: Path | None) -> Trajectory | None:
    """The finished trajectory in ``run_dir``, if one was saved there."""
    if run_dir is None or not (run_dir / "trajectory.json").is_file():
        return None
    try:
        traj = Trajectory.load(run_dir)
    except (ValueError, TypeError, KeyError, OSError):  # a folder left half-written: run the item again
        return None
    return traj if traj.stop_reason is not None else None


async def arun_many(
    agent: MiraAgent,
    items: Iterable[ItemLike],
    *,
    concurrency: int = 8,
    run_root: str | Path | None = None,
    resume: bool = False,
    return_exceptions: bool = False,
    on_result: Callable[[int, Result], Any] | None = None,
) -> list[Result]:
    """Run ``agent`` on every item, at most ``concurrency`` at a time; see the module docstring."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    batch = [as_item(item) for item in items]
    run_dirs = _run_dirs(batch, run_root)
    results: list[Any] = [None] * len(batch)
    indices = iter(range(len(batch)))

    async def one(i: int) -> Result:
        item, run_dir = batch[i], run_dirs[i]
        if resume and (saved := _saved(run_dir)) is not None:
            return saved
        try:
            return await agent.arun(item.image, item.instruction, run_dir=run_dir, seed=item.seed,
                                    max_steps=item.max_steps)
        except Exception as exc:
            if not return_exceptions:
                raise
            return exc

    async def worker() -> None:
        for i in indices:  # one shared iterator: each index is taken by exactly one worker
            results[i] = await one(i)
            if on_result is not None:
                on_result(i, results[i])

    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(batch)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return results


def run_many(agent: MiraAgent, items: Iterable[ItemLike], **options: Any) -> list[Result]:
    """Blocking :func:`arun_many` (from code that has no event loop running; otherwise await :func:`arun_many`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_many(agent, items, **options))
    raise RuntimeError("run_many was called inside a running event loop; use `await arun_many(...)` there")
