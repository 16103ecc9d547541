"""Inference: a loaded detector, the face extractor that matches it, and predictions for videos.

    detector, extractor, weights = load_predictor("detector.pt", PredictConfig(device="auto"))
    result = predict_video("clip.mp4", detector, extractor)      # predict's JSON object for one video
    for pred in iter_inputs(["videos/", "more/*.mp4"], detector, extractor):
        pred.result, pred.seconds

Each video goes through the extraction code that made the training data (`data_prep.extractor.FaceExtractor`) with
the whole recipe the detector records (`deepfake.contract`: stride, margin, crop size, JPEG quality, detection and
track settings, the resize rule), then through the detector. Crops are held as JPEG bytes, as `deepfake-extract`
writes them, and decoded as the training loader reads them; a long video's crops then fit in memory.

Scores follow `deepfake.scoring` (windows of `seq_len` -> track -> video). A result is one object of
``{"video", "status", "p_fake", "verdict", "faces": [{"track", "p_fake", "frames", "steps"}], "error",
"extraction"}`` where `frames` are the frame indices of the track's crops, `steps` their per-step p(fake) and
`extraction` the settings used (`deepfake.contract.extraction_record`), `validation` what the detector's checkpoint
choice and calibration were fitted on; `deepfake.results` renders a list of them
as a table, JSON, JSON Lines or CSV.
"""

from __future__ import annotations

import logging
import dataclasses

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


from data_prep.video import MAX_PIXELS
from deepfake.detector import PRECISIONS, Detector  # where they are defined; public here too
from deepfake.inputs import collect_videos
from deepfake.scoring import TrackScore, error_result, video_result

__all__ = ["PredictConfig", "Detector", "Prediction", "collect_videos", "load_predictor", "predict_video",
           "predict_paths", "iter_predictions", "iter_inputs", "iter_entries", "score_faces", "score_faces_in_detail",
           "PRECISIONS"]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


# ------------------------------------------------------------------------------------------------- settings


@dataclass
class PredictConfig:
    """Settings of a prediction run.

    Attributes:
        threshold: p(fake) at or above which a video's verdict is ``fake``.
        batch_size: windows of `seq_len` face crops per forward pass of the detector; None: one on a CPU, eight on
            a GPU (`deepfake.detector.default_batch_size`).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        stride: keep every `stride`-th frame; None takes the checkpoint's (what the model was trained with).
        workers: decode processes for many files (0: decode on a thread of this process).
        precision: ``auto``: bfloat16 autocast where the hardware has it natively (CUDA GPUs from Ampere on, CPUs
            with AVX512-BF16 or AMX), float16 on older GPUs (P100, V100, T4: Kaggle's), float32 on other CPUs;
            or ``bf16``, ``fp16``, ``fp32`` (exact: the same scores on every machine).
        calibrated: apply the checkpoint's calibration (`deepfake.calibration`) when it has one; False gives the
            raw scores.
        max_pixels: frames with more pixels are refused before decoding (`data_prep.video.MAX_PIXELS`: 8K).
        runtime: ``auto`` (ONNX Runtime on a CPU where installed), ``torch`` or ``onnx`` (`deepfake.fastpath`).
    """

    threshold: float = 0.5
    batch_size: int | None = None
    device: str = "auto"
    stride: int | None = None
    workers: int = 0
    precision: str = "auto"
    calibrated: bool = True
    max_pixels: int = MAX_PIXELS
    runtime: str = "auto"

    def __post_init__(self) -> None:
        if not (isinstance(self.max_pixels, int) and self.max_pixels >= 1):
            raise ValueError(f"--max-pixels must be an integer >= 1, got {self.max_pixels}")
        if self.runtime not in ("auto", "torch", "onnx"):
            raise ValueError(f"--runtime must be auto, torch or onnx, got {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"--threshold must be a probability in [0, 1], got {self.threshold}")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"--batch-size must be an integer >= 1, got {self.batch_size}")
        if not (self.device in DEVICES or str(self.device).startswith("cuda:")):
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.stride is not None and not (isinstance(self.stride, int) and self.stride >= 1):
            raise ValueError(f"--stride must be an integer >= 1 (keep every N-th frame), got {self.stride}")
        if not (isinstance(self.workers, int) and self.workers >= 0):
            raise ValueError(f"--workers must be an integer >= 0, got {self.workers}")


# ----------------------------------------------------------------------------------------------- one video


def score_faces(video: str, faces, detector: Detector, threshold: float = 0.5) -> dict:
    """The result of one video from its extracted faces.

    Args:
        video: the name reported for the video.
        faces: its `data_prep.faces.VideoFaces`.
        detector: the loaded detector.
        threshold: verdict threshold.

    Returns:
        The per-video dict (module docstring; `json` format).
    """
    return score_faces_in_detail(video, faces, detector, threshold)[0]


def score_faces_in_detail(video: str, faces, detector: Detector,
                          threshold: float = 0.5) -> tuple[dict, list[TrackScore]]:
    """`score_faces`, with the `deepfake.scoring.TrackScore` of each face in the order of the result's `faces`
    (each window's raw logit among them: what `deepfake.recalibration` fits on); no face gives none."""
    tracks = [t for t in faces.tracks if len(t.frames)]
    scores = detector.score_tracks_in_detail([t.images() for t in tracks]) if tracks else []
    result = video_result(video, [(t.track, t.frames, s) for t, s in zip(tracks, scores)], threshold,
                          geometry={t.track: (t.boxes, t.landmarks) for t in tracks})
    return ({**result, "runtime": detector.runtime} if tracks else result), scores  # which runtime scored


def predict_video(path: str | os.PathLike, detector: Detector, extractor, threshold: float = 0.5) -> dict:
    """Score one video.

    Args:
        path: the video file.
        detector: a loaded `Detector`.
        extractor: a `data_prep.extractor.FaceExtractor` (use `load_predictor` for one that matches the detector).
        threshold: verdict threshold.

    Returns:
        The per-video dict; unreadable input gives status ``error`` rather than an exception.
    """
    from data_prep.video import VideoError
    from deepfake.contract import extraction_record

    try:
        faces = extractor.extract(os.path.abspath(path), jpeg=True)  # absolute: see iter_predictions
        result = score_faces(os.fspath(path), faces, detector, threshold)
    except VideoError as err:
        result = error_result(os.fspath(path), str(err))
    return {**result, "extraction": extraction_record(detector.meta, extractor.config),
            "validation": detector.meta.get("validation")}


@dataclass
class Prediction:
    """One video's result with what the CLI needs besides it.

    Attributes:
        result: the per-video dict.
        seconds: wall time spent on this video (extraction and scoring).
        faces: the extracted faces (crops for `--plot`), None on error.
        scores: the `deepfake.scoring.TrackScore` of each scored face, in the order of the result's `faces` (raw
            window logits among them); empty on error or without a face.
    """

    result: dict
    seconds: float
    faces: Any = field(default=None, repr=False)
    scores: list[TrackScore] = field(default_factory=list, repr=False)

    @property
    def warning(self) -> str | None:
        """What a user should know about a video that still scored (damaged frames skipped, a still picture, a
        face seen once), else None."""
        if self.faces is None:
            return None
        from data_prep.faces import damage_note, thin_evidence_note

        notes = [f"{damage_note(self.faces)}; scored on the rest"] if self.faces.damaged_frames else []
        notes += [note] if (note := thin_evidence_note(self.faces)) else []
        return f"{self.result['video']}: {'; '.join(notes)}" if notes else None


def iter_predictions(paths: Sequence[str | os.PathLike], detector: Detector, extractor, threshold: float = 0.5,
                     names: Sequence[str] | None = None,
                     progress: Callable[[str, int, int], None] | None = None) -> Iterator[Prediction]:
    """Score many videos, decoding overlapped with detection (`FaceExtractor.extract_many`), in input order.

    A file that fails gives an ``error`` result and the others go on.

    Args:
        paths: the video files.
        detector: a loaded `Detector`.
        extractor: a `FaceExtractor`.
        threshold: verdict threshold.
        names: what to report as each video's name (default: the path as given).
        progress: called as each video is read, with (its name, frames done, frames in the video).

    Yields:
        A `Prediction` per path; its result's `extraction` says what the crops were made with.
    """
    from deepfake.contract import extraction_record

    extraction = extraction_record(detector.meta, extractor.config)
    # what the detector's checkpoint choice and calibration were fitted on (`FaceSequenceDataModule.validation_meta`;
    # None for a detector that does not record it)
    validation = detector.meta.get("validation")
    for pred in _predictions(paths, detector, extractor, threshold, names, progress):
        pred.result["extraction"] = extraction
        pred.result["validation"] = validation
        yield pred


def _predictions(paths, detector, extractor, threshold, names, progress) -> Iterator[Prediction]:
    from data_prep.video import VideoError

    names = list(names) if names is not None else [os.fspath(p) for p in paths]
    # Absolute paths: FFmpeg reads a relative 'GB:3/clip.mp4' as a URL with protocol 'GB'.
    paths = [os.path.abspath(p) for p in paths]
    name_of = dict(zip(paths, names))
    report = (lambda path, n, total: progress(name_of.get(path, path), n, total)) if progress else None
    done = 0
    last = time.perf_counter()
    try:
        for (_, faces), name in zip(extractor.extract_many(paths, jpeg=True, progress=report), names):
            scores: list[TrackScore] = []
            if isinstance(faces, VideoError):
                result, faces = error_result(name, str(faces)), None
            else:
                try:
                    result, scores = score_faces_in_detail(name, faces, detector, threshold)
                except Exception as err:  # a bad video must not end the batch (e.g. out of memory on a huge one)
                    result, faces = error_result(name, f"scoring failed: {type(err).__name__}: {err}"), None
            now = time.perf_counter()
            yield Prediction(result, now - last, faces, scores)
            last = now
            done += 1
    except Exception as err:  # the extractor itself broke: report the rest one by one instead of stopping
        reason = f"{type(err).__name__}: {err}"
        log.warning("batch extraction failed (%s); going on file by file", reason)
        for path, name in zip(paths[done:], names[done:]):
            start = time.perf_counter()
            scores = []
            try:
                one = (lambda n, total, path=path: report(path, n, total)) if report else None
                faces = extractor.extract(path, jpeg=True, progress=one)
                result, scores = score_faces_in_detail(name, faces, detector, threshold)
            except Exception as err2:  # noqa: BLE001 - every failure becomes this file's one-line reason
                result, faces = error_result(name, str(err2) if isinstance(err2, VideoError)
                                             else f"{type(err2).__name__}: {err2}"), None
            yield Prediction(result, time.perf_counter() - start, faces, scores)


def predict_paths(paths: Iterable[str | os.PathLike], detector: Detector, extractor, threshold: float = 0.5,
                  progress: bool = False) -> list[dict]:
    """Score videos, folders (recursively) and glob patterns.

    Args:
        paths: files, folders or patterns (see `collect_videos`).
        detector: a loaded `Detector`.
        extractor: a `FaceExtractor`.
        threshold: verdict threshold.
        progress: a progress bar over files on stderr.

    Returns:
        One per-video dict per file found, in order; inputs that match nothing give an ``error`` entry.
    """
    from tqdm import tqdm

    inputs = [os.fspath(p) for p in paths]
    n = len(collect_videos(inputs))
    return [pred.result for pred in tqdm(iter_inputs(inputs, detector, extractor, threshold), total=n, unit="video",
                                         disable=not progress, file=sys.stderr)]


def load_predictor(weights: str | os.PathLike | None = None, config: PredictConfig | None = None,
                   sha256: str | None = None, progress: bool = False, needs_torch: str | None = None):
    """A `Detector` and a matching `FaceExtractor`: the extraction recipe the detector records (`deepfake.contract`).

    The weights' suffix chooses how the model runs: `.onnx` on ONNX Runtime, `.pt2` as a torch.export program (both
    written by `deepfake export`; neither imports timm), anything else as a PyTorch checkpoint, run by its ONNX copy
    where `config.runtime` allows (`deepfake.fastpath`; `detector.runtime`, `detector.runtime_note` say how).

    Args:
        weights: file, URL or None for the default place (`deepfake.weights.resolve_weights`).
        config: device, batch size, stride override, workers.
        sha256: expected hash of the weights.
        progress: download progress bar.
        needs_torch: what the caller will do that needs the PyTorch model (e.g. ``--explain``), or None.

    Returns:
        (detector, extractor, weights path).

    Raises:
        deepfake.weights.WeightsError: weights not found / not downloadable / not loadable.
        ValueError: bad settings (e.g. `--device cuda` without a GPU).

    Warns:
        deepfake.contract.ExtractionWarning: one line each: the defaults an old detector gets, a stride override.
    """
    import warnings

    from data_prep.detector import resolve_device
    from data_prep.extractor import FaceExtractor
    from deepfake.contract import ExtractionWarning, extract_config_for, recipe_of
    from deepfake.fastpath import detector_for, load_model
    from deepfake.weights import WeightsError, resolve_weights

    config = config or PredictConfig()
    path = resolve_weights(weights, sha256=sha256, progress=progress)
    try:
        loaded = load_model(path, config.runtime, config.device, config.precision, needs_torch)
        recipe_of(loaded.meta, os.fspath(path))  # a recipe the extractor can't honour: refused, one line naming it
    except (ImportError, ValueError) as err:  # Checkpoint/Export/RecipeError are ValueErrors naming the file
        raise WeightsError(f"can't load weights: {' '.join(str(err).split())}") from None
    except Exception as err:  # pickle/zip errors of a file that is not a checkpoint, missing keys, ...
        raise WeightsError(f"weights {path}: not a detector checkpoint ({type(err).__name__}: "
                           f"{' '.join(str(err).split())[:300]})") from None
    detector, meta = detector_for(loaded, config), loaded.meta
    # Extraction as in training (`deepfake.contract`). Faces are found on the device asked for (a GPU for MTCNN even
    # when an exported model runs on ONNX Runtime's CPU); on a CPU, MTCNN runs on ONNX Runtime where the detector
    # does: such a process never imports torch.
    extract_config, notes = extract_config_for(meta, os.fspath(path), config.stride, resolve_device(config.device))
    extract_config = dataclasses.replace(extract_config, max_pixels=config.max_pixels,  # a bound and a backend,
                                         runtime="onnx" if detector.runtime == "onnx" else "torch")  # not the recipe
    for note in notes:  # once per load, one line each; commands print them (`deepfake.cli.common`)
        warnings.warn(note, ExtractionWarning, stacklevel=2)
    return detector, FaceExtractor(extract_config, workers=config.workers), path


# ------------------------------------------------------------------------------------------------ inputs


def iter_inputs(inputs: Sequence[str], detector: Detector, extractor, threshold: float = 0.5,
                progress: Callable[[str, int, int], None] | None = None) -> Iterator[Prediction]:
    """`iter_predictions` over what `collect_videos` finds, with inputs that gave no video as ``error`` results,
    all in input order."""
    return iter_entries(collect_videos(inputs), detector, extractor, threshold, progress)


def iter_entries(entries: Sequence[tuple[str, str | None]], detector: Detector, extractor, threshold: float = 0.5,
                 progress: Callable[[str, int, int], None] | None = None) -> Iterator[Prediction]:
    """`iter_inputs` over entries `collect_videos` already made (e.g. filtered to the videos not done yet)."""
    from deepfake.contract import extraction_record

    videos = [p for p, reason in entries if reason is None]
    preds = iter_predictions(videos, detector, extractor, threshold, progress=progress)
    extraction = extraction_record(detector.meta, extractor.config)
    for item, reason in entries:
        yield (Prediction({**error_result(item, reason), "extraction": extraction}, 0.0) if reason is not None
               else next(preds))
