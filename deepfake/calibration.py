"""Calibration: a p(fake) that means what it says.

A detector's raw scores are sigmoids of logits that training pushed to be confident, not to be right on average.
A temperature T (and, where it measurably helps, a bias b), fitted on validation videos by log loss, maps each step's
logit l to sigmoid(l / T + b). It changes no ranking within a track's steps and, applied to every step, keeps the
scoring rule (`deepfake.scoring`) as it is. The fitted values travel in `detector.pt`'s meta as
``{"calibration": {"temperature": T, "bias": b, ...}}``; a checkpoint without them is used as it is.

Fitting (`fit_calibration`) works on video scores made by the scoring rule, the scores a user sees: every window's
raw last-step logit is kept (`VideoLogits`), and for a candidate (T, b) a window scores sigmoid(l / T + b), a
track the mean of its windows, a video the max of its tracks. The fit minimises the video-level log loss against
Platt's targets, (n_fake + 1) / (n_fake + 2) for a fake and 1 / (n_real + 2) for a real video instead of 1 and 0,
so that a validation set the model separates perfectly gives a finite temperature rather than one that drives
every score to 0 or 1 (on a set of 2000 videos the targets are 0.9995 and 0.0005: no difference). T is searched on
a grid of log T in [0.05, 50], then refined (bounded Brent); the bias is then fitted with T (Nelder-Mead from the
T-only optimum) and kept only when it lowers the total objective by more than `BIAS_MIN_GAIN` = 1 nat over the
set (Akaike's price of one more parameter; 0.01 per video on 100 videos, 0.0005 on 2000), else b = 0.

A set too small to say anything (fewer than `MIN_VIDEOS` videos or fewer than `MIN_PER_CLASS` of a class) is not
fitted: the record says why (`skipped`) and holds no temperature, so the detector stays raw.

Because a track averages several windows, a temperature can in rare cases swap two tracks whose windows differ
in confidence: video AUC is kept within a hair, not exactly (the record holds it before and after; with one window
per track the order is exactly kept).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfake.scoring import video_p_fake_arrays  # the one scoring rule

__all__ = ["calibration_of", "apply_calibration", "VideoLogits", "video_probabilities", "fit_calibration",
           "describe", "MIN_VIDEOS", "MIN_PER_CLASS", "BIAS_MIN_GAIN", "T_BOUNDS", "B_BOUNDS"]

MIN_VIDEOS = 10
MIN_PER_CLASS = 3
BIAS_MIN_GAIN = 1.0  # nats over the whole set
T_BOUNDS = (0.05, 50.0)
B_BOUNDS = (-5.0, 5.0)
METHOD = ("video-level log loss by the scoring rule, Platt targets; temperature by grid + bounded Brent on log T; "
          f"bias kept when it lowers the total by > {BIAS_MIN_GAIN:g} nat")


def calibration_of(meta: dict[str, Any]) -> tuple[float, float] | None:
    """(temperature, bias) recorded in a checkpoint's meta, or None (an uncalibrated checkpoint)."""
    cal = meta.get("calibration")
    if not isinstance(cal, dict) or cal.get("temperature") is None:
        return None
    temperature, bias = float(cal["temperature"]), float(cal.get("bias") or 0.0)
    if not temperature > 0:
        raise ValueError(f"checkpoint calibration temperature must be > 0, got {temperature}")
    return temperature, bias


def apply_calibration(logits, calibration: tuple[float, float] | None):
    """Logits (numpy or torch) mapped to calibrated logits, l / T + b; unchanged without a calibration."""
    if calibration is None:
        return logits
    temperature, bias = calibration
    return logits / temperature + bias


# ------------------------------------------------------------------------------------------------- the data


@dataclass
class VideoLogits:
    """Raw last-step logits of every window of a labelled set, with the tracks and videos they belong to.

    Attributes:
        logits: (N,) float64, one per window.
        track: (N,) the track (0..K-1) of each window.
        video: (K,) the video (0..V-1) of each track.
        labels: (V,) 0 real, 1 fake.
    """

    logits: np.ndarray
    track: np.ndarray
    video: np.ndarray
    labels: np.ndarray

    @property
    def n_videos(self) -> int:
        return len(self.labels)

    @classmethod
    def from_videos(cls, videos: Sequence[tuple[int, Sequence[Sequence[float]]]]) -> VideoLogits:
        """From per video (label, per track its windows' logits); videos without a window are left out."""
        logits: list[float] = []
        track: list[int] = []
        video: list[int] = []
        labels: list[int] = []
        for label, tracks in videos:
            tracks = [t for t in tracks if len(t)]
            if not tracks:
                continue
            for windows in tracks:
                logits += [float(x) for x in windows]
                track += [len(video)] * len(windows)
                video.append(len(labels))
            labels.append(int(label))
        return cls(np.asarray(logits, np.float64), np.asarray(track, np.int64), np.asarray(video, np.int64),
                   np.asarray(labels, np.int64))

    @classmethod
    def from_windows(cls, index, track, video, label, logit) -> VideoLogits:
        """From validation batches' arrays (as `deepfake.scoring.video_scores` takes them; repeated `index` values,
        a distributed sampler's padding, count once). Videos come out ordered by their id."""
        _, first = np.unique(np.asarray(index), return_index=True)
        track, video = np.asarray(track)[first], np.asarray(video)[first]
        label, logit = np.asarray(label)[first], np.asarray(logit, np.float64)[first]
        video_ids, video_of_window = np.unique(video, return_inverse=True)
        labels = np.zeros(len(video_ids), np.int64)
        np.maximum.at(labels, video_of_window, np.asarray(label, np.int64))
        track_ids, track_of_window = np.unique(track, return_inverse=True)
        video_of_track = np.zeros(len(track_ids), np.int64)
        video_of_track[track_of_window] = video_of_window
        return cls(logit, track_of_window.astype(np.int64), video_of_track, labels)


def video_probabilities(data: VideoLogits, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """(V,) p(fake) of each video by the scoring rule, each window at sigmoid(l / T + b)."""
    from scipy.special import expit

    return video_p_fake_arrays(expit(data.logits / temperature + bias), data.track, data.video, data.n_videos)


# ------------------------------------------------------------------------------------------------- fitting


def _objective(data: VideoLogits, targets: np.ndarray):
    def total(log_t: float, bias: float = 0.0) -> float:
        p = np.clip(video_probabilities(data, math.exp(log_t), bias), 1e-12, 1 - 1e-12)
        return float(-np.sum(targets * np.log(p) + (1 - targets) * np.log1p(-p)))

    return total


def _fit_temperature(total, bias: float = 0.0) -> float:
    from scipy.optimize import minimize_scalar

    lo, hi = math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])
    grid = np.linspace(lo, hi, 81)
    values = [total(g, bias) for g in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(lambda g: total(g, bias), bounds=(a, b), method="bounded", options={"xatol": 1e-6})
    return float(res.x) if res.fun <= values[i] else float(grid[i])


def _fit_temperature_and_bias(total, log_t0: float) -> tuple[float, float]:
    from scipy.optimize import minimize

    bounds = [(math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])), B_BOUNDS]
    best = (log_t0, 0.0, total(log_t0, 0.0))
    for b0 in (0.0, -1.0, 1.0):
        res = minimize(lambda x: total(x[0], x[1]), np.array([log_t0, b0]), method="Nelder-Mead", bounds=bounds,
                       options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000})
        if res.fun < best[2]:
            best = (float(res.x[0]), float(res.x[1]), float(res.fun))
    return best[0], best[1]


def _scores(labels: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    from deepfake.metrics import binary_metrics

    m = binary_metrics(labels, p)
    return {k: m[k] for k in ("logloss", "ece", "brier", "auc")}


def fit_calibration(data: VideoLogits, fitted_on: str, use_bias: bool = True) -> dict[str, Any]:
    """Fit a temperature (and maybe a bias) to a labelled set's raw window logits (module docstring).

    Args:
        data: the set's raw logits.
        fitted_on: where the set comes from, recorded (``"fit validation"``, ``"calibrate SOURCE"``).
        use_bias: also try a bias (kept only when it earns its parameter).

    Returns:
        The record for `detector.pt`'s meta ``"calibration"``: `temperature`, `bias`, `fitted_on`, `n_videos`,
        `n_real`, `n_fake`, `before` and `after` (`logloss` clipped as `deepfake.metrics` computes it, `ece`,
        `brier`, `auc` on this set, raw and calibrated), `bias_tried` (the fitted bias and the objective's gain
        in nats) and `method`; or, for a set too small, `temperature` None and `skipped` (why).
    """
    labels = np.asarray(data.labels, np.int64)
    n_fake = int(labels.sum())
    n_real = int(len(labels) - n_fake)
    record: dict[str, Any] = {"temperature": None, "bias": None, "fitted_on": fitted_on, "n_videos": int(len(labels)),
                              "n_real": n_real, "n_fake": n_fake}
    if len(labels) < MIN_VIDEOS or min(n_real, n_fake) < MIN_PER_CLASS:
        record["skipped"] = (f"{len(labels)} videos ({n_real} real, {n_fake} fake), fewer than the {MIN_VIDEOS} "
                             f"with {MIN_PER_CLASS} of each class it needs: scores left raw")
        return record
    if not np.all(np.isfinite(data.logits)):
        record["skipped"] = "non-finite logits among the scores: scores left raw"
        return record
    targets = np.where(labels == 1, (n_fake + 1) / (n_fake + 2), 1 / (n_real + 2))
    total = _objective(data, targets)
    log_t = _fit_temperature(total)
    bias, gain, tried = 0.0, 0.0, None
    if use_bias:
        log_tb, b = _fit_temperature_and_bias(total, log_t)
        gain = total(log_t, 0.0) - total(log_tb, b)
        tried = {"temperature": math.exp(log_tb), "bias": b, "gain_nats": gain}
        if gain > BIAS_MIN_GAIN:
            log_t, bias = log_tb, b
    temperature = math.exp(log_t)
    record.update(temperature=temperature, bias=bias,
                  before=_scores(labels, video_probabilities(data)),
                  after=_scores(labels, video_probabilities(data, temperature, bias)),
                  bias_tried=tried, method=METHOD)
    lo, hi = T_BOUNDS
    if temperature >= hi / 1.001:
        record["note"] = (f"the temperature is at the top of its range ({hi:g}): on this set the scores carry little "
                          "information, and calibrated they stay near one value")
    elif temperature <= lo * 1.001:
        record["note"] = f"the temperature is at the bottom of its range ({lo:g}): the scores are far too timid"
    return record


def describe(record: dict[str, Any] | None) -> str:
    """One line about a calibration record: what was fitted, on what, and what it did there."""
    if not isinstance(record, dict):
        return "none (the checkpoint has no calibration: raw scores)"
    if record.get("temperature") is None:
        return f"none, skipped ({record.get('fitted_on', '?')}: {record.get('skipped', 'no temperature')})"
    text = f"temperature {record['temperature']:.3f}"
    if record.get("bias"):
        text += f", bias {record['bias']:+.3f}"
    text += f" ({record.get('fitted_on', '?')}, {record.get('n_videos', '?')} videos)"
    before, after = record.get("before") or {}, record.get("after") or {}

    def num(x) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    if before and after:
        text += (f": log loss {num(before.get('logloss'))} -> {num(after.get('logloss'))}, "
                 f"ECE {num(before.get('ece'))} -> {num(after.get('ece'))}")
    return text
