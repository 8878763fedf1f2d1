"""Evaluation of a learning run with the evaluation harness (:mod:`mira.eval`): the baselines, the trained policies
and the oracle on the same held-out tasks, each through :class:`~mira.agent.MiraAgent` with the same noisy
:class:`~mira.testbed.editor.TestbedEditor`, scored by :class:`~mira.testbed.judge.TestbedJudge` (success = the
final scene is exactly the target).

- The tasks are written as a local benchmark (:func:`~mira.testbed.tasks.export_benchmark`) and run by
  :class:`~mira.eval.runner.EvalRunner` in async mode: ``eval_batch`` items at once; the harness keeps every run
  folder, ``results.jsonl`` and its own report (``report.md``, ``gallery.html``), and resumes an interrupted run.
- The harness gives every sample the same base seed, and the testbed editor draws its errors from the seed alone;
  :class:`InputSeededEditor` mixes the image and the instruction into the seed, so errors fall independently on
  each task while every method still meets the same draws in the same state.
- The learned policies decide greedily; :class:`BatchedPolicy` answers the decisions that concurrent agents wait for
  in one batched ``generate`` call.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from statistics import mean
from typing import Any

from PIL import Image

from mira.editors.base import Editor
from mira.policies.base import Policy
from mira.protocol import STOP, Observation, build_messages, format_completion
from mira.testbed.language import split_clauses
from mira.trajectory import image_sha256

METHODS = {"raw": "single-shot", "plan": "static plan", "mira-sft": "MIRA-SFT", "mira-grpo": "MIRA-SFT+GRPO",
           "oracle": "closed loop (oracle)"}


class ClausePlanPolicy(Policy):
    """The open-loop baseline with the exact clause split: the instruction's clauses in the testbed grammar, one per
    step, then ``<STOP>``; it never looks at the images."""

    name = "testbed-plan"

    def generate(self, observation: Observation, *, n: int = 1, seed: int | None = None) -> list[str]:
        clauses, done = split_clauses(observation.instruction), len(observation.history)
        if done >= len(clauses):
            return [format_completion(STOP, "Every clause was issued.")] * n
        return [format_completion(clauses[done], f"Clause {done + 1} of {len(clauses)}.")] * n


class InputSeededEditor(Editor):
    """``editor`` with each call's seed mixed with the image and the instruction (see the module docs)."""

    def __init__(self, editor: Editor):
        self.editor, self.name = editor, editor.name

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
        key = f"{seed}:{image_sha256(image)}:{instruction}".encode()
        return self.editor.edit(image, instruction, seed=int.from_bytes(hashlib.sha256(key).digest()[:4], "big"))

    def params(self) -> dict[str, Any]:
        return self.editor.params()

    def config(self) -> dict[str, Any]:
        return {**self.editor.config(), "seed": "mixed with the image and the instruction"}


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


def evaluate(folder: Path, models: dict[str, Path], *, n: int, seed: int, clauses: tuple[int, int],
             error_rate: float, max_steps: int, concurrency: int, max_new_tokens: int) -> dict[str, dict[str, Any]]:
    """Run (or resume) every method of :data:`METHODS` on ``n`` held-out tasks in ``folder``; per method: success
    rate, mean SC, editor calls per task, success by number of clauses, stop reasons."""
    from mira.eval.benchmarks import load_local
    from mira.eval.report import write_report
    from mira.eval.runner import Backends, EvalRunner
    from mira.policies.baselines import PassthroughPolicy
    from mira.testbed.editor import TestbedEditor
    from mira.testbed.judge import TestbedJudge
    from mira.testbed.oracle import OraclePolicy
    from mira.testbed.tasks import export_benchmark

    if not (folder / "benchmark" / "samples.jsonl").is_file():
        export_benchmark(folder / "benchmark", n, seed, clauses)
    policies: dict[str, Policy] = {"raw": PassthroughPolicy(), "plan": ClausePlanPolicy(), "oracle": OraclePolicy()}
    for name, path in models.items():
        policies[name] = BatchedPolicy(str(path), max_batch=concurrency, max_new_tokens=max_new_tokens)
    methods = [m for m in METHODS if m in policies]
    backends = Backends(editor=InputSeededEditor(TestbedEditor(error_rate=error_rate)), judge=TestbedJudge(),
                        policies={m: policies[m] for m in methods})
    records = EvalRunner(load_local(folder / "benchmark"), methods, folder, backends=backends, seeds=(seed,),
                         max_steps=max_steps, mode="async", concurrency=concurrency, benchmark="testbed",
                         progress=False).run()
    write_report(folder)
    return {METHODS[m]: summarize([r for r in records if r["method"] == m]) for m in methods}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Success (the judge's ``exact``), mean SC, editor calls and stop reasons of one method's records."""
    ok = [bool((r["scores"] or {}).get("details", {}).get("exact")) for r in records]
    ks = [int(r["meta"]["clauses"]) for r in records]
    stops: dict[str, int] = {}
    for r in records:
        stops[r["stop_reason"]] = stops.get(r["stop_reason"], 0) + 1
    return {"success": mean(ok), "mean_sc": mean(float((r["scores"] or {}).get("sc") or 0.0) for r in records),
            "calls": mean(r["editor_calls"] for r in records),
            "by_k": {k: mean(o for o, kk in zip(ok, ks) if kk == k) for k in sorted(set(ks))},
            "stop_reasons": dict(sorted(stops.items())), "tasks": len(records)}
