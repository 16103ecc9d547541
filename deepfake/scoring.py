"""The scoring rule: per-step p(fake) of a face track's windows -> the track's p(fake) -> the video's p(fake).

One implementation, used by validation during `fit` (`deepfake.lit`), `deepfake evaluate` (videos and indexes),
`deepfake predict`, `deepfake submit` and the server:

- A face track's crops are cut into consecutive windows of `seq_len` crops (the sequence length the model was
  trained on). A window's score is the sigmoid of its **last** step, the step that has seen the whole window.
  When the track's length is not a multiple of `seq_len`, its last window is its last `seq_len` crops (it
  overlaps the window before), so that every window has full context; a track shorter than `seq_len` is one
  window of all its crops. The track's p(fake) is the mean of its window scores.
- Per-step scores (`steps` in predict's JSON) are the sigmoid of every step, each crop scored in the first window
  that holds it (a crop's score then depends on the crops before it in its window).
- A video's p(fake) is the maximum over its face tracks: a video is as fake as its most fake face.
- The frames that decide: within a window, a crop's contribution is how much the running p(fake) moved when the
  LSTM read it, p_t - p_(t-1) (the window's first crop from 0.5, even odds), so a window's contributions add up to
  its score minus 0.5. Each crop counts in the first window that holds it, as for `steps`; a face's `top_frames`
  are its frames with the largest positive contributions, most decisive first.
- The verdict is ``fake`` at or above the threshold, else ``real``; ``no face`` when no face was found (no
  made-up probability); ``error`` when the file can't be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["TrackScore", "track_windows", "track_p_fake", "track_score", "video_p_fake", "steps_of",
           "contributions_of", "verdict_of", "video_p_fake_arrays", "raw_video_p_fake", "video_result",
           "no_face_result", "error_result", "video_scores", "RULE", "TOP_FRAMES"]

TOP_FRAMES = 3  # frames listed per face as the ones that decide


class TrackScore(NamedTuple):
    """A face track's scores: its p(fake), per-step p(fake), windows (start, end, p_fake) in crop indices, each
    crop's contribution to its window's score, and each window's raw last-step logit, (W,) float64 in the order of
    `windows`: the model's output before calibration and the sigmoid, what a calibration is fitted on
    (`deepfake.calibration.VideoLogits.from_videos`)."""

    p_fake: float
    steps: np.ndarray
    windows: list[tuple[int, int, float]]
    contributions: np.ndarray
    window_logits: np.ndarray

RULE = ("track: mean over consecutive windows of seq_len crops of the last step's p(fake); "
        "video: max over its face tracks")


def track_windows(n: int, seq_len: int) -> list[tuple[int, int]]:
    """The windows (start, end) a track of `n` crops is scored in.

    >>> track_windows(10, 4)
    [(0, 4), (4, 8), (6, 10)]
    >>> track_windows(3, 4)
    [(0, 3)]
    """
    if n <= 0:
        return []
    if n <= seq_len:
        return [(0, n)]
    starts = list(range(0, n - seq_len + 1, seq_len))
    if starts[-1] + seq_len < n:
        starts.append(n - seq_len)
    return [(s, s + seq_len) for s in starts]


def track_p_fake(window_scores: Sequence[float]) -> float:
    """A face track's p(fake) from its windows' scores (each the p(fake) of the window's last step): their mean."""
    return float(np.mean(window_scores)) if len(window_scores) else float("nan")


def track_score(n: int, windows: Sequence[tuple[int, int]], window_steps: Sequence[np.ndarray],
                window_logits: Sequence[np.ndarray]) -> TrackScore:
    """A track of `n` crops scored by the rule from its windows (start, end), each window's per-step p(fake) as
    reported (calibrated when the detector is) and its per-step raw logits (before calibration and the sigmoid)."""
    last = [float(p[-1]) for p in window_steps]
    return TrackScore(track_p_fake(last), steps_of(n, windows, window_steps),
                      [(s, e, p) for (s, e), p in zip(windows, last)], contributions_of(n, windows, window_steps),
                      np.array([float(z[-1]) for z in window_logits], np.float64))


def video_p_fake(track_scores: Sequence[float]) -> float:
    """A video's p(fake) from its face tracks' p(fake): the most fake face."""
    return float(max(track_scores))


def raw_video_p_fake(tracks: Sequence[TrackScore]) -> float | None:
    """A video's p(fake) before any calibration: the rule over its tracks' raw window logits (`window_logits`,
    each window's score the sigmoid of its logit), what a detector without calibration reports; None without a
    track."""
    if not tracks:
        return None
    return video_p_fake([track_p_fake(1.0 / (1.0 + np.exp(-np.asarray(t.window_logits, np.float64))))
                         for t in tracks])


def video_p_fake_arrays(window_p: np.ndarray, track: np.ndarray, video: np.ndarray, n_videos: int) -> np.ndarray:
    """The same rule over arrays (calibration fits call it thousands of times): (N,) window scores, the track
    (0..K-1) of each window and the video (0..V-1) of each track -> (V,) video p(fake); -1 for a video without a
    window."""
    k = len(video)
    track_p = np.bincount(track, weights=window_p, minlength=k) / np.maximum(np.bincount(track, minlength=k), 1)
    out = np.full(n_videos, -1.0)
    np.maximum.at(out, video, track_p)
    return out


def steps_of(n: int, windows: Sequence[tuple[int, int]], window_steps: Sequence[np.ndarray]) -> np.ndarray:
    """Per-crop p(fake) of a track of `n` crops: each crop scored in the first window that holds it."""
    steps = np.full(n, np.nan, np.float64)
    for (s, e), p in zip(windows, window_steps):
        fresh = np.isnan(steps[s:e])
        steps[s:e][fresh] = np.asarray(p, np.float64)[fresh]
    return steps


def contributions_of(n: int, windows: Sequence[tuple[int, int]], window_steps: Sequence[np.ndarray]) -> np.ndarray:
    """Per-crop contribution to its window's score (module docstring), each crop in the first window holding it."""
    out = np.full(n, np.nan, np.float64)
    for (s, e), p in zip(windows, window_steps):
        p = np.asarray(p, np.float64)
        delta = np.diff(p, prepend=0.5)
        fresh = np.isnan(out[s:e])
        out[s:e][fresh] = delta[fresh]
    return out


def verdict_of(p_fake: float, threshold: float) -> str:
    """``fake`` at or above the threshold, else ``real``."""
    return "fake" if p_fake >= threshold else "real"


def _round(x: float, digits: int = 6) -> float:
    return float(round(float(x), digits))


def error_result(video: str, reason: str) -> dict:
    """The result of a file that can't be read: status ``error``, p_fake null, a one-line reason."""
    return {"video": video, "status": "error", "p_fake": None, "verdict": "error", "faces": [],
            "error": " ".join(str(reason).split()) or "unknown error"}


def no_face_result(video: str) -> dict:
    """The result of a video where no face was found: status ``no_face``, p_fake null."""
    return {"video": video, "status": "no_face", "p_fake": None, "verdict": "no face", "faces": [], "error": None}


def _face(track: int, frames: Sequence[int], score: TrackScore, geometry: tuple | None = None) -> dict:
    frames = [int(f) for f in frames]
    contributions = np.nan_to_num(np.asarray(score.contributions, np.float64), nan=-np.inf)
    order = [i for i in np.argsort(-contributions, kind="stable")[:TOP_FRAMES] if contributions[i] > 0]
    face = {"track": int(track), "p_fake": _round(score.p_fake), "frames": frames,
            "steps": [_round(s) for s in score.steps],
            "windows": [{"frames": [frames[s], frames[e - 1]], "p_fake": _round(p)} for s, e, p in score.windows],
            "top_frames": [frames[i] for i in order]}
    if geometry is not None:
        boxes, landmarks = geometry
        face["boxes"] = np.round(np.asarray(boxes, np.float64), 1).tolist()
        face["landmarks"] = None if landmarks is None else np.round(np.asarray(landmarks, np.float64), 1).tolist()
    return face


def video_result(video: str, tracks: Sequence[tuple[int, Sequence[int], TrackScore]], threshold: float = 0.5,
                 geometry: Mapping[int, tuple] | None = None) -> dict:
    """The per-video result (predict's JSON object) from its scored face tracks.

    Args:
        video: the name reported for the video.
        tracks: per face track: (track number, frame numbers of its crops, its `TrackScore`).
        threshold: verdict threshold.
        geometry: per track number, (boxes (N, 4), landmarks (N, 5, 2) or None) in video pixels, one per crop:
            added to each face as ``boxes`` and ``landmarks`` (what `deepfake predict` reports; an index has them
            too, evaluation leaves them out).

    Returns:
        ``{"video", "status", "p_fake", "verdict", "faces", "error"}``; each face ``{"track", "p_fake", "frames",
        "steps", "windows": [{"frames": [first, last], "p_fake"}], "top_frames"}`` (and with `geometry`, ``boxes``
        [[x1, y1, x2, y2], ...] and ``landmarks`` [[[x, y] x 5: eye1, eye2, nose, mouth1, mouth2], ...] or null).
    """
    if not tracks:
        return no_face_result(video)
    if not all(np.isfinite(s.p_fake) for _, _, s in tracks):
        return error_result(video, "the detector gave a non-finite score (NaN or inf): are the weights broken?")
    faces = [_face(t, frames, s, None if geometry is None else geometry.get(t)) for t, frames, s in tracks]
    p_video = video_p_fake([s.p_fake for _, _, s in tracks])
    return {"video": video, "status": "ok", "p_fake": _round(p_video), "verdict": verdict_of(p_video, threshold),
            "faces": faces, "error": None}


def video_scores(index: np.ndarray, track: np.ndarray, video: np.ndarray, label: np.ndarray,
                 prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window scores of validation batches -> per-video (ids, labels, p_fake), by the rule above.

    Args:
        index: (N,) item ids; repeats (a distributed sampler pads with duplicates) count once.
        track: (N,) track id of each window (unique over the data set).
        video: (N,) video id of each window.
        label: (N,) 0/1 label of each window.
        prob: (N,) p(fake) of each window (the sigmoid of its last valid step).

    Returns:
        (video ids, labels, probabilities), one per video, ordered by video id.
    """
    _, first = np.unique(index, return_index=True)
    windows: dict[int, list[float]] = {}
    track_video: dict[int, int] = {}
    video_label: dict[int, int] = {}
    for i in first:
        t, v = int(track[i]), int(video[i])
        windows.setdefault(t, []).append(float(prob[i]))
        track_video[t] = v
        video_label[v] = max(video_label.get(v, 0), int(label[i]))
    per_video: dict[int, list[float]] = {}
    for t, scores in windows.items():
        per_video.setdefault(track_video[t], []).append(track_p_fake(scores))
    ids = np.array(sorted(per_video), dtype=np.int64)
    return (ids, np.array([video_label[v] for v in ids], dtype=np.int64),
            np.array([video_p_fake(per_video[v]) for v in ids], dtype=np.float64))
