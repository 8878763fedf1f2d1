"""Load test of the MIRA server: many concurrent OpenAI-SDK clients against one server on 127.0.0.1.

The server runs in its own process with zero-latency backends (a fixed two-edit plan and an editor that returns a
copy of its input), so the figures are the serving overhead: HTTP, multipart parsing, image validation, the queue,
the agent loop and PNG encoding. Every request must be answered, with 200 or with 503 (queue full); anything else is
counted under "other" and makes the script exit non-zero.

    python benchmarks/server_load.py [--requests 200] [--timeout 120]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "coffee.jpg"


def _serve(max_queue: int, port_out: "mp.Queue[int]") -> None:
    """Child process: a server with zero-latency backends on a free port of 127.0.0.1."""
    import socket

    import uvicorn

    from mira.agent import MiraAgent
    from mira.editors.base import Editor
    from mira.policies.baselines import StaticPlanPolicy
    from mira.serve.api_router import build_app
    from mira.serve.service import EditService, ServiceConfig

    class CopyEditor(Editor):
        name = "copy"

        def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None) -> Image.Image:
            return image.copy()

    agent = MiraAgent(policy=StaticPlanPolicy(["make the cup red", "make the saucer blue"]), editor=CopyEditor())
    service = EditService(agent, ServiceConfig(max_queue=max_queue, timeout_s=120))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port_out.put(sock.getsockname()[1])
    uvicorn.Server(uvicorn.Config(build_app(service, ui=False), log_level="error")).run(sockets=[sock])


async def _load(url: str, requests: int, stream: bool, timeout: float) -> dict:
    import httpx
    import openai

    image = PHOTO.read_bytes()
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=timeout,
                                http_client=openai.DefaultAsyncHttpxClient(limits=limits))
    latencies: list[float] = []
    codes: dict[str, int] = {}

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            if stream:
                events = [e async for e in await client.images.edit(model="mira", image=image, prompt="make it red",
                                                                      stream=True, partial_images=2)]
                assert events[-1].type == "image_edit.completed"
            else:
                response = await client.images.edit(model="mira", image=image, prompt="make it red")
                assert response.data[0].b64_json
            code = "200"
        except openai.APIStatusError as exc:
            code = str(exc.status_code)
        except Exception as exc:  # connection resets, timeouts: the failures this benchmark exists to catch
            code = type(exc).__name__
        latencies.append(time.perf_counter() - t0)
        codes[code] = codes.get(code, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    wall = time.perf_counter() - t0
    await client.close()
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{url}/health")).json()
    return {"codes": codes, "latencies": latencies, "wall": wall, "health": health}


def run(label: str, requests: int, max_queue: int, stream: bool, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    port_out: mp.Queue = ctx.Queue()
    server = ctx.Process(target=_serve, args=(max_queue, port_out), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{port_out.get(timeout=60)}"
        _wait_healthy(url)
        result = asyncio.run(asyncio.wait_for(_load(url, requests, stream, timeout), timeout * 2))
    finally:
        server.terminate()
        server.join(10)
    result["label"] = label
    result["alive"] = True
    return result


def _wait_healthy(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests per scenario")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request client timeout, seconds")
    args = parser.parse_args()
    scenarios = [
        ("queue 16 (most refused)", 16, False),
        (f"queue {args.requests} (all admitted)", args.requests, False),
        (f"queue {args.requests}, streamed", args.requests, True),
    ]
    print(f"{args.requests} concurrent OpenAI-SDK images.edit requests per scenario, 256x171 JPEG, "
          "zero-latency backends (2 edits + stop per request), server in its own process on 127.0.0.1")
    header = f"{'scenario':<30}{'200':>6}{'503':>6}{'other':>7}{'p50 s':>9}{'p99 s':>9}{'max s':>8}{'req/s':>8}" \
             f"{'ok/s':>9}"
    print(header)
    bad = 0
    for label, max_queue, stream in scenarios:
        r = run(label, args.requests, max_queue, stream, args.timeout)
        lat = sorted(r["latencies"])
        ok, busy = r["codes"].get("200", 0), r["codes"].get("503", 0)
        other = sum(r["codes"].values()) - ok - busy
        bad += other + (args.requests - len(lat))
        p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        print(f"{label:<30}{ok:>6}{busy:>6}{other:>7}{statistics.median(lat):>9.3f}{p99:>9.3f}{lat[-1]:>8.3f}"
              f"{len(lat) / r['wall']:>8.1f}{ok / r['wall']:>9.1f}")
        if other:
            print(f"  other answers: {r['codes']}")
        print(f"  server after the run: {r['health']}")
    print("every request answered with 200 or 503" if bad == 0 else f"{bad} requests failed or were not answered")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
