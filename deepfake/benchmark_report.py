"""The benchmark's table: our metrics per test set and manipulation method, at video and frame level, each with a
bootstrap 95% interval, beside the published figures of other detectors (`deepfake.benchmark` scores the sets).

Levels, never mixed:
- **video**: one score per video (`deepfake.scoring`: the max over its face tracks of the mean of each track's
  window scores); a video without a face is left out, or scored at ``no_face_prior`` when one is set; an unreadable
  video is left out (both counted in `n_excluded`).
- **frame**: one score per sampled frame of a scored video: the per-step p(fake) of each face crop (`steps` of
  predict's JSON; the LSTM's output at that crop), the max over the faces of that frame; labelled with its video's
  label. Its interval resamples whole videos (a video's frames are not independent draws).

Per test set: a row ``all`` (every real and fake video), and when the set holds several manipulation methods, a
row per method (the set's real videos against that method's fakes, FaceForensics++'s per-method protocol).

Published figures (`PUBLISHED`, AUC in %) are copied from the papers' READMEs as docs/benchmark.md lists them; their
level (video or frame) and training data are printed with them: compare like with like.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepfake.evaluation import counted_as
from deepfake.metrics import bootstrap_intervals, ranking_metrics

__all__ = ["PUBLISHED", "PUBLISHED_SETS", "BENCH_COLUMNS", "METRICS", "set_rows", "markdown_report",
           "published_for", "plot_data", "write_plot"]

# (detector, trained on, test set, level, AUC %, where it is published)
PUBLISHED = [
    ("SBI (EfficientNet-B4)", "FF++ real only", "CDF-v2", "video", 93.82, "SelfBlendedImages README"),
    ("SBI (EfficientNet-B4)", "FF++ real only", "DFD", "video", 97.87, "SelfBlendedImages README"),
    ("SBI (EfficientNet-B4)", "FF++ real only", "DFDCP", "video", 85.70, "SelfBlendedImages README"),
    ("SBI (EfficientNet-B4)", "FF++ real only", "DFDC", "video", 73.01, "SelfBlendedImages README"),
    ("LAA-Net (+ SBI)", "FF++ real only (SBI)", "CDF-v2", "video", 95.4, "LAA-Net README"),
    ("LAA-Net (+ SBI)", "FF++ real only (SBI)", "DFDC", "video", 86.9, "LAA-Net README"),
    ("FakeSTormer", "FF++ real only", "CDF-v2", "video", 92.4, "FakeSTormer README (ICCV 2025)"),
    ("FakeSTormer", "FF++ real only", "DFDCP", "video", 90.0, "FakeSTormer README (ICCV 2025)"),
    ("FakeSTormer", "FF++ real only", "DFD", "video", 98.5, "FakeSTormer README (ICCV 2025)"),
    ("EfficientNet-B4 (DeepfakeBench)", "FF++ fakes", "CDF-v2", "frame", 74.9, "DeepfakeBench README"),
    ("EfficientNet-B4 (DeepfakeBench)", "FF++ fakes", "DFDC", "frame", 69.6, "DeepfakeBench README"),
    ("EfficientNet-B4 (DeepfakeBench)", "FF++ fakes", "DeeperForensics", "frame", 83.3, "DeepfakeBench README"),
]
PUBLISHED_SETS = ("FF++", "CDF-v1", "CDF-v2", "DFD", "DFDCP", "DFDC", "DeeperForensics")
METRICS = ("auc", "ap", "eer", "logloss")
BENCH_COLUMNS = ["set", "subset", "level", "n_videos", "n_real", "n_fake",
                 *(f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")), "n_excluded", "error"]
_NAMES = {"auc": "AUC", "ap": "AP", "eer": "EER", "logloss": "log loss"}


def _row(name: str, subset: str, level: str, y: np.ndarray, p: np.ndarray, clusters, n_videos: int,
         n_excluded: int, n_boot: int, seed: int) -> dict:
    row: dict = {"set": name, "subset": subset, "level": level, "n_videos": n_videos,
                 "n_real": int(np.sum(y == 0)), "n_fake": int(np.sum(y == 1)), "n_excluded": n_excluded, "error": ""}
    point = ranking_metrics(y, p) if len(y) else dict.fromkeys(METRICS)
    ci = bootstrap_intervals(y, p, clusters, n_boot, seed) if len(y) else dict.fromkeys(METRICS)
    for m in METRICS:
        row[m] = point[m]
        row[f"{m}_lo"], row[f"{m}_hi"] = ci[m] if ci[m] is not None else (None, None)
    return row


def set_rows(name: str, videos: Sequence[dict], frames: Sequence[dict], n_boot: int = 1000, seed: int = 0,
             no_face_prior: float | None = None) -> list[dict]:
    """The table's rows of one test set.

    Args:
        name: the test set's name.
        videos: one dict per video: `video`, `label` (0/1), `method`, `status` (ok, no_face, error), `p_fake`
            (float or None).
        frames: one dict per frame: `video`, `label`, `method`, `p_fake`.
        n_boot: bootstrap resamples.
        seed: the bootstrap's seed.
        no_face_prior: p(fake) of a video without a face (None: left out).

    Returns:
        Rows with `BENCH_COLUMNS`: (``all``, then each method when there are several) x (video, frame).
    """
    methods = sorted({str(v["method"]) for v in videos if int(v["label"]) == 1 and v["method"]})
    subsets = [("all", None)] + ([(m, m) for m in methods] if len(methods) > 1 else [])
    rows = []
    for subset, method in subsets:
        def keep(item: dict) -> bool:
            return int(item["label"]) == 0 or method is None or item["method"] == method

        chosen = [v for v in videos if keep(v)]
        counted = [(int(v["label"]), q) for v in chosen for _, q in [counted_as(v, no_face_prior)] if q is not None]
        y = np.array([c[0] for c in counted], np.float64)
        p = np.array([c[1] for c in counted], np.float64)
        rows.append(_row(name, subset, "video", y, p, None, len(counted), len(chosen) - len(counted), n_boot, seed))
        fr = [f for f in frames if keep(f)]
        y = np.array([int(f["label"]) for f in fr], np.float64)
        p = np.array([float(f["p_fake"]) for f in fr], np.float64)
        rows.append(_row(name, subset, "frame", y, p, [f["video"] for f in fr], len({f["video"] for f in fr}),
                         0, n_boot, seed))
    return rows


def published_for(key: str | None) -> list[tuple]:
    """The published figures on a test set (its `PUBLISHED_SETS` key)."""
    return [p for p in PUBLISHED if p[2] == key]


def _cell(row: dict, metric: str, scale: float = 1.0) -> str:
    value = row.get(metric)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    text = f"{value * scale:.2f}" if scale != 1.0 else f"{value:.4f}"
    if lo is not None and hi is not None:
        text += f" [{lo * scale:.2f}, {hi * scale:.2f}]" if scale != 1.0 else f" [{lo:.4f}, {hi:.4f}]"
    return text


def markdown_report(report: dict) -> str:
    """The benchmark as Markdown: what was trained and scored, our table, the published figures beside ours."""
    lines = [f"# Benchmark: {report['name']}", "",
             f"- trained on: {report.get('train') or 'not stated'}",
             f"- weights: `{report['weights']}` (sha256 {report['weights_sha256'][:12]}...)",
             f"- table written {report['date']}; 95% intervals: percentile bootstrap, {report['bootstrap']} resamples "
             f"(seed {report['seed']}), of videos for video-level figures and of whole videos for frame-level ones",
             f"- video level: one score per video ({report['score_rule']}); frame level: each sampled frame's "
             "per-step score (max over its faces) against its video's label. Never compare one with the other.",
             "", "## Ours", "",
             "| test set | subset | level | videos | real (videos / frames) | fake (videos / frames) | AUC [95% CI] | "
             "AP [95% CI] | EER [95% CI] | log loss [95% CI] | excluded videos |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r.get("error"):
            lines.append(f"| {r['set']} | | | | | | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['set']} | {r['subset']} | {r['level']} | {r['n_videos']} | {r['n_real']} | "
                     f"{r['n_fake']} | " + " | ".join(_cell(r, m) for m in METRICS) + f" | {r['n_excluded']} |")
    detectors = list(dict.fromkeys((p[0], p[1], p[3]) for p in PUBLISHED))
    lines += ["", "## Beside the published figures (AUC, %)", "",
              "| test set | ours: video AUC | ours: frame AUC | "
              + " | ".join(f"{d} ({level} AUC; {trained})" for d, trained, level in detectors) + " |",
              "|---|---|---|" + "---|" * len(detectors)]
    for name, key in report["published_keys"].items():
        ours = {r["level"]: r for r in report["rows"] if r["set"] == name and r.get("subset") == "all"}
        theirs = {(p[0], p[1], p[3]): p[4] for p in published_for(key)}
        lines.append(f"| {name}" + (f" ({key})" if key and key != name else "") + " | "
                     + " | ".join(_cell(ours[level], "auc", 100) if level in ours else "n/a"
                                  for level in ("video", "frame")) + " | "
                     + " | ".join(f"{theirs[d]:.2f}" if d in theirs else "" for d in detectors) + " |")
    lines += ["", "Published figures: " + "; ".join(sorted({f"{p[0]}: {p[5]}" for p in PUBLISHED})) + ". They are "
              "copied, not reproduced here; users of several report reproductions 1.5-12 points lower."]
    notes = [f"- {name}: {note}" for name, notes_ in report.get("notes", {}).items() for note in notes_]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def plot_data(report: dict) -> tuple[list[str], dict, list[tuple]]:
    """(set names, ours {set: {level: (auc, lo, hi)}}, published [(detector, set name, level, auc)]) for
    `deepfake.plots.plot_benchmark`."""
    names = [n for n in report["published_keys"]]
    ours: dict[str, dict] = {}
    for r in report["rows"]:
        if r.get("subset") == "all" and r.get("auc") is not None:
            ours.setdefault(r["set"], {})[r["level"]] = (r["auc"], r.get("auc_lo"), r.get("auc_hi"))
    theirs = [(p[0], name, p[3], p[4] / 100) for name, key in report["published_keys"].items()
              for p in published_for(key)]
    return names, ours, theirs


def write_plot(report: dict, path: Path) -> Path:
    from deepfake.plots import plot_benchmark

    names, ours, theirs = plot_data(report)
    return plot_benchmark(names, ours, theirs, path, title=f"{report['name']}: AUC per test set")
