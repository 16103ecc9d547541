"""One video's face extraction: decode -> detect -> track -> crop, as a generator that asks for its detections.

A video job (`video_job`) yields detection requests (`DetectRequest`) and receives their results, so the same
code runs with the detector in this process (`run_inline`) or in another one (`data_prep.workers`, where on a GPU
the main process batches the requests of many workers). Per video:

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

A video of the same frames as one already extracted (a DFDC fake and its original) can be cropped with that
one's boxes instead (`ReuseBoxes`): no detection at all, and crops aligned with the original's.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import numpy as np

from data_prep.detection import DetectRequest, FaceDetectorProtocol
from data_prep.faces import ExtractConfig, FaceTrack, VideoFaces, encode_jpeg
from data_prep.track import Tracker, greedy_match, square_crop
from data_prep.video import DecodedFrame, iter_decoded, probe

__all__ = ["Progress", "ReuseBoxes", "video_job", "run_inline"]

Progress = Callable[[int, int], None]  # (frames of the video done, frames in it)
# boxes (N, 4), scores (N,), detected (N,) bool, landmarks (N, 5, 2)
_Detections = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class ReuseBoxes:
    """The tracks of an extracted video, for cropping another video of the same frames (a DFDC fake)."""

    source: str
    n_frames: int
    width: int
    height: int
    stride: int
    # (track, frames, boxes, scores, landmarks (N, 5, 2) or None when unknown)
    tracks: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]

    @classmethod
    def from_faces(cls, faces: VideoFaces, stride: int) -> ReuseBoxes:
        return cls(faces.video, faces.n_frames, faces.width, faces.height, stride,
                   [(t.track, t.frames, t.boxes, t.scores, t.landmarks) for t in faces.tracks])

    def by_frame(self) -> dict[int, list[tuple[int, np.ndarray, float, np.ndarray]]]:
        out: dict[int, list[tuple[int, np.ndarray, float, np.ndarray]]] = {}
        for track, frames, boxes, scores, points in self.tracks:
            if points is None:
                points = np.full((len(frames), 5, 2), np.nan, np.float32)
            for f, b, s, p in zip(frames, boxes, scores, points):
                out.setdefault(int(f), []).append((track, b, float(s), p))
        return out


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
    for index, frame in iter_decoded(path, config.stride, threads=config.decode_threads, stats=stats,
                                     max_pixels=config.max_pixels):
        idxs.append(index)
        frames.append(frame)
        if small_size is not None:
            smalls.append(frame.resized(*small_size))
        if len(idxs) == chunk_len:
            yield idxs, frames, (np.stack(smalls) if smalls else None)
            idxs, frames, smalls = [], [], []
    if idxs:
        yield idxs, frames, (np.stack(smalls) if smalls else None)


def _detect_chunk(small: np.ndarray, config: ExtractConfig,
                  carry: tuple[np.ndarray, _Detections] | None = None
                  ) -> Generator[DetectRequest, list, list[_Detections]]:
    """Boxes for every frame of a chunk, detecting in full only where the frames around can't be trusted.

    Args:
        small: (N, h, w, 3) detection copies of the chunk's sampled frames.
        config: the settings.
        carry: the detection copy (1, h, w, 3) and the detections of the frame before the chunk (the last of the
            previous chunk, which is always detected in full): the chunk's first frames interpolate from it instead
            of being detected again.

    Returns:
        Per frame of the chunk: boxes (N, 4) in detection-copy pixels, scores (N,), whether each box was
        detected or re-fitted by O-Net (True) rather than interpolated, and the landmarks (N, 5, 2) (interpolated
        with their box).
    """
    offset = 0
    if carry is not None and carry[0].shape[1:] == small.shape[1:]:
        small, offset = np.concatenate([carry[0], small]), 1
    n = len(small)
    dets: list[_Detections | None] = [None] * n
    if offset:
        dets[0] = carry[1]

    def run(indices: list[int]) -> Generator[DetectRequest, list, None]:
        if not indices:
            return
        results = yield DetectRequest(small[indices])
        for i, (boxes, scores, points) in zip(indices, results):
            keep = scores >= config.min_score
            dets[i] = (boxes[keep], scores[keep], np.ones(int(keep.sum()), bool), points[keep])

    keys = sorted(set(range(0, n, config.detect_every)) | {n - 1})
    yield from run(keys[offset:])
    detect: list[int] = []
    between: list[int] = []
    for a, b in zip(keys, keys[1:]):
        if b - a < 2:
            continue
        (ba, sa, _, pa), (bb, sb, _, pb) = dets[a], dets[b]
        pairs = greedy_match(ba, bb, config.interp_iou)
        if len(pairs) != len(ba) or len(pairs) != len(bb):
            detect.extend(range(a + 1, b))
            continue
        for i in range(a + 1, b):
            t = (i - a) / (b - a)
            boxes = np.array([ba[p] * (1 - t) + bb[q] * t for p, q in pairs], np.float32).reshape(-1, 4)
            scores = np.array([min(sa[p], sb[q]) for p, q in pairs], np.float32)
            points = np.array([pa[p] * (1 - t) + pb[q] * t for p, q in pairs], np.float32).reshape(-1, 5, 2)
            dets[i] = (boxes, scores, np.zeros(len(pairs), bool), points)
            if len(pairs):
                between.append(i)
    if config.refine_between and between:
        # O-Net re-fits each interpolated box where the face is in this frame; a frame where it no longer sees a
        # face there (the face turned, left or moved unlike the interpolation) is detected in full instead.
        results = yield DetectRequest(small[between], [dets[i][0] for i in between])
        for i, (boxes, scores, points) in zip(between, results):
            if (scores >= config.min_score).all():
                dets[i] = (boxes, scores, np.ones(len(boxes), bool), points)
            else:
                detect.append(i)
    yield from run(sorted(detect))
    return dets[offset:]  # type: ignore[return-value]


def video_job(path: str, config: ExtractConfig, reuse: ReuseBoxes | None = None, jpeg: bool = False,
               overlap: bool = True, progress: Progress | None = None) -> Generator[DetectRequest, list, VideoFaces]:
    """Extract the faces of one video; yields detection requests, receives their results, returns VideoFaces.

    `progress`, when given, is called after each chunk of frames with (frames of the video done, frames in it).

    With `overlap` the video decodes on a background thread while its frames are detected and cropped; without,
    all in this thread (what a worker process does when the other workers already keep every core busy: a
    decoding thread per worker then only adds switching).
    """
    info = probe(path, config.max_pixels)
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
    reused: dict[int, tuple[list, list, list, list]] = {}  # track -> frames, boxes, scores, landmarks (reusing)
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
                    boxes, scores, detected, points = per_frame[k]
                    # Detection-copy pixels -> video pixels (per frame: a stream may change size midway).
                    sx, sy = frame.shape[1] / small.shape[2], frame.shape[0] / small.shape[1]
                    boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
                    ids = tracker.update(index, boxes, scores, detected, points * np.array([sx, sy], np.float32))
                else:
                    entries = reuse_map.get(index, [])
                    ids = [e[0] for e in entries]
                    boxes = [e[1] for e in entries]
                    for tid, box, score, point in entries:
                        lists = reused.setdefault(tid, ([], [], [], []))
                        lists[0].append(index), lists[1].append(box), lists[2].append(score), lists[3].append(point)
                for tid, box in zip(ids, boxes):
                    crop = square_crop(frame, box, config.margin, config.size)
                    crops.setdefault(tid, []).append(encode_jpeg(crop, config.quality) if jpeg else crop)
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
        kept = [(t.id, t.frames, t.boxes, t.scores, t.landmarks) for t in good]
    tracks = []
    keep = {tid for tid, *_ in kept}
    for tid in [t for t in crops if t not in keep]:  # tracks dropped (too short, too unsure): free their crops now
        del crops[tid]
    for number, (tid, frames_, boxes_, scores_, points_) in enumerate(kept):
        items = crops.pop(tid, [])  # each list is freed once its track holds the stacked copy
        points_ = np.asarray(points_, np.float32).reshape(-1, 5, 2)
        tracks.append(FaceTrack(
            track=tid if reuse_map is not None else number, frames=np.asarray(frames_, np.int64),
            boxes=np.asarray(boxes_, np.float32).reshape(-1, 4), scores=np.asarray(scores_, np.float32),
            crops=np.zeros((0, config.size, config.size, 3), np.uint8) if jpeg else np.stack(items),
            jpegs=items if jpeg else None, landmarks=None if np.isnan(points_).all() else points_))
    return VideoFaces(str(path), n_frames, info.fps, info.width, info.height, tracks,
                      boxes_from=reuse.source if reuse_map is not None else None,
                      damaged_frames=int(stats.get("damaged_frames", 0)))


def run_inline(job: Generator, detector: FaceDetectorProtocol) -> VideoFaces:
    """Drive a video job in this process."""
    try:
        request = next(job)
        while True:
            request = job.send(detector.run(request))
    except StopIteration as stop:
        return stop.value
