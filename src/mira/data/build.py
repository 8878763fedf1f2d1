"""Running the whole builder: plan -> sources -> aggregate -> rewrite -> synthesize -> rank -> annotate -> export.

:func:`build` runs each stage over its pending shards, in-process or on a Ray cluster (``use_ray=True``: one pool
of actors for the whole build; an actor builds a stage's backends once, e.g. an editor on its GPU, and frees them
when the next stage starts), shows a progress bar per stage and what each stage kept and dropped, and finally
assembles the dataset. Running it again resumes: finished shards are skipped, finished stages only print their
counts.

Each stage records a fingerprint of its settings (concurrency and Ray settings excluded) and of everything
upstream. If they changed, the stage refuses to continue; ``redo="rank"`` (CLI ``--redo rank``) deletes that stage
and the ones after it so they are rebuilt.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mira.data.config import BuildConfig, DataBuildError, config_from_dict, fingerprint, import_object
from mira.data.sources import source_sizes
from mira.data.store import StageDir, StageStats, atomic_write_text


@dataclass(frozen=True)
class Stage:
    name: str
    worker: str  # "module:Class" of a ShardWorker
    distributed: bool = True  # whether --ray spreads it


STAGES = (
    Stage("sources", "mira.data.sources:SourcesWorker"),
    Stage("aggregate", "mira.data.aggregate:AggregateWorker", distributed=False),
    Stage("rewrite", "mira.data.rewrite:RewriteWorker"),
    Stage("synthesize", "mira.data.synthesize:SynthesizeWorker"),
    Stage("rank", "mira.data.rank:RankWorker"),
    Stage("annotate", "mira.data.annotate:AnnotateWorker"),
    Stage("export", "mira.data.export:ExportWorker"),
)
STAGE_NAMES = ("plan",) + tuple(s.name for s in STAGES)


@dataclass
class BuildResult:
    output: Path
    rows: int
    stages: dict[str, StageStats] = field(default_factory=dict)


def _settings(config: BuildConfig, stage: str) -> Any:
    """The part of the config a stage's output depends on."""
    if stage == "plan":
        return {"sources": [asdict(s) for s in config.sources], "sizes": [source_sizes(s) for s in config.sources],
                "shard_size": config.shard_size}
    if stage == "sources":
        return None
    section = asdict(getattr(config, stage))
    section.pop("concurrency", None)
    if stage == "export":
        section.pop("output", None)
        section.pop("num_shards", None)
    return {"section": section, "seed": config.seed}


def run_shard(stage: str, worker: Any, work_dir: Path, index: int, advance: Callable[[int], None]) -> StageStats:
    """Process one shard: read the upstream shard, write this stage's shard and its counts."""
    upstream = StageDir(work_dir, STAGE_NAMES[STAGE_NAMES.index(stage) - 1])
    out, stats = worker.process(index, upstream.read_shard(index), advance)
    StageDir(work_dir, stage).write_shard(index, out, stats)
    return stats


class ShardActor:
    """Ray actor body: processes shards of any stage, building each stage's worker once (and closing the previous
    stage's, which frees its models)."""

    def __init__(self, config: dict[str, Any], work_dir: str):
        self.config, self.work_dir = config_from_dict(config), Path(work_dir)
        self.stage: str | None = None
        self.worker: Any = None

    def run(self, stage: Stage, index: int) -> int:
        if stage.name != self.stage:
            self.close()
            self.worker, self.stage = import_object(stage.worker)(self.config, self.work_dir), stage.name
        run_shard(stage.name, self.worker, self.work_dir, index, lambda n: None)
        return index

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker, self.stage = None, None


class Builder:
    """Runs the stages of one config in one work folder (see :func:`build`)."""

    def __init__(self, config: BuildConfig, *, use_ray: bool = False, console: Console | None = None):
        self.config = config
        self.work_dir = Path(config.work_dir)
        self.use_ray = use_ray
        self.console = console or Console(stderr=True)
        self._ray_actors: list[Any] | None = None

    def redo(self, stage: str) -> None:
        if stage not in STAGE_NAMES:
            raise DataBuildError(f"--redo '{stage}' is not a stage; stages: {', '.join(STAGE_NAMES)}")
        for name in STAGE_NAMES[STAGE_NAMES.index(stage):]:
            StageDir(self.work_dir, name).remove()
        (self.work_dir / "export.json").unlink(missing_ok=True)

    def plan(self) -> tuple[str, StageStats]:
        from mira.data.sources import plan_sources

        fp = fingerprint(_settings(self.config, "plan"))
        stage = StageDir(self.work_dir, "plan")
        if stage.manifest() is not None and stage.manifest()["fingerprint"] == fp and stage.complete:
            return fp, stage.totals()
        with self.console.status("planning: listing source rows"):
            shards, stats = plan_sources(self.config)
        stage.open(fp, len(shards))
        for i, refs in enumerate(shards):  # the rows dropped while planning are counted on shard 0
            extra = stats.inputs - stats.kept if i == 0 else 0
            dropped = stats.dropped if i == 0 else None
            stage.write_shard(i, refs, StageStats(len(refs) + extra, len(refs), Counter(dropped or {})))
        return fp, stage.finish()

    def run_stage(self, stage: Stage, fp: str, num_shards: int) -> StageStats:
        out = StageDir(self.work_dir, stage.name)
        out.open(fp, num_shards)
        pending = out.pending()
        if pending:
            upstream = StageDir(self.work_dir, STAGE_NAMES[STAGE_NAMES.index(stage.name) - 1])
            total = sum(upstream.shard_stats(i).kept for i in range(num_shards))
            todo = sum(upstream.shard_stats(i).kept for i in pending)
            with Progress(TextColumn(f"[bold]{stage.name:<10}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=self.console) as progress:
                bar = progress.add_task(stage.name, total=total, completed=total - todo)
                if self.use_ray and stage.distributed:
                    self._run_ray(stage, pending, upstream, lambda n: progress.advance(bar, n))
                else:
                    self._run_local(stage, pending, lambda n: progress.advance(bar, n))
        return out.finish()

    def _run_local(self, stage: Stage, pending: list[int], advance: Callable[[int], None]) -> None:
        worker = import_object(stage.worker)(self.config, self.work_dir)
        try:
            for index in pending:
                try:
                    run_shard(stage.name, worker, self.work_dir, index, advance)
                except (DataBuildError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise DataBuildError(
                        f"stage '{stage.name}' failed on shard {index}: {type(exc).__name__}: {text}; finished "
                        "shards are kept, so fix the cause and run again to resume") from exc
        finally:
            worker.close()

    def _actors(self) -> list[Any]:
        """The build's Ray actors, started on first use and shared by every distributed stage."""
        import ray

        if self._ray_actors is None:
            rc = self.config.ray
            if not ray.is_initialized():
                ray.init(address=rc.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            actor_cls = ray.remote(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus)(ShardActor)
            self._ray_actors = [actor_cls.remote(self.config.to_dict(), str(self.work_dir)) for _ in range(rc.actors)]
        return self._ray_actors

    def _stop_actors(self) -> None:
        if self._ray_actors is None:
            return
        import ray

        try:
            ray.get([a.close.remote() for a in self._ray_actors], timeout=60)
        except ray.exceptions.RayError:
            pass  # an actor that died has nothing left to close
        for actor in self._ray_actors:
            ray.kill(actor)
        self._ray_actors = None

    def _run_ray(self, stage: Stage, pending: list[int], upstream: StageDir, advance: Callable[[int], None]) -> None:
        import ray
        from ray.util import ActorPool

        try:
            for index in ActorPool(self._actors()).map_unordered(lambda a, i: a.run.remote(stage, i), pending):
                advance(upstream.shard_stats(index).kept)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, DataBuildError):
                raise cause from None
            raise DataBuildError(f"stage '{stage.name}' failed on a Ray worker: {type(cause).__name__}: {cause}; "
                                 "finished shards are kept, so fix the cause and run again to resume") from None

    def report(self, name: str, stats: StageStats) -> None:
        self.console.print(f"[bold]{name}[/]: {stats.inputs} in, {stats.kept} out")
        for reason, n in stats.dropped.most_common():
            self.console.print(f"  [red]dropped[/] {n:>7}  {reason}")
        for what, n in stats.notes.most_common():
            self.console.print(f"  [dim]note[/]    {n:>7}  {what}")

    def run(self, redo: str | None = None) -> BuildResult:
        from mira.data.export import assemble

        if redo:
            self.redo(redo)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.work_dir / "build_config.json", json.dumps(self.config.to_dict(), indent=2))
        fp, stats = self.plan()
        self.report("plan", stats)
        totals = {"plan": stats}
        num_shards = StageDir(self.work_dir, "plan").num_shards
        try:
            for stage in STAGES:
                fp = fingerprint(fp, stage.name, _settings(self.config, stage.name))
                totals[stage.name] = self.run_stage(stage, fp, num_shards)
                self.report(stage.name, totals[stage.name])
        finally:
            self._stop_actors()
        output = self.config.output_dir
        final = fingerprint(fp, self.config.export.num_shards, str(output))
        marker = self.work_dir / "export.json"
        if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == final and output.is_dir():
            rows = json.loads(marker.read_text())["rows"]
        else:
            with self.console.status(f"writing the dataset to {output}"):
                rows = assemble(self.work_dir, output, self.config.export.num_shards, totals, self.config)
            atomic_write_text(marker, json.dumps({"fingerprint": final, "rows": rows}))
        self.console.print(f"[green]dataset[/]: {rows} samples in {output} (datasets.load_from_disk)")
        return BuildResult(output, rows, totals)


def build(config: BuildConfig, *, use_ray: bool = False, redo: str | None = None,
          console: Console | None = None) -> BuildResult:
    """Run (or resume) the whole builder for ``config``; returns where the dataset is and each stage's counts."""
    return Builder(config, use_ray=use_ray, console=console).run(redo)
