"""Step and Trajectory records, their run folder on disk, and the HTML report.

A run folder is self-describing::

    RUN/
      original.png          the source image as the editor saw it
      step_001.png ...      the image after each step (absent for steps whose edit failed or was rejected)
      step_001_cand_2.png   every other candidate of a step (best-of-N, rollback, several editors), scores in JSON
      final.png             the last image
      trajectory.json       everything else (see :class:`Trajectory`)
      report.html           original -> step 1 -> ... -> final, with reasoning, actions, seeds, timings, candidates

:class:`RunWriter` writes images in a background thread so that disk I/O never blocks the next step.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from mira.protocol import PROTOCOL_VERSION

STOP_REASONS = ("stop", "max_steps", "repeat", "policy_error", "editor_error", "budget")


@dataclass
class Step:
    """One decision of the policy and, unless it was ``<STOP>``, its execution.

    ``candidates`` holds one record per editor call of the step (action, editor, seed, round, seconds, verifier
    scores, image path or error; the kept one has ``chosen``); ``seed``, ``editor`` and ``scores`` are the kept
    candidate's.
    """

    index: int
    raw_completion: str
    reasoning: str
    action: str
    seed: int | None = None
    editor: str | None = None
    editor_params: dict[str, Any] = field(default_factory=dict)
    policy_seconds: float = 0.0
    editor_seconds: float = 0.0
    image_path: str | None = None
    parse_attempts: int = 1
    scores: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    image: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def is_stop(self) -> bool:
        from mira.protocol import STOP

        return self.action == STOP

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("image")
        return d


@dataclass
class Trajectory:
    """A whole run: the request, every step, and why it ended."""

    instruction: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    source_path: str | None = None
    source_sha256: str | None = None
    protocol_version: str = PROTOCOL_VERSION
    config: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    stop_reason: str | None = None
    error: str | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    original: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def edits(self) -> list[str]:
        """Atomic edits that the editor executed, in order."""
        return [s.action for s in self.steps if not s.is_stop and (s.image is not None or s.image_path)]

    @property
    def final_image(self) -> Image.Image | None:
        for step in reversed(self.steps):
            if step.image is not None:
                return step.image
        return self.original

    @property
    def editor_calls(self) -> int:
        """Editor calls made (every candidate and failed attempt; one per executed step in older run folders)."""
        return sum(len(s.candidates) or int(s.image is not None or bool(s.image_path)) for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("original", "steps")}
        d["steps"] = [s.to_dict() for s in self.steps]
        return d

    def save(self, run_dir: str | Path, writer: "RunWriter | None" = None) -> Path:
        """Write the run folder (images, trajectory.json, report.html). Existing step images are reused."""
        own = writer is None
        writer = writer or RunWriter(run_dir)
        run_dir = writer.run_dir
        if self.original is not None and not (run_dir / "original.png").exists():
            writer.write_image("original.png", self.original)
        for step in self.steps:
            if step.image is not None and step.image_path is None:
                step.image_path = writer.write_image(f"step_{step.index:03d}.png", step.image)
        writer.flush()
        if self.final_image is not None:  # a copy of the file it already is, when it is here: no second encode
            done = run_dir / next((s.image_path for s in reversed(self.steps) if s.image is not None), "original.png")
            if done.is_file():
                shutil.copyfile(done, run_dir / "final.tmp")
                (run_dir / "final.tmp").replace(run_dir / "final.png")
            else:
                writer.write_image("final.png", self.final_image)
                writer.flush()
        if own:
            writer.close()
        (run_dir / "trajectory.json").write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        write_report(run_dir, self)
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path, *, with_images: bool = True) -> "Trajectory":
        """Read a run folder written by :meth:`save`."""
        run_dir = Path(run_dir)
        path = run_dir / "trajectory.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a MIRA run folder: trajectory.json is missing")
        data = json.loads(path.read_text())
        steps = [Step(**s) for s in data.pop("steps")]
        traj = cls(**data, steps=steps)
        if with_images:
            if (run_dir / "original.png").exists():
                traj.original = _read_png(run_dir / "original.png")
            for step in traj.steps:
                if step.image_path and (run_dir / step.image_path).exists():
                    step.image = _read_png(run_dir / step.image_path)
        return traj


def _read_png(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_sha256(img: Image.Image) -> str:
    """Hash of an image's pixels and size (independent of the file format it came in)."""
    h = hashlib.sha256(f"{img.mode}{img.size}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


class RunWriter:
    """Writes PNGs of a run folder on a background thread; :meth:`flush` waits for every pending write."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mira-writer")
        self._pending: list[Future] = []

    def write_image(self, name: str, img: Image.Image) -> str:
        """Queue ``img`` to be saved as ``run_dir/name``; returns ``name`` (the path recorded in the trajectory)."""
        self._pending.append(self._pool.submit(self._save, self.run_dir / name, img))
        return name

    @staticmethod
    def _save(path: Path, img: Image.Image) -> None:
        tmp = path.with_suffix(".tmp")
        img.save(tmp, format="PNG", compress_level=1)
        tmp.replace(path)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()

    def close(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)


def _thumb_tag(src: str | None, caption: str) -> str:
    if not src:
        return f'<figure class="missing"><div>no image</div><figcaption>{html.escape(caption)}</figcaption></figure>'
    return (
        f'<figure><a href="{html.escape(src)}"><img src="{html.escape(src)}" loading="lazy"></a>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1400px;color:#222}
.strip{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
figure{margin:0;width:256px}figure img{width:256px;border:1px solid #ccc}
figcaption{font-size:.85rem}.missing div{width:256px;height:128px;background:#eee;display:flex;
align-items:center;justify-content:center}
table{border-collapse:collapse;margin-top:1.5rem}td,th{border:1px solid #ddd;padding:.35rem .6rem;vertical-align:top;
font-size:.9rem}th{background:#f4f4f4}code{white-space:pre-wrap}
"""


def render_report(traj: Trajectory) -> str:
    """Self-contained HTML page (images linked relative to the run folder)."""
    figures = [_thumb_tag("original.png", "original")]
    rows = []
    for s in traj.steps:
        label = f"step {s.index}: {s.action}"
        if not s.is_stop:
            figures.append(_thumb_tag(s.image_path, label))
        scores = ", ".join(f"{k}={v:.2f}" for k, v in s.scores.items())
        rows.append(
            "<tr>"
            f"<td>{s.index}</td><td>{html.escape(s.action)}</td><td>{html.escape(s.reasoning)}</td>"
            f"<td>{html.escape(str(s.editor or ''))}</td><td>{'' if s.seed is None else s.seed}</td>"
            f"<td>{s.policy_seconds:.2f}</td><td>{s.editor_seconds:.2f}</td><td>{len(s.candidates)}</td>"
            f"<td>{html.escape(scores)}</td><td>{html.escape(_notes(s))}</td>"
            "</tr>"
        )
    figures.append(_thumb_tag("final.png", "final"))
    candidates = "".join(_candidates_section(s) for s in traj.steps if len(s.candidates) > 1 or "rejected" in s.extra)
    config = html.escape(json.dumps(traj.config, indent=2, ensure_ascii=False))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>MIRA run {html.escape(traj.id)}</title><style>{_CSS}</style></head>
<body>
<h1>MIRA run <code>{html.escape(traj.id)}</code></h1>
<p><b>Instruction:</b> {html.escape(traj.instruction)}</p>
<p><b>Stopped because:</b> {html.escape(str(traj.stop_reason))}{
        f" ({html.escape(traj.error)})" if traj.error else ""} &middot; <b>steps:</b> {len(traj.steps)}
 &middot; <b>editor calls:</b> {traj.editor_calls} &middot; <b>protocol:</b> {html.escape(traj.protocol_version)}</p>
<div class="strip">{''.join(figures)}</div>
<table><tr><th>#</th><th>action</th><th>reasoning</th><th>editor</th><th>seed</th><th>policy s</th><th>editor s</th>
<th>calls</th><th>scores</th><th>notes</th></tr>{''.join(rows)}</table>
{candidates}
<h2>Configuration</h2><pre><code>{config}</code></pre>
</body></html>
"""


def _notes(step: Step) -> str:
    """Routing, rollback and rejection notes of a step, one line each."""
    notes = [f"route: {step.extra['route']['reason']}"] if isinstance(step.extra.get("route"), dict) else []
    notes += [f"rolled back {r}" for r in step.extra.get("rollbacks", [])]
    notes += [f"{k.replace('_', ' ')}: {step.extra[k]}" for k in ("rejected", "not_executed", "editor_error")
              if k in step.extra]
    return "; ".join(notes)


def _candidates_section(step: Step) -> str:
    """Every candidate of one step with its editor, seed and verifier score; the kept one marked."""
    figures = []
    for c in step.candidates:
        score = f" · score {c['score']:.2f}" if isinstance(c.get("score"), (int, float)) else ""
        mark = " · kept" if c.get("chosen") else f" · failed: {c['error']}" if "error" in c else ""
        caption = f"#{c['n']} (round {c.get('round', 1)}) {c['editor']} seed {c['seed']}{score}{mark}: {c['action']}"
        figures.append(_thumb_tag(c.get("image_path"), caption))
    return f"<h2>Step {step.index}: {len(step.candidates)} candidates</h2><div class=\"strip\">{''.join(figures)}</div>"


def write_report(run_dir: str | Path, traj: Trajectory | None = None) -> Path:
    """(Re-)render ``run_dir/report.html``; with no trajectory given it is read from the folder alone."""
    run_dir = Path(run_dir)
    traj = traj or Trajectory.load(run_dir, with_images=False)
    out = run_dir / "report.html"
    out.write_text(render_report(traj), encoding="utf-8")
    return out


def image_to_png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
