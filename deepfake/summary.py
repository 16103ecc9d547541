"""Summaries of a scored labelled set: which videos count and how (`counted_as`), the metrics over them
(`summarize`), the calibration report, the per-video prediction rows, and JSON text without NaN."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from deepfake.inference import Detector
from deepfake.labelled import LabelledVideo, ScoredVideo

__all__ = ["PREDICTION_COLUMNS", "DEFAULT_PRIOR", "SUMMARY_KEYS", "clean_json", "counted_as", "summarize",
           "counted_raw", "calibration_report", "prediction_rows", "json_text"]

PREDICTION_COLUMNS = ["video", "label", "p_fake", "status", "verdict", "counted", "faces", "crops", "seconds",
                      "split", "original", "error"]
DEFAULT_PRIOR = 0.5  # p(fake) of an unscored video in the all-videos metrics without --no-face-prior
SUMMARY_KEYS = ("n", "n_real", "n_fake", "logloss", "balanced_logloss", "auc", "accuracy", "ap", "eer", "ece", "brier")


# ------------------------------------------------------------------------------------------------- metrics


def clean_json(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def counted_as(result: dict, no_face_prior: float | None) -> tuple[str, float | None]:
    if result["status"] == "ok":
        return "scored", float(result["p_fake"])
    if result["status"] == "no_face" and no_face_prior is not None:
        return "prior", float(no_face_prior)
    return "excluded", None


def summarize(videos: Sequence[LabelledVideo], results: Sequence[dict], threshold: float = 0.5,
              no_face_prior: float | None = None, extra: Sequence[dict] = ()) -> dict:
    """Video-level metrics of results against labels, and the accounting of videos left out.

    Args:
        videos: the labelled videos.
        results: their predict-style results, in the same order.
        threshold: verdict threshold.
        no_face_prior: p(fake) for no-face videos (None: excluded).
        extra: unlabelled results (an index's failures.csv): listed, never counted.

    Returns:
        `binary_metrics` over the counted videos (flat), plus `confusion`, `n_videos`, `n_scored`, `no_face`,
        `errors` (each with `count`, `counted_as` and the videos), and `all_videos`: the metrics over every
        labelled video, those without a score at the prior (`no_face_prior`, else 0.5).
    """
    from deepfake.metrics import binary_metrics

    y, p = [], []
    for v, r in zip(videos, results):
        _, prob = counted_as(r, no_face_prior)
        if prob is not None:
            y.append(v.label)
            p.append(prob)
    metrics = binary_metrics(np.asarray(y, np.float64), np.asarray(p, np.float64), threshold)
    no_face = [r["video"] for r in [*results, *extra] if r["status"] == "no_face"]
    errors = [{"video": r["video"], "error": r["error"]} for r in [*results, *extra] if r["status"] == "error"]
    out = dict(metrics)
    out["confusion"] = {"matrix": [[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]],
                        "rows": ["real", "fake"], "columns": ["called real", "called fake"],
                        "threshold": float(threshold)}
    out["n_videos"] = len(videos) + len(extra)
    out["n_scored"] = sum(1 for r in results if r["status"] == "ok")
    out["no_face"] = {
        "count": len(no_face),
        "counted_as": ("excluded from the metrics" if no_face_prior is None
                       else f"scored with p_fake = {no_face_prior:g} (--no-face-prior)"),
        "videos": no_face,
    }
    out["errors"] = {"count": len(errors), "counted_as": "excluded from the metrics", "videos": errors}
    if extra:
        out["unlabelled_failures"] = len(extra)
    prior = DEFAULT_PRIOR if no_face_prior is None else float(no_face_prior)
    p_all = [float(r["p_fake"]) if r["status"] == "ok" else prior for r in results]
    every = binary_metrics(np.asarray([v.label for v in videos], np.float64), np.asarray(p_all, np.float64), threshold)
    out["all_videos"] = {**{k: every[k] for k in SUMMARY_KEYS}, "prior": prior,
                         "n_at_prior": sum(1 for r in results if r["status"] != "ok"),
                         "counted_as": f"every labelled video; no-face and unreadable ones at p_fake = {prior:g}",
                         **({"unlabelled_left_out": len(extra)} if extra else {})}
    return clean_json(out)


def counted_raw(scored: Sequence[ScoredVideo], no_face_prior: float | None) -> tuple[list[int], list[float]]:
    """Labels and raw (uncalibrated) p(fake) of the videos that count (`counted_as`), in order: a scored video's
    `ScoredVideo.raw_p_fake`, a no-face or unreadable one at its prior."""
    y, raw = [], []
    for s in scored:
        _, prob = counted_as(s.result, no_face_prior)
        if prob is not None:
            y.append(s.video.label)
            raw.append(s.raw_p_fake if s.result["status"] == "ok" else prob)
    return y, raw


def calibration_report(detector: Detector, scored: Sequence[ScoredVideo], threshold: float = 0.5,
                       no_face_prior: float | None = None) -> tuple[dict, dict | None]:
    """Whether the scores were calibrated and with what, and (when they were) the metrics of the raw scores over
    the same videos (`counted_raw`): (`calibration` block, `uncalibrated` block or None)."""
    from deepfake.metrics import binary_metrics

    record = detector.meta.get("calibration")
    record = record if isinstance(record, dict) else None
    info: dict = {"applied": detector.calibration is not None}
    if detector.calibration is not None:
        info.update(temperature=detector.calibration[0], bias=detector.calibration[1],
                    **{k: record.get(k) for k in ("fitted_on", "n_videos") if record})
        y, raw = counted_raw(scored, no_face_prior)
        m = binary_metrics(np.asarray(y, np.float64), np.asarray(raw, np.float64), threshold)
        return info, {k: m[k] for k in SUMMARY_KEYS}
    if record is None:
        info["reason"] = "the checkpoint has no calibration"
    elif record.get("temperature") is None:
        info["reason"] = f"skipped in {record.get('fitted_on')}: {record.get('skipped')}"
    else:
        info.update(reason="--no-calibration: raw scores", available={k: record.get(k) for k in
                                                                      ("temperature", "bias", "fitted_on", "n_videos")})
    return info, None


def prediction_rows(scored: Sequence[ScoredVideo], no_face_prior: float | None) -> list[dict]:
    """`predictions.csv`'s rows (`PREDICTION_COLUMNS`), one per scored labelled video."""
    rows = []
    for s in scored:
        v, r, seconds = s.video, s.result, s.seconds
        counted, _ = counted_as(r, no_face_prior)
        rows.append({"video": v.video, "label": v.label,
                     "p_fake": "" if r["p_fake"] is None else f"{r['p_fake']:.6f}", "status": r["status"],
                     "verdict": r["verdict"], "counted": counted,
                     "faces": len(r["faces"]) if r["status"] != "error" else "",
                     "crops": sum(len(f["frames"]) for f in r["faces"]) if r["status"] != "error" else "",
                     "seconds": f"{seconds:.3f}", "split": v.split, "original": v.original, "error": r["error"] or ""})
    return rows


def json_text(obj) -> str:
    """A report as JSON text: NaN and infinities as null, numpy numbers as plain ones."""
    return json.dumps(clean_json(obj), indent=2, allow_nan=False) + "\n"
