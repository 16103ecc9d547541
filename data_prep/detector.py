"""The face detector of extraction: MTCNN (`data_prep.mtcnn`) on the configured device, and the device choice.

`FaceDetector` serves the detection requests a video job makes (`data_prep.detection.DetectRequest`, the protocol): full
detections on batches of frames, and O-Net re-fits of boxes already found. torch is imported only when a detector
is made, so processes that never detect (extraction workers when the main process detects on a GPU) do not pay
for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from data_prep.faces import Detections, ExtractConfig

if TYPE_CHECKING:
    from data_prep.detection import DetectRequest

__all__ = ["FaceDetector", "cpu_count", "resolve_device", "gpu_driver_present"]

log = logging.getLogger(__name__)


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpu_driver_present() -> bool:
    """Whether this machine shows a GPU driver (NVIDIA's or ROCm's device nodes, WSL's GPU): when it doesn't,
    ``auto`` means the CPU without importing torch (about 2 s of a 2-core CPU) to ask."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd",
                                           "/dev/dxg")) or sys.platform not in ("linux", "darwin")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is a ValueError.

    ``cpu``, and ``auto`` on a machine without a GPU driver, are answered without importing torch."""
    if device == "cpu" or (device == "auto" and not gpu_driver_present()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return device


class FaceDetector:
    """MTCNN with facenet-pytorch's networks, batched (`data_prep.mtcnn.MTCNNCascade`), on the configured device.

    On the CPU frames go one at a time (batching made each frame slower there) on `detect_threads` torch threads;
    on a GPU in batches of `batch_size`.
    """

    def __init__(self, config: ExtractConfig) -> None:
        from data_prep.mtcnn import MTCNNCascade

        self.device = resolve_device(config.device)
        self.runtime = config.runtime if self.device == "cpu" else "torch"
        settings = (config.min_face_size, config.thresholds, config.factor, self.device)
        self.note = None
        try:
            self.mtcnn = MTCNNCascade(*settings, runtime=self.runtime, threads=config.detect_threads)
        except (ImportError, OSError, ValueError) as err:  # no ONNX Runtime, a read-only cache, a failed check
            if self.runtime == "torch":
                raise
            self.note = f"MTCNN runs on PyTorch: its ONNX nets can't be used ({type(err).__name__}: {err})"
            log.warning(self.note)
            self.runtime = "torch"
            self.mtcnn = MTCNNCascade(*settings)
        self.batch_size = config.batch_size or (128 if self.device.startswith("cuda") else 1)
        # torch's threads are set around each call; ONNX Runtime's sessions have their own.
        self.threads = 0 if self.device.startswith("cuda") or self.runtime == "onnx" else config.detect_threads

    @contextlib.contextmanager
    def _torch_threads(self) -> Iterator[None]:
        """Run on `threads` torch threads (when set), restoring the caller's setting afterwards."""
        if not self.threads:
            yield
            return
        import torch

        before = torch.get_num_threads()
        if self.threads and self.threads != before:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """Faces in a batch of equally sized frames.

        Args:
            frames: (B, H, W, 3) uint8 RGB.

        Returns:
            Per frame, `Detections`: boxes (N, 4) float32 in the frames' pixels, probabilities (N,) float32 and
            landmarks (N, 5, 2) float32.
        """
        out: list[Detections] = []
        with self._torch_threads():
            for start in range(0, len(frames), self.batch_size):
                out.extend(self.mtcnn.detect(frames[start:start + self.batch_size]))
        return out

    def refine(self, frames: np.ndarray, boxes: list[np.ndarray]) -> list[Detections]:
        """Given boxes re-fitted by O-Net: per frame, one entry per given box (`MTCNNCascade.refine`)."""
        with self._torch_threads():
            return self.mtcnn.refine(frames, boxes)

    def refine_inputs(self, squares: np.ndarray, crops: np.ndarray,
                      counts: list[int]) -> list[Detections]:
        """`refine` from O-Net's inputs made by `data_prep.resample.onet_inputs` (`MTCNNCascade.refine_inputs`)."""
        with self._torch_threads():
            return self.mtcnn.refine_inputs(squares, crops, counts)

    def run(self, request: DetectRequest) -> list[Detections]:
        """Serve a video job's request: a detection, or a refinement when it carries boxes."""
        if request.boxes is None:
            return self.detect(request.frames)
        if request.prepared:
            return self.refine_inputs(request.squares, request.crops, [len(b) for b in request.boxes])
        return self.refine(request.frames, request.boxes)
