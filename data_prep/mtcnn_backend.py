"""What a backend of the MTCNN cascade is (`Nets`), and the CPU helpers the backends share.

The cascade's rule (pyramid scales, thresholds, NMS, box regression, landmarks) is `data_prep.mtcnn`'s, in NumPy;
a backend runs only the three networks: `data_prep.mtcnn_nets` (PyTorch, CPU or GPU) and `data_prep.mtcnn_onnx`
(ONNX Runtime, CPU, no torch imported).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from data_prep.resample import resample

__all__ = ["Nets", "normalise", "opencv_pyramid", "cpu_stage_inputs", "weights_folder"]

_F = np.float32


class Nets(Protocol):
    """What the cascade asks of a backend: the three networks on NumPy inputs, NumPy float32 outputs.

    `frames` is whatever `load` made of a batch (the backend may keep it on its device); the pyramid and the
    candidates' resampling are the backend's (a GPU does them in batches), the rest of the cascade is not.
    """

    device: str
    opencv_resampling: bool

    def load(self, frames: np.ndarray): ...

    def pnet(self, frames, sizes: list[tuple[int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per pyramid level (h, w): box offsets (B, 4, h', w') and face probabilities (B, h', w')."""

    def stage(self, name: str, frames, boxes: np.ndarray, owner: np.ndarray, side: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """R-Net (``rnet``) or O-Net (``onet``) on each box cut from its frame at side x side: offsets (N, 4),
        face probabilities (N,) and, from O-Net, landmarks (N, 10), else None."""

    def onet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on (N, 48, 48, 3) uint8 inputs: offsets (N, 4), probabilities (N,), landmarks (N, 10)."""


def normalise(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> MTCNN's input, (N, 3, H, W) float32 (x - 127.5) / 128."""
    return (pixels.transpose(0, 3, 1, 2).astype(_F) - _F(127.5)) * _F(0.0078125)


def opencv_pyramid(frames: np.ndarray, sizes: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """The pyramid's levels on the CPU, uint8 (B, h, w, 3): each resized by area averaging from the one before (a
    third of the work of resizing every level from the frame, with boxes as close to the ground truth,
    `tests/test_mtcnn.py`)."""
    source = frames
    for size in sizes:
        source = np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in source])
        yield source


def cpu_stage_inputs(frames: np.ndarray, boxes: np.ndarray, owner: np.ndarray, side: int) -> np.ndarray:
    """Every box cut from its frame, resized to side x side by OpenCV (zeros outside), normalised: (N, 3, s, s)."""
    return normalise(resample(frames, boxes, owner, side))


def weights_folder() -> Path:
    """The folder of facenet-pytorch's trained MTCNN weights (pnet.pt, rnet.pt, onet.pt), found without importing
    the package (its `__init__` imports torchvision).

    Raises:
        ModuleNotFoundError: facenet-pytorch is not installed (one line).
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("facenet-pytorch is not installed: face detection needs its MTCNN weights "
                                  "(pip install facenet-pytorch)")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if (folder / "pnet.pt").is_file():
            return folder
    raise ModuleNotFoundError(f"facenet-pytorch at {list(spec.submodule_search_locations)} has no data/pnet.pt: "
                              f"reinstall it (pip install --force-reinstall facenet-pytorch)")
