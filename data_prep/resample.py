"""MTCNN's candidate resampling on the CPU, with NumPy and OpenCV only (no torch).

`data_prep.mtcnn` resamples its candidate boxes with these functions on the CPU. They live apart so that a process
without torch can prepare O-Net's inputs: with a GPU, extraction workers decode and track while the main process
detects for all of them, and for the frames between full detections a worker sends the 48x48 inputs of O-Net
(7 KB a face) instead of the whole 640x360 frame (691 KB), see `data_prep.workers`.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ONET_SIDE", "square", "resample", "onet_inputs"]

ONET_SIDE = 48  # O-Net's input side


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box (x1, y1, x2, y2) grown to a square on its longer side about the same centre, float32 (N, 4)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    side = wh.max(axis=1, keepdims=True)
    top_left = boxes[:, :2] + wh * np.float32(0.5) - side * np.float32(0.5)
    return np.concatenate([top_left, top_left + side], axis=1)


def resample(frames: np.ndarray, boxes: np.ndarray, owner: np.ndarray, side: int) -> np.ndarray:
    """Every box cut from its frame and resized to `side` x `side` by area averaging, zeros outside the frame.

    Args:
        frames: (B, H, W, 3) uint8.
        boxes: (N, 4) MTCNN boxes, 1-based inclusive corners (pixel edges x1 - 1 .. x2), rounded to whole pixels.
        owner: (N,) index into `frames` of each box.
        side: output side.

    Returns:
        (N, side, side, 3) uint8.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    corners = np.round(np.concatenate([boxes[:, :2] - 1, boxes[:, 2:]], axis=1)).astype(np.int64)
    h, w = frames.shape[1:3]
    out = np.empty((len(corners), side, side, 3), np.uint8)
    for k, ((x0, y0, x1, y1), i) in enumerate(zip(corners.tolist(), np.asarray(owner).tolist())):
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
            region = frames[i, y0:y1, x0:x1]
        else:
            region = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if cx1 > cx0 and cy1 > cy0:
                region[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = frames[i, cy0:cy1, cx0:cx1]
        out[k] = cv2.resize(region, (side, side), interpolation=cv2.INTER_AREA)
    return out


def onet_inputs(frames: np.ndarray, boxes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What `MTCNNCascade.refine` feeds O-Net, made on the CPU: the boxes squared and their 48x48 resamplings.

    Args:
        frames: (B, H, W, 3) uint8 RGB.
        boxes: per frame, (N_i, 4) boxes x1, y1, x2, y2 in the frame's pixels.

    Returns:
        The squared boxes (sum N_i, 4) float32 and their resamplings (sum N_i, 48, 48, 3) uint8, frame by frame in
        order (`MTCNNCascade.refine_inputs` takes them with the counts N_i).
    """
    if len(boxes) != len(frames):
        raise ValueError(f"{len(boxes)} box lists for {len(frames)} frames")
    given = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
    flat = np.concatenate(given) if given else np.zeros((0, 4), np.float32)
    owner = np.repeat(np.arange(len(given)), [len(b) for b in given])
    squares = square(flat)
    return squares, resample(frames, squares, owner, ONET_SIDE)
