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
  from the windows' scores: `deepfake.calibration.uncalibrated_p`); and the settings.
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

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.files import CsvError, atomic_write, csv_text, read_csv_dicts
from data_prep.index import IndexFileError, read_crop, read_index
from deepfake.calibration import uncalibrated_p
from deepfake.contract import extraction_record, index_differences
from deepfake.inference import Detector, PredictConfig, iter_predictions, load_predictor
from deepfake.scoring import RULE, error_result, no_face_result, video_result

__all__ = ["EvaluateConfig", "LabelledVideo", "EvaluationError", "load_source", "score_videos", "score_index",
           "video_label", "load_video_tracks", "summarize", "evaluate", "counted_as", "PREDICTION_COLUMNS"]

PREDICTION_COLUMNS = ["video", "label", "p_fake", "status", "verdict", "counted", "faces", "crops", "seconds",
                      "split", "original", "error"]
DEFAULT_PRIOR = 0.5  # p(fake) of an unscored video in the all-videos metrics without --no-face-prior
SUMMARY_KEYS = ("n", "n_real", "n_fake", "logloss", "balanced_logloss", "auc", "accuracy", "ap", "eer", "ece", "brier")


class EvaluationError(Exception):
    """SOURCE or settings that can't be evaluated, or outputs that can't be written; one line.

    Attributes:
        code: the exit status `deepfake evaluate` gives it (2: usage, 1: nothing scored or a write failed,
            130: interrupted).
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class EvaluateConfig:
    """Settings of an evaluation (besides the model's, in `PredictConfig`).

    Attributes:
        threshold: p(fake) at or above which a video is called fake (accuracy, confusion).
        no_face_prior: p(fake) given to videos without a face so they count in the metrics; None excludes them.
        layout: layout of a video SOURCE (`data_prep.layouts.LAYOUTS`).
        split: keep only videos of this split (``train``, ``val``, ``test``); None keeps all.
        split_file: a training run's `split.csv` (video,split,...): its splits replace SOURCE's, so ``--split val``
            scores exactly the videos that run held out.
        perturb: a `--perturb` spec, or None for the clean evaluation only.
        seed: base seed of the distortions (each video gets its own from it).
    """

    threshold: float = 0.5
    no_face_prior: float | None = None
    layout: str = "auto"
    split: str | None = None
    split_file: str | None = None
    perturb: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from data_prep.layouts import LAYOUTS

        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"--threshold must be a probability in [0, 1], got {self.threshold}")
        if self.no_face_prior is not None and not 0.0 <= self.no_face_prior <= 1.0:
            raise ValueError(f"--no-face-prior must be a probability in [0, 1], got {self.no_face_prior}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.split is not None and self.split not in ("train", "val", "test"):
            raise ValueError(f"--split must be train, val or test, got {self.split!r}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class LabelledVideo:
    """A video to evaluate: its id (reported name), file, label (0 real, 1 fake), split and original."""

    video: str
    path: Path
    label: int
    split: str = ""
    original: str = ""


# ------------------------------------------------------------------------------------------------- sources


def _index_path(source: Path, layout: str) -> Path | None:
    """The index.csv SOURCE stands for, or None for a folder of videos."""
    if source.is_file():
        if source.suffix.lower() == ".csv":
            return source
        raise EvaluationError(f"{source}: SOURCE must be a folder of labelled videos or an index.csv")
    if layout == "auto" and (source / "index.csv").is_file():
        return source / "index.csv"
    return None


def _splits_from(split_file: str | os.PathLike) -> dict[str, str]:
    """video -> split, from a run's split.csv."""
    try:
        return {r["video"]: r["split"] for r in read_csv_dicts(split_file, need=["video", "split"])}
    except CsvError as err:
        raise EvaluationError(str(err)) from None


def load_source(source: str | os.PathLike, layout: str = "auto", split: str | None = None,
                split_file: str | os.PathLike | None = None):
    """What to evaluate: labelled videos, or the rows of an extracted index.

    Args:
        source: a labelled folder or an index.csv (or a folder holding one).
        layout: layout of a labelled folder.
        split: keep only this split.
        split_file: a run's split.csv whose splits replace SOURCE's (videos it does not list keep theirs).

    Returns:
        (mode, items, notes): mode ``videos`` with a list of `LabelledVideo`, or ``index`` with a pandas
        DataFrame of index rows (plus its folder in `notes`' first element's place: see `score_index`).

    Raises:
        EvaluationError: SOURCE missing, unreadable, of no known layout, or empty after the split filter.
    """
    if not os.fspath(source).strip():  # Path("") is the current folder: never what was meant
        raise EvaluationError("SOURCE is an empty path: name a folder of labelled videos or an index.csv")
    source = Path(source)
    if not source.exists():
        raise EvaluationError(f"{source}: no such file or folder")
    index = _index_path(source, layout)
    if index is not None:
        try:
            rows, _ = read_index(index)
        except IndexFileError as err:
            raise EvaluationError(str(err)) from None
        if split_file:
            given = _splits_from(split_file)
            rows["split"] = [given.get(v, s) for v, s in zip(rows["video"], rows["split"])]
        if split:
            rows = rows[rows["split"] == split]
        if rows.empty:
            raise EvaluationError(f"{index}: no rows" + (f" with split {split!r}" if split else ""))
        return "index", rows, [str(index)]
    from data_prep.layouts import LayoutError, find_videos

    try:
        found = find_videos(source, layout)
    except LayoutError as err:
        raise EvaluationError(str(err)) from None
    given = _splits_from(split_file) if split_file else {}
    videos = [LabelledVideo(r.video, Path(r.path), int(r.label), given.get(r.video, r.split), r.original)
              for r in found.records]
    videos = [v for v in videos if not split or v.split == split]
    if not videos:
        raise EvaluationError(f"{source}: no video with split {split!r} (layout {found.layout})")
    return "videos", videos, [f"layout {found.layout}", *found.notes]


# ------------------------------------------------------------------------------------------------- scoring


def score_videos(videos: Sequence[LabelledVideo], detector: Detector, extractor, threshold: float = 0.5,
                 progress: bool = False, desc: str = "evaluate") -> list[tuple[dict, float]]:
    """Predict every video (the `deepfake predict` path); returns (result dict, seconds) in order."""
    from tqdm import tqdm

    out = []
    preds = iter_predictions([v.path for v in videos], detector, extractor, threshold, names=[v.video for v in videos])
    bar = tqdm(preds, total=len(videos), unit="video", desc=desc, disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for pred in bar:
        if pred.warning:
            bar.write(f"deepfake evaluate: warning: {pred.warning}", file=sys.stderr)
        out.append((pred.result, pred.seconds))
    return out


def _index_failures(folder: Path) -> list[dict]:
    """Videos the extraction could not use (`failures.csv`: video,reason), as predict-style results."""
    path = folder / "failures.csv"
    if not path.is_file():
        return []
    try:
        rows = read_csv_dicts(path)
    except CsvError:
        return []
    out = []
    for row in rows:
        video, reason = (row.get("video") or "").strip(), (row.get("reason") or "").strip()
        if not video:
            continue
        if "no face" in reason.lower():
            out.append(no_face_result(video))
        else:
            out.append(error_result(video, reason or "extraction failed"))
    return out


def video_label(video: str, rows, index_path: str | os.PathLike) -> int:
    """The one 0/1 label of a video's index rows (EvaluationError when they hold another or several)."""
    labels = {int(v) for v in rows["label"]}
    if len(labels) != 1 or not labels <= {0, 1}:
        raise EvaluationError(f"{index_path}: video {video} has labels {sorted(labels)}; expected one of 0/1")
    return labels.pop()


def load_video_tracks(rows, folder: Path) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """A video's face tracks from its index rows: (track, frame numbers, crops (N, S, S, 3) uint8 RGB) by track,
    crops in frame order (OSError naming a crop that can't be read)."""
    tracks = []
    for track, t in rows.sort_values(["track", "frame"]).groupby("track", sort=True):
        crops = np.stack([read_crop(folder / c) for c in t["crop"]])
        tracks.append((int(track), t["frame"].to_numpy(np.int64), crops))
    return tracks


def score_index(rows, index_path: str | os.PathLike, detector: Detector, threshold: float = 0.5,
                progress: bool = False) -> tuple[list[LabelledVideo], list[tuple[dict, float]], list[dict]]:
    """Score the crops of an extracted index, video by video (no detection).

    Args:
        rows: the index rows (pandas DataFrame with `video,label,track,frame,crop`, optionally `split,original`).
        index_path: the index file (crop paths are relative to its folder).
        detector: the loaded detector (crops are resized to its input size when the index has another).
        threshold: verdict threshold.
        progress: a progress bar.

    Returns:
        (videos, [(result, seconds)] in the same order, unlabelled results of `failures.csv`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    folder = Path(index_path).parent
    groups = list(rows.groupby("video", sort=True))
    videos: list[LabelledVideo] = []
    for video, g in groups:
        first = g.iloc[0]
        videos.append(LabelledVideo(str(video), folder / str(video), video_label(video, g, index_path),
                                    str(first.get("split", "") or ""), str(first.get("original", "") or "")))

    results: list[tuple[dict, float]] = []
    # JPEG decoding of the next video overlaps the model on this one (cv2 releases the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(load_video_tracks, groups[0][1], folder)] if groups else []
        for i, (video, _) in enumerate(tqdm(groups, unit="video", desc="evaluate", disable=not progress,
                                            file=sys.stderr, dynamic_ncols=True)):
            start = time.perf_counter()
            if i + 1 < len(groups):
                futures.append(pool.submit(load_video_tracks, groups[i + 1][1], folder))
            try:
                tracks = futures[i].result()
                futures[i] = None  # free the crops once scored
                scores = detector.score_tracks_in_detail([c for _, _, c in tracks])
            except Exception as err:  # noqa: BLE001 - a missing crop costs one video, not the evaluation
                reason = str(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
                results.append((error_result(str(video), reason), time.perf_counter() - start))
                continue
            results.append((video_result(str(video), [(tr, frames, s) for (tr, frames, _), s in zip(tracks, scores)],
                                         threshold),
                            time.perf_counter() - start))
    return videos, results, _index_failures(folder)


# ------------------------------------------------------------------------------------------------- metrics


def _clean(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
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
    return _clean(out)


def calibration_report(detector: Detector, videos: Sequence[LabelledVideo], results: Sequence[dict],
                       threshold: float = 0.5, no_face_prior: float | None = None) -> tuple[dict, dict | None]:
    """Whether the scores were calibrated and with what, and (when they were) the metrics of the raw scores over
    the same videos: (`calibration` block, `uncalibrated` block or None)."""
    from deepfake.metrics import binary_metrics

    record = detector.meta.get("calibration")
    record = record if isinstance(record, dict) else None
    info: dict = {"applied": detector.calibration is not None}
    if detector.calibration is not None:
        info.update(temperature=detector.calibration[0], bias=detector.calibration[1],
                    **{k: record.get(k) for k in ("fitted_on", "n_videos") if record})
        y, raw = [], []
        for v, r in zip(videos, results):
            _, prob = counted_as(r, no_face_prior)
            if prob is not None:
                y.append(v.label)
                raw.append(uncalibrated_p(r, detector.calibration) if r["status"] == "ok" else prob)
        if any(q is None for q in raw):
            return {**info, "note": "raw scores not recoverable (results without windows)"}, None
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


def _prediction_rows(videos: Sequence[LabelledVideo], scored: Sequence[tuple[dict, float]],
                     no_face_prior: float | None) -> list[dict]:
    rows = []
    for v, (r, seconds) in zip(videos, scored):
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
    return json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n"


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
             say: Callable[[str], None] = print,
             warn: Callable[[str], None] = lambda m: print(f"deepfake evaluate: {m}", file=sys.stderr),
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
    results = [r for r, _ in scored]
    metrics = summarize(videos, results, config.threshold, config.no_face_prior, extra)
    metrics["calibration"], uncalibrated = calibration_report(detector, videos, results, config.threshold,
                                                              config.no_face_prior)
    if uncalibrated is not None:
        metrics["uncalibrated"] = _clean(uncalibrated)
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
                     csv_text(_prediction_rows(videos, scored, config.no_face_prior), PREDICTION_COLUMNS))
        atomic_write(out / "metrics.json", json_text(report))
        from deepfake.plots import plot_reliability, plot_roc

        counted = [(v.label, p, r) for v, r in zip(videos, results)
                   for _, p in [counted_as(r, config.no_face_prior)] if p is not None]
        y, p = [y for y, _, _ in counted], [p for _, p, _ in counted]
        plot_roc(y, p, out / "roc.png", title=f"{Path(source).name}: {len(counted)} videos",
                 threshold=config.threshold)
        raw = None
        if uncalibrated is not None:
            raw = [uncalibrated_p(r, detector.calibration) if r["status"] == "ok" else q for _, q, r in counted]
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

    from deepfake.robustness import evaluate_robustness

    rows = evaluate_robustness(videos, results, metrics, distortions, detector, extractor, weights, config, out,
                               progress, say, name=Path(source).name)
    return {**report, "robustness": rows}
