"""Verifier-guided steps: best-of-N candidates, adaptive N, rollback, editor routing, detail preservation, budget.

Pass a :class:`StepStrategy` and a verifier (any :class:`~mira.judges.base.Judge`) to
:class:`~mira.agent.MiraAgent`; the loop consults the strategy at the execute phase of every step and records every
candidate, its score and the routing decision in the trajectory.
"""

from mira.strategies.budget import Budget
from mira.strategies.config import Route, Routing, StepStrategy, score_value
from mira.strategies.preserve import change_mask, preserve_details, region_fidelity

__all__ = ["Budget", "Route", "Routing", "StepStrategy", "change_mask", "preserve_details", "region_fidelity",
           "score_value"]
