"""What face extraction takes and gives: its settings (`ExtractConfig`) and its results (`VideoFaces`, `FaceTrack`).

These types are shared by every part of extraction (`data_prep.pipeline` makes them, `data_prep.extractor` and
`data_prep.dataset` hand them on) and by the code that consumes crops in memory (prediction), so they live
apart, with nothing but NumPy and OpenCV behind them. Crops can be held as JPEG bytes (`JpegCrops`) so that a
long video's crops fit in memory; `encode_jpeg` / `decode_jpeg` are the one place they are encoded and decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from data_prep.video import MAX_PIXELS

__all__ = ["Detections", "ExtractConfig", "FaceTrack", "JpegCrops", "LANDMARKS", "VideoFaces", "damage_note",
           "decode_jpeg", "encode_jpeg", "OUTPUT_SETTINGS", "output_settings"]

# MTCNN's five landmarks, in its order; "1" is the one further left in the image (the person's right eye or
# mouth corner when they face the camera).
LANDMARKS = ("eye1", "eye2", "nose", "mouth1", "mouth2")


class Detections(NamedTuple):
    """The faces the detector found in one frame (or re-fitted there), most probable first.

    Attributes:
        boxes: (N, 4) float32 x1, y1, x2, y2 in the frame's pixels.
        scores: (N,) float32 face probabilities.
        landmarks: (N, 5, 2) float32 x, y of the five `LANDMARKS` in the frame's pixels.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


@dataclass
class ExtractConfig:
    """Extraction settings (see `data_prep.pipeline` for what each threshold does).

    Attributes:
        stride: keep every `stride`-th frame.
        margin: share of the face box's larger side added on each side of the square crop.
        size: crop side in pixels.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``, for the detector.
        detect_size: longer side of the frame copy the detector sees (frames are never upscaled).
        min_face_size: smallest face MTCNN looks for, in pixels of the detection copy.
        factor: MTCNN image-pyramid scale step (0.709 is MTCNN's default; 0.6 is faster, as good on faces
            this size).
        thresholds: MTCNN's three stage thresholds.
        min_score: boxes whose detector probability is below this are ignored.
        detect_every: run the full detector on every k-th sampled frame and interpolate in between (1: every one).
            6 by default: with `refine_between` the boxes are as close to the faces as with 2 for half the
            detector time (`bench/extract.py` measures both).
        refine_between: re-fit each interpolated box with O-Net, MTCNN's last stage, and detect in full the frames
            where O-Net no longer sees the face (False: keep the interpolated boxes as they are).
        interp_iou: boxes of two detected frames pair up for interpolation when their IoU is at least this.
        link_iou: a box joins a track when its IoU with the track's predicted box is at least this.
        max_gap: sampled frames a track may miss before it ends.
        min_track_len: tracks with fewer sampled frames are dropped (capped at the frames sampled).
        min_track_score: tracks whose mean detector probability is below this are dropped.
        batch_size: frames per detector call (0: 1 on CPU, where batching does not help, 128 on GPU).
        detect_threads: torch CPU threads while MTCNN runs on the CPU (0: leave torch's setting). 1 by default:
            a second thread costs twice the CPU for no gain in time per clip, since the decoder thread needs the
            other core; the setting is restored after each detector call.
        chunk_mb: memory for one chunk of decoded full-size frames (up to 16 frames; three chunks are held at
            once per video: one being detected, two decoded ahead).
        decode_threads: FFmpeg decoding threads per video (0: FFmpeg decides; worker processes default to their
            share of the cores).
        quality: JPEG quality of the crops written by `deepfake-extract`.
        max_pixels: frames with more pixels (width x height) are refused before decoding, in one line; 8K (DCI
            8192x4320) by default (`data_prep.video.MAX_PIXELS`).
        runtime: what runs MTCNN's networks on the CPU: ``torch``, or ``onnx`` (ONNX Runtime, exported once into
            the cache, no torch imported: `data_prep.mtcnn_onnx`; the same cascade, boxes within 1e-3 px). A GPU
            always runs them on PyTorch. Not an extraction setting: it does not change what a model sees.
    """

    stride: int = 5
    margin: float = 0.3
    size: int = 240
    device: str = "auto"
    detect_size: int = 640
    min_face_size: int = 20
    factor: float = 0.6
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_score: float = 0.9
    detect_every: int = 6
    refine_between: bool = True
    interp_iou: float = 0.2
    link_iou: float = 0.3
    max_gap: int = 2
    min_track_len: int = 5
    min_track_score: float = 0.95
    batch_size: int = 0
    detect_threads: int = 1
    chunk_mb: int = 128
    decode_threads: int = 0
    quality: int = 90
    max_pixels: int = MAX_PIXELS
    runtime: str = "torch"

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(isinstance(self.stride, int) and self.stride >= 1, f"stride must be an integer >= 1, got {self.stride!r}")
        need(0 <= self.margin <= 2, f"margin must be in [0, 2] (share of the face box per side), got {self.margin}")
        need(isinstance(self.size, int) and 16 <= self.size <= 2048,
             f"size must be an integer crop side in [16, 2048] pixels, got {self.size!r}")
        need(bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device))),
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        need(isinstance(self.detect_size, int) and self.detect_size >= 64,
             f"detect_size must be an integer >= 64 pixels, got {self.detect_size!r}")
        need(12 <= self.min_face_size <= self.detect_size,
             f"min_face_size must be in [12, detect_size] pixels, got {self.min_face_size}")
        need(0.3 <= self.factor < 0.95, f"factor must be in [0.3, 0.95), got {self.factor}")
        self.thresholds = tuple(float(t) for t in self.thresholds)
        need(len(self.thresholds) == 3 and all(0 < t < 1 for t in self.thresholds),
             f"thresholds must be three probabilities in (0, 1), got {self.thresholds}")
        need(0 <= self.min_score < 1, f"min_score must be in [0, 1), got {self.min_score}")
        need(isinstance(self.detect_every, int) and self.detect_every >= 1,
             f"detect_every must be an integer >= 1, got {self.detect_every!r}")
        need(0 < self.interp_iou <= 1 and 0 < self.link_iou <= 1, "interp_iou and link_iou must be in (0, 1]")
        need(self.max_gap >= 0 and self.min_track_len >= 1, "max_gap must be >= 0 and min_track_len >= 1")
        need(0 <= self.min_track_score < 1, f"min_track_score must be in [0, 1), got {self.min_track_score}")
        need(self.batch_size >= 0 and self.chunk_mb >= 1 and self.decode_threads >= 0 and self.detect_threads >= 0,
             "batch_size, decode_threads and detect_threads must be >= 0, chunk_mb >= 1")
        need(1 <= self.quality <= 100, f"quality must be in [1, 100], got {self.quality}")
        need(isinstance(self.max_pixels, int) and self.max_pixels >= 1,
             f"max_pixels must be an integer >= 1 (pixels a frame), got {self.max_pixels!r}")
        need(self.runtime in ("torch", "onnx"), f"runtime must be torch or onnx, got {self.runtime!r}")


# The settings that change the crops (what `deepfake-extract` writes to extract_config.json, which a resumed run must
# match, and what a detector records of its training crops); the others change only speed or memory.
OUTPUT_SETTINGS = ("stride", "margin", "size", "quality", "detect_size", "min_face_size", "factor", "thresholds",
                   "min_score", "detect_every", "refine_between", "min_track_len", "min_track_score")


def output_settings(config: ExtractConfig) -> dict:
    """`OUTPUT_SETTINGS` of `config` as JSON-able values, keyed as in extract_config.json."""
    settings = {name: getattr(config, name) for name in OUTPUT_SETTINGS}
    settings["thresholds"] = list(settings["thresholds"])
    return settings


@dataclass
class FaceTrack:
    """One face followed through a video.

    Attributes:
        track: track number within the video (0, 1, ... in order of first appearance).
        frames: (N,) int frame indices in the video, increasing.
        boxes: (N, 4) float32 x1, y1, x2, y2 in video pixels (detected, re-fitted by O-Net between detected
            frames, or, with `refine_between` off, interpolated).
        scores: (N,) float32 detector probabilities (O-Net's for a re-fitted box; an interpolated box has the lower
            of its two neighbours').
        crops: (N, size, size, 3) uint8 RGB square crops.
        jpegs: the crops as JPEG bytes instead, with `crops` empty (`extract(..., jpeg=True)`): the bytes
            `deepfake-extract` writes, about a thirteenth of the memory (240-px crops: 13 KB against 173 KB).
        landmarks: (N, 5, 2) float32 x, y of MTCNN's five `LANDMARKS` in video pixels (O-Net's, or interpolated
            with the box); None when unknown (boxes reused from an index written before landmarks were kept).
    """

    track: int
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    crops: np.ndarray
    jpegs: list[bytes] | None = None
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def images(self) -> np.ndarray | JpegCrops:
        """The crops whether held as arrays or as JPEG bytes: `crops`, or a `JpegCrops` that decodes on indexing."""
        return self.crops if self.jpegs is None else JpegCrops(self.jpegs, self.crops.shape[1:])


def encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes at `quality` (OpenCV), as `deepfake-extract` writes crops."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB, decoded as the training data loader reads crops from disk (OpenCV)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable JPEG")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class JpegCrops:
    """A track's crops held as JPEG bytes, decoded when indexed: `c[i]` is one (S, S, 3) uint8 RGB crop, `c[a:b]`
    an (n, S, S, 3) array, `np.asarray(c)` all of them. Holding a long video's crops this way keeps the memory it
    needs small.

    Attributes:
        jpegs: the encoded crops.
        crop_shape: one decoded crop's shape, (S, S, 3).
    """

    def __init__(self, jpegs: list[bytes], crop_shape: tuple[int, ...]) -> None:
        self.jpegs, self.crop_shape = jpegs, tuple(crop_shape)

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, item: int | slice) -> np.ndarray:
        if isinstance(item, slice):
            chosen = self.jpegs[item]
            if not chosen:
                return np.zeros((0, *self.crop_shape), np.uint8)
            return np.stack([decode_jpeg(b) for b in chosen])
        return decode_jpeg(self.jpegs[item])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@dataclass
class VideoFaces:
    """The face tracks of one video.

    Attributes:
        video: the path given.
        n_frames: frames in the video (as decoded).
        fps: frame rate (0.0 when unknown).
        width: frame width as displayed.
        height: frame height as displayed.
        tracks: the face tracks; empty when no face was found.
        boxes_from: the video whose boxes were reused (a DFDC fake's original), else None.
        damaged_frames: frames that could not be decoded (damaged data inside the file; decoding went on from the
            next keyframe, see `data_prep.video.iter_decoded`), 0 for a sound file.
    """

    video: str
    n_frames: int
    fps: float
    width: int
    height: int
    tracks: list[FaceTrack] = field(default_factory=list)
    boxes_from: str | None = None
    damaged_frames: int = 0

    @property
    def n_crops(self) -> int:
        """Crops over all tracks."""
        return sum(len(t) for t in self.tracks)


def thin_evidence_note(faces: VideoFaces) -> str | None:
    """One line when a result rests on too little to judge motion: a still picture, or a face in one frame."""
    if faces.n_frames <= 1 and faces.tracks:
        return "a single picture, not a video: scored from one face crop, with no motion to judge"
    single = [t.track for t in faces.tracks if len(t) == 1]
    if single:
        which = ", ".join(str(k) for k in single)
        return f"face {which} was seen in one sampled frame only: its score rests on a single crop"
    return None


def damage_note(faces: VideoFaces) -> str:
    """One line on the frames of a damaged file that could not be decoded (for a warning)."""
    return (f"{faces.damaged_frames} of {faces.n_frames} frames could not be decoded (damaged data in the file) "
            "and were skipped")
