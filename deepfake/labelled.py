"""Labelled sets for evaluation: reading one (a folder of videos or an extracted index) into `LabelledVideo`s, and
scoring it video by video with a detector, as `deepfake predict` would. `deepfake.evaluation` (metrics, files),
`deepfake.robustness` (the same under distortions), `deepfake.benchmark` and `deepfake.recalibration` build on it.

The one scorer of a labelled set is `iter_video_scores` (a folder of videos: `deepfake.inference.iter_predictions`)
and `iter_index_scores` (an index's crops); each yields a `ScoredVideo` per video, in order: its predict-style result
and its faces' `deepfake.scoring.TrackScore`s, which keep every window's raw logit (what a calibration is fitted on).
`score_videos` and `score_index` collect them.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.files import CsvError, read_csv_dicts
from data_prep.index import IndexFileError, read_crop, read_index
from deepfake.inference import Detector, iter_predictions
from deepfake.scoring import TrackScore, error_result, no_face_result, raw_video_p_fake, video_result

__all__ = ["EvaluateConfig", "LabelledVideo", "ScoredVideo", "EvaluationError", "load_source", "iter_video_scores",
           "iter_index_scores", "score_videos", "score_index", "video_label", "load_video_tracks"]


class EvaluationError(Exception):
    """SOURCE or settings that can't be evaluated, or outputs that can't be written; one line.

    Attributes:
        code: the exit status `deepfake evaluate` gives it (2: usage, 1: nothing scored or a write failed,
            130: interrupted).
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class EvaluateConfig:
    """Settings of an evaluation (besides the model's, in `PredictConfig`).

    Attributes:
        threshold: p(fake) at or above which a video is called fake (accuracy, confusion).
        no_face_prior: p(fake) given to videos without a face so they count in the metrics; None excludes them.
        layout: layout of a video SOURCE (`data_prep.layouts.LAYOUTS`).
        split: keep only videos of this split (``train``, ``val``, ``test``); None keeps all.
        split_file: a training run's `split.csv` (video,split,...): its splits replace SOURCE's, so ``--split val``
            scores exactly the videos that run held out.
        perturb: a `--perturb` spec, or None for the clean evaluation only.
        seed: base seed of the distortions (each video gets its own from it).
    """

    threshold: float = 0.5
    no_face_prior: float | None = None
    layout: str = "auto"
    split: str | None = None
    split_file: str | None = None
    perturb: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from data_prep.layouts import LAYOUTS

        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"--threshold must be a probability in [0, 1], got {self.threshold}")
        if self.no_face_prior is not None and not 0.0 <= self.no_face_prior <= 1.0:
            raise ValueError(f"--no-face-prior must be a probability in [0, 1], got {self.no_face_prior}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.split is not None and self.split not in ("train", "val", "test"):
            raise ValueError(f"--split must be train, val or test, got {self.split!r}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class LabelledVideo:
    """A video to evaluate: its id (reported name), file, label (0 real, 1 fake), split and original."""

    video: str
    path: Path
    label: int
    split: str = ""
    original: str = ""


@dataclass
class ScoredVideo:
    """A labelled video, scored.

    Attributes:
        video: the `LabelledVideo`.
        result: its predict-style result (`deepfake.scoring.video_result`; status ``ok``, ``no_face`` or ``error``).
        seconds: wall time spent on it (extraction or reading its crops, and scoring).
        tracks: the `deepfake.scoring.TrackScore` of each face, in the order of the result's `faces`, each window's
            raw last-step logit in its `window_logits`; empty when no face was scored.
        warning: what a user should know about a video that still scored (`deepfake.inference.Prediction.warning`).
    """

    video: LabelledVideo
    result: dict
    seconds: float
    tracks: list[TrackScore] = field(default_factory=list, repr=False)
    warning: str | None = None

    @property
    def raw_p_fake(self) -> float | None:
        """The video's p(fake) before calibration (`deepfake.scoring.raw_video_p_fake` of its tracks): the
        reported one when the detector has no calibration; None when no face was scored."""
        return raw_video_p_fake(self.tracks)


# ------------------------------------------------------------------------------------------------- sources


def _index_path(source: Path, layout: str) -> Path | None:
    """The index.csv SOURCE stands for, or None for a folder of videos."""
    if source.is_file():
        if source.suffix.lower() == ".csv":
            return source
        raise EvaluationError(f"{source}: SOURCE must be a folder of labelled videos or an index.csv")
    if layout == "auto" and (source / "index.csv").is_file():
        return source / "index.csv"
    return None


def _splits_from(split_file: str | os.PathLike) -> dict[str, str]:
    """video -> split, from a run's split.csv."""
    try:
        return {r["video"]: r["split"] for r in read_csv_dicts(split_file, need=["video", "split"])}
    except CsvError as err:
        raise EvaluationError(str(err)) from None


def load_source(source: str | os.PathLike, layout: str = "auto", split: str | None = None,
                split_file: str | os.PathLike | None = None):
    """What to evaluate: labelled videos, or the rows of an extracted index.

    Args:
        source: a labelled folder or an index.csv (or a folder holding one).
        layout: layout of a labelled folder.
        split: keep only this split.
        split_file: a run's split.csv whose splits replace SOURCE's (videos it does not list keep theirs).

    Returns:
        (mode, items, notes): mode ``videos`` with a list of `LabelledVideo`, or ``index`` with a pandas
        DataFrame of index rows (plus its folder in `notes`' first element's place: see `score_index`).

    Raises:
        EvaluationError: SOURCE missing, unreadable, of no known layout, or empty after the split filter.
    """
    if not os.fspath(source).strip():  # Path("") is the current folder: never what was meant
        raise EvaluationError("SOURCE is an empty path: name a folder of labelled videos or an index.csv")
    source = Path(source)
    if not source.exists():
        raise EvaluationError(f"{source}: no such file or folder")
    index = _index_path(source, layout)
    if index is not None:
        try:
            rows, _ = read_index(index)
        except IndexFileError as err:
            raise EvaluationError(str(err)) from None
        if split_file:
            given = _splits_from(split_file)
            rows["split"] = [given.get(v, s) for v, s in zip(rows["video"], rows["split"])]
        if split:
            rows = rows[rows["split"] == split]
        if rows.empty:
            raise EvaluationError(f"{index}: no rows" + (f" with split {split!r}" if split else ""))
        return "index", rows, [str(index)]
    from data_prep.layouts import LayoutError, find_videos

    try:
        found = find_videos(source, layout)
    except LayoutError as err:
        raise EvaluationError(str(err)) from None
    given = _splits_from(split_file) if split_file else {}
    videos = [LabelledVideo(r.video, Path(r.path), int(r.label), given.get(r.video, r.split), r.original)
              for r in found.records]
    videos = [v for v in videos if not split or v.split == split]
    if not videos:
        raise EvaluationError(f"{source}: no video with split {split!r} (layout {found.layout})")
    return "videos", videos, [f"layout {found.layout}", *found.notes]


# ------------------------------------------------------------------------------------------------- scoring


def iter_video_scores(videos: Sequence[LabelledVideo], detector: Detector, extractor, threshold: float = 0.5,
                      progress: bool = False, desc: str = "evaluate",
                      prog: str = "deepfake evaluate") -> Iterator[ScoredVideo]:
    """Predict every video (the `deepfake predict` path: `deepfake.inference.iter_predictions`), in order.

    Args:
        videos: the labelled videos.
        detector: the loaded detector.
        extractor: the `data_prep.extractor.FaceExtractor` that matches it (`deepfake.inference.load_predictor`).
        threshold: verdict threshold.
        progress: a progress bar.
        desc: the progress bar's label.
        prog: the command named in the warnings written above the bar (``PROG: warning: ...``).

    Yields:
        A `ScoredVideo` per video; one that can't be read or scored has an ``error`` result.
    """
    from tqdm import tqdm

    preds = iter_predictions([v.path for v in videos], detector, extractor, threshold, names=[v.video for v in videos])
    bar = tqdm(preds, total=len(videos), unit="video", desc=desc, disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for i, pred in enumerate(bar):
        warning = pred.warning
        if warning:
            bar.write(f"{prog}: warning: {warning}", file=sys.stderr)
        yield ScoredVideo(videos[i], pred.result, pred.seconds, pred.scores, warning)


def score_videos(videos: Sequence[LabelledVideo], detector: Detector, extractor, threshold: float = 0.5,
                 progress: bool = False, desc: str = "evaluate") -> list[ScoredVideo]:
    """Predict every video (`iter_video_scores`); returns their `ScoredVideo`s in order."""
    return list(iter_video_scores(videos, detector, extractor, threshold, progress, desc))


def _index_failures(folder: Path) -> list[dict]:
    """Videos the extraction could not use (`failures.csv`: video,reason), as predict-style results."""
    path = folder / "failures.csv"
    if not path.is_file():
        return []
    try:
        rows = read_csv_dicts(path)
    except CsvError:
        return []
    out = []
    for row in rows:
        video, reason = (row.get("video") or "").strip(), (row.get("reason") or "").strip()
        if not video:
            continue
        if "no face" in reason.lower():
            out.append(no_face_result(video))
        else:
            out.append(error_result(video, reason or "extraction failed"))
    return out


def video_label(video: str, rows, index_path: str | os.PathLike) -> int:
    """The one 0/1 label of a video's index rows (EvaluationError when they hold another or several)."""
    labels = {int(v) for v in rows["label"]}
    if len(labels) != 1 or not labels <= {0, 1}:
        raise EvaluationError(f"{index_path}: video {video} has labels {sorted(labels)}; expected one of 0/1")
    return labels.pop()


def load_video_tracks(rows, folder: Path) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """A video's face tracks from its index rows: (track, frame numbers, crops (N, S, S, 3) uint8 RGB) by track,
    crops in frame order (OSError naming a crop that can't be read)."""
    tracks = []
    for track, t in rows.sort_values(["track", "frame"]).groupby("track", sort=True):
        crops = np.stack([read_crop(folder / c) for c in t["crop"]])
        tracks.append((int(track), t["frame"].to_numpy(np.int64), crops))
    return tracks


def iter_index_scores(rows, index_path: str | os.PathLike, detector: Detector, threshold: float = 0.5,
                      progress: bool = False, desc: str = "evaluate") -> Iterator[ScoredVideo]:
    """Score the crops of an extracted index, video by video (no detection), in the order of their ids.

    Args:
        rows: the index rows (pandas DataFrame with `video,label,track,frame,crop`, optionally `split,original`).
        index_path: the index file (crop paths are relative to its folder).
        detector: the loaded detector (crops are resized to its input size when the index has another).
        threshold: verdict threshold.
        progress: a progress bar.
        desc: the progress bar's label.

    Yields:
        A `ScoredVideo` per video; one whose crops can't be read has an ``error`` result.

    Raises:
        EvaluationError: a video whose rows hold another label than 0 or 1, or several (before any is scored).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    folder = Path(index_path).parent
    groups = list(rows.groupby("video", sort=True))
    videos: list[LabelledVideo] = []
    for video, g in groups:
        first = g.iloc[0]
        videos.append(LabelledVideo(str(video), folder / str(video), video_label(video, g, index_path),
                                    str(first.get("split", "") or ""), str(first.get("original", "") or "")))

    # JPEG decoding of the next video overlaps the model on this one (cv2 releases the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(load_video_tracks, groups[0][1], folder)] if groups else []
        for i, (video, _) in enumerate(tqdm(groups, unit="video", desc=desc, disable=not progress,
                                            file=sys.stderr, dynamic_ncols=True)):
            start = time.perf_counter()
            if i + 1 < len(groups):
                futures.append(pool.submit(load_video_tracks, groups[i + 1][1], folder))
            try:
                tracks = futures[i].result()
                futures[i] = None  # free the crops once scored
                scores = detector.score_tracks_in_detail([c for _, _, c in tracks])
            except Exception as err:  # noqa: BLE001 - a missing crop costs one video, not the evaluation
                reason = str(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
                yield ScoredVideo(videos[i], error_result(str(video), reason), time.perf_counter() - start)
                continue
            result = video_result(str(video), [(tr, frames, s) for (tr, frames, _), s in zip(tracks, scores)],
                                  threshold)
            yield ScoredVideo(videos[i], result, time.perf_counter() - start, scores)


def score_index(rows, index_path: str | os.PathLike, detector: Detector, threshold: float = 0.5,
                progress: bool = False) -> tuple[list[LabelledVideo], list[ScoredVideo], list[dict]]:
    """Score the crops of an extracted index, video by video: `iter_index_scores` (its arguments), collected.

    Returns:
        (videos, their `ScoredVideo`s in the same order, unlabelled results of `failures.csv`).
    """
    scored = list(iter_index_scores(rows, index_path, detector, threshold, progress))
    return [s.video for s in scored], scored, _index_failures(Path(index_path).parent)
