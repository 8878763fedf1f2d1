"""The evaluation runner: every method on every sample and seed, scored by one judge, resumable at any moment.

Work is one item per (sample, method, seed). Each item runs the MIRA loop with that method's policy and the shared
editor (the seed is the agent's base seed, so all methods see the same seeds), then the judge scores the final image
against the source image and the instruction. The output folder::

    OUT/
      eval.json          what was evaluated: benchmark, judge, editor, methods (policy configs), seeds, max_steps
      results.jsonl      one JSON record per finished item (scores, stop reason, editor calls, seconds, run folder)
      runs/METHOD/SAMPLE/seedN/   the item's run folder (trajectory.json, every step's image, report.html)
      sources/           each source image once; the run folders' original.png are hard links to these

Resuming: a record is appended, in one write followed by ``fsync``, only after its run folder is complete, and a
re-run skips every item that has a record. A process killed at any moment (``kill -9`` included) therefore loses
no finished item and never records one twice: an item cut off mid-way has no record, its partial run folder is
replaced when it runs again, and a half-written last line is dropped when the file is next opened. A lock file keeps
two runners off one folder, and a changed judge, editor, ``max_steps`` or policy is refused rather than mixed in.

Modes:

- ``async`` (served backends): ``concurrency`` items at once over :meth:`MiraAgent.arun` and :meth:`Judge.ascore`
  on one event loop;
- ``local`` (in-process models): a work queue with one worker per device, each with its own backends built by
  ``factory(device)`` (one device: the items run one after the other in this thread);
- ``ray``: ``workers`` Ray actors (``worker_gpus`` / ``worker_cpus`` each) on a local or remote cluster
  (``ray_address``), each building its backends with ``factory(None)``; items and results travel through Ray, so the
  workers need no shared file system, and this process alone writes the output folder.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import os
import queue
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from mira.agent import MiraAgent, _describe
from mira.editors.base import Editor
from mira.eval.benchmarks import Sample, safe_id
from mira.judges.base import Judge, JudgeScores
from mira.policies.base import Policy
from mira.protocol import PROTOCOL_VERSION
from mira.trajectory import Trajectory

RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "eval.json"
LOCK_FILE = ".lock"
SOURCES_DIR = "sources"
MODES = ("async", "local", "ray")
# config keys that may change between runs of one evaluation without changing its results
VOLATILE_KEYS = ("url", "key", "device", "timeout", "retries", "offload")


class RunnerError(RuntimeError):
    """An evaluation that cannot start; the message says why and what to do."""


@dataclass
class Backends:
    """What one worker evaluates with: the editor, one policy per method, and the judge (None: no scores)."""

    editor: Editor
    policies: dict[str, Policy]
    judge: Judge | None = None

    def configs(self) -> dict[str, Any]:
        return {"editor": self.editor.config(), "judge": self.judge.config() if self.judge else None,
                "methods": {name: policy.config() for name, policy in self.policies.items()}}


BackendFactory = Callable[[Any], Backends]  # device (None: the backends' default) -> Backends


@dataclass(frozen=True)
class WorkItem:
    sample: Sample
    method: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.sample.id}/{self.method}/{self.seed}"

    @property
    def run_path(self) -> str:
        return f"runs/{self.method}/{self.sample.id}/seed{self.seed}"


@dataclass
class Outcome:
    """A finished item as a worker returns it (before its run folder and record are written)."""

    item: WorkItem
    trajectory: Trajectory | None = None
    scores: JudgeScores | None = None
    agent_seconds: float = 0.0
    judge_seconds: float = 0.0
    error: str | None = None
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


# -- one item ----------------------------------------------------------------------------------------------------------
def _agent(backends: Backends, item: WorkItem, max_steps: int) -> MiraAgent:
    return MiraAgent(policy=backends.policies[item.method], editor=backends.editor, max_steps=max_steps,
                     seed=item.seed)


def _judged(scores: Any) -> JudgeScores:
    return scores if isinstance(scores, JudgeScores) else JudgeScores(error=f"judge returned {type(scores).__name__}")


def evaluate(backends: Backends, item: WorkItem, max_steps: int) -> Outcome:
    """Run and score one item with blocking calls. Failures are recorded in the outcome, never raised."""
    t0 = time.perf_counter()
    try:
        traj = _agent(backends, item, max_steps).run(item.sample.image, item.sample.instruction)
    except Exception as exc:
        return Outcome(item, agent_seconds=time.perf_counter() - t0, error=_describe(exc))
    t1 = time.perf_counter()
    scores = None
    if backends.judge is not None:
        try:
            scores = _judged(backends.judge.score(traj.original, traj.final_image, traj.instruction))
        except Exception as exc:
            scores = JudgeScores(error=f"judge failed: {_describe(exc)}")
    return Outcome(item, traj, scores, t1 - t0, time.perf_counter() - t1)


async def aevaluate(backends: Backends, item: WorkItem, max_steps: int) -> Outcome:
    """:func:`evaluate` awaiting the backends' async methods."""
    t0 = time.perf_counter()
    try:
        traj = await _agent(backends, item, max_steps).arun(item.sample.image, item.sample.instruction)
    except Exception as exc:
        return Outcome(item, agent_seconds=time.perf_counter() - t0, error=_describe(exc))
    t1 = time.perf_counter()
    scores = None
    if backends.judge is not None:
        try:
            scores = _judged(await backends.judge.ascore(traj.original, traj.final_image, traj.instruction))
        except Exception as exc:
            scores = JudgeScores(error=f"judge failed: {_describe(exc)}")
    return Outcome(item, traj, scores, t1 - t0, time.perf_counter() - t1)


def record_of(outcome: Outcome) -> dict[str, Any]:
    """The results.jsonl record of an outcome (its run folder is ``record["run_dir"]`` under the output folder)."""
    item, traj = outcome.item, outcome.trajectory
    record: dict[str, Any] = {
        "key": item.key, "sample_id": item.sample.id, "method": item.method, "seed": item.seed,
        "instruction": item.sample.instruction, "meta": item.sample.meta,
        "run_dir": item.run_path if traj is not None else None,
        "stop_reason": traj.stop_reason if traj else "input_error",
        "error": outcome.error if traj is None else traj.error,
        "steps": len(traj.steps) if traj else 0,
        "editor_calls": traj.editor_calls if traj else 0,
        "edits": traj.edits if traj else [],
        "seconds": round(outcome.agent_seconds + outcome.judge_seconds, 4),
        "agent_seconds": round(outcome.agent_seconds, 4),
        "judge_seconds": round(outcome.judge_seconds, 4),
        "policy_seconds": round(sum(s.policy_seconds for s in traj.steps), 4) if traj else 0.0,
        "editor_seconds": round(sum(s.editor_seconds for s in traj.steps), 4) if traj else 0.0,
        "scores": outcome.scores.to_dict() if outcome.scores is not None else None,
        "worker": outcome.worker,
    }
    return record


def failed(record: dict[str, Any]) -> bool:
    """Whether a record's item should run again under ``redo_failed``: a backend or input error, or no score."""
    scores = record.get("scores")
    return record.get("stop_reason") in ("policy_error", "editor_error", "input_error") or (
        scores is not None and scores.get("error") is not None)


# -- the output folder -------------------------------------------------------------------------------------------------
def _stable(value: Any) -> Any:
    """A config without the keys that may change between runs (endpoints, keys, devices, timeouts)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not any(word in k.lower() for word in VOLATILE_KEYS)}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    return value


def read_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of a results file by key (a later record of a key replaces an earlier one; a torn last line,
    left by a killed process, is ignored)."""
    path = Path(path)
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_bytes().split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "key" in record:
            records[record["key"]] = record
    return records


class ResultsStore:
    """The output folder of one evaluation: lock, manifest, append-only results and run folders."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RunnerError(f"another evaluation is writing to '{self.out_dir}'; wait for it or use another "
                              "output folder") from None
        self.path = self.out_dir / RESULTS_FILE
        self._drop_torn_line()
        self.records = read_records(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._state = threading.Condition()
        self._queue: list[bytes] = []
        self._queued = self._synced = 0
        self._syncing = False
        self._failure: OSError | None = None

    def _drop_torn_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def check_manifest(self, benchmark: str, configs: dict[str, Any], seeds: Sequence[int], max_steps: int) -> None:
        """Refuse to mix results of a different judge, editor, max_steps or method policy; record the union."""
        path = self.out_dir / MANIFEST_FILE
        old = json.loads(path.read_text()) if path.exists() else None
        new = {"benchmark": benchmark, "protocol_version": PROTOCOL_VERSION, "max_steps": max_steps,
               "editor": configs["editor"], "judge": configs["judge"], "methods": configs["methods"],
               "seeds": sorted(set(seeds))}
        if old is not None:
            changed = [name for name in ("benchmark", "max_steps", "editor", "judge")
                       if _stable(old.get(name)) != _stable(new[name])]
            changed += [f"method '{m}'" for m, cfg in new["methods"].items()
                        if m in old.get("methods", {}) and _stable(old["methods"][m]) != _stable(cfg)]
            if changed:
                raise RunnerError(f"'{self.out_dir}' holds an evaluation with a different {', '.join(changed)}; "
                                  "use another output folder (or delete this one) to start a new evaluation")
            new["methods"] = {**old.get("methods", {}), **new["methods"]}
            new["seeds"] = sorted(set(old.get("seeds", [])) | set(seeds))
            new["created"] = old.get("created")
        new.setdefault("created", None)
        new["created"] = new["created"] or datetime.now(timezone.utc).isoformat(timespec="seconds")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(new, indent=2, ensure_ascii=False, default=str))
        tmp.replace(path)

    def commit(self, outcome: Outcome) -> dict[str, Any]:
        """Write the outcome's run folder, then append its record (the commit point)."""
        traj = outcome.trajectory
        if traj is not None:
            run_dir = self.out_dir / outcome.item.run_path
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            if traj.original is not None and traj.source_sha256:
                _link(self._source_png(traj), run_dir / "original.png")
            traj.save(run_dir)
        record = record_of(outcome)
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self._append(data)
        with self._state:
            self.records[record["key"]] = record
        return record

    def _append(self, data: bytes) -> None:
        """Append one record and return once it is on disk. Records that arrive while another thread is syncing
        are written together and share the next fsync (group commit): one fsync per batch, not per record."""
        with self._state:
            self._queue.append(data)
            self._queued += 1
            ticket = self._queued
            while self._synced < ticket:
                if self._failure is not None:
                    raise RunnerError(f"could not write {self.path}: {self._failure}")
                if self._syncing:
                    self._state.wait()
                    continue
                self._syncing, batch, last = True, b"".join(self._queue), self._queued
                self._queue = []
                self._state.release()
                try:
                    view = memoryview(batch)
                    while view:
                        view = view[os.write(self._fd, view):]
                    os.fsync(self._fd)
                except OSError as exc:
                    self._failure = exc
                    raise
                finally:
                    self._state.acquire()
                    self._syncing = False
                    self._state.notify_all()
                self._synced = last

    def _source_png(self, traj: Trajectory) -> Path:
        """The source image as a PNG shared by every run folder of that image (encoded once, named by its pixels)."""
        path = self.out_dir / SOURCES_DIR / f"{traj.source_sha256[:32]}.png"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            traj.original.save(tmp, format="PNG", compress_level=1)
            tmp.replace(path)
        return path

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock_fd)


# -- the runner ------------------------------------------------------------------------------------------------------
class _RayWorker:
    """A Ray actor holding one set of backends."""

    def __init__(self, factory: BackendFactory, max_steps: int):
        self.backends = factory(None)
        self.max_steps = max_steps

    def configs(self) -> dict[str, Any]:
        return self.backends.configs()

    def evaluate(self, item: WorkItem) -> Outcome:
        return evaluate(self.backends, item, self.max_steps)


@dataclass
class EvalRunner:
    """Evaluate ``methods`` on ``samples`` x ``seeds`` into ``out_dir`` (see the module docstring).

    Give ``backends`` (async and single-device local modes) or a ``factory(device) -> Backends`` (any mode; Ray
    needs one it can pickle, e.g. :class:`mira.eval.commands.SpecFactory`).
    """

    samples: Sequence[Sample]
    methods: Sequence[str]
    out_dir: str | Path
    backends: Backends | None = None
    factory: BackendFactory | None = None
    seeds: Sequence[int] = (0,)
    max_steps: int = 8
    mode: str = "async"
    concurrency: int = 8
    devices: Sequence[Any] = (None,)
    ray_address: str | None = None
    ray_init: dict[str, Any] = field(default_factory=dict)
    workers: int = 2
    worker_cpus: float = 1.0
    worker_gpus: float = 0.0
    benchmark: str = "custom"
    redo_failed: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RunnerError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.backends is None and self.factory is None:
            raise RunnerError("give the runner backends or a backend factory")
        if self.mode == "ray" and self.factory is None:
            raise RunnerError("ray mode builds backends on each worker: give a backend factory")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise RunnerError("give one or more distinct methods")
        if self.concurrency < 1 or self.workers < 1 or self.max_steps < 1 or not self.seeds:
            raise RunnerError("concurrency, workers and max_steps must be at least 1, and seeds not empty")
        seen: set[str] = set()
        for sample in self.samples:
            if sample.id != safe_id(sample.id):
                raise RunnerError(f"sample id '{sample.id}' cannot name a folder; use letters, digits, '.', '_', '-'")
            if sample.id in seen:
                raise RunnerError(f"sample id '{sample.id}' is used twice; sample ids must be unique")
            seen.add(sample.id)

    def items(self) -> list[WorkItem]:
        return [WorkItem(s, m, seed) for s in self.samples for seed in self.seeds for m in self.methods]

    def run(self) -> list[dict[str, Any]]:
        """Evaluate what is not done yet; returns the records of all items, in item order."""
        store = ResultsStore(self.out_dir)
        try:
            items = self.items()
            pending = [i for i in items if i.key not in store.records
                       or (self.redo_failed and failed(store.records[i.key]))]
            with _Progress(len(items), len(items) - len(pending), enabled=self.progress) as advance:
                if pending:
                    self._dispatch(pending, store, advance)
                elif self.backends is not None:  # nothing to run; still refuse a changed setup (no model loads)
                    self._begin(store, self.backends.configs())
            return [store.records[i.key] for i in items if i.key in store.records]
        finally:
            store.close()

    # -- modes --------------------------------------------------------------------------------------------------
    def _begin(self, store: ResultsStore, configs: dict[str, Any]) -> None:
        missing = [m for m in self.methods if m not in configs["methods"]]
        if missing:
            raise RunnerError(f"no policy for method '{missing[0]}' in the backends")
        configs = {**configs, "methods": {m: configs["methods"][m] for m in self.methods}}
        store.check_manifest(self.benchmark, configs, self.seeds, self.max_steps)

    def _dispatch(self, pending: list[WorkItem], store: ResultsStore, advance: Callable[[], None]) -> None:
        begin = functools.partial(self._begin, store)
        if self.mode == "ray":
            self._run_ray(pending, store, advance, begin)
        elif self.mode == "async":
            backends = self.backends or self.factory(self.devices[0])  # type: ignore[misc]
            begin(backends.configs())
            asyncio.run(self._run_async(backends, pending, store, advance))
        else:
            self._run_local(pending, store, advance, begin)

    async def _run_async(self, backends: Backends, pending: list[WorkItem], store: ResultsStore,
                         advance: Callable[[], None]) -> None:
        todo = iter(pending)
        loop = asyncio.get_running_loop()
        backlog = asyncio.Semaphore(self.concurrency)  # finished items waiting for the disk, at most
        commits: set[asyncio.Task] = set()

        async def commit(outcome: Outcome) -> None:
            try:
                await loop.run_in_executor(writers, store.commit, outcome)
                advance()
            finally:
                backlog.release()

        async def worker() -> None:
            for item in todo:  # a worker moves on to its next item while the last one is written
                outcome = await aevaluate(backends, item, self.max_steps)
                await backlog.acquire()
                task = asyncio.create_task(commit(outcome))
                commits.add(task)
                task.add_done_callback(commits.discard)

        # disk writes get their own threads, so that backends running in the default executor never wait on them
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="mira-eval-commit") as writers:
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(pending)))))
            await asyncio.gather(*list(commits))

    def _run_local(self, pending: list[WorkItem], store: ResultsStore, advance: Callable[[], None],
                   begin: Callable[[dict[str, Any]], None]) -> None:
        if len(self.devices) == 1:
            backends = self.backends or self.factory(self.devices[0])  # type: ignore[misc]
            begin(backends.configs())
            for item in pending:
                store.commit(evaluate(backends, item, self.max_steps))
                advance()
            return
        if self.factory is None:
            raise RunnerError("several devices need a backend factory (one set of backends per device)")
        work: queue.Queue[WorkItem] = queue.Queue()
        for item in pending:
            work.put(item)
        errors: list[BaseException] = []
        started = threading.Lock()

        def worker(device: Any) -> None:
            try:
                backends = self.factory(device)  # type: ignore[misc]
                with started:
                    begin(backends.configs())
                while not errors:
                    try:
                        item = work.get_nowait()
                    except queue.Empty:
                        return
                    store.commit(evaluate(backends, item, self.max_steps))
                    advance()
            except BaseException as exc:  # stop the other workers and re-raise in the caller
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(d,), name=f"mira-eval-{d}", daemon=True)
                   for d in self.devices]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except KeyboardInterrupt:  # let each worker finish (and record) its current item, then stop
            errors.append(KeyboardInterrupt())
            for t in threads:
                t.join()
            raise
        if errors:
            raise errors[0]

    def _run_ray(self, pending: list[WorkItem], store: ResultsStore, advance: Callable[[], None],
                 begin: Callable[[dict[str, Any]], None]) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.ray_address, **self.ray_init)
        remote = ray.remote(num_cpus=self.worker_cpus, num_gpus=self.worker_gpus)(_RayWorker)
        actors = [remote.remote(self.factory, self.max_steps) for _ in range(self.workers)]
        try:
            begin(ray.get(actors[0].configs.remote()))
            todo = iter(pending)
            running: dict[Any, Any] = {}

            def submit(actor: Any) -> None:
                item = next(todo, None)
                if item is not None:
                    running[actor.evaluate.remote(_with_pixels(item))] = actor

            for actor in actors:
                submit(actor)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                actor = running.pop(ready[0])
                outcome = ray.get(ready[0])
                submit(actor)
                store.commit(outcome)
                advance()
        finally:
            for actor in actors:
                ray.kill(actor)

def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copyfile(source, target)


def _with_pixels(item: WorkItem) -> WorkItem:
    """The item with its image loaded here, so that Ray workers need no access to this machine's files."""
    if isinstance(item.sample.image, (str, os.PathLike)):
        try:
            return replace(item, sample=replace(item.sample, image=item.sample.load_image()))
        except Exception:
            return item  # the worker hits the same error and records it
    return item


class _Progress:
    """A rich progress bar (items done / total, elapsed, ETA) on stderr; a no-op when disabled."""

    def __init__(self, total: int, done: int, *, enabled: bool):
        self.total, self.done, self.enabled = total, done, enabled
        self._lock = threading.Lock()

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._bar = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True))
        self._task = self._bar.add_task("eval", total=self.total, completed=self.done)
        self._bar.start()

        def advance() -> None:
            with self._lock:
                self._bar.advance(self._task)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._bar.stop()


def run_eval(samples: Sequence[Sample], methods: Sequence[str], out_dir: str | Path, **options: Any) -> list[dict]:
    """Shortcut for ``EvalRunner(samples, methods, out_dir, **options).run()``."""
    return EvalRunner(samples, methods, out_dir, **options).run()


__all__ = ["Backends", "EvalRunner", "Outcome", "ResultsStore", "RunnerError", "WorkItem", "evaluate",
           "aevaluate", "read_records", "record_of", "run_eval"]
