"""The shape every shard-processing stage shares: a worker built once (it may load models) that turns the rows
of one input shard into output rows and counts.

:meth:`ShardWorker.process` runs :meth:`ShardWorker.handle` over the shard's rows on the worker's own event loop,
``concurrency`` rows at a time, and keeps the input order in the output, so a shard's output does not depend on
timing. Rows that a stage drops are counted in :class:`~mira.data.store.StageStats` by reason.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any, Callable

from mira.data.config import BuildConfig
from mira.data.store import StageStats


def stable_seed(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (the same on every machine and every run)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


class ShardWorker:
    """Base class of stage workers; subclasses implement :meth:`handle` (or override :meth:`process`)."""

    concurrency: int = 1

    def __init__(self, config: BuildConfig, work_dir: Path):
        self.config = config
        self.work_dir = Path(work_dir)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def handle(self, row: dict[str, Any], stats: StageStats) -> list[dict[str, Any]]:
        """Output rows for one input row (none when it is dropped: count the reason in ``stats``)."""
        raise NotImplementedError

    def start_shard(self, index: int) -> None:
        """Called before each shard (reset per-shard caches here)."""

    def process(
        self, index: int, rows: list[dict[str, Any]], advance: Callable[[int], None]
    ) -> tuple[list[dict[str, Any]], StageStats]:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        self.start_shard(index)
        return self._loop.run_until_complete(self._process(rows, advance))

    async def _process(
        self, rows: list[dict[str, Any]], advance: Callable[[int], None]
    ) -> tuple[list[dict[str, Any]], StageStats]:
        stats = StageStats(inputs=len(rows))
        limit = asyncio.Semaphore(self.concurrency)

        async def one(row: dict[str, Any]) -> list[dict[str, Any]]:
            async with limit:
                out = await self.handle(row, stats)
            advance(1)
            return out

        results = await asyncio.gather(*(one(r) for r in rows))
        out = [r for group in results for r in group]
        stats.kept = len(out)
        return out, stats

    def close(self) -> None:
        from mira.clients.retry import aclose_clients

        if self._loop is not None:
            self._loop.run_until_complete(aclose_clients())
            self._loop.close()
            self._loop = None
