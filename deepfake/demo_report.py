"""The demo's report: the stage summaries it is made of and the text `deepfake demo` prints at the end."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

__all__ = ["STAGES", "DemoError", "format_report"]

STAGES = ("synth", "extract", "fit", "evaluate", "predict")


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


def fit_summary(run_root: Path, out: Path) -> dict:
    """The newest run's folder and weights (relative to `out`), epochs, and the validation metrics of the exported
    (best by validation log loss) epoch."""
    versions = sorted((p for p in run_root.glob("version_*") if p.name[8:].isdigit()), key=lambda p: int(p.name[8:]))
    if not versions:
        raise DemoError(f"training wrote no run folder under {run_root}")
    run = versions[-1]
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
    scored = {e: m for e, m in epochs.items() if "val/logloss" in m}
    best = min(scored, key=lambda e: scored[e]["val/logloss"]) if scored else None
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
    lines.append(f"  one clip, {pred.get('video')} (truly {pred.get('label')}): "
                 f"p(fake) {format_value(pred.get('p_fake'))} -> {pred.get('verdict')}")
    lines += ["", "time per stage"]
    for name in STAGES:
        s = report["stages"].get(name)
        if s:
            lines.append(f"  {name:<9}{format_duration(s['seconds']):>12}" + ("  (reused from an earlier run)"
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
