"""`deepfake evaluate SOURCE --out DIR`: video-level metrics of a detector on a labelled set, clean and distorted.

    deepfake evaluate dfdc_train_part_49/ --weights detector.pt --out eval/
    deepfake evaluate extracted/index.csv --weights detector.pt --out eval/ --split val
    deepfake evaluate demo/ --weights detector.pt --out eval/ --perturb GB:3,JPEG,mix:2

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
video: max over its tracks). Metrics (`deepfake.metrics.binary_metrics`, probabilities clipped to [0.01, 0.99]
for the log losses) are computed over the videos that were scored:
- a video where no face was found is excluded from the metrics and listed in `metrics.json` under `no_face`;
  with `--no-face-prior P` it is scored as p(fake) = P instead (as a Kaggle submission must, e.g. 0.5) and
  counted in the metrics;
- a video that can't be read is always excluded and listed under `errors` with its reason.

Writes, in DIR (every file atomically):
- `metrics.json`: log loss, balanced log loss (mean of the real-class and fake-class log losses), AUC, accuracy,
  AP, EER, the confusion counts at `--threshold`, the counts of videos scored / without a face / in error and
  how they were counted, and the settings.
- `roc.png`: the ROC curve with its AUC and the operating point at the threshold.
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

import argparse
import csv
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfake.predict import (Detector, PredictConfig, UsageError, _Parser, add_model_options, atomic_write_text,
                              error_result, iter_predictions, load_predictor, verdict_of)

__all__ = ["EvaluateConfig", "LabelledVideo", "EvaluationError", "load_source", "score_videos", "score_index",
           "summarize", "evaluate_perturbed", "PREDICTION_COLUMNS", "ROBUSTNESS_COLUMNS", "main"]

PREDICTION_COLUMNS = ["video", "label", "p_fake", "status", "verdict", "counted", "faces", "crops", "seconds",
                      "split", "original", "error"]
ROBUSTNESS_COLUMNS = ["distortion", "kind", "level", "auc", "logloss", "accuracy", "n", "balanced_logloss", "ap",
                      "eer", "no_face", "errors"]
PARTS_VERSION = 1


class EvaluationError(Exception):
    """SOURCE or settings that can't be evaluated; one line, exit status 2."""


@dataclass
class EvaluateConfig:
    """Settings of an evaluation (besides the model's, in `PredictConfig`).

    Attributes:
        threshold: p(fake) at or above which a video is called fake (accuracy, confusion).
        no_face_prior: p(fake) given to videos without a face so they count in the metrics; None excludes them.
        layout: layout of a video SOURCE (`data_prep.layouts.LAYOUTS`).
        split: keep only videos of this split (``train``, ``val``, ``test``); None keeps all.
        perturb: a `--perturb` spec, or None for the clean evaluation only.
        seed: base seed of the distortions (each video gets its own from it).
    """

    threshold: float = 0.5
    no_face_prior: float | None = None
    layout: str = "auto"
    split: str | None = None
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


def load_source(source: str | os.PathLike, layout: str = "auto", split: str | None = None):
    """What to evaluate: labelled videos, or the rows of an extracted index.

    Args:
        source: a labelled folder or an index.csv (or a folder holding one).
        layout: layout of a labelled folder.
        split: keep only this split.

    Returns:
        (mode, items, notes): mode ``videos`` with a list of `LabelledVideo`, or ``index`` with a pandas
        DataFrame of index rows (plus its folder in `notes`' first element's place: see `score_index`).

    Raises:
        EvaluationError: SOURCE missing, unreadable, of no known layout, or empty after the split filter.
    """
    source = Path(source)
    if not source.exists():
        raise EvaluationError(f"{source}: no such file or folder")
    index = _index_path(source, layout)
    if index is not None:
        import pandas as pd

        try:
            rows = pd.read_csv(index, dtype={"video": str, "split": str, "original": str, "crop": str},
                               keep_default_na=False)
        except Exception as err:  # pandas raises a zoo of parser errors
            raise EvaluationError(f"{index}: not a readable index.csv ({' '.join(str(err).split())})") from None
        need = {"video", "label", "track", "frame", "crop"}
        if not need <= set(rows.columns):
            raise EvaluationError(f"{index}: an index needs columns {','.join(sorted(need))}; got "
                                  f"{','.join(rows.columns)}")
        if split:
            rows = rows[rows.get("split", "") == split] if "split" in rows else rows.iloc[:0]
        if rows.empty:
            raise EvaluationError(f"{index}: no rows" + (f" with split {split!r}" if split else ""))
        return "index", rows, [str(index)]
    from data_prep.layouts import LayoutError, find_videos

    try:
        found = find_videos(source, layout)
    except LayoutError as err:
        raise EvaluationError(str(err)) from None
    videos = [LabelledVideo(r.video, Path(r.path), int(r.label), r.split, r.original) for r in found.records
              if not split or r.split == split]
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


def _read_crop(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"crop {path} missing or unreadable")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _index_failures(folder: Path) -> list[dict]:
    """Videos the extraction could not use (`failures.csv`: video,reason), as predict-style results."""
    path = folder / "failures.csv"
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    out = []
    for row in rows:
        video, reason = (row.get("video") or "").strip(), (row.get("reason") or "").strip()
        if not video:
            continue
        if "no face" in reason.lower():
            out.append({"video": video, "status": "no_face", "p_fake": None, "verdict": "no face", "faces": [],
                        "error": None})
        else:
            out.append(error_result(video, reason or "extraction failed"))
    return out


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
        labels = set(int(v) for v in g["label"])
        if len(labels) != 1 or not labels <= {0, 1}:
            raise EvaluationError(f"{index_path}: video {video} has labels {sorted(labels)}; expected one of 0/1")
        first = g.iloc[0]
        videos.append(LabelledVideo(str(video), folder / str(video), labels.pop(), str(first.get("split", "") or ""),
                                    str(first.get("original", "") or "")))

    def load(g) -> list[tuple[int, np.ndarray, np.ndarray]]:
        tracks = []
        for track, t in g.sort_values(["track", "frame"]).groupby("track", sort=True):
            crops = np.stack([_read_crop(folder / c) for c in t["crop"]])
            tracks.append((int(track), t["frame"].to_numpy(np.int64), crops))
        return tracks

    results: list[tuple[dict, float]] = []
    # JPEG decoding of the next video overlaps the model on this one (cv2 releases the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(load, groups[0][1])] if groups else []
        for i, (video, _) in enumerate(tqdm(groups, unit="video", desc="evaluate", disable=not progress,
                                            file=sys.stderr, dynamic_ncols=True)):
            start = time.perf_counter()
            if i + 1 < len(groups):
                futures.append(pool.submit(load, groups[i + 1][1]))
            try:
                tracks = futures[i].result()
                futures[i] = None  # free the crops once scored
                scores = detector.score_tracks([c for _, _, c in tracks])
            except Exception as err:  # noqa: BLE001 - a missing crop costs one video, not the evaluation
                reason = str(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
                results.append((error_result(str(video), reason), time.perf_counter() - start))
                continue
            faces = [{"track": tr, "p_fake": round(p, 6), "frames": [int(f) for f in frames],
                      "steps": [round(float(s), 6) for s in steps]}
                     for (tr, frames, _), (p, steps) in zip(tracks, scores)]
            p_video = max(p for p, _ in scores)
            results.append(({"video": str(video), "status": "ok", "p_fake": round(p_video, 6),
                             "verdict": verdict_of(p_video, threshold), "faces": faces, "error": None},
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


def _counted(result: dict, no_face_prior: float | None) -> tuple[str, float | None]:
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
        `errors` (each with `count`, `counted_as` and the videos).
    """
    from deepfake.metrics import binary_metrics

    y, p = [], []
    for v, r in zip(videos, results):
        _, prob = _counted(r, no_face_prior)
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
    return _clean(out)


def _prediction_rows(videos: Sequence[LabelledVideo], scored: Sequence[tuple[dict, float]],
                     no_face_prior: float | None) -> list[dict]:
    rows = []
    for v, (r, seconds) in zip(videos, scored):
        counted, _ = _counted(r, no_face_prior)
        rows.append({"video": v.video, "label": v.label,
                     "p_fake": "" if r["p_fake"] is None else f"{r['p_fake']:.6f}", "status": r["status"],
                     "verdict": r["verdict"], "counted": counted,
                     "faces": len(r["faces"]) if r["status"] != "error" else "",
                     "crops": sum(len(f["frames"]) for f in r["faces"]) if r["status"] != "error" else "",
                     "seconds": f"{seconds:.3f}", "split": v.split, "original": v.original, "error": r["error"] or ""})
    return rows


def _csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()


def _json_text(obj) -> str:
    return json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------------------------------------- robustness


def _row(distortion: str, kind: str, level: int, m: dict) -> dict:
    return {"distortion": distortion, "kind": kind, "level": level, "auc": m["auc"], "logloss": m["logloss"],
            "accuracy": m["accuracy"], "n": m["n"], "balanced_logloss": m["balanced_logloss"], "ap": m["ap"],
            "eer": m["eer"], "no_face": m["no_face"]["count"], "errors": m["errors"]["count"]}


def _parts_key(videos: Sequence[LabelledVideo], weights_id: str, detector: Detector, extractor, seed: int) -> dict:
    """What a saved distortion result depends on; a resumed run reuses a part only when all of it matches."""
    cfg = extractor.config
    return {"version": PARTS_VERSION, "weights": weights_id, "seed": seed, "stride": cfg.stride,
            "margin": cfg.margin, "size": cfg.size, "seq_len": detector.seq_len,
            "videos": [[v.video, v.label, os.fspath(v.path)] for v in videos]}


def evaluate_perturbed(videos: Sequence[LabelledVideo], distortions, detector: Detector, extractor,
                       work_dir: Path, seed: int = 0, threshold: float = 0.5, progress: bool = False,
                       parts_dir: Path | None = None, parts_key: dict | None = None,
                       on_done: Callable[[object, list[tuple[dict, float]]], None] | None = None,
                       ) -> Iterator[tuple[object, list[tuple[dict, float]]]]:
    """Evaluate the videos under each distortion: write distorted copies, then predict them as usual.

    Args:
        videos: the labelled videos.
        distortions: `deepfake.perturb.Distortion`s (identities are skipped: the clean run covers them).
        detector: the loaded detector.
        extractor: the `FaceExtractor`.
        work_dir: where the temporary distorted copies go (one distortion at a time, removed after it).
        seed: base seed; video i gets `video_seed(seed, video id, distortion name)`.
        threshold: verdict threshold.
        progress: progress bars.
        parts_dir: where finished distortions are saved for resuming (None: not saved).
        parts_key: what a saved part must match to be reused.
        on_done: called after each distortion.

    Yields:
        (distortion, [(result, seconds)] in the order of `videos`).
    """
    from tqdm import tqdm

    from data_prep.video import VideoError
    from deepfake.perturb import distort_video, video_seed

    for d in distortions:
        if d.is_identity:
            continue
        part = parts_dir / f"{d.dirname}.json" if parts_dir is not None else None
        if part is not None and part.is_file():
            try:
                saved = json.loads(part.read_text())
                if saved.get("key") == parts_key:
                    yield d, [(r, s) for r, s in saved["results"]]
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable part: compute it again
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work_dir, prefix=f"{d.dirname}-") as tmp:
            results: list[tuple[dict, float] | None] = [None] * len(videos)
            ready: list[tuple[int, Path]] = []
            for i, v in enumerate(tqdm(videos, unit="video", desc=f"distort {d.name}", disable=not progress,
                                       file=sys.stderr, dynamic_ncols=True, leave=False)):
                start = time.perf_counter()
                dst = Path(tmp) / f"{i:06d}.mp4"
                try:
                    ready.append((i, distort_video(v.path, dst, d, seed=video_seed(seed, v.video, d.name))))
                except (VideoError, ValueError, OSError) as err:
                    results[i] = (error_result(v.video, f"distortion {d.name} failed: {err}"),
                                  time.perf_counter() - start)
            scored = score_videos([LabelledVideo(videos[i].video, p, videos[i].label) for i, p in ready], detector,
                                  extractor, threshold, progress=progress, desc=f"score {d.name}")
            for (i, _), item in zip(ready, scored):
                results[i] = item
        done = [r for r in results if r is not None]
        if part is not None:
            atomic_write_text(part, _json_text({"key": parts_key, "distortion": d.name,
                                                "results": [[r, s] for r, s in done]}))
        if on_done is not None:
            on_done(d, done)
        yield d, done


# ------------------------------------------------------------------------------------------------- the CLI


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="deepfake evaluate",
        description="Video-level metrics of a detector on a labelled set (log loss, balanced log loss, AUC, "
                    "accuracy, AP, EER, confusion), a ROC curve and per-video predictions; optionally under "
                    "DeeperForensics-1.0 distortions (--perturb).",
        epilog="SOURCE: a labelled folder (DFDC part with metadata.json, DeeperForensics-1.0, real/ + fake/ and/or "
               "labels.csv) or an extracted index.csv (crops scored directly). Videos without a face are left out "
               "of the metrics and listed, unless --no-face-prior gives them a probability; unreadable videos are "
               "always left out and listed.",
    )
    p.add_argument("source", metavar="SOURCE", help="labelled folder of videos, or an extracted index.csv")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (metrics.json, roc.png, "
                                                               "predictions.csv, robustness.*)")
    add_model_options(p)
    p.add_argument("--layout", default="auto", help="layout of a video SOURCE: auto, dfdc, deeperforensics, folder")
    p.add_argument("--split", default=None, help="evaluate only this split (train, val, test)")
    p.add_argument("--no-face-prior", type=float, default=None, metavar="P",
                   help="score videos without a face as p(fake)=P and count them (default: leave them out)")
    p.add_argument("--perturb", default=None, metavar="SPEC",
                   help="also evaluate under distortions: all, TYPE (CS, CC, BW, GNC, GB, JPEG, VC), TYPE:LEVEL, "
                        "mix:N, comma-separated")
    p.add_argument("--seed", type=int, default=0, help="seed of the distortions (default %(default)s)")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"deepfake evaluate: error: {message}", file=sys.stderr)
    return code


def _index_settings(folder: Path, detector: Detector) -> dict | None:
    """The extraction settings of an index (`extract_config.json`), warning when they differ from training's."""
    try:
        settings = json.loads((folder / "extract_config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(settings, dict):
        return None
    trained = detector.meta.get("margin")
    if trained is not None and settings.get("margin") is not None and \
            abs(float(settings["margin"]) - float(trained)) > 1e-6:
        print(f"deepfake evaluate: warning: the index's crops were cut with margin {settings['margin']}, the model "
              f"was trained with {trained}: its scores may be off", file=sys.stderr)
    if settings.get("size") is not None and int(settings["size"]) != detector.img_size:
        print(f"deepfake evaluate: note: the index's {settings['size']}-px crops are resized to the model's "
              f"{detector.img_size} px", file=sys.stderr)
    return {k: settings.get(k) for k in ("stride", "margin", "size") if k in settings}


def _weights_id(path: Path) -> str:
    from deepfake.weights import sha256_of

    return sha256_of(path)


def main(args: list[str] | None = None) -> int:
    """`deepfake evaluate SOURCE --out DIR [options]`; returns the exit status (0 ok, 1 nothing scored, 2 usage)."""
    try:
        ns = _parser().parse_args(args)
        pconfig = PredictConfig(threshold=ns.threshold, batch_size=ns.batch_size, device=ns.device, stride=ns.stride,
                                workers=ns.workers, precision=ns.precision)
        config = EvaluateConfig(threshold=ns.threshold, no_face_prior=ns.no_face_prior, layout=ns.layout,
                                split=ns.split, perturb=ns.perturb, seed=ns.seed)
        distortions = []
        if config.perturb is not None:
            from deepfake.perturb import parse_perturb

            distortions = [d for d in parse_perturb(config.perturb) if not d.is_identity]
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, ValueError) as err:
        return _fail(str(err))
    progress = not ns.no_progress
    out = Path(ns.out)

    from deepfake.weights import WeightsError

    try:
        mode, items, notes = load_source(ns.source, config.layout, config.split)
        if mode == "index" and distortions:
            raise EvaluationError("--perturb needs videos to distort; SOURCE is an extracted index (crops). Give "
                                  "the labelled video folder instead")
        detector, extractor, weights = load_predictor(ns.weights, pconfig, ns.sha256, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
    except (EvaluationError, WeightsError, ValueError) as err:
        return _fail(str(err))
    except OSError as err:
        return _fail(f"can't create {out}: {err}")

    start = time.perf_counter()
    extra: list[dict] = []
    try:
        index_settings = None
        if mode == "index":
            index_settings = _index_settings(Path(notes[0]).parent, detector)
            videos, scored, extra = score_index(items, notes[0], detector, config.threshold, progress)
            notes = [f"index {notes[0]}"]
        else:
            videos = items
            scored = score_videos(videos, detector, extractor, config.threshold, progress)
    except EvaluationError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    results = [r for r, _ in scored]
    metrics = summarize(videos, results, config.threshold, config.no_face_prior, extra)
    settings = {
        "source": os.fspath(ns.source), "mode": mode, "notes": notes, "split": config.split,
        "weights": os.fspath(weights), "threshold": config.threshold, "no_face_prior": config.no_face_prior,
        "seq_len": detector.seq_len, "img_size": detector.img_size, "device": str(detector.device),
        "precision": detector.precision,
        **({"stride": extractor.config.stride, "margin": extractor.config.margin} if mode == "videos"
           else {"index_extraction": index_settings}),
        "score_rule": "track: mean over consecutive windows of seq_len crops of the last step's p(fake); "
                      "video: max over its face tracks",
        "seconds": round(time.perf_counter() - start, 3),
    }
    report = {**metrics, "settings": settings}
    try:
        atomic_write_text(out / "predictions.csv",
                          _csv_text(_prediction_rows(videos, scored, config.no_face_prior), PREDICTION_COLUMNS))
        atomic_write_text(out / "metrics.json", _json_text(report))
        from deepfake.plots import plot_roc

        counted = [(v.label, p) for v, r in zip(videos, results)
                   for _, p in [_counted(r, config.no_face_prior)] if p is not None]
        plot_roc([y for y, _ in counted], [p for _, p in counted], out / "roc.png",
                 title=f"{Path(ns.source).name}: {len(counted)} videos", threshold=config.threshold)
    except OSError as err:
        return _fail(f"can't write to {out}: {err}", 1)

    from deepfake.metrics import format_metrics

    print(f"clean: {format_metrics(metrics)} (n={metrics['n']}, no face {metrics['no_face']['count']}, "
          f"errors {metrics['errors']['count']})")
    if metrics["errors"]["count"]:
        print(f"deepfake evaluate: warning: {metrics['errors']['count']} video(s) could not be read; listed in "
              f"{out / 'metrics.json'}", file=sys.stderr)
    if metrics["n"] == 0:
        return _fail("no video could be scored (see metrics.json for the reasons)", 1)

    if distortions:
        rows = [_row("clean", "clean", 0, metrics)]
        per_video = [{"distortion": "clean", "video": v.video, "label": v.label,
                      "p_fake": "" if r["p_fake"] is None else f"{r['p_fake']:.6f}", "status": r["status"],
                      "error": r["error"] or ""} for v, r in zip(videos, results)]
        key = _parts_key(videos, _weights_id(weights), detector, extractor, config.seed)
        try:
            for d, done in evaluate_perturbed(videos, distortions, detector, extractor, out / ".distorted",
                                              config.seed, config.threshold, progress, out / "robustness_parts", key):
                m = summarize(videos, [r for r, _ in done], config.threshold, config.no_face_prior)
                rows.append(_row(d.name, d.kind, d.level, m))
                per_video += [{"distortion": d.name, "video": v.video, "label": v.label,
                               "p_fake": "" if r["p_fake"] is None else f"{r['p_fake']:.6f}", "status": r["status"],
                               "error": r["error"] or ""} for v, (r, _) in zip(videos, done)]
                print(f"{d.name}: {format_metrics(m)} (n={m['n']})")
        except KeyboardInterrupt:
            return _fail("interrupted; finished distortions are kept in robustness_parts/ and reused next time", 130)
        finally:
            shutil.rmtree(out / ".distorted", ignore_errors=True)
        try:
            atomic_write_text(out / "robustness.csv", _csv_text(
                [{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                ROBUSTNESS_COLUMNS))
            atomic_write_text(out / "robustness.json", _json_text({
                "spec": config.perturb, "seed": config.seed, "threshold": config.threshold,
                "no_face_prior": config.no_face_prior, "columns": ROBUSTNESS_COLUMNS, "rows": rows}))
            atomic_write_text(out / "robustness_predictions.csv",
                              _csv_text(per_video, ["distortion", "video", "label", "p_fake", "status", "error"]))
            from deepfake.plots import plot_robustness

            plot_robustness(rows, out / "robustness.png", title=f"{Path(ns.source).name}: AUC under distortions")
        except OSError as err:
            return _fail(f"can't write to {out}: {err}", 1)
    print(f"deepfake evaluate: wrote {out}/metrics.json, roc.png, predictions.csv"
          + (", robustness.csv/.json/.png" if distortions else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
