"""Robustness: a detector's metrics on a labelled set under DeeperForensics-1.0 distortions (`--perturb`).

Every video is written distorted (each video its own seed from `--seed`, the same as `deepfake distort SOURCE
--seed K` gives it) into a temporary folder and evaluated the way clean videos are (`deepfake.evaluation`), one
distortion at a time. Finished distortions are kept in `DIR/robustness_parts/`, so a killed run resumes where it
stopped (with the same weights, settings and videos). Writes `robustness.csv` / `.json` (one row per distortion,
`clean` first at level 0, columns `ROBUSTNESS_COLUMNS`), `robustness.png` (AUC against level, one line per type)
and `robustness_predictions.csv` (every video's p(fake) under every distortion).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from data_prep.files import atomic_write, csv_text
from deepfake.labelled import EvaluateConfig, EvaluationError, LabelledVideo, score_videos
from deepfake.summary import json_text, summarize
from deepfake.inference import Detector
from deepfake.metrics import format_metrics
from deepfake.scoring import error_result

__all__ = ["ROBUSTNESS_COLUMNS", "evaluate_perturbed", "evaluate_robustness"]

ROBUSTNESS_COLUMNS = ["distortion", "kind", "level", "auc", "logloss", "accuracy", "n", "balanced_logloss", "ap",
                      "eer", "no_face", "errors"]
PARTS_VERSION = 1


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
                results[i] = (item.result, item.seconds)
        done = [r for r in results if r is not None]
        if part is not None:
            atomic_write(part, json_text({"key": parts_key, "distortion": d.name,
                                                "results": [[r, s] for r, s in done]}))
        if on_done is not None:
            on_done(d, done)
        yield d, done


def _weights_id(path: Path) -> str:
    from deepfake.weights import sha256_of

    return sha256_of(path)


def _p_text(r: dict) -> str:
    return "" if r["p_fake"] is None else f"{r['p_fake']:.6f}"


def evaluate_robustness(videos: Sequence[LabelledVideo], results: Sequence[dict], metrics: dict, distortions,
                        detector: Detector, extractor, weights: Path, config: EvaluateConfig, out: Path,
                        progress: bool = False, say: Callable[[str], None] = print, name: str = "") -> list[dict]:
    """Evaluate under each distortion after the clean run, write the robustness files into `out`.

    Args:
        videos: the labelled videos.
        results: their clean results, in order.
        metrics: the clean metrics (`summarize`).
        distortions: `deepfake.perturb.Distortion`s.
        detector: the loaded detector.
        extractor: the face extractor.
        weights: the weights file (its hash keys the saved parts).
        config: the evaluation's settings (threshold, prior, seed, spec).
        out: the output folder.
        progress: progress bars.
        say: where one line per distortion goes.
        name: the set's name, for the plot's title.

    Returns:
        The rows of robustness.csv.

    Raises:
        EvaluationError: interrupted (code 130) or an output not writable (code 1).
    """
    rows = [_row("clean", "clean", 0, metrics)]
    per_video = [{"distortion": "clean", "video": v.video, "label": v.label, "p_fake": _p_text(r),
                  "status": r["status"], "error": r["error"] or ""} for v, r in zip(videos, results)]
    key = _parts_key(videos, _weights_id(weights), detector, extractor, config.seed)
    try:
        for d, done in evaluate_perturbed(videos, distortions, detector, extractor, out / ".distorted",
                                          config.seed, config.threshold, progress, out / "robustness_parts", key):
            m = summarize(videos, [r for r, _ in done], config.threshold, config.no_face_prior)
            rows.append(_row(d.name, d.kind, d.level, m))
            per_video += [{"distortion": d.name, "video": v.video, "label": v.label, "p_fake": _p_text(r),
                           "status": r["status"], "error": r["error"] or ""} for v, (r, _) in zip(videos, done)]
            say(f"{d.name}: {format_metrics(m)} (n={m['n']})")
    except KeyboardInterrupt:
        raise EvaluationError("interrupted; finished distortions are kept in robustness_parts/ and reused next time",
                              130) from None
    finally:
        shutil.rmtree(out / ".distorted", ignore_errors=True)
    try:
        atomic_write(out / "robustness.csv", csv_text(
            [{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
            ROBUSTNESS_COLUMNS))
        atomic_write(out / "robustness.json", json_text({
            "spec": config.perturb, "seed": config.seed, "threshold": config.threshold,
            "no_face_prior": config.no_face_prior, "columns": ROBUSTNESS_COLUMNS, "rows": rows}))
        atomic_write(out / "robustness_predictions.csv",
                     csv_text(per_video, ["distortion", "video", "label", "p_fake", "status", "error"]))
        from deepfake.plots import plot_robustness

        plot_robustness(rows, out / "robustness.png", title=f"{name}: AUC under distortions")
    except OSError as err:
        raise EvaluationError(f"can't write to {out}: {err}", 1) from None
    return rows
