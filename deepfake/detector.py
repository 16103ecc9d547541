"""A loaded deepfake detector (`Detector`): face crops in, per-step and per-track p(fake) out, by
`deepfake.scoring`'s rule, on PyTorch (a `DeepfakeDetector` or an exported net); `deepfake.fastpath.NumpyDetector`
is the same over ONNX Runtime without torch. `deepfake.inference` drives it over videos.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from deepfake.calibration import apply_calibration, calibration_of
from deepfake.scoring import TrackScore, track_score, track_windows

__all__ = ["Detector", "PRECISIONS"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN says so: AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and torch.backends.mkldnn.is_available()
    except (AttributeError, RuntimeError):
        return False


CPU_BATCH, GPU_BATCH = 1, 8


def default_batch_size(device_type: str) -> int:
    """Windows per forward pass when none is asked for: one on a CPU, eight on a GPU.

    On a CPU a larger batch is no faster once warm, and its first pass pays for the activations of every crop in it
    (a 10-s clip's six windows of ten B1 crops at 240 px in one pass: 1.3 GB resident, 0.4 s of page faults): one window
    scored a 10-s 1080p clip 0.4 s sooner in a whole `deepfake predict` run and in 0.55 GB (bench/README.md, issue 29).
    A GPU wants batches.
    """
    return GPU_BATCH if device_type == "cuda" else CPU_BATCH


class Detector:
    """A loaded deepfake detector, ready to score face crops.

    Args:
        model: a `deepfake.model.DeepfakeDetector` (or any module mapping (B, T, 3, H, W) to (B, T) logits), or an
            exported net (`deepfake.runtime.OnnxNet`, `ProgramNet`: a callable with the same input and output that
            runs where it was loaded, in float32). Only how a batch of windows becomes logits differs between them.
        meta: the checkpoint's meta: `img_size`, `mean`, `std`, `seq_len` (and `margin`, `stride` for extraction).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (an exported net keeps its own).
        batch_size: windows per forward pass; None: `default_batch_size` for the device.
        precision: ``auto``, ``bf16``, ``fp16`` or ``fp32`` (see `PredictConfig`). The LSTM head always runs in
            float32.
        calibrated: apply the calibration recorded in `meta` (if any) to every step's logit.

    Example:
        >>> detector = Detector.load("detector.pt", device="auto")
        >>> p_fake, steps = detector.score_tracks([crops])[0]   # crops: (N, S, S, 3) uint8 RGB
    """

    def __init__(self, model, meta: dict, device: str = "auto", batch_size: int | None = None, precision: str = "auto",
                 calibrated: bool = True) -> None:
        import torch

        from data_prep.detector import resolve_device

        # An exported net (ONNX Runtime, torch.export) is a float32 graph on the device it was loaded for.
        self.exported = not isinstance(model, torch.nn.Module)
        self.device = torch.device(model.device if self.exported else resolve_device(device))
        self.read_meta(meta, batch_size, calibrated, self.device.type)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if self.exported:
            if precision not in ("auto", "fp32"):
                raise ValueError(f"--precision {precision}: an exported model runs in float32 (the precision it "
                                 f"was exported in); use the PyTorch weights for {precision}")
            precision = "fp32"
        self.model = model if self.exported else model.eval().to(self.device)
        if precision == "auto":
            # bf16 only where the hardware computes it natively (1.5-3x faster on such CPUs; emulated, hence slower,
            # elsewhere); GPUs before Ampere get fp16, which their tensor cores (or P100's fp16 units) run.
            if self.device.type == "cuda":
                precision = "bf16" if torch.cuda.get_device_capability(self.device)[0] >= 8 else "fp16"
            else:
                precision = "bf16" if _cpu_has_bf16() else "fp32"
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        self.precision = precision
        if hasattr(self.model, "set_channels_last"):
            self.model.set_channels_last(True)  # faster convolutions on tensor cores and oneDNN
        self._mean = torch.tensor(meta["mean"], dtype=torch.float32, device=self.device).view(1, 1, 3, 1, 1) * 255
        self._std = torch.tensor(meta["std"], dtype=torch.float32, device=self.device).view(1, 1, 3, 1, 1) * 255

    def read_meta(self, meta: dict, batch_size: int | None, calibrated: bool, device_type: str) -> None:
        """The settings every detector takes from its meta (`deepfake.fastpath.NumpyDetector` shares them), and the
        batch size (None: `default_batch_size` for `device_type`)."""
        for key in ("img_size", "mean", "std"):
            if meta.get(key) is None:
                raise ValueError(f"checkpoint meta lacks {key!r}; re-export the weights with deepfake.checkpoint")
        self.meta = dict(meta)
        self.calibration = calibration_of(meta) if calibrated else None
        self.img_size = int(meta["img_size"])
        # Without a recorded training length, a whole track is one window (the LSTM reads it all).
        self.seq_len = max(1, int(meta["seq_len"])) if meta.get("seq_len") else 1 << 30
        self.batch_size = max(1, int(batch_size)) if batch_size is not None else default_batch_size(device_type)
        self.runtime, self.runtime_note = "torch", None  # set by load_predictor (`deepfake.fastpath`)

    @classmethod
    def load(cls, weights: str | os.PathLike, device: str = "auto", batch_size: int | None = None,
             precision: str = "auto", calibrated: bool = True) -> Detector:
        """Load a checkpoint (`deepfake.checkpoint.load_detector`: plain weights, safe loading) or an exported
        detector (.onnx, .pt2: `deepfake.runtime.load_exported`)."""
        from deepfake.runtime import load_by_suffix

        return cls(*load_by_suffix(weights, device), device=device, batch_size=batch_size, precision=precision,
                   calibrated=calibrated)

    def prepare(self, crops: np.ndarray):
        """(B, T, S, S, 3) uint8 RGB crops -> the model's input, (B, T, 3, img_size, img_size) float on the device."""
        import torch

        batch = np.stack([self._resize(np.asarray(c, dtype=np.uint8)) for c in crops])
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        # Normalise on the device: uint8 is a quarter of the bytes of float32 to move there.
        return (x.permute(0, 1, 4, 2, 3).float() - self._mean) / self._std  # (B, T, 3, S, S)

    def probabilities(self, logits):
        """(B, T) logits of the model -> (B, T) p(fake) as reported: calibrated when the detector is."""
        import torch

        return torch.sigmoid(apply_calibration(logits.float(), self.calibration))

    def _resize(self, crops: np.ndarray) -> np.ndarray:
        """Crops of another size (extracted at the training crops' size) to the model's input size, by the rule
        training's loader uses (`data_prep.track.resize_crop`)."""
        if crops.shape[1:3] == (self.img_size, self.img_size):
            return crops
        from data_prep.track import resize_crop

        return np.stack([resize_crop(c, self.img_size) for c in crops])

    def _forward(self, batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """B windows of (T, S, S, 3) uint8 crops -> (B, T) raw logits (float32) and (B, T) per-step p(fake)."""
        import torch

        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=self.precision != "fp32"):
            logits = self.model(self.prepare(batch))
        logits = logits.float()
        return logits.cpu().numpy(), self.probabilities(logits).cpu().numpy()

    def score_tracks(self, tracks: Sequence[np.ndarray]) -> list[tuple[float, np.ndarray]]:
        """Score face tracks: (p_fake, per-step p_fake) per track (`score_tracks_in_detail` has more)."""
        return [(t.p_fake, t.steps) for t in self.score_tracks_in_detail(tracks)]

    def score_tracks_in_detail(self, tracks: Sequence[np.ndarray]) -> list[TrackScore]:
        """Score face tracks.

        Args:
            tracks: per track, its crops in frame order, (N, S, S, 3) uint8 RGB (resized when S != img_size), or
                anything with a length whose slices give such arrays (`data_prep.faces.JpegCrops`: crops are
                then decoded window by window, so a long video never sits in memory uncompressed).

        Returns:
            Per track, its `TrackScore` by `deepfake.scoring`'s rule, with each window's raw last-step logit (before
            the calibration, whether or not the detector applies one). A track without crops gives p_fake nan.
        """
        windows = [(i, s, e) for i, t in enumerate(tracks) for s, e in track_windows(len(t), self.seq_len)]
        # Windows of equal length batch together without padding (only tracks shorter than seq_len differ).
        by_len: dict[int, list[int]] = {}
        for w, (_, s, e) in enumerate(windows):
            by_len.setdefault(e - s, []).append(w)
        logits: list[np.ndarray | None] = [None] * len(windows)
        probs: list[np.ndarray | None] = [None] * len(windows)
        for group in by_len.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                batch = [tracks[windows[w][0]][windows[w][1]:windows[w][2]] for w in chunk]
                for w, z, p in zip(chunk, *self._forward(batch)):
                    logits[w], probs[w] = z, p
        out = []
        for i, t in enumerate(tracks):
            mine = [w for w, (ti, _, _) in enumerate(windows) if ti == i]
            out.append(track_score(len(t), [windows[w][1:] for w in mine], [probs[w] for w in mine],
                                   [logits[w] for w in mine]))
        return out
