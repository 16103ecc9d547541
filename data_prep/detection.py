"""The face detector's protocol: what extraction asks of a detector, and the registry of detectors.

A video job (`data_prep.pipeline.video_job`) yields `DetectRequest`s and receives, per frame of a request, a
`data_prep.faces.Detections`: boxes in the request's frame pixels, their probabilities and five landmarks. Whatever
answers those requests is a face detector; extraction never looks inside it. The one detector today is MTCNN
(`data_prep.detector.FaceDetector`, facenet-pytorch's networks in a batched cascade).

Adding a detector (RetinaFace, SCRFD, ...): write one module with a class that takes an `ExtractConfig` and has
`run(request) -> list[Detections]` plus the attributes of `FaceDetectorProtocol`, and register it in `DETECTORS`
under a name; `make_detector(config, name)` builds it where extraction builds MTCNN today (in this process and in
the worker processes). A detector that cannot re-fit boxes answers a re-fit request (`request.boxes` set) by
detecting in the request's frames and matching to the given boxes, or extraction can run with
`ExtractConfig(detect_every=1)` so that no re-fit is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from data_prep.faces import Detections, ExtractConfig

__all__ = ["DetectRequest", "FaceDetectorProtocol", "DETECTORS", "make_detector"]


@dataclass
class DetectRequest:
    """Frames to detect faces in, or boxes to re-fit; or a re-fit prepared for O-Net (`prepared`).

    A prepared request carries no frames, only O-Net's inputs: the squared boxes of all its frames and their 48x48
    resamplings (`data_prep.resample.onet_inputs`), about 7 KB a face instead of a 640x360 frame (691 KB) to send
    from a worker to the process that detects.
    """

    frames: np.ndarray | None  # (B, h, w, 3) uint8 detection copies of sampled frames (None when prepared)
    boxes: list[np.ndarray] | None = None  # per frame, boxes to refine (None: detect)
    squares: np.ndarray | None = None  # prepared: (N, 4) float32, the boxes squared
    crops: np.ndarray | None = None  # prepared: (N, 48, 48, 3) uint8 O-Net inputs

    @property
    def prepared(self) -> bool:
        return self.squares is not None

    def __len__(self) -> int:
        """Frames the request is about: one result each."""
        return len(self.boxes) if self.boxes is not None else len(self.frames)

    def for_sending(self) -> DetectRequest:
        """The request to send to another process: a re-fit becomes a prepared one (O-Net's inputs, not frames)."""
        if self.boxes is None or self.prepared:
            return self
        from data_prep.resample import onet_inputs

        squares, crops = onet_inputs(self.frames, self.boxes)
        return DetectRequest(None, self.boxes, squares, crops)


class FaceDetectorProtocol(Protocol):
    """What extraction needs of a face detector."""

    device: str  # where it runs: "cpu", "cuda", "cuda:N"
    runtime: str  # what runs its networks: "torch" or "onnx"
    note: str | None  # a one-line note for the user (e.g. a fallback it took), or None

    def run(self, request: DetectRequest) -> list[Detections]:
        """Per frame of the request, its detections (or, for a re-fit, one entry per given box)."""


# name -> "module:Class"; imported only when that detector is made
DETECTORS: dict[str, str] = {"mtcnn": "data_prep.detector:FaceDetector"}


def make_detector(config: ExtractConfig, name: str = "mtcnn") -> FaceDetectorProtocol:
    """The detector registered under `name`, built for `config`."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; known: {', '.join(sorted(DETECTORS))}")
    module, _, cls = DETECTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(config)
