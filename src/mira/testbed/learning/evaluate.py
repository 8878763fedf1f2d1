"""Evaluation of a learning run: the baselines and the trained policies on the same held-out tasks, one table.

Every method runs through :class:`~mira.agent.MiraAgent` with the same noisy :class:`~mira.testbed.editor.TestbedEditor`
and is scored by :class:`~mira.testbed.judge.TestbedJudge` (success = the final scene is exactly the target), as in
:mod:`mira.testbed.demo`. The learned policies decide greedily; :class:`BatchedPolicy` lets many agents run at once
(``MiraAgent.arun``) and answers their pending decisions in one batched ``generate`` call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mira.agent import MiraAgent
from mira.policies.base import Policy
from mira.protocol import Observation, build_messages
from mira.testbed.demo import MethodResult
from mira.testbed.editor import TestbedEditor
from mira.testbed.judge import TestbedJudge
from mira.testbed.tasks import Task


class BatchedPolicy(Policy):
    """A checkpoint loaded with :class:`~mira.policies.transformers.TransformersPolicy`, decoding greedily; the
    decisions that concurrent :meth:`agenerate` calls ask for are generated together, up to ``max_batch`` at once."""

    name = "transformers-batched"

    def __init__(self, model: str, *, max_batch: int = 64, max_new_tokens: int | None = None):
        from mira.policies.transformers import TransformersPolicy

        self.policy = TransformersPolicy(model, do_sample=False, max_new_tokens=max_new_tokens)
        self.max_batch, self.max_new_tokens = max_batch, max_new_tokens
        self._pending: list[tuple[Observation, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None

    def config(self) -> dict[str, Any]:
        return {**self.policy.config(), "name": self.name, "max_batch": self.max_batch}

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        return self.generate_batch([observation]) * n

    def generate_batch(self, observations: list[Observation]) -> list[str]:
        """One greedy completion per observation, in one ``generate`` call (prompts padded on the left)."""
        import torch

        policy = self.policy.load()
        processor = policy.processor
        processor.tokenizer.padding_side = "left"
        inputs = processor.apply_chat_template(
            [build_messages(o, embed_images=True) for o in observations], add_generation_prompt=True,
            tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True},
        ).to(policy.model.device)
        max_new_tokens = self.max_new_tokens or policy.model.generation_config.max_new_tokens
        with torch.inference_mode():
            output = policy.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    async def agenerate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((observation, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return [await future] * n

    async def _drain(self) -> None:
        while self._pending:
            for _ in range(3):  # let every agent that is about to decide queue its observation
                await asyncio.sleep(0)
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                texts = await asyncio.to_thread(self.generate_batch, [o for o, _ in batch])
            except Exception as exc:  # a failed batch fails each of its decisions; the agents record it
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), text in zip(batch, texts):
                future.set_result(text)


async def _run_all(policy: BatchedPolicy, tasks: list[Task], editor: TestbedEditor, max_steps: int,
                   seed: int) -> list[Any]:
    agents = [MiraAgent(policy=policy, editor=editor, max_steps=max_steps, seed=seed + i) for i in range(len(tasks))]
    return await asyncio.gather(*(a.arun(t.image, t.instruction) for a, t in zip(agents, tasks)))


def run_learned(name: str, model: str, tasks: list[Task], editor: TestbedEditor, max_steps: int, seed: int,
                max_batch: int, max_new_tokens: int) -> tuple[MethodResult, list[Any]]:
    """A trained checkpoint on every task (agents run concurrently, decisions batched); result and trajectories."""
    policy = BatchedPolicy(model, max_batch=max_batch, max_new_tokens=max_new_tokens)
    trajectories = asyncio.run(_run_all(policy, tasks, editor, max_steps, seed))
    judge, result = TestbedJudge(), MethodResult(name)
    for task, trajectory in zip(tasks, trajectories):
        result.record(task, trajectory, judge)
    return result, trajectories
