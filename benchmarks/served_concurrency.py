"""Concurrency over served backends: N trajectories against loopback chat + editor servers with fixed latency.

Both servers are real HTTP servers on 127.0.0.1 (:mod:`mira.testing_servers`), run in a child process as served
backends run elsewhere: the policy is :class:`~mira.policies.openai.OpenAIPolicy` (OpenAI SDK) against a scripted
``/v1/chat/completions``, the editor is :class:`~mira.editors.remote.HTTPEditor` against MIRA's editor service
serving a pure-PIL editor. Every chat and
edit call takes ``--latency`` seconds on the server. After an untimed warm-up batch (clients built, connections
open: the steady state of a long evaluation run), the same batch runs through :func:`mira.batch.arun_many` at
concurrency 1 and at ``--concurrency`` in one event loop; the script prints both wall times, the speed-up and
the client's CPU time per HTTP call (the part that does not overlap: one event loop handles every response).

    PYTHONPATH=src python benchmarks/served_concurrency.py            # 64 trajectories x 3 steps, 200 ms per call
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import time

from PIL import Image

from mira.agent import MiraAgent
from mira.batch import BatchItem, arun_many
from mira.editors.remote import HTTPEditor, editor_app
from mira.policies.openai import OpenAIPolicy
from mira.testing_servers import LoopbackServer, ScriptedEditor, ScriptedOpenAIServer, plan_responder

PLAN = ["make the sky blue", "make the car red", "remove the cup on the table"]


def serve(plan: list[str], latency: float, concurrency: int, conn) -> None:
    """Child process: start the chat and editor servers, send their URLs, serve until told to stop."""
    editor = ScriptedEditor(latency=latency)
    with ScriptedOpenAIServer(plan_responder(plan), latency=latency) as chat, \
            LoopbackServer(editor_app(editor, concurrency=concurrency)) as editor_service:
        conn.send((chat.base_url, editor_service.url))
        conn.recv()


async def measure(agent: MiraAgent, items: list[BatchItem], args: argparse.Namespace) -> None:
    await arun_many(agent, items[: args.concurrency], concurrency=args.concurrency)  # warm-up, not timed
    timings = {}
    for k in (1, args.concurrency):
        t0, cpu0 = time.perf_counter(), time.process_time()
        trajectories = await arun_many(agent, items, concurrency=k)
        timings[k], cpu = time.perf_counter() - t0, time.process_time() - cpu0
        bad = [t for t in trajectories if len(t.steps) != args.steps or t.stop_reason != "max_steps"]
        if bad:
            raise SystemExit(f"{len(bad)} trajectories did not run {args.steps} steps: {bad[0].error}")
        ideal = math.ceil(args.trajectories / k) * args.steps * 2 * args.latency
        print(f"concurrency {k:>3}: {timings[k]:7.2f} s   ({ideal:.2f} s of pure latency at best; "
              f"client CPU {1000 * cpu / (len(items) * args.steps * 2):.1f} ms per call)")
    speedup = timings[1] / timings[args.concurrency]
    print(f"speed-up at concurrency {args.concurrency}: {speedup:.1f}x (ideal {args.concurrency}x); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per chat call and per edit")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="side of the square test images, in pixels")
    args = parser.parse_args()

    plan = (PLAN * args.steps)[: args.steps]
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    servers = ctx.Process(target=serve, args=(plan, args.latency, args.concurrency, child_conn), daemon=True)
    servers.start()
    try:
        chat_url, editor_url = conn.recv()
        agent = MiraAgent(policy=OpenAIPolicy("scripted-policy", base_url=chat_url), editor=HTTPEditor(editor_url),
                          max_steps=args.steps)
        items = [BatchItem(Image.new("RGB", (args.size, args.size), (i * 3 % 256, 90, 160)),
                           "make the sky blue, the car red and remove the cup", id=f"{i:03d}")
                 for i in range(args.trajectories)]
        calls = args.trajectories * args.steps * 2
        print(f"{args.trajectories} trajectories x {args.steps} steps = {calls} HTTP calls of "
              f"{args.latency * 1000:.0f} ms each (chat + editor on 127.0.0.1), {args.size}x{args.size} images")
        asyncio.run(measure(agent, items, args))
    finally:
        conn.send("stop")
        servers.join(timeout=10)


if __name__ == "__main__":
    main()
