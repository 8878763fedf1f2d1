"""Throughput of the MIRA-Editing builder.

1. CPU-bound stages at 10K sessions: aggregate (sessions -> tasks, JSON in and out) and split/export (kept
   trajectories -> start / continue / stop samples -> a saved HF dataset with PNG images), in samples per second.
2. Concurrency of the model-bound stages against a chat server on 127.0.0.1 that answers after 200 ms: rewrite
   (paraphrases over ``openai:MODEL``) and rank (a judge asking the same server), at concurrency 1 and higher,
   with the speed-up over concurrency 1.

    PYTHONPATH=src python benchmarks/data_throughput.py [--sessions 10000] [--latency 0.2] [--tasks 48]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from PIL import Image

from mira.data.aggregate import AggregateWorker
from mira.data.config import config_from_dict
from mira.data.export import ExportWorker
from mira.data.records import Candidate, Candidates, Selected, Session, Task
from mira.data.rank import RankWorker
from mira.data.rewrite import RewriteWorker
from mira.data.store import write_jsonl
from mira.judges.base import Judge, JudgeScores

OBJECTS = ["cup", "saucer", "table", "wall", "sofa", "dog", "cat", "lamp", "window", "floor", "car", "tree", "sky",
           "hat", "shirt", "door", "vase", "chair", "bed", "clock"]
CHANGES = ["make the {o} red", "make the {o} blue", "remove the {o}", "add a small {o} on the left",
           "turn the {o} into wood", "make the {o} bigger", "change the colour of the {o} to green"]


def sessions(n: int, image: str, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        objects = rng.sample(OBJECTS, rng.randint(2, 5))
        turns = [rng.choice(CHANGES).format(o=o) for o in objects]
        if rng.random() < 0.3:  # some sessions touch an earlier object again
            turns.append(f"make the {objects[0]} shiny")
        out.append(Session(f"s{i}", "jsonl", image, turns).to_dict())
    return out


def config(work: Path, **sections: Any):
    return config_from_dict({"work_dir": str(work), "sources": [{"kind": "jsonl", "path": "x"}], **sections})


def shards(rows: list[dict[str, Any]], size: int = 256) -> list[list[dict[str, Any]]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


class Clock:
    """Wall and CPU seconds of a block (the CPU figure is the steadier one on a shared machine)."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rate(self, n: int, unit: str) -> str:
        return f"{n / self.wall:,.0f} {unit}/s wall ({self.wall:.1f} s), {n / self.cpu:,.0f} {unit}/s of CPU"


def bench_aggregate(work: Path, rows: list[dict[str, Any]]) -> tuple[Clock, int]:
    worker = AggregateWorker(config(work), work)
    n_out = 0
    with Clock() as clock:
        for i, shard in enumerate(shards(rows)):
            out, _ = worker.process(i, shard, lambda n: None)
            write_jsonl(work / "aggregate" / f"shard-{i:05d}.jsonl", out)
            n_out += len(out)
    worker.close()
    return clock, n_out


def bench_export(work: Path, rows: list[dict[str, Any]], images: list[str]) -> tuple[Clock, int]:
    """Selected trajectories (one per session, its own order, images from a pool of files) through the export."""
    rng = random.Random(1)
    selected = []
    for row in rows:
        s = Session.from_dict(row)
        task = Task(f"{s.id}.o0", s.id, s.source, "x", rng.choice(images), s.turns, list(range(len(s.turns))),
                    " and ".join(s.turns))
        cand = Candidate(f"{task.id}.pil0.s0", "pil", [rng.choice(images) for _ in s.turns], seed=1)
        selected.append(Selected(task, cand, 7.5, reasoning=["r"] * (len(s.turns) + 1)).to_dict())
    parts = shards(selected)
    for i, part in enumerate(parts):
        write_jsonl(work / "annotate" / f"shard-{i:05d}.jsonl", part)
    import datasets  # noqa: F401  (imported before the clock starts)

    worker = ExportWorker(config(work), work)
    samples = 0
    with Clock() as clock:
        for i, part in enumerate(parts):
            _, stats = worker.process(i, part, lambda n: None)
            samples += stats.notes["samples"]
    return clock, samples


def serve(port: int, latency: float) -> None:
    """An OpenAI-compatible chat server on 127.0.0.1:``port`` that answers every request after ``latency`` s."""
    import uvicorn

    app = FastAPI()

    async def completions(request: Request) -> dict[str, Any]:
        body = await request.json()
        await asyncio.sleep(latency)
        text = body["messages"][-1]["content"][-1]["text"]
        reply = "Score: 7" if text.startswith("Rate") else f'["Please {text.rsplit(": ", 1)[-1]}", "Kindly do it"]'
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}]}

    app.post("/v1/chat/completions")(completions)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")


class Server:
    """:func:`serve` in its own process, so that the server's work does not slow the client being measured."""

    def __init__(self, latency: float):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = multiprocessing.get_context("spawn").Process(target=serve, args=(self.port, latency),
                                                                    daemon=True)

    def __enter__(self) -> str:
        self.process.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or not self.process.is_alive():
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.1)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        self.process.join(timeout=10)


class ServedJudge(Judge):
    """Asks the benchmark server for a score (one request per candidate)."""

    name = "served"

    def __init__(self, base_url: str):
        from mira.data.backends import OpenAIChatBackend

        self.backend = OpenAIChatBackend("judge", base_url=base_url)

    async def ascore(self, source: Image.Image, edited: Image.Image, instruction: str) -> JudgeScores:
        reply = await self.backend.achat([{"role": "user", "content": [{"type": "text", "text": f"Rate: {instruction}"}]}])
        value = float(re.search(r"Score: ([\d.]+)", reply[0]).group(1))
        return JudgeScores.from_sc_pq(value, value)


def bench_served(work: Path, url: str, rows: list[dict[str, Any]], image: str, concurrency: int) -> dict[str, float]:
    tasks = [Task(f"{r['id']}.o0", r["id"], "jsonl", "x", image, r["turns"], list(range(len(r["turns"]))),
                  " and ".join(r["turns"])).to_dict() for r in rows]
    chat = {"name": "openai:rewriter", "options": {"base_url": url}}
    cfg = config(work, rewrite={"backend": chat, "concurrency": concurrency, "atomic_variants": 1,
                                "complex_variants": 1}, rank={"concurrency": concurrency, "threshold": 0})
    out = {}
    worker = RewriteWorker(cfg, work)
    t0 = time.perf_counter()
    worker.process(0, tasks, lambda n: None)
    out["rewrite"] = time.perf_counter() - t0
    worker.close()

    ranked = [Candidates(Task.from_dict(t), [Candidate(f"{t['id']}.{e}", e, [image] * len(t["turns"]))
                                             for e in ("a", "b")]).to_dict() for t in tasks]
    worker = RankWorker(cfg, work)
    worker.judge = ServedJudge(url)
    t0 = time.perf_counter()
    worker.process(0, ranked, lambda n: None)
    out["rank"] = time.perf_counter() - t0
    worker.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--tasks", type=int, default=48, help="tasks sent through rewrite and rank")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 48])
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mira-data-bench-"))
    try:
        pool = []
        for i in range(32):
            path = tmp / f"img{i}.png"
            Image.new("RGB", (64, 64), (i * 8, 255 - i * 8, 128)).save(path)
            pool.append(str(path))
        rows = sessions(args.sessions, pool[0])

        clock, tasks = bench_aggregate(tmp / "agg", rows)
        print(f"aggregate     {args.sessions} sessions -> {tasks} tasks: {clock.rate(args.sessions, 'sessions')}")
        clock, samples = bench_export(tmp / "exp", rows, pool)
        print(f"split/export  {args.sessions} trajectories -> {samples} samples (64x64 PNGs): "
              f"{clock.rate(samples, 'samples')}")

        print(f"\nrewrite and rank of {args.tasks} tasks against a loopback server answering after "
              f"{args.latency * 1000:.0f} ms")
        base: dict[str, float] = {}
        with Server(args.latency) as url:
            for c in args.concurrency:
                times = bench_served(tmp / f"served{c}", url, rows[: args.tasks], pool[0], c)
                base = base or times
                print(f"  concurrency {c:>3}:  rewrite {times['rewrite']:6.2f} s ({base['rewrite'] / times['rewrite']:5.1f}x)"
                      f"   rank {times['rank']:6.2f} s ({base['rank'] / times['rank']:5.1f}x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
