"""Refit a detector's calibration on a labelled set the user trusts, their own domain (`deepfake calibrate`).

    result = recalibrate("detector.pt", "my_labelled_videos/", out="detector.mine.pt")
    result = recalibrate("detector.pt", "extracted/index.csv", split="val")
    result.record["temperature"], result.out

SOURCE is what `deepfake evaluate` takes (`deepfake.evaluation.load_source`): a labelled folder of videos (faces
extracted with the checkpoint's settings, as `deepfake predict` does) or an extracted index.csv (its crops scored
directly). It is scored by evaluation's scorer of labelled sets (`deepfake.labelled.iter_video_scores`,
`iter_index_scores`) with the **raw** detector, whatever calibration the weights hold; each window's last-step logit
is in its track's `deepfake.scoring.TrackScore` (`window_logits`), and `deepfake.calibration.fit_calibration` fits a
temperature (and maybe a bias) to the video scores the scoring rule makes of them. Videos without a face or that
can't be read or scored are left out (and counted).

The new detector file holds the same weights and meta with the new ``calibration`` record (which says it was fitted
by ``calibrate SOURCE`` and on how many videos, and what the calibration it replaces scored on this set); it is
written atomically, by default beside the weights as ``<name>.calibrated.pt``. A set too small to fit on (see
`deepfake.calibration.MIN_VIDEOS`) writes nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deepfake.calibration import VideoLogits, calibration_of, fit_calibration, video_probabilities
from deepfake.inference import PredictConfig, load_predictor

__all__ = ["Recalibration", "recalibrate", "default_output"]

log = logging.getLogger(__name__)


@dataclass
class Recalibration:
    """What `recalibrate` did.

    Attributes:
        record: the new calibration record (`deepfake.calibration.fit_calibration`; `temperature` None: skipped).
        out: the detector file written, or None when the fit was skipped.
        weights: the weights it started from.
        n_videos: labelled videos in SOURCE.
        no_face: videos without a face (left out).
        errors: videos that could not be read or scored, with their reasons (left out).
    """

    record: dict[str, Any]
    out: Path | None
    weights: Path
    n_videos: int
    no_face: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def default_output(weights: str | os.PathLike) -> Path:
    """`<folder>/<name>.calibrated.pt` beside the weights."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}.calibrated.pt")


def recalibrate(weights: str | os.PathLike | None, source: str | os.PathLike, out: str | os.PathLike | None = None,
                layout: str = "auto", split: str | None = None, config: PredictConfig | None = None,
                sha256: str | None = None, progress: bool = False,
                warn: Callable[[str], None] = log.warning
                ) -> Recalibration:
    """Fit a new calibration for `weights` on the labelled SOURCE and write the new detector file (module docstring).

    Args:
        weights: detector weights (file, URL, or None for the default place; `deepfake.weights.resolve_weights`).
        source: a labelled folder of videos or an extracted index.csv (or a folder holding one).
        out: the new detector file (default: `default_output(weights)`).
        layout: layout of a video SOURCE.
        split: keep only this split of SOURCE.
        config: device, batch size, precision, stride, workers (its `calibrated` is ignored: the fit needs raw
            scores).
        sha256: expected hash of the weights.
        progress: a progress bar.
        warn: where notes go.

    Returns:
        A `Recalibration`; its `out` is None when the set was too small to fit on (nothing written).

    Raises:
        deepfake.evaluation.EvaluationError: a bad SOURCE.
        deepfake.weights.WeightsError: weights missing or unloadable.
        OSError: the new file can't be written.
    """
    from deepfake.checkpoint import save_detector
    from deepfake.labelled import iter_index_scores, iter_video_scores, load_source

    config = config or PredictConfig()
    mode, items, notes = load_source(source, layout, split)
    raw = replace(config, calibrated=False)
    detector, extractor, path = load_predictor(weights, raw, sha256, progress=progress,
                                              needs_torch="a calibration refit")
    if detector.exported:
        from deepfake.weights import WeightsError

        raise WeightsError(f"{path} is an exported model: calibrate writes a new detector.pt, so give the PyTorch "
                           f"weights (then export the result again)")
    result = Recalibration(record={}, out=None, weights=Path(path), n_videos=0)
    if mode == "index":
        result.n_videos = int(items["video"].nunique())
        scored = iter_index_scores(items, notes[0], detector, progress=progress, desc="calibrate")
    else:
        result.n_videos = len(items)
        scored = iter_video_scores(items, detector, extractor, progress=progress, desc="calibrate",
                                   prog="deepfake calibrate")
    logits = []  # per video scored: (label, per face its windows' raw last-step logits)
    with extractor:
        for one in scored:
            status = one.result["status"]
            if status == "ok":
                logits.append((one.video.label, [t.window_logits for t in one.tracks]))
            elif status == "no_face":
                result.no_face.append(one.video.video)
            else:
                result.errors.append((one.video.video, one.result["error"]))
    if result.no_face or result.errors:
        warn(f"{len(result.no_face)} video(s) without a face and {len(result.errors)} unreadable left out of the fit")
    data = VideoLogits.from_videos(logits)
    fitted_on = f"calibrate {os.fspath(source)}" + (f" (split {split})" if split else "")
    record = fit_calibration(data, fitted_on)
    previous_meta = detector.meta.get("calibration")
    previous = calibration_of(detector.meta)
    if isinstance(previous_meta, dict):
        replaced: dict[str, Any] = {k: previous_meta.get(k) for k in ("temperature", "bias", "fitted_on", "n_videos")}
        if previous is not None and data.n_videos:
            from deepfake.metrics import binary_metrics

            m = binary_metrics(data.labels, video_probabilities(data, *previous))
            replaced["on_this_set"] = {k: m[k] for k in ("logloss", "ece", "brier", "auc")}
        record["replaces"] = replaced
    result.record = record
    if record.get("temperature") is None:
        return result
    target = Path(out) if out is not None else default_output(path)
    result.out = save_detector(target, detector.model, {**detector.meta, "calibration": record})
    return result
