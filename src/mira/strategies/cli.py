"""`mira edit` flags -> :class:`StepStrategy` and verifier (kept here so that cli.py stays a thin front end)."""

from __future__ import annotations

from typing import Any, Optional

from mira.strategies.config import Route, StepStrategy


def strategy_from_flags(
    *,
    verifier: Optional[str],
    best_of: int,
    phrasings: int,
    adaptive_threshold: Optional[float],
    adaptive_gain: Optional[float],
    rollback: int,
    routes: Optional[list[str]],
    compare_with: Optional[list[str]],
    preserve_details: bool,
    max_editor_calls: Optional[int],
    max_seconds: Optional[float],
) -> StepStrategy:
    """The step strategy the flags ask for; a :class:`~mira.cli.CLIError` saying which flag is wrong otherwise."""
    from mira.cli import CLIError

    try:
        strategy = StepStrategy(
            n_candidates=best_of, policy_candidates=phrasings, compare_editors=bool(compare_with),
            adaptive_threshold=adaptive_threshold, adaptive_gain=adaptive_gain, rollback=rollback,
            routes=tuple(Route.parse(r) for r in routes or ()), preserve_details=preserve_details,
            max_editor_calls=max_editor_calls, max_seconds=max_seconds,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if strategy.needs_verifier and not verifier:
        raise CLIError("--best-of, --phrasings, --adaptive-*, --rollback and --compare-with compare candidates: "
                       "give a judge with --verifier NAME")
    return strategy


def load_verifier(spec: str, **options: Any) -> Any:
    """The judge registered as ``spec`` (through ``mira.registry.load_judge``)."""
    from mira import registry
    from mira.cli import CLIError

    load_judge = getattr(registry, "load_judge", None)
    if load_judge is None:
        raise CLIError(f"--verifier '{spec}': this installation has no judge registry (mira.registry.load_judge); "
                       "pass a Judge to MiraAgent(verifier=...) from Python instead")
    return load_judge(spec, **options)
