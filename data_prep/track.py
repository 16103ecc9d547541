"""Face tracks from per-frame detections: IoU linking, box interpolation between detected frames, square crops.

Pure NumPy/OpenCV, no torch: decode workers import this without paying for torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["Tracker", "iou_matrix", "greedy_match", "square_crop", "crop_box", "points_in_crop", "face_box_in_crop",
           "RESIZE_RULE", "resize_crop"]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in `a` (N, 4) with every box in `b` (M, 4), boxes as x1, y1, x2, y2.

    Returns:
        (N, M) float array.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def greedy_match(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Pair boxes of `a` with boxes of `b` one to one, highest IoU first, keeping pairs with IoU >= `min_iou`.

    Greedy is enough here: faces in one frame rarely overlap, so the best pair is almost always the right one.
    """
    if len(a) == 0 or len(b) == 0:
        return []
    iou = iou_matrix(a, b)
    pairs = []
    for flat in np.argsort(-iou, axis=None):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if all(i != p and j != q for p, q in pairs):
            pairs.append((i, j))
    return pairs


def crop_box(box: np.ndarray, margin: float) -> tuple[int, int, int]:
    """The square region cut for a face box: centred on the box, side max(w, h) * (1 + 2 * margin).

    Returns:
        (x0, y0, side) in integer pixels; the square may reach past the frame.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    side_i = max(int(round(side)), 1)
    x0 = int(round((x1 + x2) / 2.0 - side_i / 2.0))
    y0 = int(round((y1 + y2) / 2.0 - side_i / 2.0))
    return x0, y0, side_i


def face_box_in_crop(size: int, margin: float) -> np.ndarray:
    """The face box (x1, y1, x2, y2), float64, inside a square crop of side `size` that `square_crop` cut with
    `margin` per side: the box is centred with `margin` of its side on every side (a square box; `crop_box` rounds
    the cut to whole pixels)."""
    lo = margin / (1 + 2 * margin) * size
    hi = (1 + margin) / (1 + 2 * margin) * size
    return np.array([lo, lo, hi, hi])


def points_in_crop(points: np.ndarray, boxes: np.ndarray, margin: float, size: int) -> np.ndarray:
    """Points in video pixels -> pixels of the crops `square_crop` cuts around the boxes (e.g. the landmarks).

    Args:
        points: (N, K, 2) x, y per crop, in video pixels.
        boxes: (N, 4) the face box each crop was cut around.
        margin: the crops' margin.
        size: the crops' side in pixels (a crop resized later scales the result by the same factor).

    Returns:
        (N, K, 2) float32 x, y in crop pixels (outside [0, size) when a point lies outside the crop).
    """
    points = np.asarray(points, np.float64).reshape(len(boxes), -1, 2)
    out = np.empty_like(points)
    for i, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        x0, y0, side = crop_box(box, margin)
        out[i] = (points[i] - (x0, y0)) * (size / side)
    return out.astype(np.float32)


def square_crop(frame, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """Cut the square around a face box (see `crop_box`) and resize it to `size` x `size`.

    Parts of the square outside the frame are black, so the face keeps its place and scale in the crop.

    Args:
        frame: (H, W, 3) uint8 image, or a `data_prep.video.DecodedFrame` (only the region needed is converted).
        box: x1, y1, x2, y2 in frame pixels.
        margin: share of the box's larger side added on each side.
        size: output side in pixels.

    Returns:
        (size, size, 3) uint8 crop.
    """
    h, w = frame.shape[:2]
    x0, y0, side = crop_box(box, margin)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 <= sx0 or sy1 <= sy0:  # the box lies wholly outside the frame: nothing to show
        return np.zeros((size, size, 3), np.uint8)
    region = frame[sy0:sy1, sx0:sx1] if isinstance(frame, np.ndarray) else frame.region(sx0, sy0, sx1, sy1)
    if (sx0, sy0, sx1, sy1) != (x0, y0, x0 + side, y0 + side):
        region = cv2.copyMakeBorder(region, sy0 - y0, y0 + side - sy1, sx0 - x0, x0 + side - sx1,
                                    cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return resize_crop(region, size)


# The one rule by which a face crop changes size, wherever it does: cut from a frame (`square_crop`), read by the
# training loader (`data_prep.index.read_crop`) and fed to a detector (`deepfake.inference.Detector.prepare`).
# A detector records it (`deepfake.contract`); a name a detector records that is not this one is refused.
RESIZE_RULE = "area-down-linear-up"


def resize_crop(img: np.ndarray, size: int) -> np.ndarray:
    """An image resized to `size` x `size` by `RESIZE_RULE`: area averaging to shrink, bilinear to enlarge; an
    image already that size is returned as it is."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


@dataclass
class _Track:
    id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)

    def predict(self, frame: int) -> np.ndarray:
        """Where the face should be at `frame`, assuming it keeps the velocity of its last two boxes."""
        last = self.boxes[-1]
        if len(self.boxes) < 2 or self.frames[-1] == self.frames[-2]:
            return last
        velocity = (last - self.boxes[-2]) / (self.frames[-1] - self.frames[-2])
        return last + velocity * (frame - self.frames[-1])


class Tracker:
    """Links per-frame face boxes into tracks by IoU with each track's predicted box.

    Args:
        min_iou: a box joins a track when its IoU with the track's predicted box is at least this.
        max_gap: a track that has not been seen for more than this many sampled frames is closed (a face
            lost for a moment keeps its track; a face gone for longer starts a new one).
    """

    def __init__(self, min_iou: float = 0.3, max_gap: int = 2) -> None:
        self.min_iou = min_iou
        self.max_gap = max_gap
        self.tracks: list[_Track] = []
        self._step = 0
        self._last_step: dict[int, int] = {}

    def update(self, frame: int, boxes: np.ndarray, scores: np.ndarray,
               detected: np.ndarray | None = None, landmarks: np.ndarray | None = None) -> list[int]:
        """Add the boxes of one sampled frame (frames must come in increasing order).

        Args:
            frame: frame index in the video.
            boxes: (N, 4) boxes in video pixels.
            scores: (N,) detector probabilities.
            detected: (N,) bool, False for boxes interpolated rather than detected.
            landmarks: (N, 5, 2) the faces' landmarks in video pixels (None: unknown, kept as NaN).

        Returns:
            The track id of each box.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        detected = np.ones(len(boxes), bool) if detected is None else np.asarray(detected, bool)
        landmarks = (np.full((len(boxes), 5, 2), np.nan, np.float32) if landmarks is None
                     else np.asarray(landmarks, np.float32).reshape(len(boxes), 5, 2))
        active = [t for t in self.tracks if self._step - self._last_step[t.id] <= self.max_gap]
        predicted = np.array([t.predict(frame) for t in active]).reshape(-1, 4)
        ids = [-1] * len(boxes)
        for ti, bi in greedy_match(predicted, boxes, self.min_iou):
            ids[bi] = active[ti].id
        for bi in range(len(boxes)):
            if ids[bi] < 0:
                track = _Track(len(self.tracks))
                self.tracks.append(track)
                ids[bi] = track.id
            track = self.tracks[ids[bi]]
            track.frames.append(int(frame))
            track.boxes.append(boxes[bi].copy())
            track.scores.append(float(scores[bi]))
            track.detected.append(bool(detected[bi]))
            track.landmarks.append(landmarks[bi].copy())
            self._last_step[track.id] = self._step
        self._step += 1
        return ids
