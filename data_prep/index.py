"""The face-crop index (`index.csv`): its columns, its one reader, and the one reader of its crops.

Written by `data_prep.dataset` (deepfake-extract), read by training (`deepfake.data`), evaluation and
calibration. One row per face crop; the columns are described in docs/architecture.md ("index.csv").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from data_prep.faces import LANDMARKS
from data_prep.files import CsvError, OneLineError, read_csv_dicts
from data_prep.track import points_in_crop, resize_crop

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["INDEX_COLUMNS", "LANDMARK_COLUMNS", "FAILURE_COLUMNS", "REQUIRED_COLUMNS", "LABELS", "SPLITS",
           "EXTRACT_SETTINGS", "IndexFileError", "FaceTrackRecord", "read_index", "load_tracks", "read_crop",
           "GROUP_COLUMNS", "read_groups", "apply_groups"]

# MTCNN's five landmarks per crop, in video pixels like the box: eye1_x, eye1_y, ..., mouth2_y (empty: unknown).
LANDMARK_COLUMNS = [f"{name}_{axis}" for name in LANDMARKS for axis in "xy"]
# face_change: for a fake cropped with its original's boxes, how much this crop's face differs from the original's
# crop of the same frame (`data_prep.untouched`); empty for every other row.
_NUMERIC = ("x1", "y1", "x2", "y2", "score", *LANDMARK_COLUMNS, "face_change")
# dataset, method: where a video comes from and, for a fake, how it was made (`data_prep.layouts`; empty: unknown,
# and in an index from before they were written).
INDEX_COLUMNS = ["video", "label", "split", "original", "track", "frame", "x1", "y1", "x2", "y2", "score", "crop",
                 "group", *LANDMARK_COLUMNS, "face_change", "dataset", "method"]
FAILURE_COLUMNS = ["video", "reason"]
REQUIRED_COLUMNS = ("video", "label", "track", "frame", "crop")
# Label spellings accepted in index.csv and labels.csv.
LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1, "0.0": 0, "1.0": 1}
SPLITS = ("train", "val", "test")
# Extraction settings `deepfake-extract` writes beside index.csv.
EXTRACT_SETTINGS = "extract_config.json"
# A user's groups.csv: who is in each video (`read_groups`), for splits that keep a person on one side.
GROUP_COLUMNS = ("video", "group")


class IndexFileError(OneLineError, ValueError):
    """An index.csv that can't be used; the message is one line a user can act on."""


# ------------------------------------------------------------------------------------------------------ index


@dataclass
class FaceTrackRecord:
    """One face track of one video: its crops in frame order and what the index says about it."""

    video: str
    track: int
    label: int
    original: str
    split: str
    frames: np.ndarray  # (N,) int, frame numbers in the video
    crops: list[str]  # N absolute paths
    group: str = ""  # a proxy for who is in it (splits never share a group); the original when the index does not say
    boxes: np.ndarray | None = None  # (N, 4) float32 face boxes in video pixels (None: the index has none)
    landmarks: np.ndarray | None = None  # (N, 5, 2) float32 MTCNN landmarks in video pixels (None: not recorded)
    face_change: np.ndarray | None = None  # (N,) float32 `data_prep.untouched.face_change` (None: not measured)

    def crop_landmarks(self, size: int, margin: float) -> np.ndarray | None:
        """The landmarks in the pixels of the crops resized to `size` (cut with `margin`), or None when the index
        has none (an index from before they were kept): (N, 5, 2) float32."""
        if self.landmarks is None or self.boxes is None:
            return None
        return points_in_crop(self.landmarks, self.boxes, margin, size)


def read_index(path: str | os.PathLike) -> tuple[pd.DataFrame, Path]:
    """Reads and checks `index.csv` (docs/architecture.md).

    Args:
        path: the index file, or the folder that holds `index.csv`.

    Returns:
        The table (labels as 0/1 ints, empty `split` as "", missing `original` filled with `video`) and the
        folder that crop paths are relative to.
    """
    import pandas as pd  # here, not at the top: extraction workers import this module and never read an index

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "index.csv"
    if not path.is_file():
        raise IndexFileError(f"{path} does not exist; make it with `deepfake-extract VIDEOS OUT_DIR` first")
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False,
                         dtype={"video": str, "split": str, "original": str, "crop": str, "label": str, "group": str,
                                "dataset": str, "method": str},
                         na_values={"frame": [""], "track": [""]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise IndexFileError(f"{path} is not a readable CSV: {' '.join(str(e).split())}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise IndexFileError(f"{path} lacks column(s) {', '.join(missing)}; expected {','.join(INDEX_COLUMNS)}")
    if df.empty:
        raise IndexFileError(f"{path} has no rows (no face was extracted)")
    labels = df["label"].str.strip().str.lower().map(LABELS)
    if labels.isna().any():
        bad = df.loc[labels.isna(), "label"].iloc[0]
        raise IndexFileError(f"{path}: label {bad!r} is not 0/1 (or real/fake)")
    df["label"] = labels.astype(int)
    for col in ("track", "frame"):
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            raise IndexFileError(f"{path}: column {col} must hold integers")
        df[col] = values.astype(int)
    df["split"] = df["split"].str.strip().str.lower() if "split" in df.columns else ""
    bad_split = sorted(set(df["split"]) - {"", *SPLITS})
    if bad_split:
        raise IndexFileError(f"{path}: split {bad_split[0]!r} is not one of train, val, test or empty")
    if "original" not in df.columns:
        df["original"] = df["video"]
    df["original"] = df["original"].where(df["original"].str.len() > 0, df["video"])
    if "group" not in df.columns:  # an index from before groups: each original is its own group
        df["group"] = df["original"]
    df["group"] = df["group"].astype(str).where(df["group"].astype(str).str.len() > 0, df["original"])
    for col in ("dataset", "method"):
        if col not in df.columns:
            df[col] = ""
    for col in _NUMERIC:  # empty or missing values become NaN: "unknown" (see `_floats`)
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float32)
    return df, path.parent


def load_tracks(df: pd.DataFrame, root: str | os.PathLike) -> list[FaceTrackRecord]:
    """Groups index rows into face tracks, (video, track) in sorted order, crops sorted by frame."""
    root = Path(root)
    tracks = []
    for (video, track), rows in df.groupby(["video", "track"], sort=True):
        rows = rows.sort_values("frame", kind="stable")
        first = rows.iloc[0]
        if rows["label"].nunique() > 1:
            raise IndexFileError(f"video {video} has rows with both labels")
        tracks.append(FaceTrackRecord(
            video=str(video), track=int(track), label=int(first["label"]), original=str(first["original"]),
            split=str(first["split"]), frames=rows["frame"].to_numpy(dtype=np.int64),
            crops=[str(root / c) for c in rows["crop"]], group=str(first.get("group", "") or first["original"]),
            boxes=_floats(rows, ["x1", "y1", "x2", "y2"], (4,)),
            landmarks=_floats(rows, LANDMARK_COLUMNS, (len(LANDMARKS), 2)),
            face_change=_floats(rows, ["face_change"], ()),
        ))
    return tracks


def _floats(rows: pd.DataFrame, columns: list[str], shape: tuple[int, ...]) -> np.ndarray | None:
    """Numeric columns of a track's rows as (N, *shape) float32; None when the index lacks them or any is empty or
    not a number (then the feature that needs them says so)."""
    if any(c not in rows.columns for c in columns):
        return None
    values = rows[columns].to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        return None
    return values.reshape(len(values), *shape)


def read_crop(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """A face crop as (S, S, 3) uint8 RGB, resized to `size` when given and different.

    Raises:
        OSError: the file is missing or not an image (one line, naming it).
    """
    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read face crop {path} (missing or not an image); re-run extraction")
    if size is not None:
        img = resize_crop(img, size)  # the rule inference uses too (`data_prep.track.RESIZE_RULE`)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------------------------------- groups


def read_groups(path: str | os.PathLike) -> dict[str, str]:
    """A user's `groups.csv` (``video,group``: the person, or people, in each video) as {video: group}.

    `video` is the index's video id (the path relative to the extraction SOURCE, `/`-separated).

    Raises:
        IndexFileError: unreadable, a column missing, an empty group, or one video given two groups (one line).
    """
    try:
        rows = read_csv_dicts(path, need=GROUP_COLUMNS)
    except CsvError as err:
        raise IndexFileError(str(err)) from None
    groups: dict[str, str] = {}
    for n, row in enumerate(rows, start=2):
        video, group = row["video"].replace("\\", "/"), row["group"]
        if not video or not group:
            raise IndexFileError(f"{path}: line {n} has an empty video or group")
        if groups.setdefault(video, group) != group:
            raise IndexFileError(f"{path}: video {video} is given two groups ({groups[video]}, {group})")
    if not groups:
        raise IndexFileError(f"{path}: no rows (expected {','.join(GROUP_COLUMNS)})")
    return groups


def apply_groups(tracks: list[FaceTrackRecord], groups: dict[str, str]) -> list[str]:
    """Sets each track's `group` from `groups` (`read_groups`): its video's entry, else its original's (a fake shows
    the person of the real video it was made from); a video in neither keeps the index's group.

    Returns:
        The videos that kept the index's group, sorted.
    """
    kept = set()
    for t in tracks:
        group = groups.get(t.video, groups.get(t.original))
        if group is None:
            kept.add(t.video)
        else:
            t.group = group
    return sorted(kept)
