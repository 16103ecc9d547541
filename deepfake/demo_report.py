"""The demo's report: the stage summaries it is made of and the text `deepfake demo` prints at the end."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

__all__ = ["STAGES", "DemoError", "format_report"]

STAGES = ("synth", "extract", "fit", "evaluate", "predict", "generalize")


class DemoError(Exception):
    """A stage failed or OUT_DIR can't be used; one line (with the log to read)."""


def format_value(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s"


def index_counts(index: Path) -> dict:
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"videos": len({r["video"] for r in rows}), "tracks": len({(r["video"], r["track"]) for r in rows}),
            "crops": len(rows)}


def fit_summary(run: Path, out: Path) -> dict:
    """A training run's folder and weights (relative to `out`), epochs, and the validation metrics of the exported
    (best by validation log loss) epoch."""
    weights = run / "checkpoints" / "detector.pt"
    if not weights.is_file():
        raise DemoError(f"training finished without exporting {weights}")
    epochs: dict[int, dict[str, float]] = {}
    with open(run / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row["epoch"]))
            except (KeyError, ValueError):
                continue
            for k, v in row.items():
                if k.startswith("val/") and v not in ("", None):
                    epochs.setdefault(epoch, {})[k] = float(v)
    # The exported epoch: the one the checkpoint callback kept (`deepfake.train`: best val/balanced_logloss).
    scored = {e: m for e, m in epochs.items() if "val/balanced_logloss" in m}
    best = min(scored, key=lambda e: scored[e]["val/balanced_logloss"]) if scored else None
    last = max(epochs) if epochs else None
    return {"run_dir": run.relative_to(out).as_posix(), "weights": weights.relative_to(out).as_posix(),
            "epochs": (last + 1) if last is not None else 0,
            "best_epoch": (best + 1) if best is not None else None,
            "val_auc": scored[best].get("val/auc") if best is not None else None,
            "val_logloss": scored[best].get("val/logloss") if best is not None else None,
            "val_accuracy": scored[best].get("val/acc") if best is not None else None,
            "last_val_auc": scored[last].get("val/auc") if last in scored else None}


def pick_clip(heldout: Path, predictions: Path) -> Path:
    """A typical held-out fake: the one with the median p(fake) among the evaluated fakes (neither the best nor the
    worst case), else the first fake, else the first video."""
    try:
        with open(predictions, newline="") as f:
            fakes = [r for r in csv.DictReader(f) if r.get("label") == "1" and r.get("status") == "ok"]
        fakes.sort(key=lambda r: (float(r["p_fake"]), r["video"]))
        if fakes and (heldout / fakes[(len(fakes) - 1) // 2]["video"]).is_file():
            return heldout / fakes[(len(fakes) - 1) // 2]["video"]
    except (OSError, KeyError, ValueError):
        pass
    videos = sorted((heldout / "fake").glob("*.mp4")) or sorted(heldout.rglob("*.mp4"))
    if not videos:
        raise DemoError(f"no video in {heldout}")
    return videos[0]


def label_of(clip: Path) -> str:
    return "fake" if clip.parent.name == "fake" else "real"


# ------------------------------------------------------------------------------------------------- the report


def calibration_line(held: dict) -> str:
    """The held-out set's log loss and ECE, raw -> calibrated, and the calibration that made the difference."""
    cal, raw = held.get("calibration") or {}, held.get("uncalibrated") or {}
    if not cal.get("applied"):
        return f"  calibration: none ({cal.get('reason', 'not recorded')})"
    fitted = f" from {cal['n_videos']} validation videos" if cal.get("n_videos") else ""
    bias = f", bias {cal['bias']:+.2f}" if cal.get("bias") else ""
    return (f"  calibration (temperature {cal['temperature']:.2f}{bias}{fitted}), held-out raw -> calibrated:  "
            f"log loss {format_value(raw.get('logloss'))} -> {format_value(held.get('logloss'))}   "
            f"ECE {format_value(raw.get('ece'))} -> {format_value(held.get('ece'))}")



def format_report(report: dict, total_seconds: float) -> str:
    """The text `deepfake demo` prints at the end."""
    lines = [f"deepfake demo: finished in {format_duration(total_seconds)}"
             + (" (--quick: a smoke test, the numbers mean little)" if report.get("quick") else ""), ""]
    fit, held, pred = report.get("fit", {}), report.get("heldout", {}), report.get("predict", {})
    lines.append("metrics (video level)")
    lines.append(f"  validation, best of {fit.get('epochs')} epochs (epoch {fit.get('best_epoch')}):  AUC "
                 f"{format_value(fit.get('val_auc'))}   log loss {format_value(fit.get('val_logloss'))}")
    n = held.get("n")
    extra = ", ".join(f"{v} {k}" for k, v in (("without a face", held.get("no_face")), ("unreadable",
                                                                                       held.get("errors"))) if v)
    lines.append(f"  held-out set, {n} videos never trained on{' (' + extra + ', left out)' if extra else ''}:")
    lines.append(f"      AUC {format_value(held.get('auc'))}   log loss {format_value(held.get('logloss'))}   "
                 f"balanced log loss {format_value(held.get('balanced_logloss'))}   "
                 f"accuracy {format_value(held.get('accuracy'))} (threshold 0.5)   (chance: AUC 0.5, log loss 0.693)")
    lines.append(calibration_line(held))
    lines.append(f"  one clip, {pred.get('video')} (truly {pred.get('label')}): "
                 f"p(fake) {format_value(pred.get('p_fake'))} -> {pred.get('verdict')}")
    cross = report.get("generalize")
    if cross:
        lines += ["", "generalization: held-out video AUC, by what the detector was trained on"]
        sets = list(next(iter(cross.values())))
        lines.append(f"  {'trained on':<38}" + "".join(f"{s:>28}" for s in sets))
        for detector, aucs in cross.items():
            lines.append(f"  {detector:<38}" + "".join(f"{format_value(aucs.get(s)):>28}" for s in sets))
    lines += ["", "time per stage"]
    for name in STAGES:
        s = report["stages"].get(name)
        if s:
            lines.append(f"  {name:<11}{format_duration(s['seconds']):>12}" + ("  (reused from an earlier run)"
                                                                         if s.get("reused") else ""))
    lines += ["", "artifacts"]
    width = max(len(k) for k in report["artifacts"])
    lines += [f"  {k:<{width}}  {v}" for k, v in report["artifacts"].items()]
    if report.get("installed"):
        lines += ["", f"installed as the default weights: {report['installed']} (`deepfake predict VIDEO` uses it)"]
    weights = report["artifacts"].get("detector weights")
    lines += ["", "next", f"  deepfake predict VIDEO... --weights {weights} --plot plots/",
              "  deepfake fit --config configs/b1_lstm.yaml --data.index EXTRACTED_DFDC   (a model for real videos)"]
    return "\n".join(lines)
