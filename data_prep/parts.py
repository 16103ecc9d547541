"""One video's part of an extraction run (`OUT_DIR/parts/`): its crops, index rows and status file, written
atomically after its crops, so a killed run resumes video by video; the run lock; and the boxes a fake reuses from
its original. `data_prep.dataset` runs the whole dataset over these.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.faces import VideoFaces, decode_jpeg, encode_jpeg
from data_prep.files import atomic_folder, LockedError, atomic_write, csv_text, hold_lock
from data_prep.index import INDEX_COLUMNS, LANDMARK_COLUMNS, read_crop
from data_prep.layouts import VideoRecord
from data_prep.pipeline import ReuseBoxes
from data_prep.untouched import face_change
from data_prep.video import VideoError
from data_prep.workers import VideoJob

__all__ = ["DatasetError", "crop_clashes", "part_paths", "read_part_status", "is_done", "write_video_part",
           "write_failure", "run_lock", "BoxReuse"]


class DatasetError(ValueError):
    """A dataset that can't be extracted or merged as asked; the message is one line a user can act on."""


def _crop_dir(video_id: str) -> str:
    return "crops/" + str(Path(video_id).with_suffix("").as_posix())


def crop_clashes(records: list[VideoRecord]) -> dict[str, str]:
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


def part_paths(out: Path, video_id: str) -> tuple[Path, Path]:
    base = out / "parts" / video_id
    return base.with_name(base.name + ".csv"), base.with_name(base.name + ".json")


def read_part_status(out: Path, video_id: str) -> dict | None:
    meta_path = part_paths(out, video_id)[1]
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def is_done(out: Path, video_id: str) -> bool:
    meta = read_part_status(out, video_id)
    return meta is not None and meta.get("status") in ("ok", "no_face") and part_paths(out, video_id)[0].is_file()


def write_video_part(out: Path, record: VideoRecord, result: VideoFaces | VideoError,
                 margin: float) -> tuple[int, int, str | None]:
    """Write one video's crops, index fragment and status (last: it marks the video done).

    Returns:
        (tracks, crops, failure reason or None).
    """
    csv_path, meta_path = part_paths(out, record.video)
    if isinstance(result, VideoError):
        meta = {"video": record.video, "status": "error", "reason": result.reason}
        atomic_write(meta_path, json.dumps(meta))
        return 0, 0, result.reason
    crop_rel = _crop_dir(record.video)
    final = out / crop_rel
    rows = []
    if result.tracks:
        # Crops go to a fresh folder that replaces the old one in one rename: no half-written set is ever visible;
        # whatever fails (a full disk), the temporary folder goes.
        with atomic_folder(final) as tmp:
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


def write_failure(out: Path, video_id: str, reason: str) -> None:
    """Record a video as failed (its status file), so failures.csv lists it and the next run retries it."""
    atomic_write(part_paths(out, video_id)[1], json.dumps({"video": video_id, "status": "error", "reason": reason}))


@contextlib.contextmanager
def run_lock(out: Path, shard: tuple[int, int]) -> Iterator[None]:
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
    meta = read_part_status(out, video_id)
    if meta is None or meta.get("status") != "ok":
        return None
    by_track: dict[int, tuple[list, list, list, list]] = {}
    try:
        with open(part_paths(out, video_id)[0], newline="") as f:
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


class BoxReuse:
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
