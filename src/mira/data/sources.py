"""Stage 1, sources: multi-turn editing sessions (I0, [u1..uk], optional human results [I1..Ik]).

Three readers:

- ``seed-data-edit``: the multi-turn part of SEED-Data-Edit (``multi_turn_editing/annotations/*.jsonl`` and the
  unpacked ``images`` folder). A row holds ``source_image`` and, per turn i, ``instruction_i`` and ``edit_image_i``
  (paths relative to the images folder).
- ``magicbrush``: the MagicBrush dataset through ``datasets`` (a hub id, which works offline from the local cache
  with ``HF_HUB_OFFLINE=1``, or a local dataset folder). Rows sharing ``img_id`` form one session, ordered by
  ``turn_index``; the first ``source_img`` is I0 and each ``target_img`` a human result. Their images are written
  as PNGs under ``WORK/sources/images``.
- ``jsonl``: MIRA's own format, one session a line::

      {"id": "kitchen-1", "image": "kitchen.jpg", "turns": ["make the stove black", "make the floor wooden"],
       "results": ["kitchen_1.png", "kitchen_2.png"], "licence": "CC-BY-4.0"}

  ``id``, ``results`` and ``licence`` are optional; relative paths are relative to the source's ``images`` folder
  (default: the JSONL file's folder).

Planning (:func:`plan_sources`) lists the rows cheaply and deals them into shards; reading (:class:`SourceReader`)
validates every image with :func:`mira.images.load_image` and every turn with
:func:`mira.images.validate_instruction`. A broken row raises :class:`SkipRow` with the reason it is counted under.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from mira.data.config import BuildConfig, DataBuildError, SourceConfig
from mira.data.records import Session
from mira.data.store import StageStats
from mira.data.worker import ShardWorker
from mira.images import InputError, load_image, validate_instruction

LICENCES = {"seed-data-edit": "CC-BY-NC-4.0", "magicbrush": "CC-BY-4.0", "jsonl": "unspecified"}
SOURCE_NAMES = {"seed-data-edit": "seed", "magicbrush": "magicbrush", "jsonl": "jsonl"}


class SkipRow(Exception):
    """A source row that cannot become a session; ``reason`` is the drop counter's key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _digest(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise DataBuildError(f"'{path}' has no .jsonl files")
        return files
    if not path.is_file():
        raise DataBuildError(f"source '{path}' does not exist; check the path in the config")
    return [path]


def source_sizes(src: SourceConfig) -> list[tuple[str, int]]:
    """Names and sizes of a source's local files: rows added to a source make a new plan, a mere copy does not."""
    path = Path(src.path)
    if src.kind == "magicbrush":
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    else:
        files = _jsonl_files(path) if path.exists() else []
    return [(str(p.relative_to(path)) if path.is_dir() else p.name, p.stat().st_size) for p in files]


def _plan_jsonl(index: int, src: SourceConfig, stats: StageStats) -> Iterator[dict[str, Any]]:
    for file in _jsonl_files(Path(src.path)):
        with open(file, encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                stats.inputs += 1
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    stats.drop("malformed row")
                    continue
                if not isinstance(row, dict):
                    stats.drop("malformed row")
                    continue
                if src.kind == "jsonl" and isinstance(row.get("id"), (str, int)) and str(row["id"]).strip():
                    sid = str(row["id"]).strip()
                else:
                    sid = f"{SOURCE_NAMES[src.kind]}-{_digest(row)}"
                yield {"id": sid, "source": index, "file": str(file), "line": line_no, "row": row}


def _open_hf(src: SourceConfig) -> Any:
    import datasets

    path = Path(src.path)
    try:
        if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if src.split not in ds:
                    raise DataBuildError(f"'{path}' has no split '{src.split}'; it has: {', '.join(ds)}")
                ds = ds[src.split]
            return ds
        return datasets.load_dataset(src.path, split=src.split)
    except DataBuildError:
        raise
    except Exception as exc:  # hub / cache / format errors of datasets: one line
        raise DataBuildError(f"cannot open MagicBrush source '{src.path}' ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); give a local dataset folder or "
                             "a hub id that is in the local cache") from None


def _plan_magicbrush(index: int, src: SourceConfig, stats: StageStats) -> Iterator[dict[str, Any]]:
    ds = _open_hf(src)
    missing = {"img_id", "turn_index", "instruction", "source_img", "target_img"} - set(ds.column_names)
    if missing:
        raise DataBuildError(f"MagicBrush source '{src.path}' lacks columns: {', '.join(sorted(missing))}")
    keys = ds.select_columns(["img_id", "turn_index"])
    groups: dict[str, list[tuple[int, int]]] = {}
    for row_index, row in enumerate(keys):
        groups.setdefault(str(row["img_id"]), []).append((int(row["turn_index"]), row_index))
    for img_id, rows in groups.items():
        stats.inputs += 1
        rows.sort()
        yield {"id": f"magicbrush-{img_id}", "source": index, "turns": [t for t, _ in rows],
               "rows": [r for _, r in rows]}


def plan_sources(config: BuildConfig) -> tuple[list[list[dict[str, Any]]], StageStats]:
    """Every source row as a small reference, dealt into shards of ``config.shard_size``; duplicate ids dropped."""
    stats = StageStats()
    refs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, src in enumerate(config.sources):
        planner = _plan_magicbrush if src.kind == "magicbrush" else _plan_jsonl
        taken = 0
        for ref in planner(index, src, stats):
            if ref["id"] in seen:
                stats.drop("duplicate session id")
                continue
            seen.add(ref["id"])
            refs.append(ref)
            taken += 1
            if src.limit is not None and taken >= src.limit:
                break
    stats.kept = len(refs)
    size = config.shard_size
    return [refs[i:i + size] for i in range(0, len(refs), size)] or [[]], stats


def _check_image(path: Path) -> str:
    try:
        load_image(path)
    except InputError as exc:
        raise SkipRow("missing image" if not path.is_file() else "unreadable image", str(exc)) from None
    return str(path)


def _check_turns(turns: Any) -> list[str]:
    if not isinstance(turns, list) or not turns:
        raise SkipRow("no turns")
    out = []
    for turn in turns:
        if not isinstance(turn, str):
            raise SkipRow("malformed row", "a turn is not text")
        try:
            out.append(validate_instruction(turn))
        except InputError as exc:
            raise SkipRow("empty turn" if not turn.strip() else "invalid turn", str(exc)) from None
    return out


class SourceReader:
    """Turns plan references into validated :class:`Session` records (opens each source once)."""

    def __init__(self, config: BuildConfig, image_dir: Path):
        self.config = config
        self.image_dir = image_dir
        self._datasets: dict[int, Any] = {}

    def read(self, ref: dict[str, Any]) -> Session:
        src = self.config.sources[ref["source"]]
        if src.kind == "seed-data-edit":
            return self._seed(ref, src)
        if src.kind == "magicbrush":
            return self._magicbrush(ref, src)
        return self._jsonl(ref, src)

    def _licence(self, src: SourceConfig, row: dict[str, Any] | None = None) -> str:
        if row is not None and isinstance(row.get("licence"), str) and row["licence"].strip():
            return row["licence"].strip()
        return src.licence or LICENCES[src.kind]

    def _seed(self, ref: dict[str, Any], src: SourceConfig) -> Session:
        row, root = ref["row"], Path(src.images or ".")
        if not isinstance(row.get("source_image"), str):
            raise SkipRow("malformed row", "no source_image")
        k = 0
        while f"instruction_{k + 1}" in row:
            k += 1
        turns = _check_turns([row[f"instruction_{i}"] for i in range(1, k + 1)])
        names = [row.get(f"edit_image_{i}") for i in range(1, k + 1)]
        if not all(isinstance(n, str) and n for n in names):
            raise SkipRow("malformed row", "an edit_image is missing")
        image = _check_image(root / row["source_image"])
        results = [_check_image(root / n) for n in names]
        return Session(ref["id"], "seed-data-edit", image, turns, results, self._licence(src))

    def _jsonl(self, ref: dict[str, Any], src: SourceConfig) -> Session:
        row = ref["row"]
        root = Path(src.images) if src.images else Path(ref["file"]).parent
        if not isinstance(row.get("image"), str) or not row["image"]:
            raise SkipRow("malformed row", "no image")
        turns = _check_turns(row.get("turns"))
        results = row.get("results")
        if results is not None:
            if not isinstance(results, list) or len(results) != len(turns) or not all(isinstance(r, str) for r in results):
                raise SkipRow("malformed row", "results must list one image per turn")
            results = [_check_image(root / r) for r in results]
        image = _check_image(root / row["image"])
        return Session(ref["id"], "jsonl", image, turns, results, self._licence(src, row))

    def _magicbrush(self, ref: dict[str, Any], src: SourceConfig) -> Session:
        import datasets

        if ref["source"] not in self._datasets:
            ds = _open_hf(src)
            for column in ("source_img", "target_img"):
                ds = ds.cast_column(column, datasets.Image(decode=False))
            self._datasets[ref["source"]] = ds
        ds = self._datasets[ref["source"]]
        if ref["turns"] != list(range(1, len(ref["turns"]) + 1)):
            raise SkipRow("missing turn", f"turn indices {ref['turns']}")
        rows = [ds[i] for i in ref["rows"]]
        turns = _check_turns([r["instruction"] for r in rows])
        folder = self.image_dir / ref["id"]
        images = [self._save(rows[0]["source_img"], folder / "0.png")]
        images += [self._save(r["target_img"], folder / f"{i}.png") for i, r in enumerate(rows, start=1)]
        return Session(ref["id"], "magicbrush", images[0], turns, images[1:], self._licence(src))

    @staticmethod
    def _save(value: dict[str, Any] | None, path: Path) -> str:
        if not value or (value.get("bytes") is None and not value.get("path")):
            raise SkipRow("missing image")
        try:
            img = load_image(value["bytes"] if value.get("bytes") is not None else value["path"])
        except InputError as exc:
            raise SkipRow("unreadable image", str(exc)) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        img.save(tmp, format="PNG", compress_level=1)
        tmp.replace(path)
        return str(path)



class SourcesWorker(ShardWorker):
    """Stage worker: plan references in, validated sessions out."""

    def __init__(self, config: BuildConfig, work_dir: Path):
        super().__init__(config, work_dir)
        self.reader = SourceReader(config, Path(work_dir) / "sources" / "images")

    async def handle(self, row: dict[str, Any], stats: StageStats) -> list[dict[str, Any]]:
        try:
            return [self.reader.read(row).to_dict()]
        except SkipRow as skip:
            stats.drop(skip.reason)
            return []
