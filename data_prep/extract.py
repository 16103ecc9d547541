"""Face extraction: videos -> face tracks -> square JPEG crops + `index.csv` (`deepfake-extract`, `FaceExtractor`).

Per video (`FaceExtractor.extract`):
1. Decode every `stride`-th frame once (`data_prep.video.iter_decoded`), in chunks of at most `chunk_mb` of
   frames, on a background thread so the next chunk decodes while this one is detected. Frames are not converted
   to RGB as a whole: the detector gets an RGB copy at its own size, the crops convert only their regions.
2. Detect faces with MTCNN (facenet-pytorch's networks, batched: `data_prep.mtcnn`) on a copy of the frame whose
   longer side is `detect_size` (640 by default: 1/3 of 1080p), with pyramid `factor` 0.6 and `min_face_size`
   20 pixels *at that size* (so the smallest face found is about 3% of the frame's longer side: 60 px in 1080p,
   120 px in 4K). Only every `detect_every`-th sampled frame (6: every 30th frame at stride 5) is detected in
   full. A frame in between, when the detected frames on both sides have the same faces (every box pairs up one
   to one with IoU >= `interp_iou`), gets their boxes interpolated linearly and then re-fitted by O-Net, MTCNN's
   last stage (`refine_between`): each box moves onto the face in *this* frame, and O-Net says whether a face
   is still there. Where the faces on both sides differ (a face appears, leaves or moves fast) or O-Net no
   longer sees a face, the frames in between are detected in full. Boxes are scaled back to video pixels. A face
   seen only between two detected frames, for fewer than `detect_every` sampled frames, is missed: with the
   defaults that is under a second, shorter than the 5 sampled frames a track needs anyway.
3. Boxes scoring under `min_score` (0.9) are dropped; the rest are linked into tracks by IoU (>= `link_iou`,
   0.3) with each track's constant-velocity prediction; a track unseen for more than `max_gap` (2) sampled
   frames ends. Tracks shorter than `min_track_len` (5) sampled frames (capped at the number of sampled
   frames, so a one-frame video keeps its face) or with mean score under `min_track_score` (0.95) are dropped:
   MTCNN's false positives are brief and score lower than faces.
4. Crop a square around each box (side = max(w, h) * (1 + 2 * margin), black beyond the frame), resize to
   `size`.

For DFDC fakes whose `original` was extracted in the same run (or an earlier run into the same OUT_DIR), the
original's boxes are reused when the fake has the same frame count and size: no detection at all, and crops
aligned with the original's (`--reuse-original-boxes`, on by default).

Scale (`deepfake-extract`): `--workers N` processes each extract whole videos: on the CPU each with its own
detector; on a GPU they decode, track and crop while the main process detects for all of them, batching their
frames (one process driving the GPU). `--shard K/N` takes a deterministic share of the
videos (a fake always lands with its original). Each finished video writes its crops (a folder renamed into
place) and then, atomically, `OUT_DIR/parts/<video>.csv` (its index rows) and `<video>.json` (status), so a
killed run resumes where it stopped; videos that failed to decode are retried by the next run, videos without
a face are not. Per-shard `index.shard-K-of-N.csv` / `failures.shard-K-of-N.csv` are merged into `index.csv` /
`failures.csv` by the shard that finishes last (or by `--merge`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import multiprocessing as mp
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data_prep.track import Tracker, greedy_match, square_crop
from data_prep.video import DecodedFrame, VideoError, iter_decoded, probe

__all__ = ["ExtractConfig", "FaceExtractor", "FaceTrack", "JpegCrops", "VideoFaces", "VideoError", "decode_jpeg",
           "extract_faces", "main", "INDEX_COLUMNS"]

INDEX_COLUMNS = ["video", "label", "split", "original", "track", "frame", "x1", "y1", "x2", "y2", "score", "crop"]
FAILURE_COLUMNS = ["video", "reason"]
# Settings that change what is written; a resumed run must use the same ones.
_OUTPUT_SETTINGS = ("stride", "margin", "size", "quality", "detect_size", "min_face_size", "factor", "thresholds",
                    "min_score", "detect_every", "refine_between", "min_track_len", "min_track_score")


# ----------------------------------------------------------------------------------------------------------------
# Settings and results
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ExtractConfig:
    """Extraction settings (see the module docstring for what each threshold does).

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
            6 by default: with `refine_between` the boxes are as close to the faces as with 2 (measured on
            `deepfake synth` clips, `bench/extract.py`) for half the detector time.
        refine_between: re-fit each interpolated box with O-Net, MTCNN's last stage, and detect in full the frames
            where O-Net no longer sees the face (False: keep the interpolated boxes as they are).
        interp_iou: boxes of two detected frames pair up for interpolation when their IoU is at least this.
        link_iou: a box joins a track when its IoU with the track's predicted box is at least this.
        max_gap: sampled frames a track may miss before it ends.
        min_track_len: tracks with fewer sampled frames are dropped (capped at the frames sampled).
        min_track_score: tracks whose mean detector probability is below this are dropped.
        batch_size: frames per detector call (0: 1 on CPU, where batching does not help, 128 on GPU).
        detect_threads: torch CPU threads while MTCNN runs on the CPU (0: leave torch's setting). 1 by default:
            on 2 cores a second thread gave the same time per clip for twice the CPU (the decoder thread needs
            the other core); the setting is restored after each detector call.
        chunk_mb: memory for one chunk of decoded full-size frames (up to 16 frames; three chunks are held at
            once per video: one being detected, two decoded ahead).
        decode_threads: FFmpeg decoding threads per video (0: FFmpeg decides; worker processes default to their
            share of the cores).
        quality: JPEG quality of the crops written by `deepfake-extract`.
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
    """

    track: int
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    crops: np.ndarray
    jpegs: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def images(self) -> np.ndarray | JpegCrops:
        """The crops whether held as arrays or as JPEG bytes: `crops`, or a `JpegCrops` that decodes on indexing."""
        return self.crops if self.jpegs is None else JpegCrops(self.jpegs, self.crops.shape[1:])


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


@dataclass
class _ReuseBoxes:
    """The tracks of an extracted video, for cropping another video of the same frames (a DFDC fake)."""

    source: str
    n_frames: int
    width: int
    height: int
    stride: int
    tracks: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]  # (track, frames, boxes, scores)

    @classmethod
    def from_faces(cls, faces: VideoFaces, stride: int) -> _ReuseBoxes:
        return cls(faces.video, faces.n_frames, faces.width, faces.height, stride,
                   [(t.track, t.frames, t.boxes, t.scores) for t in faces.tracks])

    def by_frame(self) -> dict[int, list[tuple[int, np.ndarray, float]]]:
        out: dict[int, list[tuple[int, np.ndarray, float]]] = {}
        for track, frames, boxes, scores in self.tracks:
            for f, b, s in zip(frames, boxes, scores):
                out.setdefault(int(f), []).append((track, b, float(s)))
        return out


# ----------------------------------------------------------------------------------------------------------------
# Detector
# ----------------------------------------------------------------------------------------------------------------
def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is a ValueError."""
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
        self.mtcnn = MTCNNCascade(config.min_face_size, config.thresholds, config.factor, self.device)
        self.batch_size = config.batch_size or (128 if self.device.startswith("cuda") else 1)
        self.threads = 0 if self.device.startswith("cuda") else config.detect_threads

    @contextlib.contextmanager
    def _torch_threads(self) -> Iterator[None]:
        """Run on `threads` torch threads (when set), restoring the caller's setting afterwards."""
        import torch

        before = torch.get_num_threads()
        if self.threads and self.threads != before:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Faces in a batch of equally sized frames.

        Args:
            frames: (B, H, W, 3) uint8 RGB.

        Returns:
            Per frame: boxes (N, 4) float32 in the frames' pixels, and probabilities (N,) float32.
        """
        out: list[tuple[np.ndarray, np.ndarray]] = []
        with self._torch_threads():
            for start in range(0, len(frames), self.batch_size):
                out.extend(self.mtcnn.detect(frames[start:start + self.batch_size]))
        return out

    def refine(self, frames: np.ndarray, boxes: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Given boxes re-fitted by O-Net, one (boxes, probabilities) entry per given box (`MTCNNCascade.refine`)."""
        with self._torch_threads():
            return self.mtcnn.refine(frames, boxes)

    def refine_inputs(self, squares: np.ndarray, crops: np.ndarray,
                      counts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`refine` from O-Net's inputs made by `data_prep.resample.onet_inputs` (`MTCNNCascade.refine_inputs`)."""
        with self._torch_threads():
            return self.mtcnn.refine_inputs(squares, crops, counts)

    def run(self, request: _DetectRequest) -> list[tuple[np.ndarray, np.ndarray]]:
        """Serve a video job's request: a detection, or a refinement when it carries boxes."""
        if request.boxes is None:
            return self.detect(request.frames)
        if request.prepared:
            return self.refine_inputs(request.squares, request.crops, [len(b) for b in request.boxes])
        return self.refine(request.frames, request.boxes)


# ----------------------------------------------------------------------------------------------------------------
# One video: a generator that asks for detections (so the detector can sit in another process) and returns faces
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _DetectRequest:
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

    def for_sending(self) -> _DetectRequest:
        """The request to send to another process: a re-fit becomes a prepared one (O-Net's inputs, not frames)."""
        if self.boxes is None or self.prepared:
            return self
        from data_prep.resample import onet_inputs

        squares, crops = onet_inputs(self.frames, self.boxes)
        return _DetectRequest(None, self.boxes, squares, crops)


_END = object()


def _prefetch(it: Iterator, depth: int = 1) -> Iterator:
    """Run an iterator on a background thread, `depth` items ahead (PyAV and OpenCV release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, _END))
        except BaseException as err:  # handed to the consumer, which raises it
            q.put((False, err))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def _chunks(path: str, config: ExtractConfig, chunk_len: int, small_size: tuple[int, int] | None,
            stats: dict) -> Iterator[tuple[list[int], list[DecodedFrame], np.ndarray | None]]:
    """Sampled frames in chunks: (frame indices, decoded frames, detection copies stacked or None).

    Frames stay decoded but unconverted: the detector gets an RGB copy at its size and the crops convert only
    their face regions (`DecodedFrame`).
    """
    idxs: list[int] = []
    frames: list[DecodedFrame] = []
    smalls: list[np.ndarray] = []
    for index, frame in iter_decoded(path, config.stride, threads=config.decode_threads, stats=stats):
        idxs.append(index)
        frames.append(frame)
        if small_size is not None:
            smalls.append(frame.resized(*small_size))
        if len(idxs) == chunk_len:
            yield idxs, frames, (np.stack(smalls) if smalls else None)
            idxs, frames, smalls = [], [], []
    if idxs:
        yield idxs, frames, (np.stack(smalls) if smalls else None)


_Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N, 4), scores (N,), detected (N,) bool
Progress = Callable[[int, int], None]  # (frames of the video done, frames in it)


def _detect_chunk(small: np.ndarray, config: ExtractConfig,
                  carry: tuple[np.ndarray, _Detections] | None = None
                  ) -> Generator[_DetectRequest, list, list[_Detections]]:
    """Boxes for every frame of a chunk, detecting in full only where the frames around can't be trusted.

    Args:
        small: (N, h, w, 3) detection copies of the chunk's sampled frames.
        config: the settings.
        carry: the detection copy (1, h, w, 3) and the detections of the frame before the chunk (the last of the
            previous chunk, which is always detected in full): the chunk's first frames interpolate from it instead
            of being detected again.

    Returns:
        Per frame of the chunk: boxes (N, 4) in detection-copy pixels, scores (N,), and whether each box was
        detected or re-fitted by O-Net (True) rather than interpolated.
    """
    offset = 0
    if carry is not None and carry[0].shape[1:] == small.shape[1:]:
        small, offset = np.concatenate([carry[0], small]), 1
    n = len(small)
    dets: list[_Detections | None] = [None] * n
    if offset:
        dets[0] = carry[1]

    def run(indices: list[int]) -> Generator[_DetectRequest, list, None]:
        if not indices:
            return
        results = yield _DetectRequest(small[indices])
        for i, (boxes, scores) in zip(indices, results):
            keep = scores >= config.min_score
            dets[i] = (boxes[keep], scores[keep], np.ones(int(keep.sum()), bool))

    keys = sorted(set(range(0, n, config.detect_every)) | {n - 1})
    yield from run(keys[offset:])
    detect: list[int] = []
    between: list[int] = []
    for a, b in zip(keys, keys[1:]):
        if b - a < 2:
            continue
        (ba, sa, _), (bb, sb, _) = dets[a], dets[b]
        pairs = greedy_match(ba, bb, config.interp_iou)
        if len(pairs) != len(ba) or len(pairs) != len(bb):
            detect.extend(range(a + 1, b))
            continue
        for i in range(a + 1, b):
            t = (i - a) / (b - a)
            boxes = np.array([ba[p] * (1 - t) + bb[q] * t for p, q in pairs], np.float32).reshape(-1, 4)
            scores = np.array([min(sa[p], sb[q]) for p, q in pairs], np.float32)
            dets[i] = (boxes, scores, np.zeros(len(pairs), bool))
            if len(pairs):
                between.append(i)
    if config.refine_between and between:
        # O-Net re-fits each interpolated box where the face is in this frame; a frame where it no longer sees a
        # face there (the face turned, left or moved unlike the interpolation) is detected in full instead.
        results = yield _DetectRequest(small[between], [dets[i][0] for i in between])
        for i, (boxes, scores) in zip(between, results):
            if (scores >= config.min_score).all():
                dets[i] = (boxes, scores, np.ones(len(boxes), bool))
            else:
                detect.append(i)
    yield from run(sorted(detect))
    return dets[offset:]  # type: ignore[return-value]


def _encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _video_job(path: str, config: ExtractConfig, reuse: _ReuseBoxes | None = None, jpeg: bool = False,
               overlap: bool = True, progress: Progress | None = None) -> Generator[_DetectRequest, list, VideoFaces]:
    """Extract the faces of one video; yields detection requests, receives their results, returns VideoFaces.

    `progress`, when given, is called after each chunk of frames with (frames of the video done, frames in it).

    With `overlap` the video decodes on a background thread while its frames are detected and cropped; without,
    all in this thread (what a worker process does when the other workers already keep every core busy: measured
    on 2 cores with 2 workers, 0.77 s per 10-s 1080p clip against 0.82-0.89 s with a decoding thread each).
    """
    info = probe(path)
    reuse_map = None
    if reuse is not None and reuse.stride == config.stride and (reuse.n_frames, reuse.width, reuse.height) == (
            info.n_frames, info.width, info.height):
        reuse_map = reuse.by_frame()
    scale = min(1.0, config.detect_size / max(info.width, info.height))
    small_size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    # Small chunks keep decoding (background thread) and detection overlapped; chunk_mb bounds memory for 4K. A
    # multiple of detect_every keeps the detected frames evenly spaced across chunks.
    chunk_len = int(max(2, min(16, config.chunk_mb * 2**20 // max(1, info.width * info.height * 3))))
    if chunk_len >= config.detect_every:
        chunk_len -= chunk_len % config.detect_every
    tracker = Tracker(config.link_iou, config.max_gap)
    reused: dict[int, tuple[list, list, list]] = {}  # track -> frames, boxes, scores (when reusing boxes)
    crops: dict[int, list] = {}
    stats: dict = {}
    n_sampled = 0
    carry = None  # the last frame of the previous chunk: detection copy and detections
    chunks = _chunks(path, config, chunk_len, None if reuse_map is not None else small_size, stats)
    if overlap:
        chunks = _prefetch(chunks, 2)
    try:
        for idxs, frames, small in chunks:
            n_sampled += len(idxs)
            if reuse_map is None:
                per_frame = yield from _detect_chunk(small, config, carry)
                carry = (small[-1:], per_frame[-1])
            for k, (index, frame) in enumerate(zip(idxs, frames)):
                if reuse_map is None:
                    boxes, scores, detected = per_frame[k]
                    # Detection-copy pixels -> video pixels (per frame: a stream may change size midway).
                    sx, sy = frame.shape[1] / small.shape[2], frame.shape[0] / small.shape[1]
                    boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
                    ids = tracker.update(index, boxes, scores, detected)
                else:
                    entries = reuse_map.get(index, [])
                    ids = [e[0] for e in entries]
                    boxes = [e[1] for e in entries]
                    for tid, box, score in entries:
                        lists = reused.setdefault(tid, ([], [], []))
                        lists[0].append(index), lists[1].append(box), lists[2].append(score)
                for tid, box in zip(ids, boxes):
                    crop = square_crop(frame, box, config.margin, config.size)
                    crops.setdefault(tid, []).append(_encode_jpeg(crop, config.quality) if jpeg else crop)
            if progress is not None:  # the header's count until the end (`VideoInfo.n_frames`): never "done" yet
                progress(idxs[-1] + 1, max(info.n_frames, idxs[-1] + 2))
    finally:
        chunks.close()
    n_frames = int(stats.get("n_frames", info.n_frames))
    if progress is not None:
        progress(n_frames, n_frames)
    if reuse_map is not None:
        kept = [(tid, *reused[tid]) for tid in sorted(reused)]
    else:
        min_len = min(config.min_track_len, n_sampled)
        good = [t for t in tracker.tracks
                if len(t.frames) >= min_len and float(np.mean(t.scores)) >= config.min_track_score]
        good.sort(key=lambda t: (t.frames[0], float(t.boxes[0][0])))  # number tracks by first appearance
        kept = [(t.id, t.frames, t.boxes, t.scores) for t in good]
    tracks = []
    keep = {tid for tid, *_ in kept}
    for tid in [t for t in crops if t not in keep]:  # tracks dropped (too short, too unsure): free their crops now
        del crops[tid]
    for number, (tid, frames_, boxes_, scores_) in enumerate(kept):
        items = crops.pop(tid, [])  # each list is freed once its track holds the stacked copy
        tracks.append(FaceTrack(
            track=tid if reuse_map is not None else number, frames=np.asarray(frames_, np.int64),
            boxes=np.asarray(boxes_, np.float32).reshape(-1, 4), scores=np.asarray(scores_, np.float32),
            crops=np.zeros((0, config.size, config.size, 3), np.uint8) if jpeg else np.stack(items),
            jpegs=items if jpeg else None))
    return VideoFaces(str(path), n_frames, info.fps, info.width, info.height, tracks,
                      boxes_from=reuse.source if reuse_map is not None else None,
                      damaged_frames=int(stats.get("damaged_frames", 0)))


def _run_inline(job: Generator, detector: FaceDetector) -> VideoFaces:
    """Drive a video job in this process."""
    try:
        request = next(job)
        while True:
            request = job.send(detector.run(request))
    except StopIteration as stop:
        return stop.value


# ----------------------------------------------------------------------------------------------------------------
# Worker processes: whole videos in N processes; detection in each (CPU) or batched in the main process (GPU)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Job:
    key: int
    path: str
    reuse_from: int | None = None  # key of the job whose boxes this one reuses (a DFDC fake's original)


class _RemoteDetector:
    """A worker's stand-in for the detector when the main process detects for everyone (GPU mode)."""

    def __init__(self, wid: int, key_of: Callable[[], object], results, replies) -> None:
        self.wid, self.key_of, self.results, self.replies = wid, key_of, results, replies

    def run(self, request: _DetectRequest) -> list[tuple[np.ndarray, np.ndarray]]:
        # A re-fit goes as O-Net's inputs (7 KB a face), not as the frames (691 KB each at 640x360).
        self.results.put(("detect", self.wid, self.key_of(), request.for_sending()))
        return self.replies.get()


def _worker_main(wid: int, config: ExtractConfig, torch_threads: int, tasks, results, replies) -> None:
    """Worker process loop: take a video, decode, detect, track and crop it, send back its faces.

    With `replies` (GPU mode) the worker has no detector: it sends the detection copies of its frames to the main
    process and waits for the boxes.
    """
    cv2.setNumThreads(1)
    current: list = [None]
    # A decoding thread only pays when this worker has a core to spare or waits for the main process's detector.
    overlap = replies is not None or torch_threads > 1
    if replies is None:
        import torch

        torch.set_num_threads(torch_threads)
        try:
            detector = FaceDetector(config)
        except Exception as err:  # e.g. CUDA out of memory: every video of this worker would fail the same way
            results.put(("fatal", wid, None, f"{type(err).__name__}: {err}"))
            return
    else:
        detector = _RemoteDetector(wid, lambda: current[0], results, replies)
    while True:
        task = tasks.get()
        if task is None:
            return
        key, path, reuse, jpeg, report = task
        current[0] = key
        results.put(("start", wid, key, None))
        progress = (lambda done, total, key=key: results.put(("progress", wid, key, (done, total)))) if report else None
        try:
            result: VideoFaces | VideoError = _run_inline(_video_job(path, config, reuse, jpeg, overlap, progress),
                                                          detector)
        except VideoError as err:
            result = err
        except Exception as err:  # a bug or a resource problem: record it, keep the run going
            result = VideoError(f"internal error: {type(err).__name__}: {err}")
            traceback.print_exc()
        results.put(("done", wid, key, result))


class _Pool:
    """N worker processes (spawned) extracting whole videos from one task queue.

    On the CPU each worker has its own detector: MTCNN's cost there is arithmetic that scales with the cores.
    On a GPU (`central_detection`), workers decode, track and crop, and the main process detects for all of them,
    batching their frames: one process driving the GPU (measured on an H100: 2.7 clips/s for 15 workers feeding
    one detector, 1.2-1.4 with 15 processes each detecting, in runs of 30-40 clips).
    """

    def __init__(self, workers: int, config: ExtractConfig, central_detection: bool) -> None:
        self.ctx = mp.get_context("spawn")  # fork after CUDA init is unsafe; spawn is safe everywhere
        cpus = _cpu_count()
        if config.decode_threads == 0:  # share the cores instead of every worker starting one thread per core
            config = dataclasses.replace(config, decode_threads=max(1, cpus // workers))
        self.torch_threads = max(1, cpus // workers)
        self.config = config
        self.central = central_detection
        self.tasks = self.ctx.Queue()
        self.results = self.ctx.Queue()
        self.replies: list = [None] * workers
        self.procs: list = [None] * workers
        self.current: dict[int, object] = {}
        for wid in range(workers):
            self._start(wid)

    def _start(self, wid: int) -> None:
        self.replies[wid] = self.ctx.Queue() if self.central else None
        proc = self.ctx.Process(target=_worker_main, daemon=True, args=(
            wid, self.config, self.torch_threads, self.tasks, self.results, self.replies[wid]))
        proc.start()
        self.procs[wid] = proc
        self.current[wid] = None

    def submit(self, key: tuple[int, int], path: str, reuse: _ReuseBoxes | None, jpeg: bool,
               report: bool = False) -> None:
        self.tasks.put((key, path, reuse, jpeg, report))

    def cancel_queued(self) -> None:
        """Drop tasks no worker has taken yet (after a caller stopped early)."""
        while True:
            try:
                self.tasks.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return

    def dead_jobs(self) -> list[tuple[int, str]]:
        """Jobs whose worker died (crashed or was killed); the worker is restarted."""
        lost = []
        for wid, proc in enumerate(self.procs):
            if not proc.is_alive():
                key = self.current.get(wid)
                if key is not None:
                    lost.append((key, f"worker process died (exit code {proc.exitcode}) on this video"))
                self._start(wid)
        return lost

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=1)


# ----------------------------------------------------------------------------------------------------------------
# The in-memory API
# ----------------------------------------------------------------------------------------------------------------
class FaceExtractor:
    """Face tracks of videos, in memory (the same code path `deepfake-extract` runs).

    Args:
        config: settings; defaults to `ExtractConfig()`.
        workers: processes for `extract_many`, each extracting whole videos (0: this process, decoding on a
            thread so that decoding overlaps detection). On the CPU each worker has its own detector; on a GPU
            the workers decode, track and crop while this process detects for all of them in batches.
        detect_in_main: force that choice (None: detect in this process on a GPU, in the workers on the CPU).

    Example:
        >>> extractor = FaceExtractor(ExtractConfig(stride=5, margin=0.3, size=240, device="auto"))
        >>> faces = extractor.extract("clip.mp4")             # raises VideoError for unreadable input
        >>> for path, result in extractor.extract_many(paths):  # VideoFaces or VideoError, in input order
        ...     pass
    """

    def __init__(self, config: ExtractConfig | None = None, workers: int = 0, *,
                 detect_in_main: bool | None = None) -> None:
        self.config = config or ExtractConfig()
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.detector = FaceDetector(self.config)
        self.device = self.detector.device
        # With workers: detect in this process for all of them (default on a GPU) or in each worker (CPU).
        self.detect_in_main = self.device.startswith("cuda") if detect_in_main is None else detect_in_main
        self._pool: _Pool | None = None  # started on first use, kept for later calls (workers load MTCNN once)
        self._run_id = 0

    def close(self) -> None:
        """Stop the worker processes, if any (they also stop with this process)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> FaceExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the daemon workers go with it
            pass

    def extract(self, path: str | os.PathLike, *, jpeg: bool = False, progress: Progress | None = None) -> VideoFaces:
        """Face tracks of one video.

        Args:
            path: the video file.
            jpeg: hold the crops as JPEG bytes at `config.quality` (`FaceTrack.jpegs`; `FaceTrack.images()` reads
                either kind), the bytes `deepfake-extract` writes for training: a long video's crops then fit in
                memory (1 h of one face at stride 5, 240 px: about 0.3 GB of JPEG against 3.7 GB of arrays).
            progress: called as the video goes, every 16 sampled frames or so, with (frames of the video done, frames
                in it): for a progress display on long videos.

        Raises:
            VideoError: the video can't be read (missing, empty, not a video, truncated, corrupt).
        """
        return _run_inline(_video_job(os.fspath(path), self.config, jpeg=jpeg, progress=progress), self.detector)

    def extract_many(self, paths: Iterable[str | os.PathLike], *, jpeg: bool = False,
                     progress: Callable[[str, int, int], None] | None = None,
                     ) -> Iterator[tuple[str, VideoFaces | VideoError]]:
        """Face tracks of many videos, in input order; a video that fails gives its VideoError, the rest go on.

        Args:
            paths: the videos.
            jpeg: as for `extract`.
            progress: as for `extract`, with the video's path (as given) first: (path, frames done, frames).

        Yields:
            (path as given, VideoFaces or VideoError).
        """
        jobs = [_Job(i, os.fspath(p)) for i, p in enumerate(paths)]
        pending: dict[int, VideoFaces | VideoError] = {}
        next_key = 0
        for job, result in self._run(jobs, jpeg=jpeg, progress=progress):
            pending[job.key] = result
            while next_key in pending:
                yield jobs[next_key].path, pending.pop(next_key)
                next_key += 1

    # The engine behind extract_many and deepfake-extract: results in completion order.
    def _run(self, jobs: list[_Job], jpeg: bool,
             keep_boxes: Callable[[_Job, VideoFaces], None] | None = None,
             reuse_lookup: Callable[[_Job], _ReuseBoxes | None] | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             ) -> Iterator[tuple[_Job, VideoFaces | VideoError]]:
        """Run jobs; a job with `reuse_from` waits for that job and crops with its boxes.

        Args:
            jobs: the videos.
            jpeg: return crops as JPEG bytes (`FaceTrack.jpegs`) rather than arrays.
            keep_boxes: called with each finished job's faces (to remember boxes reused later).
            reuse_lookup: the boxes to reuse for a job, or None to detect.
            progress: called with (job path, frames done, frames) as each video goes.
        """
        if self.workers == 0:
            for job in jobs:
                reuse = reuse_lookup(job) if reuse_lookup else None
                report = (lambda done, total, path=job.path: progress(path, done, total)) if progress else None
                try:
                    result: VideoFaces | VideoError = _run_inline(
                        _video_job(job.path, self.config, reuse, jpeg, progress=report), self.detector)
                except VideoError as err:
                    result = err
                except Exception as err:  # keep a batch going; the reason says what happened
                    result = VideoError(f"internal error: {type(err).__name__}: {err}")
                    traceback.print_exc()
                if keep_boxes and isinstance(result, VideoFaces):
                    keep_boxes(job, result)
                yield job, result
            return
        yield from self._run_pool(jobs, jpeg, keep_boxes, reuse_lookup, progress)

    def _run_pool(self, jobs, jpeg, keep_boxes, reuse_lookup,
                  progress=None) -> Iterator[tuple[_Job, VideoFaces | VideoError]]:
        if self._pool is None:
            self._pool = _Pool(self.workers, self.config, central_detection=self.detect_in_main)
        pool = self._pool
        self._run_id += 1
        run = self._run_id  # results of an earlier call stopped midway carry another run id and are ignored
        by_key = {job.key: job for job in jobs}
        waiting = list(reversed(jobs))  # pop() from the end keeps input order
        unfinished = {job.key for job in jobs}
        running: set[int] = set()
        last_check = time.monotonic()
        max_running = 2 * self.workers  # enough to keep every worker busy; bounds memory for out-of-order results
        try:
            while unfinished:
                deferred = []
                while waiting and len(running) < max_running:
                    job = waiting.pop()
                    if job.reuse_from is not None and job.reuse_from in unfinished:
                        deferred.append(job)  # its original is still running: take it later
                        continue
                    pool.submit((run, job.key), job.path, reuse_lookup(job) if reuse_lookup else None, jpeg,
                                progress is not None)
                    running.add(job.key)
                waiting.extend(reversed(deferred))
                if not running and waiting:  # only jobs waiting on jobs that can't finish: run them plainly
                    for job in waiting:
                        job.reuse_from = None
                    continue
                try:
                    messages = [pool.results.get(timeout=1.0)]
                except queue.Empty:
                    messages = []
                if time.monotonic() - last_check > 2.0:
                    last_check = time.monotonic()
                    messages += [("done", -1, key, VideoError(reason)) for key, reason in pool.dead_jobs()]
                requests = []
                for kind, wid, tagged, payload in messages:
                    if kind == "detect":  # served whatever run it belongs to: the worker waits for it
                        requests.append((wid, payload))
                        continue
                    if kind == "fatal":
                        self.close()
                        raise RuntimeError(f"extraction worker could not start its detector: {payload}")
                    if kind == "start":
                        pool.current[wid] = tagged
                        continue
                    if kind == "progress":
                        run_of, key = tagged
                        if progress is not None and run_of == run and key in unfinished:
                            progress(by_key[key].path, *payload)
                        continue
                    if wid >= 0:
                        pool.current[wid] = None
                    run_of, key = tagged
                    if kind == "done" and run_of == run and key in unfinished:
                        unfinished.discard(key)
                        running.discard(key)
                        if keep_boxes and isinstance(payload, VideoFaces):
                            keep_boxes(by_key[key], payload)
                        yield by_key[key], payload
                self._serve(pool, requests)
        finally:
            if unfinished:
                pool.cancel_queued()

    def _serve(self, pool: _Pool, requests: list[tuple[int, _DetectRequest]]) -> None:
        """Detect for workers (GPU mode): the frames of all pending requests of one kind and size go in one batch."""
        groups: dict[tuple, list[tuple[int, _DetectRequest]]] = {}
        for wid, request in requests:  # detections by frame size, and re-fits the workers prepared (`_RemoteDetector`)
            key = ("detect", request.frames.shape[1:]) if request.boxes is None else ("refit",)
            groups.setdefault(key, []).append((wid, request))
        for key, group in groups.items():
            if key[0] == "detect":
                results = self.detector.detect(np.concatenate([r.frames for _, r in group]))
            else:
                results = self.detector.refine_inputs(np.concatenate([r.squares for _, r in group]),
                                                      np.concatenate([r.crops for _, r in group]),
                                                      [len(b) for _, r in group for b in r.boxes])
            start = 0
            for wid, request in group:
                if self.replies_ok(pool, wid):
                    pool.replies[wid].put(results[start:start + len(request)])
                start += len(request)

    @staticmethod
    def replies_ok(pool: _Pool, wid: int) -> bool:
        return pool.replies[wid] is not None and pool.procs[wid].is_alive()


def damage_note(faces: VideoFaces) -> str:
    """One line on the frames of a damaged file that could not be decoded (for a warning)."""
    return (f"{faces.damaged_frames} of {faces.n_frames} frames could not be decoded (damaged data in the file) "
            "and were skipped")


def extract_faces(path: str | os.PathLike, config: ExtractConfig | None = None) -> VideoFaces:
    """Face tracks of one video with a one-off extractor (`FaceExtractor(config).extract(path)`).

    Raises:
        VideoError: the video can't be read.
    """
    return FaceExtractor(config).extract(path)


# ----------------------------------------------------------------------------------------------------------------
# deepfake-extract: layouts -> shards -> resumable per-video outputs -> index.csv
# ----------------------------------------------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file so that it is either absent or complete: temp file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _csv_text(rows: Iterable[Iterable], header: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _crop_dir(video_id: str) -> str:
    return "crops/" + str(Path(video_id).with_suffix("").as_posix())


def _part_paths(out: Path, video_id: str) -> tuple[Path, Path]:
    base = out / "parts" / video_id
    return base.with_name(base.name + ".csv"), base.with_name(base.name + ".json")


def _read_meta(out: Path, video_id: str) -> dict | None:
    meta_path = _part_paths(out, video_id)[1]
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def _is_done(out: Path, video_id: str) -> bool:
    meta = _read_meta(out, video_id)
    return meta is not None and meta.get("status") in ("ok", "no_face") and _part_paths(out, video_id)[0].is_file()


def _write_video(out: Path, record, result: VideoFaces | VideoError) -> tuple[int, int, str | None]:
    """Write one video's crops, index fragment and status (last: it marks the video done).

    Returns:
        (tracks, crops, failure reason or None).
    """
    csv_path, meta_path = _part_paths(out, record.video)
    if isinstance(result, VideoError):
        meta = {"video": record.video, "status": "error", "reason": result.reason}
        _atomic_write(meta_path, json.dumps(meta))
        return 0, 0, result.reason
    crop_rel = _crop_dir(record.video)
    final = out / crop_rel
    rows = []
    if result.tracks:
        # Crops go to a fresh folder that replaces the old one in one rename: no half-written set is ever visible.
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for t in result.tracks:
            jpegs = t.jpegs if t.jpegs is not None else [_encode_jpeg(c, 95) for c in t.crops]
            for frame, box, score, data in zip(t.frames, t.boxes, t.scores, jpegs):
                name = f"t{t.track}_f{int(frame):06d}.jpg"
                (tmp / name).write_bytes(data)
                rows.append([record.video, record.label, record.split, record.original, t.track, int(frame),
                             f"{box[0]:.2f}", f"{box[1]:.2f}", f"{box[2]:.2f}", f"{box[3]:.2f}", f"{score:.5f}",
                             f"{crop_rel}/{name}"])
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    elif final.exists():
        shutil.rmtree(final)
    _atomic_write(csv_path, _csv_text(rows, INDEX_COLUMNS))
    reason = None if result.tracks else "no face found"
    meta = {"video": record.video, "status": "ok" if result.tracks else "no_face", "reason": reason,
            "n_frames": result.n_frames, "fps": result.fps, "width": result.width, "height": result.height,
            "tracks": len(result.tracks), "crops": len(rows), "boxes_from": result.boxes_from,
            "damaged_frames": result.damaged_frames}
    _atomic_write(meta_path, json.dumps(meta))
    return len(result.tracks), len(rows), reason


def _load_boxes(out: Path, video_id: str, stride: int) -> _ReuseBoxes | None:
    """The boxes of a video extracted by an earlier run into OUT_DIR, for reuse by its fakes."""
    meta = _read_meta(out, video_id)
    if meta is None or meta.get("status") != "ok":
        return None
    by_track: dict[int, tuple[list, list, list]] = {}
    try:
        with open(_part_paths(out, video_id)[0], newline="") as f:
            for row in csv.DictReader(f):
                lists = by_track.setdefault(int(row["track"]), ([], [], []))
                lists[0].append(int(row["frame"]))
                lists[1].append([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
                lists[2].append(float(row["score"]))
    except (OSError, KeyError, ValueError):
        return None
    tracks = [(tid, np.asarray(fr, np.int64), np.asarray(bx, np.float32), np.asarray(sc, np.float32))
              for tid, (fr, bx, sc) in sorted(by_track.items())]
    return _ReuseBoxes(video_id, int(meta["n_frames"]), int(meta["width"]), int(meta["height"]), stride, tracks)


def shard_of(original: str, n_shards: int) -> int:
    """Shard of a video group (a real video and its fakes share `original`): stable across runs and machines."""
    return zlib.crc32(original.encode("utf-8")) % n_shards


def _shard_name(kind: str, k: int, n: int) -> str:
    return f"{kind}.shard-{k}-of-{n}.csv"


def _assemble(out: Path, records: list) -> tuple[str, str, int, int, int]:
    """Index and failures CSV text for a list of records, from their per-video fragments."""
    lines: list[str] = []
    failures: list[list[str]] = []
    n_tracks = 0
    header = ",".join(INDEX_COLUMNS) + "\n"
    for record in records:
        csv_path, _ = _part_paths(out, record.video)
        meta = _read_meta(out, record.video)
        if meta is None:
            failures.append([record.video, "not processed (run interrupted?)"])
            continue
        if meta.get("reason"):
            failures.append([record.video, meta["reason"]])
        if meta.get("status") in ("ok", "no_face"):
            n_tracks += int(meta.get("tracks", 0))
            text = csv_path.read_text()
            lines.append(text[len(header):] if text.startswith(header) else text.split("\n", 1)[1])
    return header + "".join(lines), _csv_text(failures, FAILURE_COLUMNS), len(records), n_tracks, len(failures)


def _merge(out: Path, n_shards: int | None = None) -> tuple[int, int, int]:
    """Concatenate the per-shard index and failure files into index.csv and failures.csv.

    Returns:
        (index rows, failures, shards merged).

    Raises:
        FileNotFoundError: a shard's files are missing (its message lists which).
    """
    if n_shards is None:
        found = sorted({int(m.group(2)) for p in out.glob("index.shard-*-of-*.csv")
                        if (m := re.fullmatch(r"index\.shard-(\d+)-of-(\d+)\.csv", p.name))})
        if not found:
            raise FileNotFoundError(f"{out}: no index.shard-K-of-N.csv files to merge")
        if len(found) > 1:
            raise FileNotFoundError(f"{out}: shard files for several shard counts ({found}); remove the stale ones")
        n_shards = found[0]
    missing = [k for k in range(n_shards) if not (out / _shard_name("index", k, n_shards)).is_file()]
    if missing:
        raise FileNotFoundError(f"{out}: shards {missing} of {n_shards} are not finished yet")
    index_parts, failure_parts = [], []
    for k in range(n_shards):
        index_parts.append((out / _shard_name("index", k, n_shards)).read_text().split("\n", 1)[1])
        fail = out / _shard_name("failures", k, n_shards)
        failure_parts.append(fail.read_text().split("\n", 1)[1] if fail.is_file() else "")
    index_text = ",".join(INDEX_COLUMNS) + "\n" + "".join(index_parts)
    failures_text = ",".join(FAILURE_COLUMNS) + "\n" + "".join(failure_parts)
    _atomic_write(out / "index.csv", index_text)
    _atomic_write(out / "failures.csv", failures_text)
    return index_text.count("\n") - 1, failures_text.count("\n") - 1, n_shards


def _parse_shard(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value or "")
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise argparse.ArgumentTypeError(
            f"--shard takes K/N with 0 <= K < N (K is 0-based, e.g. $SLURM_ARRAY_TASK_ID/4), got {value!r}")
    return int(m.group(1)), int(m.group(2))


def _default_workers() -> int:
    """One extraction process per core (at most 16); none on a single core, where in-process is as fast."""
    cpus = _cpu_count()
    return 0 if cpus < 2 else min(16, cpus)


def _parser() -> argparse.ArgumentParser:
    d = ExtractConfig()
    p = argparse.ArgumentParser(
        prog="deepfake-extract", usage="deepfake-extract SOURCE OUT_DIR [options]\n       deepfake-extract OUT_DIR --merge",
        description="Detect, track and crop the faces of a dataset's videos: OUT_DIR/crops/**.jpg + OUT_DIR/index.csv "
                    "(one row per crop), OUT_DIR/failures.csv (video,reason). Re-running resumes.",
        epilog="Sharding over N machines: run `deepfake-extract SRC OUT --shard K/N` for K = 0..N-1 into the same "
               "OUT (shared disk); the last shard to finish merges index.csv, or run `deepfake-extract OUT --merge`.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="SOURCE (dataset folder) and OUT_DIR (output folder); "
                   "with --merge just OUT_DIR")
    p.add_argument("--layout", default="auto", choices=["auto", "dfdc", "deeperforensics", "folder"],
                   help="dataset layout (default: auto, picked from what SOURCE contains)")
    p.add_argument("--stride", type=int, default=d.stride, help="keep every STRIDE-th frame (default %(default)s)")
    p.add_argument("--margin", type=float, default=d.margin,
                   help="crop margin per side, share of the face box (default %(default)s)")
    p.add_argument("--size", default=str(d.size),
                   help="crop side in pixels, or auto: the input size of the model in --size-from "
                        "(default %(default)s)")
    p.add_argument("--size-from", default=None, metavar="CONFIG_OR_CHECKPOINT",
                   help="with --size auto: a training config (e.g. configs/backbones/tf_efficientnet_b4.yaml) or a "
                        "detector checkpoint (detector.pt, .ckpt)")
    p.add_argument("--quality", type=int, default=d.quality, help="JPEG quality (default %(default)s)")
    p.add_argument("--device", default=d.device, help="detector device: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that each extract whole videos with their own detector; 0: all in this process "
                        "(default: one per CPU core, at most 16)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="frames per detector call (default: 1 on CPU, 128 on GPU)")
    p.add_argument("--detect-size", type=int, default=d.detect_size,
                   help="longer side of the frame copy the detector sees (default %(default)s)")
    p.add_argument("--min-face-size", type=int, default=d.min_face_size,
                   help="smallest face, in pixels of the detection copy (default %(default)s)")
    p.add_argument("--factor", type=float, default=d.factor, help="MTCNN pyramid factor (default %(default)s)")
    p.add_argument("--detect-every", type=int, default=d.detect_every,
                   help="detect on every k-th sampled frame, interpolate boxes between (default %(default)s)")
    p.add_argument("--refine-between", action=argparse.BooleanOptionalAction, default=d.refine_between,
                   help="re-fit the interpolated boxes with O-Net (MTCNN's last stage) and detect in full where it "
                        "loses the face (default on)")
    p.add_argument("--min-score", type=float, default=d.min_score,
                   help="ignore boxes with a lower detector probability (default %(default)s)")
    p.add_argument("--min-track-len", type=int, default=d.min_track_len,
                   help="drop tracks with fewer sampled frames (default %(default)s)")
    p.add_argument("--min-track-score", type=float, default=d.min_track_score,
                   help="drop tracks with a lower mean detector probability (default %(default)s)")
    p.add_argument("--reuse-original-boxes", action=argparse.BooleanOptionalAction, default=True,
                   help="crop a fake with the boxes of its original (DFDC metadata.json, labels.csv) when that is "
                        "in SOURCE and has the same frame count and size (default on)")
    p.add_argument("--shard", type=_parse_shard, default=(0, 1), metavar="K/N",
                   help="process shard K of N (0-based); per-shard index files, merged when all are done")
    p.add_argument("--merge", action="store_true", help="only merge finished shards into index.csv")
    p.add_argument("--limit", type=int, default=None, help="process at most this many videos (trying settings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: list[str] | None = None) -> int:
    """Run `deepfake-extract`; returns the exit status: 0 when the run finished (failed videos are listed in
    failures.csv), 2 for a usage error (bad option, unknown layout, settings differing from OUT_DIR's).
    """
    parser = _parser()
    opts = parser.parse_args(args)
    if opts.merge:
        if len(opts.paths) not in (1, 2):
            parser.error("--merge takes OUT_DIR (or SOURCE OUT_DIR)")
        out = Path(opts.paths[-1])
        try:
            rows, failures, shards = _merge(out)
        except FileNotFoundError as err:
            print(f"deepfake-extract: {err}", file=sys.stderr)
            return 2
        print(f"merged {shards} shards: {out / 'index.csv'} ({rows} crops), {failures} failures")
        return 0
    if len(opts.paths) != 2:
        parser.error("give SOURCE and OUT_DIR")
    source, out = Path(opts.paths[0]), Path(opts.paths[1])
    try:
        from deepfake.scaling import resolve_crop_size

        size = resolve_crop_size(opts.size, opts.size_from)
        if opts.size_from and opts.size.strip().lower() != "auto":
            print(f"deepfake-extract: note: --size {size} given, --size-from {opts.size_from} ignored", file=sys.stderr)
        config = ExtractConfig(stride=opts.stride, margin=opts.margin, size=size, device=opts.device,
                               detect_size=opts.detect_size, min_face_size=opts.min_face_size, factor=opts.factor,
                               min_score=opts.min_score, detect_every=opts.detect_every,
                               refine_between=opts.refine_between, min_track_len=opts.min_track_len,
                               min_track_score=opts.min_track_score,
                               batch_size=opts.batch_size, quality=opts.quality)
    except ValueError as err:
        print(f"deepfake-extract: {err}", file=sys.stderr)
        return 2
    from data_prep.layouts import LayoutError, find_videos

    try:
        found = find_videos(source, opts.layout)
    except LayoutError as err:
        print(f"deepfake-extract: {err}", file=sys.stderr)
        return 2
    for note in found.notes:
        print(f"deepfake-extract: note: {note}", file=sys.stderr)
    k, n = opts.shard
    records = [r for r in found.records if shard_of(r.original, n) == k]
    if opts.limit is not None:
        records = records[:max(0, opts.limit)]

    out.mkdir(parents=True, exist_ok=True)
    settings = {name: getattr(config, name) for name in _OUTPUT_SETTINGS}
    settings["thresholds"] = list(settings["thresholds"])
    settings_path = out / "extract_config.json"
    if settings_path.is_file():
        try:
            previous = json.loads(settings_path.read_text())
        except ValueError:
            previous = None
        # A setting the folder's file does not name is newer than the folder's crops: not a change.
        changed = {key: (previous[key], value) for key, value in settings.items()
                   if isinstance(previous, dict) and key in previous and previous[key] != value}
        if changed:
            what = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changed.items())
            print(f"deepfake-extract: {out} holds crops made with other settings ({what}); use another OUT_DIR or "
                  "the same settings", file=sys.stderr)
            return 2
    else:
        _atomic_write(settings_path, json.dumps(settings, indent=2) + "\n")

    todo = [r for r in records if not _is_done(out, r.video)]
    workers = _default_workers() if opts.workers is None else opts.workers
    try:
        extractor = FaceExtractor(config, workers=min(workers, len(todo)) if todo else 0)
    except ValueError as err:
        print(f"deepfake-extract: {err}", file=sys.stderr)
        return 2

    # DFDC fakes whose original is in this shard reuse its boxes: originals run first.
    by_id = {r.video: r for r in records}
    todo_ids = {r.video for r in todo}
    reuse = opts.reuse_original_boxes

    def source_of(r) -> str | None:
        return r.original if (reuse and r.label == 1 and r.original != r.video and r.original in by_id
                              and by_id[r.original].label == 0) else None

    todo.sort(key=lambda r: source_of(r) is not None)
    keys = {r.video: i for i, r in enumerate(todo)}
    jobs = [_Job(i, os.fspath(r.path), keys.get(source_of(r)) if source_of(r) in todo_ids else None)
            for i, r in enumerate(todo)]
    dependents: dict[str, int] = {}
    for r in todo:
        if source_of(r):
            dependents[source_of(r)] = dependents.get(source_of(r), 0) + 1
    cache: dict[str, _ReuseBoxes | None] = {}

    def keep_boxes(job: _Job, faces: VideoFaces) -> None:
        vid = todo[job.key].video
        if dependents.get(vid) and faces.tracks:  # an original without a face: its fakes detect for themselves
            cache[vid] = _ReuseBoxes.from_faces(faces, config.stride)
            cache[vid].source = vid  # the id, not the path, goes to the fake's status file

    def reuse_lookup(job: _Job) -> _ReuseBoxes | None:
        orig = source_of(todo[job.key])
        if orig is None:
            return None
        if orig not in cache:
            cache[orig] = _load_boxes(out, orig, config.stride)
        boxes = cache[orig]
        dependents[orig] -= 1
        if dependents[orig] <= 0:
            cache.pop(orig, None)
        return boxes

    from tqdm import tqdm

    started = time.monotonic()
    n_new_tracks = n_new_fail = 0
    bar = tqdm(total=len(todo), unit="video", disable=opts.no_progress or not todo, dynamic_ncols=True,
               desc="extract")
    try:
        for job, result in extractor._run(jobs, jpeg=True, keep_boxes=keep_boxes, reuse_lookup=reuse_lookup):
            tracks, _, reason = _write_video(out, todo[job.key], result)
            if isinstance(result, VideoFaces) and result.damaged_frames:
                bar.write(f"deepfake-extract: warning: {todo[job.key].video}: {damage_note(result)}", file=sys.stderr)
            n_new_tracks += tracks
            n_new_fail += reason is not None
            bar.update(1)
            bar.set_postfix(tracks=n_new_tracks, failures=n_new_fail, refresh=False)
    except KeyboardInterrupt:
        bar.close()
        extractor.close()
        print("deepfake-extract: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    bar.close()
    extractor.close()

    index_text, failures_text, n_videos, n_tracks, n_failures = _assemble(out, records)
    if n == 1:
        _atomic_write(out / "index.csv", index_text)
        _atomic_write(out / "failures.csv", failures_text)
        written = f"{out / 'index.csv'}"
    else:
        _atomic_write(out / _shard_name("failures", k, n), failures_text)
        _atomic_write(out / _shard_name("index", k, n), index_text)
        written = f"{out / _shard_name('index', k, n)}"
        try:
            _merge(out, n)
            written += f" (all {n} shards done: merged into {out / 'index.csv'})"
        except FileNotFoundError:
            pass
    elapsed = time.monotonic() - started
    print(f"{n_videos} videos, {n_tracks} face tracks, {n_failures} failures")
    print(f"extracted {len(todo)} now ({len(records) - len(todo)} already done) in {elapsed:.1f} s on "
          f"{extractor.device}; index: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
