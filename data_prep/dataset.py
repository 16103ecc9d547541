"""A dataset's face crops on disk: SOURCE videos -> OUT_DIR/crops/**.jpg + OUT_DIR/index.csv (`extract_dataset`).

What OUT_DIR holds:
- ``crops/<video id without extension>/t<track>_f<frame:06d>.jpg``: the crops of each video.
- ``parts/<video id>.csv`` and ``parts/<video id>.json``: each video's index rows and its status. A finished
  video writes its crops (a folder renamed into place) and then, atomically, these two, the status last: it
  marks the video done. So a killed run resumes where it stopped; videos that failed to decode are retried by
  the next run, videos without a face are not.
- ``index.csv`` (`data_prep.index.INDEX_COLUMNS`, one row per crop) and ``failures.csv`` (video, reason),
  assembled from the parts at the end of a run.
- ``extract_config.json`` (`data_prep.index.EXTRACT_SETTINGS`): the settings that change what is written. A
  later run into the same OUT_DIR must use the same ones, or it is refused (`DatasetError`): crops made two
  ways never mix in one index.

Sharding: shard K of N takes the videos whose `original` hashes to K (`shard_of`), so a fake always lands with
its original and a group never splits across machines. Each shard writes ``index.shard-K-of-N.csv`` /
``failures.shard-K-of-N.csv``; the shard that finishes last merges them into index.csv / failures.csv (or
`merge_shards` does, for ``deepfake-extract OUT_DIR --merge``).

Box reuse: a DFDC fake whose original is extracted in the same run (or was, by an earlier run into the same
OUT_DIR) is cropped with the original's boxes when it has the same frame count and size: no detection at all,
and crops aligned with the original's. Originals run first; their fakes wait for them. The boxes reused are
always those the index records (rounded as written), whether they come from memory or from an earlier run's
parts, so a killed and resumed run writes the same bytes as one that ran through.

Safety: two videos whose crop folders would be one (the same path but for the extension, or for letter case)
are not mixed: the first by id keeps the folder, the other fails with a reason. One run at a time writes a given
OUT_DIR (or a given shard of it): a second is refused while the first holds `.extract[.shard-K-of-N].lock`.
A video whose outputs can't be written (disk full, permissions) fails with that reason; the run goes on.

This module prints nothing: progress and warnings go to the caller's callbacks, errors a user must see are
`DatasetError`s with a one-line message (the command, `deepfake.cli.extract`, prints them).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.extractor import FaceExtractor
from data_prep.faces import ExtractConfig, VideoFaces, damage_note, decode_jpeg, encode_jpeg, output_settings
from data_prep.files import LockedError, atomic_write, csv_text, hold_lock
from data_prep.index import EXTRACT_SETTINGS, FAILURE_COLUMNS, INDEX_COLUMNS, LANDMARK_COLUMNS, read_crop
from data_prep.layouts import LayoutError, VideoRecord, find_videos
from data_prep.pipeline import ReuseBoxes
from data_prep.untouched import face_change
from data_prep.video import VideoError
from data_prep.workers import VideoJob, default_workers

__all__ = ["DatasetError", "ExtractSummary", "extract_dataset", "merge_shards", "shard_name", "shard_of"]


class DatasetError(ValueError):
    """A dataset that can't be extracted or merged as asked; the message is one line a user can act on."""


@dataclass
class ExtractSummary:
    """What a run of `extract_dataset` did.

    Attributes:
        videos: videos of this shard (after `limit`).
        tracks: face tracks over them (this run's and earlier runs').
        failures: videos in failures.csv (unreadable, no face, not processed).
        done_now: videos extracted by this run.
        already_done: videos an earlier run had finished.
        elapsed: seconds from the start of extraction (the detector loaded) to the index written.
        device: the detector's device.
        index: the index written: index.csv, or with shards this shard's index.shard-K-of-N.csv.
        merged: index.csv when this run finished the last shard and merged them all, else None.
        shards: the number of shards.
    """

    videos: int
    tracks: int
    failures: int
    done_now: int
    already_done: int
    elapsed: float
    device: str
    index: Path
    merged: Path | None = None
    shards: int = 1


# ------------------------------------------------------------------------------------------------ per video


def _crop_dir(video_id: str) -> str:
    return "crops/" + str(Path(video_id).with_suffix("").as_posix())


def _crop_clashes(records: list[VideoRecord]) -> dict[str, str]:
    """Videos whose crop folder an earlier video (by id) already takes, with the reason to report."""
    owner: dict[str, str] = {}
    clashes: dict[str, str] = {}
    for r in sorted(records, key=lambda r: r.video):
        key = _crop_dir(r.video).casefold()  # case-insensitive file systems (macOS, Windows) merge these too
        if key in owner:
            clashes[r.video] = (f"its crops would share the folder {_crop_dir(r.video)} with {owner[key]}'s; rename "
                                "one of the two videos")
        else:
            owner[key] = r.video
    return clashes


def _box_text(box) -> list[str]:
    return [f"{v:.2f}" for v in box]


def _score_text(score: float) -> str:
    return f"{score:.5f}"


def _landmark_texts(points: np.ndarray | None, n: int) -> list[list[str]]:
    """Per crop, the ten landmark cells (empty when unknown)."""
    if points is None:
        return [[""] * len(LANDMARK_COLUMNS)] * n
    return [["" if not np.isfinite(v) else f"{v:.2f}" for v in p.reshape(-1)] for p in points]


def _as_recorded(faces: VideoFaces, stride: int) -> ReuseBoxes:
    """A video's boxes, scores and landmarks exactly as its index rows record them (what `_load_boxes` reads)."""
    reuse = ReuseBoxes.from_faces(faces, stride)

    def recorded(points: np.ndarray | None, n: int) -> np.ndarray | None:
        if points is None:
            return None
        return np.asarray([[float(v) if v else np.nan for v in p] for p in _landmark_texts(points, n)],
                          np.float32).reshape(-1, 5, 2)

    reuse.tracks = [(track, frames, np.asarray([[float(v) for v in _box_text(b)] for b in boxes], np.float32),
                     np.asarray([float(_score_text(s)) for s in scores], np.float32), recorded(points, len(frames)))
                    for track, frames, boxes, scores, points in reuse.tracks]
    return reuse


def _face_changes(out: Path, original: str, track: int, frames: np.ndarray, jpegs: list[bytes],
                  margin: float) -> list[str]:
    """Per crop of a fake's track cropped with its original's boxes, `face_change` against the original's crop
    (empty where the original has no crop of that frame and track, or it can't be read)."""
    folder = out / _crop_dir(original)
    cells = []
    for frame, data in zip(frames, jpegs):
        try:  # read_crop raises OSError for a crop the original lacks
            original_crop = read_crop(folder / f"t{track}_f{int(frame):06d}.jpg")
            cells.append(f"{face_change(decode_jpeg(data), original_crop, margin):.2f}")
        except (OSError, ValueError):
            cells.append("")
    return cells


def _part_paths(out: Path, video_id: str) -> tuple[Path, Path]:
    base = out / "parts" / video_id
    return base.with_name(base.name + ".csv"), base.with_name(base.name + ".json")


def _read_meta(out: Path, video_id: str) -> dict | None:
    meta_path = _part_paths(out, video_id)[1]
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def _is_done(out: Path, video_id: str) -> bool:
    meta = _read_meta(out, video_id)
    return meta is not None and meta.get("status") in ("ok", "no_face") and _part_paths(out, video_id)[0].is_file()


def _write_video(out: Path, record: VideoRecord, result: VideoFaces | VideoError,
                 margin: float) -> tuple[int, int, str | None]:
    """Write one video's crops, index fragment and status (last: it marks the video done).

    Returns:
        (tracks, crops, failure reason or None).
    """
    csv_path, meta_path = _part_paths(out, record.video)
    if isinstance(result, VideoError):
        meta = {"video": record.video, "status": "error", "reason": result.reason}
        atomic_write(meta_path, json.dumps(meta))
        return 0, 0, result.reason
    crop_rel = _crop_dir(record.video)
    final = out / crop_rel
    rows = []
    if result.tracks:
        # Crops go to a fresh folder that replaces the old one in one rename: no half-written set is ever visible.
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:  # whatever fails (a full disk), the temporary folder goes: it is gone after the rename anyway
            tmp.mkdir(parents=True)
            for t in result.tracks:
                jpegs = t.jpegs if t.jpegs is not None else [encode_jpeg(c, 95) for c in t.crops]
                changes = (_face_changes(out, result.boxes_from, t.track, t.frames, jpegs, margin)
                           if result.boxes_from else [""] * len(jpegs))
                for frame, box, score, data, points, change in zip(t.frames, t.boxes, t.scores, jpegs,
                                                                   _landmark_texts(t.landmarks, len(jpegs)), changes):
                    name = f"t{t.track}_f{int(frame):06d}.jpg"
                    (tmp / name).write_bytes(data)
                    rows.append([record.video, record.label, record.split, record.original, t.track, int(frame),
                                 *_box_text(box), _score_text(score), f"{crop_rel}/{name}",
                                 record.group or record.original, *points, change, record.dataset, record.method])
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    elif final.exists():
        shutil.rmtree(final)
    atomic_write(csv_path, csv_text(rows, INDEX_COLUMNS))
    reason = None if result.tracks else "no face found"
    meta = {"video": record.video, "status": "ok" if result.tracks else "no_face", "reason": reason,
            "n_frames": result.n_frames, "fps": result.fps, "width": result.width, "height": result.height,
            "tracks": len(result.tracks), "crops": len(rows), "boxes_from": result.boxes_from,
            "damaged_frames": result.damaged_frames}
    atomic_write(meta_path, json.dumps(meta))
    return len(result.tracks), len(rows), reason


def _write_failure(out: Path, video_id: str, reason: str) -> None:
    """Record a video as failed (its status file), so failures.csv lists it and the next run retries it."""
    atomic_write(_part_paths(out, video_id)[1], json.dumps({"video": video_id, "status": "error", "reason": reason}))


@contextlib.contextmanager
def _run_lock(out: Path, shard: tuple[int, int]) -> Iterator[None]:
    """Hold OUT_DIR's (or its shard's) lock for a run (`data_prep.files.hold_lock`); DatasetError when another run
    holds it."""
    k, n = shard
    name = ".extract.lock" if n == 1 else f".extract.shard-{k}-of-{n}.lock"
    try:
        with hold_lock(out / name, os.fspath(out)):
            yield
    except LockedError as err:
        what = f"shard {k}/{n} of {out}" if n > 1 else os.fspath(out)
        raise DatasetError(f"another deepfake-extract ({err.holder}) is writing to {what}; wait for it to end, or "
                           "use another OUT_DIR") from None


def _load_boxes(out: Path, video_id: str, stride: int) -> ReuseBoxes | None:
    """The boxes of a video extracted by an earlier run into OUT_DIR, for reuse by its fakes."""
    meta = _read_meta(out, video_id)
    if meta is None or meta.get("status") != "ok":
        return None
    by_track: dict[int, tuple[list, list, list, list]] = {}
    try:
        with open(_part_paths(out, video_id)[0], newline="") as f:
            for row in csv.DictReader(f):
                lists = by_track.setdefault(int(row["track"]), ([], [], [], []))
                lists[0].append(int(row["frame"]))
                lists[1].append([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
                lists[2].append(float(row["score"]))
                lists[3].append([float(row.get(k) or "nan") for k in LANDMARK_COLUMNS])  # a part from before: NaN
    except (OSError, KeyError, ValueError):
        return None

    def landmarks(values: list) -> np.ndarray | None:
        points = np.asarray(values, np.float32).reshape(-1, 5, 2)
        return None if np.isnan(points).all() else points

    tracks = [(tid, np.asarray(fr, np.int64), np.asarray(bx, np.float32), np.asarray(sc, np.float32), landmarks(lm))
              for tid, (fr, bx, sc, lm) in sorted(by_track.items())]
    return ReuseBoxes(video_id, int(meta["n_frames"]), int(meta["width"]), int(meta["height"]), stride, tracks)


class _BoxReuse:
    """Which videos of a run crop with another's boxes (DFDC fakes with their original), and those boxes.

    `order` puts originals first and makes the jobs; `keep` remembers an original's boxes when it finishes (only
    while a fake still needs them); `lookup` gives a fake its original's boxes, from this run or from OUT_DIR.
    """

    def __init__(self, out: Path, records: list[VideoRecord], stride: int, enabled: bool) -> None:
        self.out, self.stride, self.enabled = out, stride, enabled
        self.by_id = {r.video: r for r in records}
        self.todo: list[VideoRecord] = []
        self.dependents: dict[str, int] = {}
        self.cache: dict[str, ReuseBoxes | None] = {}

    def source_of(self, r: VideoRecord) -> str | None:
        by_id = self.by_id
        return r.original if (self.enabled and r.label == 1 and r.original != r.video and r.original in by_id
                              and by_id[r.original].label == 0) else None

    def order(self, todo: list[VideoRecord]) -> list[VideoJob]:
        """Sort `todo` in place, originals first, and the jobs for it (keyed by position in `todo`)."""
        todo.sort(key=lambda r: self.source_of(r) is not None)
        self.todo = todo
        todo_ids = {r.video for r in todo}
        keys = {r.video: i for i, r in enumerate(todo)}
        jobs = [VideoJob(i, os.fspath(r.path), keys.get(self.source_of(r)) if self.source_of(r) in todo_ids else None)
                for i, r in enumerate(todo)]
        for r in todo:
            if self.source_of(r):
                self.dependents[self.source_of(r)] = self.dependents.get(self.source_of(r), 0) + 1
        return jobs

    def keep(self, job: VideoJob, faces: VideoFaces) -> None:
        vid = self.todo[job.key].video
        if self.dependents.get(vid) and faces.tracks:  # an original without a face: its fakes detect for themselves
            self.cache[vid] = _as_recorded(faces, self.stride)
            self.cache[vid].source = vid  # the id, not the path, goes to the fake's status file

    def lookup(self, job: VideoJob) -> ReuseBoxes | None:
        orig = self.source_of(self.todo[job.key])
        if orig is None:
            return None
        if orig not in self.cache:
            self.cache[orig] = _load_boxes(self.out, orig, self.stride)
        boxes = self.cache[orig]
        self.dependents[orig] -= 1
        if self.dependents[orig] <= 0:
            self.cache.pop(orig, None)
        return boxes


# ------------------------------------------------------------------------------------------------ shards, index


def shard_of(original: str, n_shards: int) -> int:
    """Shard of a video group (a real video and its fakes share `original`): stable across runs and machines."""
    return zlib.crc32(original.encode("utf-8")) % n_shards


def shard_name(kind: str, k: int, n: int) -> str:
    """File name of shard K of N's ``index`` or ``failures`` file."""
    return f"{kind}.shard-{k}-of-{n}.csv"


def _assemble(out: Path, records: list[VideoRecord]) -> tuple[str, str, int, int, int]:
    """Index and failures CSV text for a list of records, from their per-video fragments."""
    lines: list[str] = []
    failures: list[list[str]] = []
    n_tracks = 0
    header = ",".join(INDEX_COLUMNS) + "\n"
    for record in records:
        csv_path, _ = _part_paths(out, record.video)
        meta = _read_meta(out, record.video)
        if meta is None:
            failures.append([record.video, "not processed (run interrupted?)"])
            continue
        if meta.get("reason"):
            failures.append([record.video, meta["reason"]])
        if meta.get("status") in ("ok", "no_face"):
            n_tracks += int(meta.get("tracks", 0))
            text = csv_path.read_text()
            lines.append(text[len(header):] if text.startswith(header) else _rows_as_current(text))
    return header + "".join(lines), csv_text(failures, FAILURE_COLUMNS), len(records), n_tracks, len(failures)


def _rows_as_current(text: str) -> str:
    """The rows of a part written with other index columns (by an older version), as the current columns (cells
    the part lacks are empty: unknown)."""
    rows = [[row.get(c) or "" for c in INDEX_COLUMNS] for row in csv.DictReader(text.splitlines())]
    return csv_text(rows, INDEX_COLUMNS, with_header=False)


def merge_shards(out: str | os.PathLike, n_shards: int | None = None) -> tuple[int, int, int]:
    """Concatenate the per-shard index and failure files into index.csv and failures.csv.

    Args:
        out: OUT_DIR.
        n_shards: the number of shards (None: from the shard files found).

    Returns:
        (index rows, failures, shards merged).

    Raises:
        DatasetError: no shard files, shard files for several shard counts, or shards not finished yet (the
            message says which).
    """
    out = Path(out)
    if n_shards is None:
        found = sorted({int(m.group(2)) for p in out.glob("index.shard-*-of-*.csv")
                        if (m := re.fullmatch(r"index\.shard-(\d+)-of-(\d+)\.csv", p.name))})
        if not found:
            raise DatasetError(f"{out}: no index.shard-K-of-N.csv files to merge")
        if len(found) > 1:
            raise DatasetError(f"{out}: shard files for several shard counts ({found}); remove the stale ones")
        n_shards = found[0]
    missing = [k for k in range(n_shards) if not (out / shard_name("index", k, n_shards)).is_file()]
    if missing:
        raise DatasetError(f"{out}: shards {missing} of {n_shards} are not finished yet")
    index_parts, failure_parts = [], []
    for k in range(n_shards):
        index_parts.append((out / shard_name("index", k, n_shards)).read_text().split("\n", 1)[1])
        fail = out / shard_name("failures", k, n_shards)
        failure_parts.append(fail.read_text().split("\n", 1)[1] if fail.is_file() else "")
    index_text = ",".join(INDEX_COLUMNS) + "\n" + "".join(index_parts)
    failures_text = ",".join(FAILURE_COLUMNS) + "\n" + "".join(failure_parts)
    atomic_write(out / "index.csv", index_text)
    atomic_write(out / "failures.csv", failures_text)
    return index_text.count("\n") - 1, failures_text.count("\n") - 1, n_shards


def _check_settings(out: Path, config: ExtractConfig) -> None:
    """Write OUT_DIR's settings file, or check that `config` matches the one there (DatasetError if not)."""
    settings = output_settings(config)
    settings_path = out / EXTRACT_SETTINGS
    if settings_path.is_file():
        try:
            previous = json.loads(settings_path.read_text())
        except ValueError:
            previous = None
        # A setting the folder's file does not name is newer than the folder's crops: not a change.
        changed = {key: (previous[key], value) for key, value in settings.items()
                   if isinstance(previous, dict) and key in previous and previous[key] != value}
        if changed:
            what = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changed.items())
            raise DatasetError(f"{out} holds crops made with other settings ({what}); use another OUT_DIR or "
                               "the same settings")
    else:
        atomic_write(settings_path, json.dumps(settings, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ a run


def extract_dataset(source: str | os.PathLike, out: str | os.PathLike, config: ExtractConfig, *,
                    layout: str = "auto", shard: tuple[int, int] = (0, 1), limit: int | None = None,
                    workers: int | None = None, reuse_original_boxes: bool = True,
                    progress: Callable[[int, int, int, int], None] | None = None,
                    warn: Callable[[str], None] | None = None, engine: Callable = FaceExtractor) -> ExtractSummary:
    """Extract the faces of a dataset's videos into OUT_DIR, resuming what an earlier run left (module docstring).

    Args:
        source: the dataset folder.
        out: OUT_DIR.
        config: extraction settings; those that change the output must match OUT_DIR's settings file.
        layout: the dataset layout: a `data_prep.layouts.LAYOUTS` name or a `LayoutOptions` (FF++ compression).
        shard: (K, N): process shard K of N (0-based).
        limit: process at most this many of the shard's videos.
        workers: extraction processes (0: this process; None: one per core, at most 16).
        reuse_original_boxes: crop a DFDC fake with its original's boxes when they fit.
        progress: called with (videos done, videos to do, face tracks found, failures) by this run, once with
            0 videos done when extraction starts (the detector loaded), then after each video.
        warn: called with one-line remarks, ``note: ...`` (about the dataset) or ``warning: ...`` (about a
            video: damaged data skipped).
        engine: makes the extractor from (config, workers): `FaceExtractor`, or `data_prep.ray_extract`'s on Ray.

    Returns:
        What was done, and where the index is.

    Raises:
        DatasetError: SOURCE does not fit the layout, OUT_DIR holds crops made with other settings, or the
            extractor can't be made as asked (a GPU asked for without one, workers < 0).
    """
    if not (os.fspath(source).strip() and os.fspath(out).strip()):  # Path("") would be the current folder
        raise DatasetError("an empty path was given: name SOURCE and OUT_DIR")
    source, out = Path(source), Path(out)
    try:
        found = find_videos(source, layout)
    except LayoutError as err:
        raise DatasetError(str(err)) from None
    for note in found.notes:
        if warn is not None:
            warn(f"note: {note}")
    k, n = shard
    records = [r for r in found.records if shard_of(r.original, n) == k]
    if limit is not None:
        records = records[:max(0, limit)]

    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / ".extract.write-test", "w"):
            pass
        os.unlink(out / ".extract.write-test")
    except OSError as err:  # a file in the way, a read-only disk or folder: before any work, in one line
        raise DatasetError(f"can't write to OUT_DIR {out}: {err.strerror or err}") from None
    with _run_lock(out, shard):
        return _extract_locked(out, config, records, found.records, shard, workers, reuse_original_boxes, progress,
                               warn, engine)


def _extract_locked(out: Path, config: ExtractConfig, records: list[VideoRecord], all_records: list[VideoRecord],
                    shard: tuple[int, int], workers: int | None, reuse_original_boxes: bool,
                    progress: Callable[[int, int, int, int], None] | None,
                    warn: Callable[[str], None] | None, engine: Callable = FaceExtractor) -> ExtractSummary:
    """`extract_dataset` once OUT_DIR's lock is held."""
    k, n = shard
    _check_settings(out, config)
    clashes = _crop_clashes(all_records)  # over every shard's videos: shards share the crops folder
    refused = [r for r in records if r.video in clashes]
    for r in refused:
        _write_failure(out, r.video, clashes[r.video])
    todo = [r for r in records if r.video not in clashes and not _is_done(out, r.video)]
    workers = default_workers() if workers is None else workers
    try:
        extractor = engine(config, min(workers, len(todo)) if todo else 0)
    except ValueError as err:
        raise DatasetError(str(err)) from None
    try:
        reuse = _BoxReuse(out, records, config.stride, reuse_original_boxes)
        jobs = reuse.order(todo)
        started = time.monotonic()
        n_new_tracks = n_new_fail = 0
        if progress is not None:
            progress(0, len(todo), 0, 0)
        for done, (job, result) in enumerate(extractor.run_jobs(jobs, jpeg=True, keep_boxes=reuse.keep,
                                                                reuse_lookup=reuse.lookup), 1):
            try:
                tracks, _, reason = _write_video(out, todo[job.key], result, config.margin)
            except OSError as err:  # disk full, permissions, a folder changed under us: this video fails, not the run
                tracks, reason = 0, f"can't write its outputs: {err}"
                with contextlib.suppress(OSError):
                    _write_failure(out, todo[job.key].video, reason)
            if isinstance(result, VideoFaces) and result.damaged_frames and warn is not None:
                warn(f"warning: {todo[job.key].video}: {damage_note(result)}")
            n_new_tracks += tracks
            n_new_fail += reason is not None
            if progress is not None:
                progress(done, len(todo), n_new_tracks, n_new_fail)
    finally:
        extractor.close()

    index_text, failures_text, n_videos, n_tracks, n_failures = _assemble(out, records)
    merged = None
    if n == 1:
        atomic_write(out / "index.csv", index_text)
        atomic_write(out / "failures.csv", failures_text)
        index = out / "index.csv"
    else:
        atomic_write(out / shard_name("failures", k, n), failures_text)
        atomic_write(out / shard_name("index", k, n), index_text)
        index = out / shard_name("index", k, n)
        try:
            merge_shards(out, n)
            merged = out / "index.csv"
        except DatasetError:  # other shards still running: the last one merges
            pass
    return ExtractSummary(videos=n_videos, tracks=n_tracks, failures=n_failures, done_now=len(todo),
                          already_done=len(records) - len(todo) - len(refused), elapsed=time.monotonic() - started,
                          device=extractor.device, index=index, merged=merged, shards=n)
