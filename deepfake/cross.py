"""Cross-manipulation evaluation: one detector on several labelled sets, one table, one row a set.

Detectors are judged on fakes they were not trained on (DeepfakeBench reports cross-dataset results this way):
each set (a folder of labelled videos or an index.csv) is evaluated as `deepfake evaluate` does, into its own
subfolder of OUT, and `cross.csv` / `cross.md` put them side by side: videos, AUC, log loss, balanced log loss,
accuracy, EER and ECE. The model is loaded once. A set that can't be scored gets its row with the reason and the
others go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from data_prep.files import atomic_write, csv_text
from deepfake.evaluation import EvaluateConfig, EvaluationError, evaluate
from deepfake.inference import PredictConfig, load_predictor

__all__ = ["CROSS_COLUMNS", "set_names", "evaluate_sets", "markdown_table"]

log = logging.getLogger(__name__)

CROSS_COLUMNS = ["set", "n", "n_real", "n_fake", "auc", "logloss", "balanced_logloss", "accuracy", "eer", "ece",
                 "source", "error"]


def set_names(sources: Sequence[str | os.PathLike]) -> list[str]:
    """A short, unique name per set: its folder's name (an index.csv's folder), numbered when two are alike."""
    names: list[str] = []
    for source in sources:
        path = Path(source)
        base = (path.parent.name if path.suffix.lower() == ".csv" else path.name) or "set"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table (the reasons of failed sets under it)."""
    shown = ["set", "n", "auc", "logloss", "balanced_logloss", "accuracy", "eer", "ece"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in shown) + " |" for r in rows]
    notes = [f"- {r['set']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def evaluate_sets(sources: Sequence[str | os.PathLike], out: str | os.PathLike,
                  weights: str | os.PathLike | None = None, sha256: str | None = None,
                  predict_config: PredictConfig | None = None, config: EvaluateConfig | None = None,
                  progress: bool = False,
                  say: Callable[[str], None] = log.info,
                  warn: Callable[[str], None] = log.warning,
                  ) -> list[dict]:
    """Evaluate one detector on several sets; write OUT/<set>/ for each and OUT/cross.csv, OUT/cross.md.

    Returns:
        The rows of cross.csv, one per set in the order given.

    Raises:
        deepfake.weights.WeightsError: the weights can't be loaded.
        EvaluationError: OUT can't be written (code 1), or no set could be scored (code 1).
    """
    out = Path(out)
    predictor = load_predictor(weights, predict_config or PredictConfig(), sha256, progress=progress)
    rows = []
    for name, source in zip(set_names(sources), sources):
        row = {"set": name, "source": os.fspath(source)}
        try:
            report = evaluate(source, out / name, config=config, progress=progress, predictor=predictor,
                              say=lambda line, name=name: say(f"{name}: {line}"), warn=warn)
            row.update({k: report.get(k) for k in CROSS_COLUMNS if k in report and k not in row})
        except EvaluationError as err:
            row.update(n=0, error=str(err))
            warn(f"warning: {name}: {err}")
        rows.append(row)
    try:
        atomic_write(out / "cross.csv", csv_text([{k: _fmt(r.get(k)) for k in CROSS_COLUMNS} for r in rows],
                                                 CROSS_COLUMNS))
        atomic_write(out / "cross.md", markdown_table(rows))
    except OSError as err:
        raise EvaluationError(f"can't write to {out}: {err}", 1) from None
    if not any(r.get("n") for r in rows):
        raise EvaluationError("no set could be scored (see cross.csv for the reasons)", 1)
    return rows
