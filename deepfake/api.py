"""A plain function for other benchmarks' harnesses: a video's path in, p(fake) out.

    from deepfake.api import predict_path
    p = predict_path("clip.mp4")                        # default weights ($DEEPFAKE_WEIGHTS or the cache)

    from deepfake.api import load_scorer
    score = load_scorer("detector.pt", device="cuda")   # a callable path -> float, the model loaded once
    harness.eval(score)                                 # e.g. deepsafe-bench's eval takes any such function

The score is `deepfake predict`'s p(fake) of the video (`deepfake.scoring`: max over its face tracks), calibrated
when the weights carry a calibration. A video where no face is found has no score of its own: it gets `no_face`
(0.5 by default: "can't tell") and a logged warning, or, with ``no_face=None``, raises `NoFaceError`. A file that
can't be read raises `ValueError` with a one-line reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from deepfake.inference import PredictConfig, load_predictor, predict_video

__all__ = ["NoFaceError", "load_scorer", "predict_path"]

log = logging.getLogger(__name__)
_SCORERS: dict[tuple, Callable[[str | os.PathLike], float]] = {}


class NoFaceError(ValueError):
    """No face was found in the video (raised when the scorer was made with ``no_face=None``)."""


def load_scorer(weights: str | os.PathLike | None = None, device: str = "auto", no_face: float | None = 0.5,
                **settings) -> Callable[[str | os.PathLike], float]:
    """A function scoring one video path as p(fake), with the detector loaded once.

    Args:
        weights: detector weights (`deepfake.weights.resolve_weights`: a file, a URL, or None for the default).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        no_face: the score of a video without a face (None: raise `NoFaceError`).
        **settings: other `PredictConfig` fields (batch_size, precision, stride, calibrated).

    Raises:
        deepfake.weights.WeightsError: the weights can't be found or loaded.
    """
    config = PredictConfig(device=device, **settings)
    detector, extractor, _ = load_predictor(weights, config)

    def score(path: str | os.PathLike) -> float:
        result = predict_video(path, detector, extractor, config.threshold)
        if result["status"] == "error":
            raise ValueError(f"{os.fspath(path)}: {result['error']}")
        if result["status"] == "no_face":
            if no_face is None:
                raise NoFaceError(f"{os.fspath(path)}: no face found")
            log.warning("%s: no face found; scored %g", os.fspath(path), no_face)
            return float(no_face)
        return float(result["p_fake"])

    return score


def predict_path(path: str | os.PathLike, weights: str | os.PathLike | None = None, device: str = "auto",
                 no_face: float | None = 0.5) -> float:
    """p(fake) of one video (module docstring); the detector is loaded on the first call and kept for the next."""
    key = (None if weights is None else os.fspath(weights), device, no_face)
    if key not in _SCORERS:
        _SCORERS[key] = load_scorer(weights, device, no_face)
    return _SCORERS[key](path)
