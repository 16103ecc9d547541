"""Evaluation: video-level metrics of a detector on a labelled set, clean and distorted (`deepfake evaluate`).

    report = evaluate("dfdc_train_part_49/", "eval/", weights="detector.pt")
    report = evaluate("extracted/index.csv", "eval/", weights="detector.pt", config=EvaluateConfig(split="val"))

SOURCE is either
- a labelled folder of videos, read by `data_prep.layouts` (`--layout auto|dfdc|deeperforensics|folder`): a DFDC
  part with `metadata.json`, a DeeperForensics-1.0 tree, or `real/` + `fake/` folders and/or a `labels.csv`.
  Each video goes through the same path as `deepfake predict` (extraction with the checkpoint's settings, then
  the detector); or
- an extracted index (`index.csv`, or a folder holding one; written by `deepfake-extract`): its crops are scored
  directly, no detection, grouped into tracks by its `video` and `track` columns. Videos listed in the index
  folder's `failures.csv` are reported as errors (or as no-face videos when their reason says no face was
  found); they have no label there, so they never enter the metrics.

Scores are those of `deepfake predict` (track: mean over windows of `seq_len` crops of the last step's p(fake);
video: max over its tracks), calibrated by the checkpoint's calibration when it has one (`deepfake.calibration`;
`PredictConfig(calibrated=False)`, `--no-calibration`, gives the raw scores). Metrics
(`deepfake.metrics.binary_metrics`, probabilities clipped to [0.01, 0.99] for the log losses) are computed twice:
- over the videos that were scored (the flat keys of `metrics.json`): a video where no face was found is excluded
  and listed under `no_face`, or, with `--no-face-prior P`, scored as p(fake) = P and counted; a video that can't
  be read is excluded and listed under `errors` with its reason;
- over every labelled video (`all_videos`), each no-face and unreadable one scored at the prior (`--no-face-prior`
  P, else 0.5), DFDC's rule (a submission must score every video): a detector that "finds no face" in the hard
  fakes can't look better there than it is. (An index's `failures.csv` has no labels: those videos can only be
  counted from the video folder.)

Writes, in DIR (every file atomically):
- `metrics.json`: log loss, balanced log loss (mean of the real-class and fake-class log losses), AUC, accuracy,
  AP, EER, ECE (15 bins) and Brier score, the confusion counts at `--threshold`, the counts of videos scored /
  without a face / in error and how they were counted; `all_videos` (above); `calibration` (whether the scores
  were calibrated, with what) and, when they were, `uncalibrated` (the same metrics of the raw scores, recovered
  from the windows' raw logits: `deepfake.scoring.raw_video_p_fake`); and the settings.
- `roc.png`: the ROC curve with its AUC and the operating point at the threshold.
- `reliability.png`: the reliability diagram (fraction of fakes against mean p(fake) in 15 bins) with the
  histogram of the scores, calibrated and, when they differ, raw.
- `predictions.csv`: one row per video, columns `PREDICTION_COLUMNS` (`counted` says `scored`, `prior` or
  `excluded`).

With `--perturb all|TYPE[:LEVEL]|mix:N` (comma-separated; see `deepfake.perturb.parse_perturb`), every video is
also written distorted (DeeperForensics-1.0's seven types at levels 1-5, or mixes of N random types; each video
its own seed from `--seed`, the same as `deepfake distort SOURCE --seed K` gives it, so the distorted files can be
written once with that command and inspected) into a temporary folder under DIR and evaluated the same way, one
distortion at a time; then:
- `robustness.csv` / `robustness.json`: one row per distortion (`clean` first, level 0) with columns
  `ROBUSTNESS_COLUMNS`;
- `robustness.png`: AUC against level, one line per type (mix: level = number of types), clean at level 0;
- `robustness_predictions.csv`: every video's p(fake) under every distortion.
Finished distortions are kept in `DIR/robustness_parts/`, so a killed run resumes where it stopped (with the same
weights, settings and videos).

Exit status: 0 when the metrics were written (videos in error are listed, not fatal), 1 when no video could be
scored, 2 for a usage error (bad SOURCE, missing weights, bad option).
"""

from __future__ import annotations

import logging
import json
import os
import time
from collections.abc import Callable
from pathlib import Path


from data_prep.files import atomic_write, csv_text
from deepfake.contract import extraction_record, index_differences
from deepfake.inference import Detector, PredictConfig, load_predictor
from deepfake.scoring import RULE

from deepfake.labelled import (  # public here too, where users look for them
    EvaluateConfig, EvaluationError, LabelledVideo, load_source, load_video_tracks, score_index, score_videos,
    video_label,
)
from deepfake.robustness import evaluate_robustness
from deepfake.summary import (
    PREDICTION_COLUMNS, calibration_report, clean_json, counted_as, counted_raw, json_text, prediction_rows, summarize,
)

__all__ = ["EvaluateConfig", "LabelledVideo", "EvaluationError", "load_source", "score_videos", "score_index",
           "video_label", "load_video_tracks", "summarize", "evaluate", "counted_as", "PREDICTION_COLUMNS"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ one call


def _index_settings(folder: Path, detector: Detector, warn: Callable[[str], None]) -> dict | None:
    """The extraction settings of an index (`extract_config.json`), warning when they differ from training's."""
    try:
        settings = json.loads((folder / "extract_config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(settings, dict):
        return None
    if (differences := index_differences(settings, detector.meta, f"the index {folder}")) is not None:
        warn(f"warning: {differences}")
    if settings.get("size") is not None and int(settings["size"]) != detector.img_size:
        warn(f"note: the index's {settings['size']}-px crops are resized to the model's {detector.img_size} px")
    return settings


def evaluate(source: str | os.PathLike, out: str | os.PathLike, weights: str | os.PathLike | None = None,
             sha256: str | None = None, predict_config: PredictConfig | None = None,
             config: EvaluateConfig | None = None, progress: bool = False,
             say: Callable[[str], None] = log.info,
             warn: Callable[[str], None] = log.warning,
             predictor: tuple | None = None) -> dict:
    """Evaluate a detector on a labelled set and write the outputs (module docstring) into `out`.

    Args:
        source: a labelled folder of videos or an extracted index.csv (or a folder holding one).
        out: the output folder.
        weights: detector weights (`deepfake.weights.resolve_weights`: file, URL, or None for the default).
        sha256: expected hash of the weights.
        predict_config: the model's settings (device, precision, batch size, stride, workers).
        config: the evaluation's settings.
        progress: progress bars on stderr.
        say: where result lines go (one per distortion).
        warn: where warnings and notes go.
        predictor: an already loaded (detector, extractor, weights path) from `load_predictor`, to evaluate several
            sets with one model (`weights`, `sha256` and the model settings are then not used).

    Returns:
        The report written to `metrics.json` (metrics of the clean set plus `settings`); with distortions, also
        `robustness` (the rows of robustness.csv).

    Raises:
        EvaluationError: a bad SOURCE or setting (code 2), nothing scored or an output not writable (code 1), an
            interrupted distortion run (code 130).
        deepfake.weights.WeightsError: weights missing or unloadable.
    """
    pconfig = predict_config or PredictConfig()
    config = config or EvaluateConfig()
    distortions = []
    if config.perturb is not None:
        from deepfake.perturb import parse_perturb

        distortions = [d for d in parse_perturb(config.perturb) if not d.is_identity]
    out = Path(out)
    mode, items, notes = load_source(source, config.layout, config.split, config.split_file)
    if mode == "index" and distortions:
        raise EvaluationError("--perturb needs videos to distort; SOURCE is an extracted index (crops). Give "
                              "the labelled video folder instead")
    detector, extractor, weights = predictor or load_predictor(weights, pconfig, sha256, progress=progress)
    if detector.runtime_note:
        warn(detector.runtime_note)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EvaluationError(f"can't create {out}: {err.strerror or err}", 1) from None  # as any write: exit 1

    start = time.perf_counter()
    extra: list[dict] = []
    index_settings = None
    if mode == "index":
        index_settings = _index_settings(Path(notes[0]).parent, detector, warn)
        videos, scored, extra = score_index(items, notes[0], detector, config.threshold, progress)
        notes = [f"index {notes[0]}"]
    else:
        videos = items
        scored = score_videos(videos, detector, extractor, config.threshold, progress)
    results = [s.result for s in scored]
    metrics = summarize(videos, results, config.threshold, config.no_face_prior, extra)
    metrics["calibration"], uncalibrated = calibration_report(detector, scored, config.threshold,
                                                              config.no_face_prior)
    if uncalibrated is not None:
        metrics["uncalibrated"] = clean_json(uncalibrated)
    settings = {
        "source": os.fspath(source), "mode": mode, "notes": notes, "split": config.split,
        "weights": os.fspath(weights), "threshold": config.threshold, "no_face_prior": config.no_face_prior,
        "seq_len": detector.seq_len, "img_size": detector.img_size, "device": str(detector.device),
        "precision": detector.precision, "runtime": detector.runtime,
        **({"stride": extractor.config.stride, "margin": extractor.config.margin} if mode == "videos"
           else {"index_extraction": index_settings}),
        "score_rule": RULE,
        "seconds": round(time.perf_counter() - start, 3),
    }
    # What the crops were made with: the extractor's settings, or the index's (null where it does not say).
    report = {**metrics, "extraction": extraction_record(detector.meta, extractor.config if mode == "videos"
                                                         else index_settings), "settings": settings}
    try:
        atomic_write(out / "predictions.csv",
                     csv_text(prediction_rows(scored, config.no_face_prior), PREDICTION_COLUMNS))
        atomic_write(out / "metrics.json", json_text(report))
        from deepfake.plots import plot_reliability, plot_roc

        counted = [(v.label, p) for v, r in zip(videos, results)
                   for _, p in [counted_as(r, config.no_face_prior)] if p is not None]
        y, p = [y for y, _ in counted], [p for _, p in counted]
        plot_roc(y, p, out / "roc.png", title=f"{Path(source).name}: {len(counted)} videos",
                 threshold=config.threshold)
        raw = counted_raw(scored, config.no_face_prior)[1] if uncalibrated is not None else None
        plot_reliability(y, p, out / "reliability.png", raw=raw,
                         title=f"{Path(source).name}: {len(counted)} videos"
                               + (", calibrated" if detector.calibration is not None else ""))
    except OSError as err:
        raise EvaluationError(f"can't write to {out}: {err}", 1) from None

    from deepfake.metrics import format_metrics

    say(f"clean: {format_metrics(metrics)} (n={metrics['n']}, no face {metrics['no_face']['count']}, "
        f"errors {metrics['errors']['count']})")
    every = metrics["all_videos"]
    if every["n_at_prior"]:
        say(f"all videos, no face and errors at p={every['prior']:g}: {format_metrics(every)} (n={every['n']}, "
            f"{every['n_at_prior']} at the prior)")
    else:
        say(f"all videos: as above (every one of the {every['n']} labelled videos was scored)")
    cal = metrics["calibration"]
    if cal["applied"]:
        say(f"calibrated: temperature {cal['temperature']:.3f}" + (f", bias {cal['bias']:+.3f}" if cal["bias"] else "")
            + (f" ({cal.get('fitted_on')}, {cal.get('n_videos')} videos)" if cal.get("fitted_on") else "")
            + (f"; raw scores: {format_metrics(uncalibrated)}" if uncalibrated is not None else ""))
    else:
        say(f"not calibrated: {cal['reason']}")
    if metrics["errors"]["count"]:
        warn(f"warning: {metrics['errors']['count']} video(s) could not be read; listed in {out / 'metrics.json'}")
    if metrics["n"] == 0:
        raise EvaluationError("no video could be scored (see metrics.json for the reasons)", 1)
    if not distortions:
        return report

    rows = evaluate_robustness(videos, results, metrics, distortions, detector, extractor, weights, config, out,
                               progress, say, name=Path(source).name)
    return {**report, "robustness": rows}
