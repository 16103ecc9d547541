"""Non-maximum suppression in NumPy: torchvision's `nms` and `batched_nms`, the same kept boxes in the same order.

MTCNN's cascade (`data_prep.mtcnn`) suppresses with these on every backend, so the boxes do not depend on whether
its networks ran on PyTorch or ONNX Runtime; `tests/test_startup.py` checks them against torchvision's to the index.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nms", "batched_nms"]

# torchvision switches from one suppression over shifted boxes to one per frame above this many box coordinates on
# the CPU; both are kept so that the kept boxes and their order are torchvision's.
_VANILLA_ABOVE = 4000


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """torchvision's `nms`: indices (int64) of the kept boxes, best score first.

    The same steps as torchvision's CPU kernel, in the boxes' precision (float32): boxes in order of decreasing
    score (ties in input order), each kept box suppressing the later ones whose IoU with it exceeds the threshold,
    the IoU computed as inter / (area_i + area_j - inter) with areas (x2 - x1) * (y2 - y1) and compared in double
    precision.
    """
    b = np.asarray(boxes)
    s = np.asarray(scores)
    if not len(b):
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-s, kind="stable")
    suppressed = np.zeros(len(b), dtype=bool)
    keep: list[int] = []
    zero = b.dtype.type(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for pos, i in enumerate(order):
            if suppressed[i]:
                continue
            keep.append(int(i))
            rest = order[pos + 1:]
            rest = rest[~suppressed[rest]]
            if not len(rest):
                break
            w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
            h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
            inter = w * h
            iou = inter / (areas[i] + areas[rest] - inter)
            suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """`torchvision.ops.batched_nms`: suppression within each index value (frame), kept indices best first.

    By torchvision's own two strategies (boxes shifted apart by index up to 4000 coordinates, one suppression per
    index above), so the result is torchvision's to the index.
    """
    boxes, scores, idxs = np.asarray(boxes), np.asarray(scores), np.asarray(idxs)
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    if boxes.size > _VANILLA_ABOVE:
        keep_mask = np.zeros(len(scores), dtype=bool)
        for index in np.unique(idxs):
            mine = np.flatnonzero(idxs == index)
            keep_mask[mine[nms(boxes[mine], scores[mine], iou_threshold)]] = True
        kept = np.flatnonzero(keep_mask)
        return kept[np.argsort(-scores[kept], kind="stable")]
    offsets = idxs.astype(boxes.dtype) * (boxes.max() + boxes.dtype.type(1))
    return nms(boxes + offsets[:, None], scores, iou_threshold)
