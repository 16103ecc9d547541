"""The benchmark datasets' layouts, read as they ship: FaceForensics++ (and its DFD part), Celeb-DF v1/v2, the DFDC
preview and the DFDC public test set (`data_prep.layouts.find_videos` dispatches here).

Each gives `VideoRecord`s with the label, split, `original`, `group` (the best identity proxy the dataset has, so
that a training split never shares a person with validation), `dataset` and `method`.

- ``ffpp``: ``original_sequences/youtube/<c0|c23|c40|raw>/videos/NNN.mp4`` are real;
  ``manipulated_sequences/<method>/<compression>/videos/TARGET_SOURCE.mp4`` are fakes (Deepfakes, Face2Face,
  FaceSwap, NeuralTextures, FaceShifter, and any other method folder there) made on TARGET's video with SOURCE's
  face: `original` is TARGET's real video, `group` is ``ffpp:A+B`` for the pair {TARGET, SOURCE} (FF++ pairs
  its 1000 videos in 500 disjoint pairs), on reals too. Splits come from FF++'s official ``train.json``,
  ``val.json``, ``test.json`` (lists of ``[target, source]`` pairs of ids: both ids' real videos and both
  orders' fakes take the split) in ``SOURCE/splits/`` or the folder given as `splits`; without them the split is
  empty. A video a split file names that is not on disk is reported in the notes and skipped.
- ``dfd``: the DeepFakeDetection part: ``original_sequences/actors/<c>/videos/AA__scene.mp4`` (real) and
  ``manipulated_sequences/DeepFakeDetection/<c>/videos/AA_BB__scene__ID.mp4`` (fake on actor AA's video of that
  scene: its original); `group` is the actor ``dfd:AA``; no official split (empty).
- ``celebdf`` (``celebdf-v1``, ``celebdf-v2``): ``Celeb-real/idN_CCCC.mp4`` and ``YouTube-real/CCCCC.mp4`` are
  real, ``Celeb-synthesis/idN_idM_CCCC.mp4`` fake (made on ``Celeb-real/idN_CCCC.mp4``, its original).
  ``List_of_testing_videos.txt`` lines are ``LABEL PATH`` with LABEL **1 for real, 0 for fake** (the inverse of
  ours); listed videos are the test split, the rest train. A listed label that contradicts its folder is an error
  (a list written with the other convention). `group`: ``celebdf:idN``; a YouTube video its own.
- ``dfdcp``: DFDC preview: ``dataset.json`` maps each video's path to ``{"label": "real"|"fake", "set":
  "train"|"test", ...}``; `method` is the top folder of a fake (``method_A``, ``method_B``); `group` is the entry's
  ``target_id`` when it has one, else the second folder of its path (``method_A/<id>/...``,
  ``original_videos/<id>/...``).
- ``dfdc-test``: DFDC public test set: ``labels.csv`` with columns ``filename,label`` (1 fake, 0 real) beside the
  videos; split ``test``; each video its own group (the test set names no originals).

Bad input raises `LayoutError` with one line naming the file and what is wrong; a video a label or split file
names that is missing on disk is reported (`LayoutResult.notes`) and skipped.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

from data_prep.files import CsvError, iter_videos, read_csv_dicts
from data_prep.layout_records import LayoutError, LayoutResult, VideoRecord, parse_label, parse_split

__all__ = ["FFPP_METHODS", "COMPRESSIONS", "detect_bench_layout", "find_bench_videos"]

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", "DeepFakeDetection")
COMPRESSIONS = ("c0", "c23", "c40", "raw")
_SHOWN = 3  # missing videos named in a note


def detect_bench_layout(source: Path) -> str | None:
    """The benchmark layout SOURCE is in, or None: ``ffpp`` (or ``dfd`` when only the actors part is there),
    ``celebdf``, ``dfdcp`` (``dataset.json``) or ``dfdc-test`` (``labels.csv`` with a ``filename`` column)."""
    if (source / "original_sequences").is_dir() or (source / "manipulated_sequences").is_dir():
        has_youtube = (source / "original_sequences" / "youtube").is_dir() or any(
            p.name != "DeepFakeDetection" for p in (source / "manipulated_sequences").glob("*") if p.is_dir())
        return "ffpp" if has_youtube else "dfd"
    if any((source / name).is_dir() for name in ("Celeb-real", "Celeb-synthesis")):
        return "celebdf"
    if (source / "dataset.json").is_file():
        return "dfdcp"
    labels = source / "labels.csv"
    if labels.is_file():
        with open(labels, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline().strip().lower().replace(" ", "").split(",")
        if "filename" in header:
            return "dfdc-test"
    return None


def find_bench_videos(source: Path, layout: str, compression: str | None = None,
                      splits: str | os.PathLike | None = None) -> LayoutResult:
    """The videos of a benchmark dataset (module docstring); records in no particular order."""
    if layout in ("ffpp", "dfd"):
        return _ffpp(source, layout, compression, splits)
    if layout.startswith("celebdf"):
        return _celebdf(source, layout)
    if layout == "dfdcp":
        return _dfdcp(source)
    if layout == "dfdc-test":
        return _dfdc_test(source)
    raise LayoutError(f"unknown benchmark layout {layout!r}")


def _missing_note(where: str, missing: list[str]) -> str:
    shown = ", ".join(missing[:_SHOWN]) + (f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else "")
    return f"{where} names {len(missing)} video(s) not on disk, skipped: {shown}"


# ------------------------------------------------------------------------------------------------ FaceForensics++


def _compression(source: Path, parts: list[Path], asked: str | None, notes: list[str]) -> str:
    """The compression folder to read: the one asked for, else the only one there, else c23."""
    found = sorted({c for part in parts for c in COMPRESSIONS if (part / c / "videos").is_dir()})
    if asked is not None:
        if asked not in found:
            raise LayoutError(f"{source}: no videos at compression {asked} (found: {', '.join(found) or 'none'}; "
                              f"expected <part>/{asked}/videos/*.mp4)")
        return asked
    if not found:
        raise LayoutError(f"{source}: no <part>/<c0|c23|c40|raw>/videos/ folder under original_sequences/ or "
                          "manipulated_sequences/ (layout ffpp)")
    if len(found) == 1:
        return found[0]
    if "c23" in found:
        notes.append(f"compressions {', '.join(found)} found; reading c23 (pass --compression to pick another)")
        return "c23"
    raise LayoutError(f"{source}: several compressions ({', '.join(found)}); pass --compression")


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    try:
        pairs = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LayoutError(f"{path}: not readable JSON ({err})") from None
    ok = isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, (str, int))
                                                                                      for x in p) for p in pairs)
    if not ok:
        raise LayoutError(f"{path}: expected a list of [target, source] pairs of video ids, e.g. "
                          '[["953", "974"], ...]')
    return [(str(a).strip(), str(b).strip()) for a, b in pairs]


def _ffpp(source: Path, layout: str, compression: str | None, splits: str | os.PathLike | None) -> LayoutResult:
    dfd = layout == "dfd"
    original_root, fake_root = source / "original_sequences", source / "manipulated_sequences"
    real_parts = [p for p in [original_root / ("actors" if dfd else "youtube")] if p.is_dir()]
    fake_parts = sorted(p for p in (fake_root.iterdir() if fake_root.is_dir() else [])
                        if p.is_dir() and (p.name == "DeepFakeDetection") == dfd)
    if not real_parts and not fake_parts:
        want = "original_sequences/actors/ or manipulated_sequences/DeepFakeDetection/" if dfd else \
            "original_sequences/youtube/ or manipulated_sequences/<method>/"
        raise LayoutError(f"{source}: no {want} folder (layout {layout})")
    notes: list[str] = []
    comp = _compression(source, real_parts + fake_parts, compression, notes)
    lacking = [p.name for p in real_parts + fake_parts if not (p / comp / "videos").is_dir()]
    if lacking:
        notes.append(f"no {comp} videos for {', '.join(lacking)}: left out")
    real_parts = [p for p in real_parts if (p / comp / "videos").is_dir()]
    fake_parts = [p for p in fake_parts if (p / comp / "videos").is_dir()]
    dataset = "DFD" if dfd else "FF++"
    reals: dict[str, Path] = {}  # id -> file
    for part in real_parts:
        for path in iter_videos(part / comp / "videos"):
            reals[path.stem] = path
    fakes: list[tuple[str, str, str, Path]] = []  # method, target, source, file
    for part in fake_parts:
        for path in iter_videos(part / comp / "videos"):
            ids = path.stem.split("__")[0].split("_")
            fakes.append((part.name, ids[0], ids[1] if len(ids) > 1 else ids[0], path))
    records: list[VideoRecord] = []
    if dfd:
        for actor_scene, path in reals.items():
            video = path.relative_to(source).as_posix()
            records.append(VideoRecord(path, video, 0, "", video, f"dfd:{actor_scene.split('__')[0]}", dataset))
        for method, target, _, path in fakes:
            scene = path.stem.split("__")[1] if path.stem.count("__") >= 1 else ""
            original = reals.get(f"{target}__{scene}")
            video = path.relative_to(source).as_posix()
            records.append(VideoRecord(path, video, 1, "", original.relative_to(source).as_posix() if original
                                       else video, f"dfd:{target}", dataset, method))
        return LayoutResult(layout, records, 0, notes)

    split_of, partner = _ffpp_splits(source, splits, notes)
    for method, target, src, _ in fakes:
        partner.setdefault(target, src)
        partner.setdefault(src, target)

    def group(a: str) -> str:
        return "ffpp:" + "+".join(sorted({a, partner.get(a, a)}))

    for vid, path in reals.items():
        video = path.relative_to(source).as_posix()
        records.append(VideoRecord(path, video, 0, split_of.get(vid, ""), video, group(vid), dataset))
    for method, target, src, path in fakes:
        video = path.relative_to(source).as_posix()
        original = reals[target].relative_to(source).as_posix() if target in reals else video
        split = split_of.get(target, "") if split_of.get(target) == split_of.get(src) else ""
        records.append(VideoRecord(path, video, 1, split, original, group(target), dataset, method))
    if split_of:
        _note_missing_ffpp(source, comp, split_of, partner, reals, fakes, fake_parts, notes)
        unlisted = sum(1 for r in records if not r.split)
        if unlisted:
            notes.append(f"{unlisted} video(s) are in no split file: their split is empty")
    return LayoutResult(layout, records, 0, notes)


def _ffpp_splits(source: Path, splits: str | os.PathLike | None,
                 notes: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(id -> split, id -> its pair partner) from the official split files; empty when there are none."""
    folder = Path(splits) if splits is not None else source / "splits"
    if splits is not None and not folder.is_dir():
        raise LayoutError(f"{folder}: --splits must be a folder holding train.json, val.json and test.json")
    files = {s: folder / f"{s}.json" for s in ("train", "val", "test") if (folder / f"{s}.json").is_file()}
    if not files:
        if splits is not None:
            raise LayoutError(f"{folder}: no train.json, val.json or test.json (FF++'s official split files)")
        notes.append(f"no split files in {folder} (FF++'s train.json, val.json, test.json): splits left empty; "
                     "pass --splits DIR")
        return {}, {}
    split_of: dict[str, str] = {}
    partner: dict[str, str] = {}
    for split, path in files.items():
        for a, b in _read_pairs(path):
            for x, y in ((a, b), (b, a)):
                if split_of.get(x, split) != split:
                    raise LayoutError(f"{path}: video {x} is also in the {split_of[x]} split")
                split_of[x], partner[x] = split, y
    return split_of, partner


def _note_missing_ffpp(source: Path, comp: str, split_of: dict[str, str], partner: dict[str, str],
                       reals: dict[str, Path], fakes: list, fake_parts: list[Path], notes: list[str]) -> None:
    """Report each split file's videos that are not on disk: both reals of a pair, both fakes per method."""
    have = {(m, t, s) for m, t, s, _ in fakes}
    missing: dict[str, list[str]] = defaultdict(list)
    for vid, split in sorted(split_of.items()):
        if vid not in reals:
            missing[split].append(f"original_sequences/youtube/{comp}/videos/{vid}.mp4")
        for part in fake_parts:
            if (part.name, vid, partner[vid]) not in have:
                missing[split].append(f"manipulated_sequences/{part.name}/{comp}/videos/{vid}_{partner[vid]}.mp4")
    for split in ("train", "val", "test"):
        if missing[split]:
            notes.append(_missing_note(f"splits/{split}.json", missing[split]))


# ------------------------------------------------------------------------------------------------ Celeb-DF


def _celebdf(source: Path, layout: str) -> LayoutResult:
    folders = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
    if not any((source / f).is_dir() for f in folders):
        raise LayoutError(f"{source}: no Celeb-real/, YouTube-real/ or Celeb-synthesis/ folder (layout celebdf)")
    version = {"celebdf-v1": "v1", "celebdf-v2": "v2"}.get(layout)
    if version is None:
        m = re.search(r"v\s*([12])", source.name, re.IGNORECASE)
        version = f"v{m.group(1)}" if m else ""
    dataset = f"Celeb-DF-{version}" if version else "Celeb-DF"
    on_disk: dict[str, tuple[Path, int]] = {}
    for folder, label in folders.items():
        if (source / folder).is_dir():
            for path in iter_videos(source / folder):
                on_disk[path.relative_to(source).as_posix()] = (path, label)
    notes: list[str] = []
    tested = _celebdf_test_list(source, on_disk, notes)
    records = []
    for video, (path, label) in on_disk.items():
        top, stem = video.split("/")[0], path.stem
        ident = stem.split("_")[0]
        if top == "YouTube-real":
            group, original, method = f"youtube:{stem}", video, ""
        elif label == 0:
            group, original, method = f"celebdf:{ident}", video, ""
        else:
            real = f"Celeb-real/{ident}_{stem.rsplit('_', 1)[-1]}{path.suffix}"
            group, original, method = f"celebdf:{ident}", real if real in on_disk else video, "Celeb-synthesis"
        split = ("test" if video in tested else "train") if tested is not None else ""
        records.append(VideoRecord(path, video, label, split, original, group, dataset, method))
    return LayoutResult(layout, records, 0, notes)


def _celebdf_test_list(source: Path, on_disk: dict[str, tuple[Path, int]], notes: list[str]) -> set[str] | None:
    """The videos of ``List_of_testing_videos.txt`` (its labels checked against the folders), or None without it."""
    path = source / "List_of_testing_videos.txt"
    if not path.is_file():
        notes.append(f"no {path.name}: splits left empty")
        return None
    listed: set[str] = set()
    missing = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LayoutError(f"{path}: not readable text ({err})") from None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise LayoutError(f"{path}:{i}: expected 'LABEL PATH' with LABEL 1 (real) or 0 (fake), "
                              f"got {line.strip()!r}")
        label, video = 1 - int(parts[0]), parts[1].replace("\\", "/").removeprefix("./")
        if video not in on_disk:
            missing.append(video)
            continue
        if on_disk[video][1] != label:
            raise LayoutError(f"{path}:{i}: says {parts[0]} ({'real' if parts[0] == '1' else 'fake'}) for {video}, "
                              "which its folder says is not (the list marks 1 = real, 0 = fake)")
        listed.add(video)
    if missing:
        notes.append(_missing_note(path.name, missing))
    return listed


# ------------------------------------------------------------------------------------------------ DFDC


def _dfdcp(source: Path) -> LayoutResult:
    path = source / "dataset.json"
    if not path.is_file():
        raise LayoutError(f"{source}: no dataset.json (layout dfdcp)")
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LayoutError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(entries, dict):
        raise LayoutError(f"{path}: expected an object mapping video paths to {{\"label\", \"set\"}} entries")
    records, missing = [], []
    for name, entry in entries.items():
        where = f"{path}: {name}"
        video = str(name).replace("\\", "/").removeprefix("./")
        if not isinstance(entry, dict) or "label" not in entry:
            raise LayoutError(f"{where}: entry without a label")
        if video.startswith("/") or ".." in video.split("/"):
            raise LayoutError(f"{where}: not a path inside the dataset folder")
        label = parse_label(entry["label"], where)
        split = parse_split(entry.get("set", ""), where)
        file = source / video
        if not file.is_file():
            missing.append(video)
            continue
        parts = video.split("/")
        group = str(entry.get("target_id") or (parts[1] if len(parts) > 2 else parts[0] if len(parts) > 1 else video))
        records.append(VideoRecord(file, video, label, split, video, f"dfdcp:{group}", "DFDCP",
                                   parts[0] if label == 1 and len(parts) > 1 else ""))
    notes = [_missing_note(path.name, missing)] if missing else []
    return LayoutResult("dfdcp", records, 0, notes)


def _dfdc_test(source: Path) -> LayoutResult:
    path = source / "labels.csv"
    try:
        rows = read_csv_dicts(path, need=["filename", "label"])
    except CsvError as err:
        raise LayoutError(str(err)) from None
    by_name: dict[str, list[Path]] = defaultdict(list)
    for file in iter_videos(source):
        by_name[file.name].append(file)
    records, missing = [], []
    for i, row in enumerate(rows, start=2):
        where = f"{path}:{i}"
        name = (row.get("filename") or "").strip().replace("\\", "/")
        if not name:
            raise LayoutError(f"{where}: empty filename")
        label = parse_label(row.get("label", ""), where)
        file = source / name if (source / name).is_file() else \
            (by_name[Path(name).name][0] if len(by_name.get(Path(name).name, [])) == 1 else None)
        if file is None:
            missing.append(name)
            continue
        video = file.relative_to(source).as_posix()
        records.append(VideoRecord(file, video, label, "test", video, video, "DFDC"))
    notes = [_missing_note(path.name, missing)] if missing else []
    return LayoutResult("dfdc-test", records, 0, notes)
