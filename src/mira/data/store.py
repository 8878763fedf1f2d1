"""Sharded, resumable stage storage in the work folder.

Each stage owns ``WORK/<stage>/``::

    manifest.json              stage name, fingerprint of its settings and inputs, shard count, totals when complete
    shard-00000.jsonl          the shard's output records, one JSON object a line
    shard-00000.done.json      the shard's counts (kept, dropped by reason, notes); written last

Every file is written to a temporary name and renamed into place, so a killed job leaves either a finished shard
or none. A shard whose ``.done.json`` exists is skipped when the job runs again. A stage whose settings or inputs
changed refuses to mix old and new shards (see :meth:`StageDir.open`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mira.data.config import DataBuildError


@dataclass
class StageStats:
    """What a stage (or one shard of it) read, kept and dropped, with reasons; ``notes`` count non-fatal events."""

    inputs: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def note(self, what: str, n: int = 1) -> None:
        self.notes[what] += n

    def merge(self, other: "StageStats") -> "StageStats":
        self.inputs += other.inputs
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.notes.update(other.notes)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "kept": self.kept, "dropped": dict(sorted(self.dropped.items())),
                "notes": dict(sorted(self.notes.items()))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StageStats":
        return cls(data.get("inputs", 0), data.get("kept", 0), Counter(data.get("dropped", {})),
                   Counter(data.get("notes", {})))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class StageDir:
    """The folder of one stage: shard files, completion markers and the manifest."""

    def __init__(self, work_dir: str | Path, name: str):
        self.name = name
        self.path = Path(work_dir) / name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        return json.loads(self.manifest_path.read_text())

    def open(self, fingerprint: str, num_shards: int) -> None:
        """Start or resume the stage; refuse if it was started with other settings or inputs."""
        old = self.manifest()
        if old is not None and old["fingerprint"] != fingerprint:
            raise DataBuildError(
                f"stage '{self.name}' in {self.path.parent} was built with other settings or inputs; run again with "
                f"--redo {self.name} to rebuild it and the stages after it, or use another work_dir"
            )
        if old is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_manifest(fingerprint, num_shards, None)

    def _write_manifest(self, fingerprint: str, num_shards: int, totals: StageStats | None) -> None:
        atomic_write_text(self.manifest_path, json.dumps({
            "stage": self.name, "fingerprint": fingerprint, "shards": num_shards, "complete": totals is not None,
            "totals": totals.to_dict() if totals is not None else None,
        }, indent=2))

    @property
    def complete(self) -> bool:
        m = self.manifest()
        return bool(m and m["complete"])

    @property
    def num_shards(self) -> int:
        m = self.manifest()
        if m is None:
            raise DataBuildError(f"stage '{self.name}' has not run yet in {self.path.parent}")
        return int(m["shards"])

    def shard_path(self, index: int) -> Path:
        return self.path / f"shard-{index:05d}.jsonl"

    def done_path(self, index: int) -> Path:
        return self.path / f"shard-{index:05d}.done.json"

    def is_done(self, index: int) -> bool:
        return self.done_path(index).is_file()

    def pending(self) -> list[int]:
        return [i for i in range(self.num_shards) if not self.is_done(i)]

    def write_shard(self, index: int, rows: list[dict[str, Any]], stats: StageStats) -> None:
        write_jsonl(self.shard_path(index), rows)
        atomic_write_text(self.done_path(index), json.dumps(stats.to_dict()))

    def read_shard(self, index: int) -> list[dict[str, Any]]:
        return read_jsonl(self.shard_path(index))

    def shard_stats(self, index: int) -> StageStats:
        return StageStats.from_dict(json.loads(self.done_path(index).read_text()))

    def finish(self) -> StageStats:
        """Sum the shards' counts and mark the stage complete."""
        totals = StageStats()
        for i in range(self.num_shards):
            totals.merge(self.shard_stats(i))
        m = self.manifest()
        assert m is not None
        self._write_manifest(m["fingerprint"], m["shards"], totals)
        return totals

    def totals(self) -> StageStats:
        m = self.manifest()
        return StageStats.from_dict(m["totals"]) if m and m["totals"] else StageStats()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
