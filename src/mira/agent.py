"""The MIRA loop: perceive, decide one atomic edit, execute it, repeat until ``<STOP>``.

The loop is written once, as a generator that yields backend calls (:class:`PolicyCall`, :class:`EditorCall`,
:class:`JudgeCall`) and receives their results; :meth:`MiraAgent.run` drives it with blocking calls and
:meth:`MiraAgent.arun` with ``await``, so local GPU backends and served backends share one implementation of the stop
rules.

The execute phase of a step follows a :class:`~mira.strategies.StepStrategy`: by default one editor call, as in the
paper; optionally several candidates (seeds, policy phrasings, editors) of which a verifier keeps the best, rollback
of steps that made things worse, routing between several editors, detail preservation and a budget.

Stop rules, recorded as ``Trajectory.stop_reason``:

- ``stop``: the policy answered ``<STOP>``;
- ``max_steps``: ``max_steps`` edits were executed;
- ``repeat``: the policy asked for the edit it had just asked for (the repeated step is kept, not executed);
- ``policy_error``: the backend raised, or ``1 + max_parse_retries`` completions in a row could not be parsed;
- ``editor_error``: the editor failed ``1 + editor_retries`` times on the same step with no candidate produced;
- ``budget``: the strategy's editor-call or time budget was spent.

Every completed step is kept whatever the stop reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, Sequence, Union

from PIL import Image

from mira.editors.base import Editor
from mira.images import ImageSource, load_image, validate_instruction
from mira.judges.base import Judge, JudgeScores
from mira.policies.base import Policy
from mira.protocol import Observation, ParsedCompletion, parse_completion, same_action
from mira.strategies import Budget, Routing, StepStrategy, preserve_details, score_value
from mira.trajectory import RunWriter, Step, Trajectory, image_sha256


@dataclass(frozen=True)
class PolicyCall:
    observation: Observation
    seed: int
    n: int = 1


@dataclass(frozen=True)
class EditorCall:
    image: Image.Image
    instruction: str
    seed: int
    editor: str | None = None  # a key of MiraAgent.editors; None: the first editor


@dataclass(frozen=True)
class JudgeCall:
    """Score ``edited`` as progress toward the whole ``instruction`` from the original ``source`` image."""

    source: Image.Image
    edited: Image.Image
    instruction: str


Request = Union[PolicyCall, EditorCall, JudgeCall]


@dataclass
class AgentConfig:
    """Loop settings; recorded in every trajectory."""

    max_steps: int = 8
    max_parse_retries: int = 2
    editor_retries: int = 1
    seed: int = 0


def step_seed(base_seed: int, index: int, attempt: int = 0) -> int:
    """Deterministic per-step (and per-retry) seed derived from the run's base seed."""
    return (base_seed * 1_000_003 + index * 1_009 + attempt) % (2**31 - 1)


class AgentCallback:
    """Hooks called by the loop; override what you need. A plain callable passed as a callback is ``on_step``."""

    def on_run_start(self, trajectory: Trajectory) -> None: ...

    def on_decision(self, index: int, parsed: ParsedCompletion, trajectory: Trajectory) -> None: ...

    def on_step(self, step: Step, trajectory: Trajectory) -> None: ...

    def on_run_end(self, trajectory: Trajectory) -> None: ...


class _FunctionCallback(AgentCallback):
    def __init__(self, fn: Callable[[Step, Trajectory], None]):
        self.fn = fn

    def on_step(self, step: Step, trajectory: Trajectory) -> None:
        self.fn(step, trajectory)


Callback = Union[AgentCallback, Callable[[Step, Trajectory], None]]


class MiraAgent:
    """A policy and one or more editors in a closed loop.

    >>> agent = MiraAgent(policy=policy, editor=editor, max_steps=6)
    >>> traj = agent.run("kitchen.jpg", "make the stove black and the floor wooden", run_dir="runs/kitchen")
    >>> traj.final_image.save("out.png")

    ``editor`` is one editor, a list of editors (keyed by their ``name``) or a dict name -> editor; the first is the
    default. ``verifier`` (any :class:`~mira.judges.base.Judge`) scores candidates as progress toward the whole
    instruction from the original image; ``strategy`` says how each step is executed (default: one editor call).

    >>> agent = MiraAgent(policy, {"kontext": kontext, "qwen": qwen}, verifier=judge,
    ...                   strategy=StepStrategy(n_candidates=3, adaptive_gain=0.5, rollback=1, routes=["text=qwen"]))
    """

    def __init__(
        self,
        policy: Policy,
        editor: Editor | Sequence[Editor] | Mapping[str, Editor],
        *,
        max_steps: int = 8,
        max_parse_retries: int = 2,
        editor_retries: int = 1,
        seed: int = 0,
        verifier: Judge | None = None,
        strategy: StepStrategy | None = None,
        callbacks: list[Callback] | None = None,
    ):
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.policy = policy
        self.editors = _editor_dict(editor)
        self.editor = next(iter(self.editors.values()))
        self.verifier = verifier
        self.strategy = strategy or StepStrategy()
        self.strategy.check_editors(self.editors)
        if self.strategy.needs_verifier and verifier is None:
            raise ValueError("this step strategy compares candidates (best-of-N, adaptive N, rollback or editor "
                             "comparison); pass verifier=<a mira.judges.base.Judge>")
        self.config = AgentConfig(max_steps, max_parse_retries, editor_retries, seed)
        self.callbacks: list[AgentCallback] = [
            cb if isinstance(cb, AgentCallback) else _FunctionCallback(cb) for cb in (callbacks or [])
        ]

    # -- public API ---------------------------------------------------------------------------------------------
    def __call__(self, image: ImageSource, instruction: str, **kwargs: Any) -> Trajectory:
        return self.run(image, instruction, **kwargs)

    def run(
        self,
        image: ImageSource,
        instruction: str,
        *,
        run_dir: str | Path | None = None,
        seed: int | None = None,
        max_steps: int | None = None,
        callbacks: list[Callback] | None = None,
    ) -> Trajectory:
        """Run the loop to a stop rule with blocking backend calls; writes ``run_dir`` if given."""
        traj, loop, writer, cbs = self._start(image, instruction, run_dir, seed, max_steps, callbacks)
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = loop.throw(error) if error is not None else loop.send(result)
            except StopIteration:
                break
            result, error = None, None
            try:
                if isinstance(request, PolicyCall):
                    result = self.policy.generate(request.observation, n=request.n, seed=request.seed)
                elif isinstance(request, JudgeCall):
                    result = self.verifier.score(request.source, request.edited, request.instruction)
                else:
                    result = self._editor(request).edit(request.image, request.instruction, seed=request.seed)
            except Exception as exc:  # backend failures become data: the loop decides what to do with them
                error = exc
        return self._finish(traj, run_dir, writer, cbs)

    async def arun(
        self,
        image: ImageSource,
        instruction: str,
        *,
        run_dir: str | Path | None = None,
        seed: int | None = None,
        max_steps: int | None = None,
        callbacks: list[Callback] | None = None,
    ) -> Trajectory:
        """Same as :meth:`run`, awaiting the backends' async methods (many trajectories can run concurrently)."""
        traj, loop, writer, cbs = self._start(image, instruction, run_dir, seed, max_steps, callbacks)
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = loop.throw(error) if error is not None else loop.send(result)
            except StopIteration:
                break
            result, error = None, None
            try:
                if isinstance(request, PolicyCall):
                    result = await self.policy.agenerate(request.observation, n=request.n, seed=request.seed)
                elif isinstance(request, JudgeCall):
                    result = await self.verifier.ascore(request.source, request.edited, request.instruction)
                else:
                    result = await self._editor(request).aedit(request.image, request.instruction, seed=request.seed)
            except Exception as exc:
                error = exc
        return self._finish(traj, run_dir, writer, cbs)

    # -- internals ----------------------------------------------------------------------------------------------
    def _editor(self, request: EditorCall) -> Editor:
        return self.editor if request.editor is None else self.editors[request.editor]

    def _start(self, image, instruction, run_dir, seed, max_steps, callbacks):
        instruction = validate_instruction(instruction)
        source_path = str(image) if isinstance(image, (str, Path)) else None
        original = load_image(image)
        config = AgentConfig(**{**asdict(self.config), **({"seed": seed} if seed is not None else {}),
                                **({"max_steps": max_steps} if max_steps is not None else {})})
        snapshot = {"agent": asdict(config), "policy": self.policy.config(), "editor": self.editor.config()}
        if len(self.editors) > 1:
            snapshot["editors"] = {name: e.config() for name, e in self.editors.items()}
        if self.strategy != StepStrategy():
            snapshot["strategy"] = self.strategy.to_dict()
        if self.verifier is not None:
            snapshot["verifier"] = self.verifier.config()
        traj = Trajectory(
            instruction=instruction,
            source_path=source_path,
            source_sha256=image_sha256(original),
            config=snapshot,
            original=original,
        )
        writer = RunWriter(run_dir) if run_dir is not None else None
        if writer is not None:
            writer.write_image("original.png", original)
        cbs = self.callbacks + [cb if isinstance(cb, AgentCallback) else _FunctionCallback(cb) for cb in callbacks or []]
        for cb in cbs:
            cb.on_run_start(traj)
        return traj, self._loop(traj, config, writer, cbs), writer, cbs

    def _finish(self, traj: Trajectory, run_dir, writer: RunWriter | None, cbs: list[AgentCallback]) -> Trajectory:
        if writer is not None:
            traj.save(run_dir, writer=writer)
            writer.close()
        for cb in cbs:
            cb.on_run_end(traj)
        return traj

    def _loop(
        self, traj: Trajectory, config: AgentConfig, writer: RunWriter | None, cbs: list[AgentCallback]
    ) -> Generator[Request, Any, None]:
        state = _State(traj.original, Budget(self.strategy.max_editor_calls, self.strategy.max_seconds))
        history: list[str] = []
        last_action: str | None = None
        n_completions = self.strategy.policy_candidates
        for index in range(1, config.max_steps + 1):
            if state.budget.out_of_time():
                traj.stop_reason, traj.error = "budget", state.budget.exhausted()
                return
            observation = Observation(traj.instruction, tuple(history), traj.original, state.current)

            # 1. decide, resampling unparseable completions
            parsed: ParsedCompletion | None = None
            candidates: list[ParsedCompletion] = []
            t0 = time.perf_counter()
            attempts = 0
            for attempt in range(1 + config.max_parse_retries):
                attempts = attempt + 1
                try:
                    completions = yield PolicyCall(observation, step_seed(config.seed, index, attempt), n_completions)
                except Exception as exc:
                    traj.stop_reason, traj.error = "policy_error", f"policy failed at step {index}: {_describe(exc)}"
                    return
                candidates = [parse_completion(c) for c in list(completions or [""])[:n_completions]]
                parsed = next((c for c in candidates if c.ok), candidates[0])
                if parsed.ok:
                    break
            policy_seconds = time.perf_counter() - t0
            assert parsed is not None
            for cb in cbs:
                cb.on_decision(index, parsed, traj)
            if not parsed.ok:
                traj.stop_reason = "policy_error"
                traj.error = f"{attempts} unparseable completions at step {index}: {parsed.error}"
                return
            step = Step(
                index=index, raw_completion=parsed.raw, reasoning=parsed.reasoning, action=parsed.action,
                policy_seconds=policy_seconds, parse_attempts=attempts,
            )
            if parsed.is_stop:
                self._append(traj, step, cbs)
                traj.stop_reason = "stop"
                return
            if same_action(parsed.action, last_action):
                step.extra["not_executed"] = "repeat of the previous edit"
                self._append(traj, step, cbs)
                traj.stop_reason = "repeat"
                return

            # 2. execute: one editor call, or candidates, verifier, rollback ... as the strategy says
            stop = yield from self._execute(traj, config, writer, state, step, _phrasings(candidates, last_action))
            self._append(traj, step, cbs)
            if stop is not None:
                traj.stop_reason = stop
                return
            if step.image is not None:
                history.append(step.action)
                last_action = step.action
        traj.stop_reason = "max_steps"

    def _execute(
        self, traj: Trajectory, config: AgentConfig, writer: RunWriter | None, state: "_State", step: Step,
        actions: list[str],
    ) -> Generator[Request, Any, str | None]:
        """Execute one step: fill ``step`` (image, candidates, scores, routing) and, when the step is kept, move
        ``state`` to its image. Returns a stop reason (``editor_error``, ``budget``), or None to go on.

        Candidates cycle through (phrasing, editor) pairs, each editor call with its own seed; a failed call is
        retried (new seed) up to ``editor_retries`` times. A round of ``n_candidates`` candidates (at least one per
        pair) ends early once one clears the adaptive threshold; a round whose best is worse than the previous image
        is rolled back (at most ``rollback`` times), and a step whose every round was worse is rejected.
        """
        s, budget = self.strategy, state.budget
        routing = s.route(actions[0], list(self.editors))
        plan = [(action, editor) for editor in routing.editors for action in actions]
        baseline: float | None = None
        if s.rollback or s.adaptive_gain is not None:
            if state.scores is None:
                state.scores = yield from self._verify(traj, state.current, step)
            baseline = score_value(state.scores, s.score_key)
            step.extra["baseline_score"] = baseline
        images: dict[int, tuple[Image.Image, JudgeScores | None]] = {}  # candidate number -> image, scores
        failures = 0
        t0 = time.perf_counter()
        for round_ in range(1, 2 + s.rollback):
            kept = 0
            while kept < max(s.n_candidates, len(plan)) and budget.exhausted() is None \
                    and failures <= config.editor_retries:
                action, editor = plan[len(images) % len(plan)]
                cand = {"n": len(step.candidates) + 1, "round": round_, "action": action, "editor": editor,
                        "seed": step_seed(config.seed, step.index, len(step.candidates))}
                step.candidates.append(cand)
                budget.spend_call()
                result = yield from self._candidate(traj, state, step, cand)
                if result is None:
                    failures += 1
                    continue
                failures, kept, images[cand["n"]] = 0, kept + 1, result
                if s.clears(cand.get("score"), baseline):
                    break
            best = _best(step.candidates, images)
            if (best is None or round_ > s.rollback or not s.is_worse(best.get("score"), baseline)
                    or budget.exhausted() is not None or failures > config.editor_retries):
                break
            step.extra.setdefault("rollbacks", []).append(
                f"round {round_}: best score {best['score']:.3g} < previous image's {baseline:.3g}")
        step.editor_seconds = time.perf_counter() - t0

        best = _best(step.candidates, images)
        last = best or (step.candidates[-1] if step.candidates else {"seed": None, "editor": routing.editors[0]})
        step.seed, step.editor = last["seed"], last["editor"]
        step.editor_params = self.editors[step.editor].params()
        if best is None:
            if failures > config.editor_retries:
                step.extra["editor_error"] = failure = step.candidates[-1]["error"]
                traj.error = f"editor failed {failures} times at step {step.index}: {failure}"
                return "editor_error"
            step.extra["not_executed"] = traj.error = budget.exhausted()
            return "budget"
        self._settle(step, best, images, routing, baseline, state, writer)
        return None

    def _candidate(
        self, traj: Trajectory, state: "_State", step: Step, cand: dict[str, Any]
    ) -> Generator[Request, Any, tuple[Image.Image, JudgeScores | None] | None]:
        """One editor call from the current image (preserved and scored as the strategy says), recorded in
        ``cand``; None when the editor failed."""
        s = self.strategy
        c0 = time.perf_counter()
        try:
            image = yield EditorCall(state.current, cand["action"], cand["seed"], cand["editor"])
        except Exception as exc:
            image, error = None, _describe(exc)
        else:
            error = None if isinstance(image, Image.Image) else f"editor returned {type(image).__name__}, not an image"
        cand["seconds"] = time.perf_counter() - c0
        if error is not None:
            cand["error"] = error
            return None
        if s.preserve_details:
            image, cand["changed_fraction"] = preserve_details(
                state.current, image, threshold=s.preserve_threshold, radius=s.preserve_radius,
                feather=s.preserve_feather)
        scores = None
        if self.verifier is not None:
            scores = yield from self._verify(traj, image, step)
            cand["scores"] = {k: v for k, v in scores.to_dict().items() if v not in (None, {}, "")}
            cand["score"] = score_value(scores, s.score_key)
        return image, scores

    def _settle(self, step: Step, best: dict[str, Any], images: dict, routing: Routing, baseline: float | None,
                state: "_State", writer: RunWriter | None) -> None:
        """Record the step's outcome: keep the best candidate, or reject the step when rollback found it worse."""
        image, scores = images[best["n"]]
        step.action = best["action"]
        if scores is not None:
            step.scores = {k: float(getattr(scores, k)) for k in ("overall", "sc", "pq")
                           if isinstance(getattr(scores, k), (int, float))}
        if len(self.editors) > 1:
            reason = routing.reason if len(routing.editors) == 1 else (
                f"verifier picked {best['editor']} among {', '.join(routing.editors)}")
            step.extra["route"] = {"editor": best["editor"], "reason": reason, "rule": routing.rule}
        if self.strategy.is_worse(best.get("score"), baseline):
            step.extra["rejected"] = (f"every candidate scored below the previous image ({best['score']:.3g} < "
                                      f"{baseline:.3g}); the previous image is kept")
        else:
            best["chosen"] = True
            step.image = state.current = image
            state.scores = scores
        if writer is not None:
            for cand in step.candidates:
                if cand.get("chosen"):
                    cand["image_path"] = step.image_path = writer.write_image(f"step_{step.index:03d}.png", image)
                elif cand["n"] in images:
                    cand["image_path"] = writer.write_image(f"step_{step.index:03d}_cand_{cand['n']}.png",
                                                            images[cand["n"]][0])

    def _verify(self, traj: Trajectory, image: Image.Image, step: Step) -> Generator[Request, Any, JudgeScores]:
        """The verifier's scores of ``image`` (progress toward the instruction from the original); never raises."""
        step.extra["verifier_calls"] = step.extra.get("verifier_calls", 0) + 1
        try:
            scores = yield JudgeCall(traj.original, image, traj.instruction)
        except Exception as exc:
            return JudgeScores(error=_describe(exc))
        return scores if isinstance(scores, JudgeScores) else JudgeScores(
            error=f"verifier returned {type(scores).__name__}, not JudgeScores")

    @staticmethod
    def _append(traj: Trajectory, step: Step, cbs: list[AgentCallback]) -> None:
        traj.steps.append(step)
        for cb in cbs:
            cb.on_step(step, traj)


@dataclass
class _State:
    """What the loop carries between steps: the current image, its verifier scores (once known), the budget."""

    current: Image.Image
    budget: Budget
    scores: JudgeScores | None = None


def _editor_dict(editor: Editor | Sequence[Editor] | Mapping[str, Editor]) -> dict[str, Editor]:
    if hasattr(editor, "edit"):
        return {editor.name: editor}
    items = list(editor.items()) if isinstance(editor, Mapping) else [(e.name, e) for e in editor]
    if not items:
        raise ValueError("give at least one editor")
    if len({name for name, _ in items}) != len(items):
        raise ValueError("editors need distinct names; pass a dict name -> editor")
    return dict(items)


def _phrasings(parsed: list[ParsedCompletion], last_action: str | None) -> list[str]:
    """The distinct atomic edits among the completions, first first, leaving out ``<STOP>`` and the previous edit."""
    out: list[str] = []
    for p in parsed:
        if p.ok and not p.is_stop and not same_action(p.action, last_action) and \
                not any(same_action(p.action, a) for a in out):
            out.append(p.action)
    return out


def _best(candidates: list[dict[str, Any]], images: dict) -> dict[str, Any] | None:
    """The produced candidate with the highest score (unscored ones last; ties: the earliest)."""
    produced = [c for c in candidates if c["n"] in images]
    if not produced:
        return None
    return max(produced, key=lambda c: (c.get("score") is not None, c.get("score") or 0.0, -c["n"]))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
