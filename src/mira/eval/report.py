"""Tables and a gallery from an evaluation's output folder (see :mod:`mira.eval.runner`).

Per method: the mean and a 95% confidence interval (percentile bootstrap over items, 2,000 resamples, fixed seed)
of SC, PQ and overall; editor calls, steps and seconds per item; the win rate against the baseline method (``raw``
by default) over the (sample, seed) pairs both have scores for, a tie counting one half; judge failures and stop
reasons. Items whose judgement failed are left out of the score columns and counted in ``judge_failures``.
When the samples carry a ``complexity``, ``clauses`` or ``source`` (Complex-Edit levels, testbed clause counts, a mixed
benchmark), each value also gets its own table.

Writes ``OUT/report.md``, ``OUT/results.csv``, ``OUT/summary.json`` and ``OUT/gallery.html`` (source image, then
each method's final image with its scores, side by side per sample; every image links to its run's report).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from mira.eval.runner import MANIFEST_FILE, RESULTS_FILE, read_records

METRICS = ("sc", "pq", "overall")
GROUP_KEYS = ("complexity", "clauses", "source")  # sample meta keys that get their own tables when they vary
BOOTSTRAP_SAMPLES = 2000


def mean_ci(values: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Mean and 95% percentile-bootstrap interval; ``None`` fields for no values."""
    if not values:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = sum(values) / len(values)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(BOOTSTRAP_SAMPLES))
    return {"mean": mean, "low": means[int(0.025 * BOOTSTRAP_SAMPLES)],
            "high": means[int(0.975 * BOOTSTRAP_SAMPLES) - 1], "n": len(values)}


def _score(record: dict[str, Any], metric: str) -> float | None:
    scores = record.get("scores") or {}
    value = scores.get(metric) if scores.get("error") is None else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(records: Sequence[dict[str, Any]], methods: Sequence[str] | None = None, baseline: str = "raw",
              *, by_group: bool = True) -> dict[str, Any]:
    """Per-method statistics (see the module docstring); methods in the given order, else first-seen order.
    With ``by_group``, ``summary["by"][key][value]`` holds the same for each group of :func:`groups`."""
    order = list(methods or dict.fromkeys(r["method"] for r in records))
    by_method = {m: [r for r in records if r["method"] == m] for m in order}
    base = {(r["sample_id"], r["seed"]): _score(r, "overall") for r in by_method.get(baseline, [])}
    out: dict[str, Any] = {}
    for method, rows in by_method.items():
        stats: dict[str, Any] = {"items": len(rows)}
        for metric in METRICS:
            stats[metric] = mean_ci([v for r in rows if (v := _score(r, metric)) is not None])
        stats["judge_failures"] = sum(1 for r in rows if (r.get("scores") or {}).get("error"))
        stats["editor_calls"] = _mean([r["editor_calls"] for r in rows])
        stats["steps"] = _mean([r["steps"] for r in rows])
        stats["seconds"] = _mean([r["seconds"] for r in rows])
        stats["stop_reasons"] = dict(Counter(r["stop_reason"] for r in rows))
        if baseline in by_method and method != baseline:
            pairs = [(o, base[(r["sample_id"], r["seed"])]) for r in rows
                     if (o := _score(r, "overall")) is not None and base.get((r["sample_id"], r["seed"])) is not None]
            wins = sum(1 for o, b in pairs if o > b)
            ties = sum(1 for o, b in pairs if o == b)
            stats["win_rate"] = {"vs": baseline, "rate": (wins + 0.5 * ties) / len(pairs) if pairs else None,
                                 "wins": wins, "ties": ties, "losses": len(pairs) - wins - ties, "n": len(pairs)}
        out[method] = stats
    summary = {"baseline": baseline if baseline in by_method else None, "methods": out}
    if by_group:
        summary["by"] = {key: {value: summarize(rows, order, baseline, by_group=False) for value, rows in split.items()}
                         for key, split in groups(records).items()}
    return summary


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.2f} [{stat['low']:.2f}, {stat['high']:.2f}]"


def table_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """One flat row per method (the columns of report.md / results.csv)."""
    rows = []
    for method, s in summary["methods"].items():
        row = {"method": method, "items": str(s["items"])}
        for metric in METRICS:
            row[metric.upper() if metric != "overall" else "Overall"] = _ci(s[metric])
        if summary["baseline"]:
            win = s.get("win_rate")
            row[f"win vs {summary['baseline']}"] = "-" if not win or win["rate"] is None else f"{win['rate']:.1%}"
        row["editor calls"] = _fmt(s["editor_calls"])
        row["steps"] = _fmt(s["steps"])
        row["s/item"] = _fmt(s["seconds"])
        row["judge failures"] = str(s["judge_failures"])
        rows.append(row)
    return rows


def _table(summary: dict[str, Any]) -> list[str]:
    rows = table_rows(summary)
    if not rows:
        return ["No results yet."]
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]


def markdown(summary: dict[str, Any], title: str = "Evaluation") -> str:
    """The per-method table, then one table per group (see :func:`groups`)."""
    lines = [f"# {title}", "", "Means with 95% bootstrap intervals; scores 0-10.", "", *_table(summary)]
    for key, by_value in summary.get("by", {}).items():
        for value, sub in by_value.items():
            lines += ["", f"## {key} = {value}", "", *_table(sub)]
    return "\n".join(lines) + "\n"


def groups(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Records split by each of :data:`GROUP_KEYS` found in the samples' meta with two or more values (e.g. the
    complexity levels of Complex-Edit, the sources of a mixed benchmark)."""
    out = {}
    for key in GROUP_KEYS:
        values = {str((r.get("meta") or {}).get(key)) for r in records if key in (r.get("meta") or {})}
        if len(values) > 1:
            split: dict[str, list[dict[str, Any]]] = {}
            for r in records:
                if key in (r.get("meta") or {}):
                    split.setdefault(str(r["meta"][key]), []).append(r)
            out[key] = dict(sorted(split.items(), key=lambda kv: (len(kv[0]), kv[0])))
    return out


def to_csv(summary: dict[str, Any]) -> str:
    """Numeric per-method CSV (means, interval bounds, rates) for spreadsheets and plots."""
    buf = io.StringIO()
    fields = ["method", "items"] + [f"{m}_{k}" for m in METRICS for k in ("mean", "low", "high", "n")]
    fields += ["win_rate", "wins", "ties", "losses", "editor_calls", "steps", "seconds", "judge_failures"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for method, s in summary["methods"].items():
        row: dict[str, Any] = {"method": method, "items": s["items"], "editor_calls": s["editor_calls"],
                               "steps": s["steps"], "seconds": s["seconds"], "judge_failures": s["judge_failures"]}
        for metric in METRICS:
            for k in ("mean", "low", "high", "n"):
                row[f"{metric}_{k}"] = s[metric][k]
        win = s.get("win_rate") or {}
        row.update({"win_rate": win.get("rate"), "wins": win.get("wins"), "ties": win.get("ties"),
                    "losses": win.get("losses")})
        writer.writerow(row)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:.4rem;vertical-align:top;font-size:.85rem}th{background:#f4f4f4}
img{width:220px;display:block}.instr{max-width:260px}.err{color:#b00}.scores{font-family:monospace}
"""


def _cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "<td>not run yet</td>"
    scores = record.get("scores") or {}
    if scores.get("error"):
        text = f'<span class="err">judge failed: {html.escape(str(scores["error"]))}</span>'
    elif scores:
        text = " · ".join(f"{k.upper() if k != 'overall' else 'O'} {_fmt(scores.get(k), 1)}" for k in METRICS)
    else:
        text = "not scored"
    image = ""
    if record.get("run_dir"):
        run = html.escape(record["run_dir"])
        image = f'<a href="{run}/report.html"><img src="{run}/final.png" loading="lazy"></a>'
    calls = record["editor_calls"]
    facts = f"{html.escape(str(record['stop_reason']))}, {calls} editor call{'' if calls == 1 else 's'}"
    return f'<td>{image}<div class="scores">{text}</div><div>{facts}</div></td>'


def gallery(records: Sequence[dict[str, Any]], methods: Sequence[str], title: str = "Evaluation") -> str:
    """HTML page: one row per (sample, seed), the source image then each method's result."""
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["sample_id"], r["seed"]), {})[r["method"]] = r
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    rows = []
    for (sample_id, seed), by_method in sorted(cells.items()):
        first = next(iter(by_method.values()))
        source = next((r["run_dir"] for r in by_method.values() if r.get("run_dir")), None)
        source_img = f'<img src="{html.escape(source)}/original.png" loading="lazy">' if source else ""
        rows.append(
            f'<tr><td class="instr"><b>{html.escape(sample_id)}</b> (seed {seed}){source_img}'
            f"<p>{html.escape(first['instruction'])}</p></td>"
            + "".join(_cell(by_method.get(m)) for m in methods) + "</tr>"
        )
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<table><tr><th>source and instruction</th>{head}</tr>{''.join(rows)}</table></body></html>\n")


def write_report(out_dir: str | Path, *, baseline: str = "raw") -> dict[str, Path]:
    """(Re-)write report.md, results.csv, summary.json and gallery.html from the output folder alone."""
    out_dir = Path(out_dir)
    if not (out_dir / RESULTS_FILE).exists():
        raise FileNotFoundError(f"'{out_dir}' holds no {RESULTS_FILE}; run the evaluation first")
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text()) if (out_dir / MANIFEST_FILE).exists() else {}
    records = list(read_records(out_dir / RESULTS_FILE).values())
    methods = [m for m in manifest.get("methods", {})] or list(dict.fromkeys(r["method"] for r in records))
    title = f"Evaluation: {Path(manifest.get('benchmark') or out_dir.name).name}"
    summary = summarize(records, methods, baseline)
    summary["benchmark"] = manifest.get("benchmark")
    summary["judge"] = manifest.get("judge")
    paths = {"markdown": out_dir / "report.md", "csv": out_dir / "results.csv", "json": out_dir / "summary.json",
             "gallery": out_dir / "gallery.html"}
    paths["markdown"].write_text(markdown(summary, title), encoding="utf-8")
    paths["csv"].write_text(to_csv(summary), encoding="utf-8")
    paths["json"].write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    paths["gallery"].write_text(gallery(records, methods, title), encoding="utf-8")
    return paths
