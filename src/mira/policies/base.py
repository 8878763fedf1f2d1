"""The Policy protocol: who decides the next atomic edit.

A policy turns an :class:`~mira.protocol.Observation` into ``n`` raw completions; the agent parses them with
:mod:`mira.protocol`. Backends only need :meth:`Policy.generate`; :meth:`Policy.agenerate` defaults to running it in a
worker thread and is overridden by backends with a native async client (served endpoints).
"""

from __future__ import annotations

import asyncio
from typing import Any

from mira.protocol import Observation


class PolicyError(RuntimeError):
    """The policy backend failed (not a parse failure: those are data)."""


class Policy:
    """Base class of policies. Subclasses set ``name`` and implement :meth:`generate`."""

    name: str = "policy"

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        """Return ``n`` raw completions for one decision."""
        raise NotImplementedError

    async def agenerate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        return await asyncio.to_thread(self.generate, observation, n=n, seed=seed)

    def config(self) -> dict[str, Any]:
        """What to record in a trajectory's config snapshot (never secrets)."""
        return {"name": self.name}
