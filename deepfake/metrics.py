"""Video-level metrics shared by training (per-epoch logging) and `deepfake evaluate`.

Log losses use probabilities clipped to [0.01, 0.99], as the DFDC winners did: one confident mistake on an
unclipped probability can cost more than a whole well-calibrated set earns.
"""

from __future__ import annotations

import math

import numpy as np

CLIP = (0.01, 0.99)


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
        `auc`, `ap` (average precision, fake as positive), `eer` (equal error rate), `accuracy`, the confusion
        counts `tp`, `fp`, `tn`, `fn` and `n`, `n_real`, `n_fake`. Metrics that need both classes are None
        when one class is missing.
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
    keys = ["logloss", "balanced_logloss", "auc", "accuracy", "ap", "eer"]
    parts = []
    for k in keys:
        v = m.get(k)
        parts.append(f"{k}={'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.4f}'}")
    return " ".join(parts)
