"""Evaluation throughput over served backends, and the runner's own overhead per item.

Backends answer after a fixed latency, as a served model would (natively async, like an HTTP client): a MIRA-style
policy (one edit, then STOP), an editor, and the VIEScore judge over a chat backend (its two questions run
concurrently). One item therefore waits on 4 latencies in a row (policy, editor, policy, judge). The same 64 items
run at concurrency 1 and 32 into fresh output folders; then once more with zero latency at concurrency 1, which
leaves only the runner's own work per item: the agent loop, judge prompts and parsing, run folder (three PNGs,
trajectory.json, report.html), the results record with its fsync.

    python benchmarks/eval_throughput.py [--items 64] [--latency 0.2] [--concurrency 32] [--size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from PIL import Image

from mira.editors.base import Editor
from mira.eval.benchmarks import Sample
from mira.eval.runner import Backends, EvalRunner
from mira.judges.viescore import VIEScoreJudge
from mira.policies.base import Policy
from mira.protocol import STOP, format_completion
from mira.vlm import ChatBackend


class ServedPolicy(Policy):
    name = "served-policy"

    def __init__(self, latency: float):
        self.latency = latency

    async def agenerate(self, observation, *, n=1, seed=None):
        await asyncio.sleep(self.latency)
        action = STOP if observation.history else observation.instruction
        return [format_completion(action, "served")] * n


class ServedEditor(Editor):
    name = "served-editor"

    def __init__(self, latency: float):
        self.latency = latency

    async def aedit(self, image, instruction, *, seed=None):
        await asyncio.sleep(self.latency)
        return Image.blend(image, Image.new("RGB", image.size, (seed or 0) % 256), 0.2)


class ServedChat(ChatBackend):
    def __init__(self, latency: float):
        self.latency = latency

    async def achat(self, messages, *, n=1, seed=None, **sampling):
        await asyncio.sleep(self.latency)
        return [json.dumps({"reasoning": "served", "score": [7, 8]})] * n


def samples(count: int, size: int) -> list[Sample]:
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    images = [Image.fromarray(p).convert("RGB").resize((size, size)) for p in photos]
    return [Sample(f"s{i:03d}", f"make object {i} red and the background blue", images[i % len(images)])
            for i in range(count)]


def timed_run(items: list[Sample], latency: float, concurrency: int) -> float:
    backends = Backends(editor=ServedEditor(latency), policies={"mira": ServedPolicy(latency)},
                        judge=VIEScoreJudge(ServedChat(latency)))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        records = EvalRunner(items, ["mira"], Path(out), backends=backends, mode="async", concurrency=concurrency,
                             progress=False).run()
        elapsed = time.perf_counter() - t0
    assert len(records) == len(items) and all(r["scores"]["error"] is None for r in records)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = parser.parse_args()
    items = samples(args.items, args.size)

    timed_run(items[:2], 0.0, 1)  # warm-up: imports, first PNG encodes
    serial = timed_run(items, args.latency, 1)
    parallel = timed_run(items, args.latency, args.concurrency)
    overhead = timed_run(items, 0.0, 1)
    waits = 4 * args.latency
    print(f"{args.items} items, {args.latency * 1000:.0f} ms per backend call ({waits:.1f} s of waiting per item), "
          f"{args.size}x{args.size} images")
    print(f"{'concurrency':>12} {'seconds':>9} {'items/s':>8}")
    print(f"{1:>12} {serial:>9.2f} {args.items / serial:>8.2f}")
    print(f"{args.concurrency:>12} {parallel:>9.2f} {args.items / parallel:>8.2f}")
    print(f"speed-up {serial / parallel:.1f}x (ideal {min(args.concurrency, args.items)}x)")
    print(f"runner overhead per item (zero-latency backends, concurrency 1): {overhead / args.items * 1000:.1f} ms")


if __name__ == "__main__":
    main()
