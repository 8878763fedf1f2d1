"""The MIRA loop: perceive, decide one atomic edit, execute it, repeat until ``<STOP>``.

The loop is written once, as a generator that yields backend calls (:class:`PolicyCall`, :class:`EditorCall`) and
receives their results; :meth:`MiraAgent.run` drives it with blocking calls and :meth:`MiraAgent.arun` with
``await``, so local GPU backends and served backends share one implementation of the stop rules.

Stop rules, recorded as ``Trajectory.stop_reason``:

- ``stop``: the policy answered ``<STOP>``;
- ``max_steps``: ``max_steps`` edits were executed;
- ``repeat``: the policy asked for the edit it had just asked for (the repeated step is kept, not executed);
- ``policy_error``: the backend raised, or ``1 + max_parse_retries`` completions in a row could not be parsed;
- ``editor_error``: the editor failed ``1 + editor_retries`` times on the same step.

Every completed step is kept whatever the stop reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Union

from PIL import Image

from mira.editors.base import Editor
from mira.images import ImageSource, load_image, validate_instruction
from mira.policies.base import Policy
from mira.protocol import Observation, ParsedCompletion, parse_completion, same_action
from mira.trajectory import RunWriter, Step, Trajectory, image_sha256


@dataclass(frozen=True)
class PolicyCall:
    observation: Observation
    seed: int


@dataclass(frozen=True)
class EditorCall:
    image: Image.Image
    instruction: str
    seed: int


Request = Union[PolicyCall, EditorCall]


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
    """A policy and an editor in a closed loop.

    >>> agent = MiraAgent(policy=policy, editor=editor, max_steps=6)
    >>> traj = agent.run("kitchen.jpg", "make the stove black and the floor wooden", run_dir="runs/kitchen")
    >>> traj.final_image.save("out.png")
    """

    def __init__(
        self,
        policy: Policy,
        editor: Editor,
        *,
        max_steps: int = 8,
        max_parse_retries: int = 2,
        editor_retries: int = 1,
        seed: int = 0,
        callbacks: list[Callback] | None = None,
    ):
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.policy = policy
        self.editor = editor
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
                    result = self.policy.generate(request.observation, n=1, seed=request.seed)
                else:
                    result = self.editor.edit(request.image, request.instruction, seed=request.seed)
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
                    result = await self.policy.agenerate(request.observation, n=1, seed=request.seed)
                else:
                    result = await self.editor.aedit(request.image, request.instruction, seed=request.seed)
            except Exception as exc:
                error = exc
        return self._finish(traj, run_dir, writer, cbs)

    # -- internals ----------------------------------------------------------------------------------------------
    def _start(self, image, instruction, run_dir, seed, max_steps, callbacks):
        instruction = validate_instruction(instruction)
        source_path = str(image) if isinstance(image, (str, Path)) else None
        original = load_image(image)
        config = AgentConfig(**{**asdict(self.config), **({"seed": seed} if seed is not None else {}),
                                **({"max_steps": max_steps} if max_steps is not None else {})})
        traj = Trajectory(
            instruction=instruction,
            source_path=source_path,
            source_sha256=image_sha256(original),
            config={"agent": asdict(config), "policy": self.policy.config(), "editor": self.editor.config()},
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
        current = traj.original
        history: list[str] = []
        last_action: str | None = None
        for index in range(1, config.max_steps + 1):
            observation = Observation(traj.instruction, tuple(history), traj.original, current)
            seed = step_seed(config.seed, index)

            # 1. decide, resampling unparseable completions
            parsed: ParsedCompletion | None = None
            t0 = time.perf_counter()
            attempts = 0
            for attempt in range(1 + config.max_parse_retries):
                attempts = attempt + 1
                try:
                    completions = yield PolicyCall(observation, step_seed(config.seed, index, attempt))
                except Exception as exc:
                    traj.stop_reason, traj.error = "policy_error", f"policy failed at step {index}: {_describe(exc)}"
                    return
                parsed = parse_completion(completions[0] if completions else "")
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

            # 2. execute, retrying a failed edit
            step.editor, step.editor_params = self.editor.name, self.editor.params()
            t0 = time.perf_counter()
            new_image: Image.Image | None = None
            failure = ""
            for attempt in range(1 + config.editor_retries):
                step.seed = seed if attempt == 0 else step_seed(config.seed, index, attempt)
                try:
                    new_image = yield EditorCall(current, parsed.action, step.seed)
                except Exception as exc:
                    failure = _describe(exc)
                    continue
                if isinstance(new_image, Image.Image):
                    break
                failure, new_image = f"editor returned {type(new_image).__name__}, not an image", None
            step.editor_seconds = time.perf_counter() - t0
            if new_image is None:
                step.extra["editor_error"] = failure
                self._append(traj, step, cbs)
                traj.stop_reason = "editor_error"
                traj.error = f"editor failed {1 + config.editor_retries} times at step {index}: {failure}"
                return
            step.image = new_image
            if writer is not None:
                step.image_path = writer.write_image(f"step_{index:03d}.png", new_image)
            self._append(traj, step, cbs)
            history.append(parsed.action)
            last_action = parsed.action
            current = new_image
        traj.stop_reason = "max_steps"

    @staticmethod
    def _append(traj: Trajectory, step: Step, cbs: list[AgentCallback]) -> None:
        traj.steps.append(step)
        for cb in cbs:
            cb.on_step(step, traj)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
