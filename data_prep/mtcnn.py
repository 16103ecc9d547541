"""MTCNN face detection, batched end to end, with facenet-pytorch's trained networks.

facenet-pytorch's `MTCNN.detect` runs the three-stage cascade of Zhang et al. (2016) (P-Net over an image
pyramid, then R-Net on 24x24 and O-Net on 48x48 resamplings of the candidate boxes), but it cuts and resizes
every candidate box with its own small tensor operations in a Python loop: a large share of MTCNN's time on the
CPU, and on a GPU a cost per frame that batching cannot lower. Here the same networks and the same stage logic run
with the candidates resampled by OpenCV on the CPU (each pyramid level resized from the one before) and by one
`torchvision.ops.roi_align` call per stage for a whole batch on a GPU.

Two deliberate differences from facenet-pytorch, both towards the original MTCNN:
- A candidate box that reaches past the frame is resampled with zeros outside it (the original's padding);
  facenet-pytorch squeezes the part inside the frame into the whole 24x24 / 48x48 input instead.
- Box corners are rounded, not truncated, for the resampling.
On the same frames the boxes are as close to the ground truth as facenet-pytorch's (`tests/test_mtcnn.py`).

The cascade's rule (thresholds, suppressions, box regression, squaring, landmarks) is NumPy, in this module only; the
networks have two backends: PyTorch (`data_prep.mtcnn_nets.TorchNets`: the CPU, and a GPU with its batched
resampling) and ONNX Runtime (`data_prep.mtcnn_onnx.OnnxNets`: the CPU, the networks exported once from the same
weight files, without importing torch). `MTCNNCascade(..., runtime="onnx")` picks the second.

`MTCNNCascade.refine` runs the last stage alone on boxes the caller already has (e.g. interpolated from the
detected frames on either side): O-Net re-fits each box and says whether a face is still there, for a fraction of
the cost of a detection. `MTCNNCascade.refine_inputs` does the same from O-Net's inputs made elsewhere
(`data_prep.resample.onet_inputs`, NumPy and OpenCV only): extraction workers without torch prepare them so as
to send 48x48 crops, not whole frames, to the process that drives the GPU. `refine` cuts those inputs with OpenCV
on every device, so that one process and such workers give the same boxes.
"""

from __future__ import annotations


import numpy as np

from data_prep.faces import Detections
from data_prep.nms import batched_nms
from data_prep.mtcnn_backend import Nets, cpu_stage_inputs, normalise, opencv_pyramid, weights_folder  # noqa: F401
from data_prep.resample import ONET_SIDE, onet_inputs, square

__all__ = ["MTCNNCascade", "Nets", "RUNTIMES", "opencv_pyramid", "normalise", "cpu_stage_inputs", "load_backend",
           "weights_folder"]

RUNTIMES = ("torch", "onnx")
_PNET_STRIDE, _PNET_CELL = 2, 12
_F = np.float32


def _as_batch(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (B, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    return np.ascontiguousarray(frames)


def load_backend(runtime: str, device: str = "cpu", threads: int = 0) -> Nets:
    """The networks' backend: ``torch`` (CPU or GPU) or ``onnx`` (ONNX Runtime, CPU, `threads` intra-op threads;
    0: one per core)."""
    if runtime == "onnx":
        if not str(device).startswith("cpu"):
            raise ValueError(f"MTCNN on ONNX Runtime runs on the CPU, not {device!r}; use runtime='torch'")
        from data_prep.mtcnn_onnx import OnnxNets

        return OnnxNets(threads=threads)
    if runtime != "torch":
        raise ValueError(f"MTCNN runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    from data_prep.mtcnn_nets import TorchNets

    return TorchNets(device)


class MTCNNCascade:
    """The MTCNN cascade over batches of equally sized frames.

    Args:
        min_face_size: smallest face looked for, in pixels of the frames given.
        thresholds: score thresholds of P-Net, R-Net and O-Net.
        factor: scale step of the image pyramid.
        device: where the networks run (``cpu``, ``cuda``...; ONNX Runtime: the CPU only).
        runtime: ``torch`` or ``onnx`` (`load_backend`).
        threads: ONNX Runtime's intra-op threads (0: one per core); torch's are the caller's.
    """

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, device: str = "cpu", runtime: str = "torch", threads: int = 0) -> None:
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.runtime = runtime
        self.nets: Nets = load_backend(runtime, str(device), threads)
        self.device = self.nets.device

    @property
    def opencv_resampling(self) -> bool:
        """Whether the pyramid and candidates are resampled by OpenCV (the CPU's way) rather than in batches on the
        device (a GPU's; settable on the torch backend, so tests run both on the CPU)."""
        return self.nets.opencv_resampling

    @opencv_resampling.setter
    def opencv_resampling(self, value: bool) -> None:
        self.nets.opencv_resampling = bool(value)

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales for a frame: the first maps `min_face_size` to P-Net's 12-pixel window."""
        scale = 12.0 / self.min_face_size
        side = min(height, width) * scale
        out = []
        while side >= 12:
            out.append(scale)
            scale *= self.factor
            side *= self.factor
        return out

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """Faces in a batch of frames.

        Args:
            frames: (B, H, W, 3) uint8 RGB, or (H, W, 3) for one frame.

        Returns:
            Per frame: boxes (N, 4) float32 x1, y1, x2, y2 in the frame's pixels, probabilities (N,) float32 and
            O-Net's five landmarks (N, 5, 2) float32 x, y in the frame's pixels (`Detections`), most probable first.
        """
        array = _as_batch(frames)
        if not len(array):
            return []
        batch = self.nets.load(array)
        boxes, scores, owner = self._propose(batch, array.shape[1:3])
        if len(boxes):
            boxes, scores, owner, _ = self._stage(batch, boxes, owner, "rnet", 24, self.thresholds[1])
        points = np.zeros((0, 5, 2), _F)
        if len(boxes):
            boxes, scores, owner, points = self._stage(batch, boxes, owner, "onet", ONET_SIDE, self.thresholds[2],
                                                       last=True)
        return _per_frame(boxes, scores, owner, len(array), points, by_score=True)

    def refine(self, frames: np.ndarray, boxes: list[np.ndarray]) -> list[Detections]:
        """O-Net alone on boxes already found: each box squared, resampled at 48x48 and re-fitted.

        Args:
            frames: (B, H, W, 3) uint8 RGB.
            boxes: per frame, (N_i, 4) boxes x1, y1, x2, y2 in the frame's pixels (e.g. MTCNN boxes moved to where
                the face should be in this frame).

        Returns:
            Per frame, one entry per given box, in order: the re-fitted boxes (N_i, 4) float32, O-Net's face
            probabilities (N_i,) float32 and its landmarks (N_i, 5, 2) float32 (`Detections`). A low probability means
            there is no face where the box is.
        """
        frames = _as_batch(frames)
        if len(boxes) != len(frames):
            raise ValueError(f"{len(boxes)} box lists for {len(frames)} frames")
        given = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
        # O-Net's inputs are cut with OpenCV on every device: a few boxes a frame cost little on the CPU, and this
        # way one process gives what extraction workers give when they prepare them (`refine_inputs`).
        return self.refine_inputs(*onet_inputs(frames, given), [len(b) for b in given])

    def refine_inputs(self, squares: np.ndarray, crops: np.ndarray,
                      counts: list[int]) -> list[Detections]:
        """`refine` from O-Net's inputs made elsewhere (`data_prep.resample.onet_inputs`, e.g. in a worker process).

        Args:
            squares: (N, 4) float32, the boxes squared.
            crops: (N, 48, 48, 3) uint8, their resamplings.
            counts: boxes per frame (summing to N).

        Returns:
            As `refine`: per frame, the re-fitted boxes, O-Net's face probabilities and landmarks.
        """
        if sum(counts) != len(squares) or len(squares) != len(crops):
            raise ValueError(f"{len(squares)} boxes and {len(crops)} crops for counts summing to {sum(counts)}")
        owner = np.repeat(np.arange(len(counts)), counts)
        boxes = np.asarray(squares, np.float32).reshape(-1, 4)
        if not len(boxes):
            return _per_frame(boxes, np.zeros(0, _F), owner, len(counts), np.zeros((0, 5, 2), _F))
        reg, prob, points = self.nets.onet(np.ascontiguousarray(crops))
        return _per_frame(_regress(boxes, reg), prob, owner, len(counts), _landmarks(boxes, points))

    # ------------------------------------------------------------------------------------------------------------
    def _propose(self, batch, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 1: P-Net over the pyramid; squared candidate boxes (x1, y1, x2, y2), scores, frame of each."""
        h, w = shape
        scales = self.scales(h, w)
        sizes = [(int(h * scale + 1), int(w * scale + 1)) for scale in scales]
        all_boxes, all_scores, all_owner, all_reg = [], [], [], []
        for scale, (reg, prob) in zip(scales, self.nets.pnet(batch, sizes)):
            hit = prob >= _F(self.thresholds[0])  # prob: (B, h', w') face probability of each 12x12 window
            if not hit.any():
                continue
            owner, yy, xx = np.nonzero(hit)
            score = prob[owner, yy, xx]
            # Window corners in frame pixels, with MTCNN's 1-based, inclusive convention.
            x1 = np.floor((_F(_PNET_STRIDE) * xx.astype(_F) + _F(1)) / _F(scale))
            y1 = np.floor((_F(_PNET_STRIDE) * yy.astype(_F) + _F(1)) / _F(scale))
            x2 = np.floor((_F(_PNET_STRIDE) * xx.astype(_F) + _F(_PNET_CELL)) / _F(scale))
            y2 = np.floor((_F(_PNET_STRIDE) * yy.astype(_F) + _F(_PNET_CELL)) / _F(scale))
            box = np.stack([x1, y1, x2, y2], axis=1)
            keep = batched_nms(box, score, owner, 0.5)  # within each scale and frame
            all_boxes.append(box[keep]), all_scores.append(score[keep]), all_owner.append(owner[keep])
            all_reg.append(reg.transpose(0, 2, 3, 1)[owner, yy, xx][keep])  # (N, 4) offsets in window sizes
        if not all_boxes:
            return np.zeros((0, 4), _F), np.zeros(0, _F), np.zeros(0, np.int64)
        boxes, scores, owner, reg = (np.concatenate(v) for v in (all_boxes, all_scores, all_owner, all_reg))
        keep = batched_nms(boxes, scores, owner, 0.7)  # across scales, within each frame
        boxes, scores, owner, reg = boxes[keep], scores[keep], owner[keep], reg[keep]
        size = np.tile(boxes[:, 2:] - boxes[:, :2], (1, 2))  # P-Net's regression is relative to x2 - x1 (not + 1)
        return square(boxes + reg * size), scores, owner

    def _stage(self, batch, boxes: np.ndarray, owner: np.ndarray, net: str, side: int, threshold: float,
               last: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Stage 2 (R-Net) or 3 (O-Net): score and correct every candidate from its `side` x `side` resampling.

        Returns boxes, scores, frame of each and, from the last stage, the landmarks (N, 5, 2) (else None)."""
        reg, prob, points = self.nets.stage(net, batch, boxes, owner, side)
        keep = prob > _F(threshold)
        boxes, scores, owner, reg = boxes[keep], prob[keep], owner[keep], reg[keep]
        if not last:
            keep = batched_nms(boxes, scores, owner, 0.7)
            boxes, scores, owner, reg = boxes[keep], scores[keep], owner[keep], reg[keep]
            return square(_regress(boxes, reg)), scores, owner, None
        points = _landmarks(boxes, points[keep])  # relative to the boxes O-Net saw, before their correction
        boxes = _regress(boxes, reg)
        keep = _nms_min(boxes, scores, owner, 0.7)
        return boxes[keep], scores[keep], owner[keep], points[keep]


def _landmarks(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """O-Net's landmark outputs (N, 10: x shares then y shares of its input box) -> (N, 5, 2) frame pixels.

    The same mapping as facenet-pytorch's (and the original MTCNN's): each share of the 1-based, inclusive box
    side, from its left / top edge."""
    wh = boxes[:, 2:] - boxes[:, :2] + _F(1)
    x = boxes[:, :1] - _F(1) + points[:, :5] * wh[:, :1]
    y = boxes[:, 1:2] - _F(1) + points[:, 5:10] * wh[:, 1:]
    return np.stack([x, y], axis=2)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """R-Net / O-Net box correction: corners moved by the offsets times the box side (1-based, inclusive)."""
    return boxes + reg * np.tile(boxes[:, 2:] - boxes[:, :2] + _F(1), (1, 2))


def _per_frame(boxes: np.ndarray, scores: np.ndarray, owner: np.ndarray, n: int, points: np.ndarray,
               by_score: bool = False) -> list[Detections]:
    """Split flat results into per-frame `Detections` (boxes, scores, landmarks), optionally best first."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = np.asarray(scores, np.float32).reshape(-1)
    p = np.asarray(points, np.float32).reshape(-1, 5, 2)
    o = np.asarray(owner)
    out = []
    for i in range(n):
        mine = np.flatnonzero(o == i)
        if by_score:
            mine = mine[np.argsort(-s[mine], kind="stable")]
        out.append(Detections(b[mine], s[mine], p[mine]))
    return out


def _nms_min(boxes: np.ndarray, scores: np.ndarray, owner: np.ndarray, threshold: float) -> np.ndarray:
    """MTCNN's last suppression: drop a box when its overlap over the *smaller* box's area exceeds `threshold`
    with a better box of the same frame (removes a small box found inside a face). Returns kept indices.

    Not facenet-pytorch's `batched_nms_numpy`: it separates frames by shifting boxes by frame index x (largest
    coordinate + 1), which lets a box reaching past the left edge of one frame overlap a box of the frame before
    in a batch (a GPU batch here); going frame by frame cannot mix them."""
    b = np.asarray(boxes, np.float64)
    s = np.asarray(scores)
    o = np.asarray(owner)
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    keep: list[int] = []
    for frame in np.unique(o):
        order = np.flatnonzero(o == frame)
        order = order[np.argsort(-s[order], kind="stable")]
        while len(order):
            i, rest = order[0], order[1:]
            keep.append(int(i))
            iw = np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]) + 1
            ih = np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]) + 1
            inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
            order = rest[inter / np.minimum(area[i], area[rest]) <= threshold]
    return np.asarray(keep, dtype=np.int64)
