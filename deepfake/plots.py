"""Figures for `deepfake predict --plot`, `deepfake evaluate` (ROC, reliability diagram), its robustness table
(AUC vs level) and `deepfake benchmark` (AUC per test set beside the published figures).

Matplotlib with the Agg backend (no display needed); every PNG is written to a temporary name and renamed, so a
killed run leaves no half-written image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep.files import atomic_path

__all__ = ["plot_video", "plot_name", "plot_roc", "plot_robustness", "plot_reliability", "plot_benchmark"]

MAX_THUMBS = 8        # face crops shown per track along the top
MAX_TRACK_ROWS = 4    # tracks that get a row of crops (all get a curve)
THUMB_PX = 96


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        _pyplot().close(fig)
    return path


def plot_name(video: str, taken: set[str] | None = None, root: str | os.PathLike | None = None) -> str:
    """A file name for a video's plot.

    Args:
        video: the video's path.
        taken: names already used in this run; the new one is added, with `_2`, `_3`... when needed.
        root: a folder the name is taken relative to (e.g. the common folder of a run's videos).

    Returns:
        The path (relative to `root` when inside it) without extension, separators as `__`, then `.png`.
    """
    rel = Path(video).with_suffix("")
    if root is not None:
        try:
            rel = Path(os.path.abspath(rel)).relative_to(os.path.abspath(root))
        except ValueError:
            pass
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.as_posix().replace("/", "__")).strip("._")
    stem = stem[-150:] or "video"
    name, k = f"{stem}.png", 2
    if taken is not None:
        while name in taken:
            name, k = f"{stem}_{k}.png", k + 1
        taken.add(name)
    return name


def _thumbs(crops: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` crops evenly spaced over a track, side by side at THUMB_PX: (strip image, chosen indices)."""
    import cv2

    idx = np.unique(np.linspace(0, len(crops) - 1, min(n, len(crops))).round().astype(int))
    tiles = [cv2.resize(np.asarray(crops[i], np.uint8), (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA)
             for i in idx]
    gap = np.full((THUMB_PX, 4, 3), 255, np.uint8)
    parts = []
    for t in tiles:
        parts += [t, gap]
    return np.concatenate(parts[:-1], axis=1), idx


def _mark_windows(ax, face: dict, fps: float, color, first: bool) -> None:
    """A face's window scores as horizontal bars over the frames each window covers, and its top frames (the crops
    that moved their window's score most, `deepfake.scoring`) as stars on its curve."""
    scale = fps if fps > 0 else 1.0
    for k, window in enumerate(face.get("windows") or []):
        lo, hi = window["frames"]
        ax.hlines(window["p_fake"], lo / scale, hi / scale, colors=color, linewidth=4, alpha=0.35,
                  label="window p(fake)" if first and k == 0 else None)
    steps = dict(zip(face["frames"], face["steps"]))
    top = [f for f in face.get("top_frames") or [] if f in steps]
    if top:
        ax.plot([f / scale for f in top], [steps[f] for f in top], linestyle="none", marker="*", markersize=11,
                markerfacecolor=color, markeredgecolor="black", markeredgewidth=0.8,
                label="top frames" if first else None)


def plot_video(result: dict, faces, out: str | os.PathLike, threshold: float = 0.5) -> Path:
    """A PNG of one video's per-step p(fake) over time, one curve per face, with crops of each face on top; each
    face's window scores are bars over the frames they cover and its top frames are stars.

    Args:
        result: the video's dict from `deepfake.inference` (uses `faces[*].frames/steps/windows/top_frames`,
            `p_fake`, `verdict`, and `calibrated` when present: the y label then says calibrated or raw).
        faces: its `VideoFaces` (crops and fps); None draws the curves without crops, against frame index.
        out: the PNG to write.
        threshold: drawn as a dashed line.

    Returns:
        The written path.
    """
    plt = _pyplot()
    tracks = result.get("faces") or []
    fps = float(getattr(faces, "fps", 0.0) or 0.0)
    crops_by_track = {int(t.track): t.images() for t in getattr(faces, "tracks", []) if len(t)}
    strip_tracks = [f for f in tracks if f["track"] in crops_by_track][:MAX_TRACK_ROWS]
    n_rows = len(strip_tracks)
    heights = [1.0] * n_rows + [3.0]
    fig = plt.figure(figsize=(10, 1.3 * n_rows + 3.6))
    grid = fig.add_gridspec(n_rows + 1, 1, height_ratios=heights, hspace=0.35)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {f["track"]: colors[i % len(colors)] for i, f in enumerate(tracks)}

    for row, face in enumerate(strip_tracks):
        ax = fig.add_subplot(grid[row])
        strip, idx = _thumbs(crops_by_track[face["track"]], MAX_THUMBS)
        ax.imshow(strip)
        ax.set_xticks([(i * (THUMB_PX + 4)) + THUMB_PX / 2 for i in range(len(idx))])
        frames = face["frames"]
        ax.set_xticklabels([f"{frames[i] / fps:.1f}s" if fps > 0 else f"f{frames[i]}" for i in idx],
                           fontsize=7)
        ax.set_yticks([])
        ax.set_ylabel(f"face {face['track']}", rotation=0, ha="right", va="center", fontsize=9,
                      color=color_of[face["track"]])
        for spine in ax.spines.values():
            spine.set_edgecolor(color_of[face["track"]])

    ax = fig.add_subplot(grid[n_rows])
    for face in tracks:
        frames = np.asarray(face["frames"], np.float64)
        x = frames / fps if fps > 0 else frames
        ax.plot(x, face["steps"], marker="o", markersize=3, linewidth=1.5, color=color_of[face["track"]],
                label=f"face {face['track']}: p(fake) {face['p_fake']:.3f}")
        _mark_windows(ax, face, fps, color_of[face["track"]], first=face is tracks[0])
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_ylim(-0.02, 1.02)
    calibrated = result.get("calibrated")
    ax.set_ylabel("p(fake) per step" + {True: " (calibrated)", False: " (raw)"}.get(calibrated, ""))
    ax.set_xlabel("time (s)" if fps > 0 else "frame")
    if fps > 0 and tracks:
        top = ax.secondary_xaxis("top", functions=(lambda s: s * fps, lambda f: f / fps))
        top.set_xlabel("frame", fontsize=8)
        top.tick_params(labelsize=7)
    if not tracks:
        ax.text(0.5, 0.5, "no face found", transform=ax.transAxes, ha="center", va="center", fontsize=14)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    p = result.get("p_fake")
    title = f"{result['video']}: {result['verdict']}" + (f" (p(fake) {p:.3f})" if p is not None else "")
    fig.suptitle(title, fontsize=11)
    return _save(fig, Path(out))


def plot_roc(y_true: Sequence[int], p_fake: Sequence[float], out: str | os.PathLike, title: str = "ROC",
             threshold: float | None = None) -> Path:
    """ROC curve (fake = positive) with its AUC, and the operating point at `threshold`.

    With one class only there is no curve; the figure then says so (the file is still written, so a report
    always has its figure).
    """
    plt = _pyplot()
    y = np.asarray(y_true, np.int64)
    p = np.asarray(p_fake, np.float64)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    if len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score, roc_curve

        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, linewidth=2, label=f"AUC {roc_auc_score(y, p):.4f} (n={len(y)})")
        if threshold is not None:
            pred = p >= threshold
            op_fpr = float(np.mean(pred[y == 0]))
            op_tpr = float(np.mean(pred[y == 1]))
            ax.plot([op_fpr], [op_tpr], "o", color="black", label=f"threshold {threshold:g}")
    else:
        ax.text(0.5, 0.5, f"no ROC: only one class among the {len(y)} scored videos", ha="center", va="center",
                transform=ax.transAxes, wrap=True)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fake called fake)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(out))


def plot_robustness(rows: Sequence[dict], out: str | os.PathLike, title: str = "AUC under distortions") -> Path:
    """AUC against distortion level, one line per type; the clean score is every line's level 0.

    Args:
        rows: dicts with `distortion`, `kind`, `level`, `auc` (None when not defined); the clean row has kind
            ``clean`` and level 0.
        out: the PNG to write.
        title: figure title.
    """
    plt = _pyplot()
    clean = next((r for r in rows if r["kind"] == "clean"), None)
    clean_auc = clean["auc"] if clean else None
    kinds = list(dict.fromkeys(r["kind"] for r in rows if r["kind"] != "clean"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in kinds:
        pts = sorted((int(r["level"]), r["auc"]) for r in rows if r["kind"] == kind and r["auc"] is not None)
        if clean_auc is not None:
            pts = [(0, clean_auc)] + pts
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", linewidth=1.5, label=kind if kind != "mix" else "mix (N types)")
    if clean_auc is not None:
        ax.axhline(clean_auc, color="grey", linestyle="--", linewidth=1, label=f"clean {clean_auc:.3f}")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    levels = sorted({int(r["level"]) for r in rows} | {0})
    ax.set_xticks(levels)
    ax.set_xlabel("level (0 = clean; mix: number of types)")
    ax.set_ylabel("video AUC")
    ax.set_ylim(0.0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if kinds or clean_auc is not None:
        ax.legend(loc="lower left", fontsize=8, ncol=2)
    if not any(r["auc"] is not None for r in rows):
        ax.text(0.5, 0.5, "AUC needs real and fake videos", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _save(fig, Path(out))


def plot_reliability(y_true: Sequence[int], p_fake: Sequence[float], out: str | os.PathLike,
                     raw: Sequence[float] | None = None, title: str = "reliability", bins: int | None = None) -> Path:
    """Reliability diagram: fraction of fakes against mean p(fake) per equal-width bin (`deepfake.metrics`, 15
    bins), the diagonal a calibrated detector follows, with ECE in the legend; below it the histogram of the scores.
    `raw`, the same videos' uncalibrated scores, is drawn too (dashed) when given."""
    from deepfake.metrics import ECE_BINS, expected_calibration_error, reliability_bins

    bins = bins or ECE_BINS
    plt = _pyplot()
    y = np.asarray(y_true, np.float64)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    series = [("calibrated" if raw is not None else "scores", p_fake, "-", "C0")]
    if raw is not None:
        series.append(("raw", raw, "--", "C1"))
    edges = np.linspace(0, 1, bins + 1)
    for name, scores, style, color in series:
        p = np.asarray(scores, np.float64)
        if not len(p):
            continue
        pts = [(r["mean_p"], r["frac_fake"]) for r in reliability_bins(y, p, bins) if r["n"]]
        ece = expected_calibration_error(y, p, bins)
        ax.plot(*zip(*pts), marker="o", linestyle=style, color=color, linewidth=1.5, label=f"{name}: ECE {ece:.3f}")
        hist.hist(np.clip(p, 0, 1), bins=edges, histtype="step" if style == "--" else "stepfilled",
                  color=color, alpha=0.9 if style == "--" else 0.5, linewidth=1.5, label=name)
    if not len(y):
        ax.text(0.5, 0.5, "no scored video", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_ylabel("fraction of fakes")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    hist.set_xlabel(f"p(fake) ({bins} bins)")
    hist.set_ylabel("videos")
    hist.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(out))


def plot_benchmark(sets: Sequence[str], ours: dict, published: Sequence[tuple], out: str | os.PathLike,
                   title: str = "AUC per test set") -> Path:
    """Our video and frame AUC per test set (bars with their 95% intervals) and the published AUCs (markers,
    hollow for frame level).

    Args:
        sets: the test sets, in order.
        ours: {set: {"video" | "frame": (auc, low, high)}} (low/high None when unknown).
        published: (detector, set, level, auc in [0, 1]).
        out: the PNG to write.
        title: figure title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(sets) + 3), 4.8))
    x = np.arange(len(sets))
    for k, (level, color) in enumerate((("video", "#1f77b4"), ("frame", "#9ecae1"))):
        vals = [ours.get(s, {}).get(level) for s in sets]
        h = [v[0] if v else 0.0 for v in vals]
        err = np.array([[v[0] - v[1], v[2] - v[0]] if v and v[1] is not None else [0.0, 0.0] for v in vals]).T
        ax.bar(x + (k - 0.5) * 0.36, h, 0.36, yerr=err if len(vals) else None, capsize=3, color=color,
               label=f"ours, {level} AUC")
    markers = "osD^vP*X"
    for j, detector in enumerate(dict.fromkeys(p[0] for p in published)):
        pts = [(sets.index(s), auc, level) for d, s, level, auc in published if d == detector and s in sets]
        for i, auc, level in pts:
            ax.plot([i + (-0.18 if level == "video" else 0.18)], [auc], markers[j % len(markers)], color="black",
                    markerfacecolor="black" if level == "video" else "none", markersize=7,
                    label=f"{detector} ({level})" if (i, auc, level) == pts[0] else None)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x)
    ax.set_xticklabels(sets)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("AUC")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, Path(out))
