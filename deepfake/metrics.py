"""Video-level metrics shared by training (per-epoch logging) and `deepfake evaluate`.

Log losses use probabilities clipped to [0.01, 0.99], as the DFDC winners did: one confident mistake on an
unclipped probability can cost more than a whole well-calibrated set earns.

Calibration: `ece` (expected calibration error) is the reliability diagram's gap summed over `ECE_BINS` = 15
equal-width bins of p(fake) in [0, 1] (the last bin holds 1.0), each bin's |fraction of fakes - mean p(fake)|
weighted by its share of the videos; `brier` is the mean squared error of p(fake) against the 0/1 label
(unclipped). `reliability_bins` gives the diagram's points.
"""

from __future__ import annotations

import math

import numpy as np

CLIP = (0.01, 0.99)
ECE_BINS = 15


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, *CLIP)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def binary_metrics(y_true, p_fake, threshold: float = 0.5) -> dict[str, float | int | None]:
    """Metrics of fake probabilities against 0/1 labels (1 = fake).

    Args:
        y_true: labels, 1 for fake and 0 for real.
        p_fake: predicted probability that each item is fake.
        threshold: a probability at or above it is called fake for accuracy and the confusion counts.

    Returns:
        `logloss` (clipped), `balanced_logloss` (mean of the real-class and fake-class log losses),
        `auc`, `ap` (average precision, fake as positive), `eer` (equal error rate), `accuracy`, `ece` (15 bins)
        and `brier` (calibration, module docstring), the confusion counts `tp`, `fp`, `tn`, `fn` and `n`,
        `n_real`, `n_fake`. Metrics that need both classes are None when one class is missing.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(p_fake, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must be finite and within [0, 1]")
    pred = p >= threshold
    real, fake = y == 0, y == 1
    both = bool(real.any() and fake.any())
    out: dict[str, float | int | None] = {
        "n": int(len(y)),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "logloss": _logloss(y, p),
        "balanced_logloss": (_logloss(y[real], p[real]) + _logloss(y[fake], p[fake])) / 2 if both else None,
        "accuracy": float(np.mean(pred == fake)) if len(y) else None,
        "auc": float(roc_auc_score(y, p)) if both else None,
        "ap": float(average_precision_score(y, p)) if both else None,
        "eer": equal_error_rate(y, p) if both else None,
        "ece": expected_calibration_error(y, p) if len(y) else None,
        "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
        "threshold": float(threshold),
        "tp": int(np.sum(pred & fake)),
        "fp": int(np.sum(pred & real)),
        "tn": int(np.sum(~pred & real)),
        "fn": int(np.sum(~pred & fake)),
    }
    if both:
        fpr, tpr, _ = roc_curve(y, p)
        out["roc_points"] = int(len(fpr))
    return out


def reliability_bins(y_true, p_fake, bins: int = ECE_BINS) -> list[dict[str, float | int]]:
    """The reliability diagram: per equal-width bin of p(fake) in [0, 1] (the last one holds 1.0), `lo`, `hi`,
    `n` (videos in it), `mean_p` and `frac_fake` (None for an empty bin)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(p_fake, dtype=np.float64).ravel()
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": n,
                    "mean_p": float(p[mask].mean()) if n else None, "frac_fake": float(y[mask].mean()) if n else None})
    return out


def expected_calibration_error(y_true, p_fake, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (share of videos) * |fraction of fakes - mean p(fake)|."""
    rows = reliability_bins(y_true, p_fake, bins)
    total = sum(r["n"] for r in rows)
    if not total:
        return float("nan")
    return float(sum(r["n"] / total * abs(r["frac_fake"] - r["mean_p"]) for r in rows if r["n"]))


def equal_error_rate(y_true, p_fake) -> float:
    """The error rate where the false-positive rate equals the false-negative rate (interpolated on the ROC)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(y_true), np.asarray(p_fake))
    fnr = 1 - tpr
    diff = fpr - fnr  # goes from <= 0 to >= 0 along the curve
    i = int(np.argmax(diff >= 0))
    if i == 0 or diff[i] == 0:
        return float(fpr[i])
    # Linear interpolation between the two ROC points around the crossing.
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1)
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def format_metrics(m: dict) -> str:
    """One line for logs and reports."""
    keys = ["logloss", "balanced_logloss", "auc", "accuracy", "ap", "eer", "ece", "brier"]
    parts = []
    for k in keys:
        v = m.get(k)
        parts.append(f"{k}={'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.4f}'}")
    return " ".join(parts)


def ranking_metrics(y_true, p_fake) -> dict[str, float | None]:
    """The benchmark's metrics of one set of scores: `auc`, `ap`, `eer` (None when one class is missing) and the
    clipped `logloss`. The same values as scikit-learn's (and `binary_metrics`'), from one sort: fast enough to
    bootstrap."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(p_fake, dtype=np.float64).ravel()
    out: dict[str, float | None] = {"auc": None, "ap": None, "eer": None, "logloss": _logloss(y, p) if len(y) else None}
    if not ((y == 0).any() and (y == 1).any()):
        return out
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    cut = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # the last item of each run of tied scores
    tps = np.cumsum(ys)[cut]
    fps = cut + 1 - tps
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    out["auc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    out["ap"] = float(np.sum(np.diff(tpr) * (tps / (tps + fps))))
    diff = fpr - (1 - tpr)
    i = int(np.argmax(diff >= 0))
    out["eer"] = float(fpr[i]) if i == 0 or diff[i] == 0 else \
        float(fpr[i - 1] + diff[i - 1] / (diff[i - 1] - diff[i]) * (fpr[i] - fpr[i - 1]))
    return out


def bootstrap_intervals(y_true, p_fake, clusters=None, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals of `ranking_metrics`.

    Args:
        y_true: 0/1 labels.
        p_fake: scores.
        clusters: per item, the unit resampled (a frame's video, so that a video's correlated frames are drawn
            together); None resamples items.
        n_boot: resamples.
        seed: the resampling's seed (the same data and seed give the same interval).
        level: the interval's coverage.

    Returns:
        Per metric, (low, high), or None when fewer than half the resamples had both classes (or `n_boot` is 0).
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(p_fake, dtype=np.float64).ravel()
    if clusters is None:
        members = [np.array([i]) for i in range(len(y))]
    else:
        _, inverse = np.unique(np.asarray(clusters).ravel(), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        members = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1) if len(order) else []
    draws: dict[str, list[float]] = {k: [] for k in ("auc", "ap", "eer", "logloss")}
    rng = np.random.default_rng(seed)
    for _ in range(n_boot if members else 0):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        for key, value in ranking_metrics(y[idx], p[idx]).items():
            if value is not None and math.isfinite(value):
                draws[key].append(value)
    tail = (1 - level) / 2 * 100
    return {k: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if len(v) >= max(1, n_boot / 2)
            else None for k, v in draws.items()}
