"""Finding the videos of a dataset and their labels: DFDC, DeeperForensics-1.0, or a plain real/ + fake/ folder.

Each layout turns a SOURCE folder into `VideoRecord`s: the file, its id (path relative to SOURCE, `/`-separated,
the id of a video everywhere downstream), label (0 real, 1 fake), split (`train`, `val`, `test` or empty), and
`original` (the id of the real video a fake was made from when known, else the video's own id) and `group`, which
training splits by. A group is a proxy for who is in the video, not an identity: DFDC's part folder (the same
actor may appear in several parts), DeeperForensics' actor (the identity a fake wears; the person of the driving
FaceForensics++ clip is not recorded), labels.csv's `group` (whatever the user put there); empty means `original`.
Splits by such groups keep a fake and its source together but may share people; a user's `groups.csv`
(`data_prep.index.read_groups`, `data.groups`) gives real identities (docs/contract.md).

Layouts:
- ``dfdc``: one or more folders of ``*.mp4``, each with a ``metadata.json`` of the form
  ``{"x.mp4": {"label": "FAKE", "split": "train", "original": "y.mp4"}}`` (the Kaggle DFDC parts). Found
  anywhere under SOURCE. `original` names a file in the same folder. Videos on disk that their folder's
  metadata does not list are skipped (counted in `LayoutResult.skipped`); listed videos that are missing on
  disk are kept, so extraction records them as failures instead of losing them silently.
- ``deeperforensics``: ``manipulated_videos/<method>/**/*.mp4`` are fakes, ``source_videos/<actor>/**/*.mp4``
  are real, ``lists/splits/{train,val,test}.txt`` list fake file names (one a line, e.g. ``000_M101.mp4``).
  A fake's split is the list that names it (empty when none does); its `original` is itself, since a
  DeeperForensics fake has no single real source video (it is driven by a FaceForensics++ clip and wears the
  identity of an actor). A real video's split follows its actor (the first folder under ``source_videos``):
  the split that lists most of that actor's fakes (a fake name ends with ``_<actor>``), ties going to the
  later of train < val < test so a test identity never leaks into training; empty when no fake of the actor
  is listed.
- ``folder``: ``real/**`` and ``fake/**`` videos, labelled by their top folder; an optional ``labels.csv``
  with columns ``video,label`` and optionally ``original``, ``split`` and ``group`` (label: ``real``/``fake`` or
  ``0``/``1``; `video` relative to SOURCE, or a bare file name that is unique) overrides the folders and may
  list videos elsewhere under SOURCE. This is what `deepfake synth` writes.
- the benchmark datasets as they ship (`data_prep.layouts_bench`): ``ffpp`` (FaceForensics++), ``dfd`` (its
  DeepFakeDetection part), ``celebdf`` (``celebdf-v1``, ``celebdf-v2``), ``dfdcp`` (DFDC preview) and
  ``dfdc-test`` (DFDC public test set); ``LayoutOptions`` carries their ``compression`` and ``splits`` folder.
- ``auto``: a benchmark layout when its marks are there (`data_prep.layouts_bench.detect_bench_layout`), else
  ``dfdc`` when a ``metadata.json`` is found, else ``deeperforensics`` when ``manipulated_videos/`` exists, else
  ``folder`` when ``real/``, ``fake/`` or ``labels.csv`` exists.

Every record also names its ``dataset`` (``DFDC``, ``DeeperForensics-1.0``, ``FF++``, ...; empty for a plain
folder) and, for a fake, its manipulation ``method`` when the layout knows it (empty otherwise).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

from data_prep.files import CsvError, is_video_name, iter_videos, read_csv_dicts
from data_prep.index import SPLITS
# the records every layout makes, in a module of their own so that the benchmark layouts can share them
from data_prep.layout_records import (
    LayoutError, LayoutOptions, LayoutResult, VideoRecord, parse_label, parse_split,
)

__all__ = ["LAYOUTS", "BENCH_LAYOUTS", "LayoutError", "LayoutOptions", "LayoutResult", "VideoRecord", "detect_layout",
           "find_videos", "parse_label", "parse_split"]

BENCH_LAYOUTS = ("ffpp", "dfd", "celebdf", "celebdf-v1", "celebdf-v2", "dfdcp", "dfdc-test")
LAYOUTS = ("auto", "dfdc", "deeperforensics", "folder", *BENCH_LAYOUTS)


def _rel(path: Path, source: Path) -> str:
    return path.relative_to(source).as_posix()


def detect_layout(source: str | os.PathLike) -> str:
    """Pick the layout of SOURCE from what it contains (see the module docstring for the rules).

    Raises:
        LayoutError: SOURCE is missing or matches no layout.
    """
    from data_prep.layouts_bench import detect_bench_layout

    source = Path(source)
    if not source.is_dir():
        raise LayoutError(f"{source}: not a folder")
    bench = detect_bench_layout(source)
    if bench:
        return bench
    if (source / "metadata.json").is_file() or any(source.glob("*/metadata.json")) \
            or any(source.glob("*/*/metadata.json")):
        return "dfdc"
    if (source / "manipulated_videos").is_dir():
        return "deeperforensics"
    if (source / "real").is_dir() or (source / "fake").is_dir() or (source / "labels.csv").is_file():
        return "folder"
    raise LayoutError(f"{source}: can't tell the layout: no original_sequences/ or manipulated_sequences/ (ffpp), "
                      "no Celeb-real/ or Celeb-synthesis/ (celebdf), no dataset.json (dfdcp), no labels.csv with "
                      "filename,label (dfdc-test), no metadata.json (dfdc), no manipulated_videos/ (deeperforensics), "
                      "no real/, fake/ or labels.csv (folder); pass --layout")


def find_videos(source: str | os.PathLike, layout: str | LayoutOptions = "auto") -> LayoutResult:
    """List the videos of a dataset with their labels.

    Args:
        source: the dataset folder.
        layout: one of `LAYOUTS`, or a `LayoutOptions` (a layout with its compression and splits folder).

    Returns:
        A `LayoutResult` whose records are sorted by video id.

    Raises:
        LayoutError: unknown layout, SOURCE not in that layout, malformed label files, or no video found.
    """
    source = Path(source)
    options = layout if isinstance(layout, LayoutOptions) else LayoutOptions(layout)
    layout = options.name
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not source.is_dir():
        raise LayoutError(f"{source}: not a folder")
    if layout == "auto":
        layout = detect_layout(source)
    if layout in BENCH_LAYOUTS:
        from data_prep.layouts_bench import find_bench_videos

        result = find_bench_videos(source, layout, options.compression, options.splits)
    else:
        result = {"dfdc": _dfdc, "deeperforensics": _deeperforensics, "folder": _folder}[layout](source)
    if not result.records:
        raise LayoutError(f"{source}: no videos found for layout {layout!r}")
    result.records.sort(key=lambda r: r.video)
    return result


def _dfdc(source: Path) -> LayoutResult:
    metas = sorted(p for p in source.rglob("metadata.json") if not any(s.startswith(".") for s in p.parts))
    if not metas:
        raise LayoutError(f"{source}: no metadata.json found (layout dfdc)")
    records: list[VideoRecord] = []
    skipped = 0
    for meta_path in metas:
        folder = meta_path.parent
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise LayoutError(f"{meta_path}: not readable JSON ({err})") from None
        if not isinstance(meta, dict):
            raise LayoutError(f"{meta_path}: expected an object mapping file names to entries")
        for name, entry in meta.items():
            where = f"{meta_path}: {name}"
            original = entry.get("original") if isinstance(entry, dict) else None
            if not name or not (original is None or isinstance(original, str)):
                raise LayoutError(f"{where}: an entry needs a file name, and its original must be one (or null)")
            for file_name in (name, original):
                if file_name and ("/" in file_name or "\\" in file_name or file_name in (".", "..")):
                    raise LayoutError(f"{where}: {file_name!r} is not a file name in the metadata's folder")
            if not isinstance(entry, dict) or "label" not in entry:
                raise LayoutError(f"{where}: entry without a label")
            label = parse_label(entry["label"], where)
            video = _rel(folder / name, source)
            original = original or None
            original_id = _rel(folder / original, source) if (label == 1 and original) else video
            records.append(VideoRecord(folder / name, video, label, parse_split(entry.get("split", ""), where),
                                       original_id, folder.relative_to(source).as_posix() if folder != source
                                       else source.name, "DFDC"))
        listed = set(meta)
        skipped += sum(1 for p in folder.iterdir() if is_video_name(p) and p.name not in listed)
    notes = [f"{skipped} video file(s) not listed in any metadata.json were skipped"] if skipped else []
    return LayoutResult("dfdc", records, skipped, notes)


def _read_list(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            lines.append(Path(line.replace("\\", "/")).name)
    return lines


def _deeperforensics(source: Path) -> LayoutResult:
    manipulated = source / "manipulated_videos"
    if not manipulated.is_dir():
        raise LayoutError(f"{source}: no manipulated_videos/ folder (layout deeperforensics)")
    split_of: dict[str, str] = {}
    for split in SPLITS:
        list_path = source / "lists" / "splits" / f"{split}.txt"
        if list_path.is_file():
            for name in _read_list(list_path):
                split_of.setdefault(name, split)
    records: list[VideoRecord] = []
    actor_splits: dict[str, Counter] = defaultdict(Counter)
    for path in iter_videos(manipulated):
        video = _rel(path, source)
        split = split_of.get(path.name, "")
        actor = path.stem.rsplit("_", 1)[-1]
        records.append(VideoRecord(path, video, 1, split, video, f"actor:{actor}", "DeeperForensics-1.0",
                                   path.relative_to(manipulated).parts[0]))
        if split:
            actor_splits[actor][split] += 1
    real_root = source / "source_videos"
    notes = []
    if real_root.is_dir():
        for path in iter_videos(real_root):
            rel_parts = path.relative_to(real_root).parts
            actor = rel_parts[0] if len(rel_parts) > 1 else path.stem.split("_")[0]
            counts = actor_splits.get(actor)
            # Most-listed split; ties go to the later split so that test identities never train.
            split = max(SPLITS, key=lambda s: (counts[s], SPLITS.index(s))) if counts else ""
            video = _rel(path, source)
            records.append(VideoRecord(path, video, 0, split, video, f"actor:{actor}", "DeeperForensics-1.0"))
    else:
        notes.append("no source_videos/ folder: only fakes found (add the real videos for a balanced set)")
    return LayoutResult("deeperforensics", records, 0, notes)


def _folder(source: Path) -> LayoutResult:
    by_id: dict[str, VideoRecord] = {}
    seen: set[str] = set()  # a file reached from both folders (a link) is listed once, under the first
    for top, label in (("real", 0), ("fake", 1)):
        if (source / top).is_dir():
            for path in iter_videos(source / top, seen):
                video = _rel(path, source)
                by_id[video] = VideoRecord(path, video, label, "", video)
    labels_csv = source / "labels.csv"
    if labels_csv.is_file():
        by_name: dict[str, list[str]] = defaultdict(list)
        for path in iter_videos(source):
            by_name[path.name].append(_rel(path, source))

        def resolve(name: str, where: str) -> str:
            name = name.strip().replace("\\", "/")
            name = name[2:] if name.startswith("./") else name
            if name.startswith("/") or ".." in name.split("/"):
                raise LayoutError(f"{where}: {name!r} is not inside the dataset folder (give a path relative to it)")
            if "/" in name or (source / name).exists():
                return name
            matches = by_name.get(name, [])
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise LayoutError(f"{where}: {name!r} matches several files ({', '.join(matches[:3])}); "
                                  "give its path relative to the dataset folder")
            return name  # missing on disk: extraction reports it

        try:
            rows = [{k.lower(): v for k, v in row.items()} for row in read_csv_dicts(labels_csv)]
        except CsvError as err:
            raise LayoutError(str(err)) from None
        fields = list(rows[0]) if rows else []
        if rows and not {"video", "label"} <= set(fields):
            raise LayoutError(f"{labels_csv}: needs columns video,label (optional: original, split, group); got "
                              f"{','.join(fields)}")
        pending = []
        for i, row in enumerate(rows, start=2):
            where = f"{labels_csv}:{i}"
            if not row.get("video"):
                raise LayoutError(f"{where}: empty video")
            video = resolve(row["video"], where)
            pending.append((video, parse_label(row.get("label", ""), where),
                            parse_split(row.get("split", ""), where),
                            row.get("original", ""), row.get("group", ""), where))
        for video, label, split, original, group, where in pending:
            original_id = resolve(original, where) if (original and label == 1) else video
            by_id[video] = VideoRecord(source / video, video, label, split, original_id, group)
    elif not by_id and not ((source / "real").is_dir() or (source / "fake").is_dir()):
        raise LayoutError(f"{source}: no real/ or fake/ folder and no labels.csv (layout folder)")
    return LayoutResult("folder", list(by_id.values()))
