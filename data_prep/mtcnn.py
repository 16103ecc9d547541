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

`MTCNNCascade.refine` runs the last stage alone on boxes the caller already has (e.g. interpolated from the
detected frames on either side): O-Net re-fits each box and says whether a face is still there, for a fraction of
the cost of a detection. `MTCNNCascade.refine_inputs` does the same from O-Net's inputs made elsewhere
(`data_prep.resample.onet_inputs`, NumPy and OpenCV only): extraction workers without torch prepare them so as
to send 48x48 crops, not whole frames, to the process that drives the GPU. `refine` cuts those inputs with OpenCV
on every device, so that one process and such workers give the same boxes.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import torch

from data_prep.faces import Detections
from data_prep.mtcnn_nets import batched_nms, load_nets, roi_align
from data_prep.resample import ONET_SIDE, onet_inputs, resample

__all__ = ["MTCNNCascade"]

_PNET_STRIDE, _PNET_CELL = 2, 12
_NETS_BATCH = 512  # R-Net / O-Net inputs per call: bounds GPU memory when a batch has many candidates


class _Frames:
    """A batch of frames as given (uint8 NHWC NumPy) and, made on first use, as a float NCHW tensor on the device."""

    def __init__(self, frames: np.ndarray, device: torch.device) -> None:
        self.array, self.device, self._tensor = frames, device, None

    @property
    def tensor(self) -> torch.Tensor:
        if self._tensor is None:
            self._tensor = torch.from_numpy(self.array).to(self.device).permute(0, 3, 1, 2).float()
        return self._tensor


def _as_batch(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (B, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    return np.ascontiguousarray(frames)


class MTCNNCascade:
    """The MTCNN cascade over batches of equally sized frames.

    Args:
        min_face_size: smallest face looked for, in pixels of the frames given.
        thresholds: score thresholds of P-Net, R-Net and O-Net.
        factor: scale step of the image pyramid.
        device: torch device of the networks and the computation.
    """

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, device: str | torch.device = "cpu") -> None:
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.device = torch.device(device)
        # OpenCV resizing on the CPU; batched torch operations elsewhere (settable, so tests run both on the CPU).
        self.opencv_resampling = self.device.type == "cpu"
        # Channels-last: the same outputs, about 1.5x faster on the CPU (P-Net's max-pooling is its bottleneck in
        # the default layout).
        self.pnet, self.rnet, self.onet = (net.to(self.device, memory_format=torch.channels_last).eval()
                                           for net in load_nets())

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

    @torch.inference_mode()
    def detect(self, frames: np.ndarray) -> list[Detections]:
        """Faces in a batch of frames.

        Args:
            frames: (B, H, W, 3) uint8 RGB, or (H, W, 3) for one frame.

        Returns:
            Per frame: boxes (N, 4) float32 x1, y1, x2, y2 in the frame's pixels, probabilities (N,) float32 and
            O-Net's five landmarks (N, 5, 2) float32 x, y in the frame's pixels (`Detections`), most probable first.
        """
        batch = _Frames(_as_batch(frames), self.device)
        if not len(batch.array):
            return []
        boxes, scores, owner = self._propose(batch)
        if len(boxes):
            boxes, scores, owner, _ = self._stage(batch, boxes, owner, self.rnet, 24, self.thresholds[1])
        points = boxes.new_zeros((0, 5, 2))
        if len(boxes):
            boxes, scores, owner, points = self._stage(batch, boxes, owner, self.onet, ONET_SIDE, self.thresholds[2],
                                                       last=True)
        return _per_frame(boxes, scores, owner, len(batch.array), points, by_score=True)

    @torch.inference_mode()
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

    @torch.inference_mode()
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
        owner = torch.as_tensor(np.repeat(np.arange(len(counts)), counts), device=self.device)
        boxes = torch.as_tensor(np.asarray(squares, np.float32).reshape(-1, 4), device=self.device)
        if not len(boxes):
            return _per_frame(boxes, boxes.new_zeros(0), owner, len(counts), boxes.new_zeros((0, 5, 2)))
        inputs = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float()
        reg, prob, points = self._run_net(self.onet, inputs)
        return _per_frame(_regress(boxes, reg), prob, owner, len(counts), _landmarks(boxes, points))

    # ------------------------------------------------------------------------------------------------------------
    def _pyramid(self, batch: _Frames) -> Iterator[tuple[float, torch.Tensor]]:
        """(scale, P-Net's normalised input) per pyramid level, the frames resized by area averaging.

        On the CPU each level is resized from the one before (OpenCV, uint8): a third of the work of resizing every
        level from the frame, with boxes as close to the ground truth (`tests/test_mtcnn.py`).
        """
        h, w = batch.array.shape[1:3]
        source = batch.array
        for scale in self.scales(h, w):
            size = (int(h * scale + 1), int(w * scale + 1))
            if self.opencv_resampling:
                source = np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in source])
                level = torch.from_numpy(source).permute(0, 3, 1, 2).float()
            else:
                level = torch.nn.functional.interpolate(batch.tensor, size=size, mode="area")
            yield scale, ((level - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)

    def _propose(self, batch: _Frames) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1: P-Net over the pyramid; squared candidate boxes (x1, y1, x2, y2), scores, frame of each."""
        all_boxes, all_scores, all_owner, all_reg = [], [], [], []
        for scale, level in self._pyramid(batch):
            reg, prob = self.pnet(level)
            prob = prob[:, 1]  # (B, h', w') face probability of each 12x12 window
            hit = prob >= self.thresholds[0]
            if not bool(hit.any()):
                continue
            owner, yy, xx = hit.nonzero(as_tuple=True)
            score = prob[owner, yy, xx]
            # Window corners in frame pixels, with MTCNN's 1-based, inclusive convention.
            x1 = torch.floor((_PNET_STRIDE * xx.float() + 1) / scale)
            y1 = torch.floor((_PNET_STRIDE * yy.float() + 1) / scale)
            x2 = torch.floor((_PNET_STRIDE * xx.float() + _PNET_CELL) / scale)
            y2 = torch.floor((_PNET_STRIDE * yy.float() + _PNET_CELL) / scale)
            box = torch.stack([x1, y1, x2, y2], dim=1)
            keep = batched_nms(box, score, owner, 0.5)  # within each scale and frame
            all_boxes.append(box[keep]), all_scores.append(score[keep]), all_owner.append(owner[keep])
            all_reg.append(reg.permute(0, 2, 3, 1)[owner, yy, xx][keep])  # (N, 4) offsets in window sizes
        if not all_boxes:
            return (torch.zeros((0, 4), device=self.device), torch.zeros(0, device=self.device),
                    torch.zeros(0, dtype=torch.long, device=self.device))
        boxes, scores, owner, reg = (torch.cat(v) for v in (all_boxes, all_scores, all_owner, all_reg))
        keep = batched_nms(boxes, scores, owner, 0.7)  # across scales, within each frame
        boxes, scores, owner, reg = boxes[keep], scores[keep], owner[keep], reg[keep]
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # P-Net's regression is relative to x2 - x1 (not + 1)
        return _square(boxes + reg * size), scores, owner

    def _resample(self, batch: _Frames, boxes: torch.Tensor, owner: torch.Tensor, side: int) -> torch.Tensor:
        """Every box cut from its frame and resized to `side` x `side` (zeros outside the frame): (N, 3, side, side)."""
        if not self.opencv_resampling:  # one batched call: a loop of small operations would leave a GPU idle
            # 1-based inclusive corners -> continuous pixel edges [x1 - 1, x2).
            rois = torch.cat([owner[:, None].to(boxes.dtype), boxes[:, :2] - 1, boxes[:, 2:]], dim=1)
            return roi_align(batch.tensor, rois, (side, side), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        # On the CPU OpenCV's area resize of each box is cheaper than roi_align's many bilinear samples per pixel.
        out = resample(batch.array, boxes.cpu().numpy(), owner.cpu().numpy(), side)
        return torch.from_numpy(out).permute(0, 3, 1, 2).float()

    @staticmethod
    def _run_net(net: torch.nn.Module, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """R-Net or O-Net on (N, 3, s, s) crops (values 0..255): box offsets (N, 4), face probabilities (N,) and,
        from O-Net, the landmarks (N, 10: five x then five y, as shares of the input box), else None."""
        crops = ((crops - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)
        outputs = [net(crops[i:i + _NETS_BATCH]) for i in range(0, len(crops), _NETS_BATCH)]
        points = torch.cat([o[1] for o in outputs]) if len(outputs[0]) == 3 else None
        return torch.cat([o[0] for o in outputs]), torch.cat([o[-1] for o in outputs])[:, 1], points

    def _stage(self, batch: _Frames, boxes: torch.Tensor, owner: torch.Tensor, net: torch.nn.Module, side: int,
               threshold: float, last: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Stage 2 (R-Net) or 3 (O-Net): score and correct every candidate from its `side` x `side` resampling.

        Returns boxes, scores, frame of each and, from the last stage, the landmarks (N, 5, 2) (else None)."""
        reg, prob, points = self._run_net(net, self._resample(batch, boxes, owner, side))
        keep = prob > threshold
        boxes, scores, owner, reg = boxes[keep], prob[keep], owner[keep], reg[keep]
        if not last:
            keep = batched_nms(boxes, scores, owner, 0.7)
            boxes, scores, owner, reg = boxes[keep], scores[keep], owner[keep], reg[keep]
            return _square(_regress(boxes, reg)), scores, owner, None
        points = _landmarks(boxes, points[keep])  # relative to the boxes O-Net saw, before their correction
        boxes = _regress(boxes, reg)
        keep = _nms_min(boxes, scores, owner, 0.7)
        return boxes[keep], scores[keep], owner[keep], points[keep]


def _landmarks(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """O-Net's landmark outputs (N, 10: x shares then y shares of its input box) -> (N, 5, 2) frame pixels.

    The same mapping as facenet-pytorch's (and the original MTCNN's): each share of the 1-based, inclusive box
    side, from its left / top edge."""
    wh = boxes[:, 2:] - boxes[:, :2] + 1
    x = boxes[:, :1] - 1 + points[:, :5] * wh[:, :1]
    y = boxes[:, 1:2] - 1 + points[:, 5:10] * wh[:, 1:]
    return torch.stack([x, y], dim=2)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """R-Net / O-Net box correction: corners moved by the offsets times the box side (1-based, inclusive)."""
    return boxes + reg * (boxes[:, 2:] - boxes[:, :2] + 1).repeat(1, 2)


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box grown to a square on its longer side, about the same centre."""
    wh = boxes[:, 2:] - boxes[:, :2]
    side = wh.max(dim=1, keepdim=True).values
    top_left = boxes[:, :2] + wh * 0.5 - side * 0.5
    return torch.cat([top_left, top_left + side], dim=1)


def _per_frame(boxes: torch.Tensor, scores: torch.Tensor, owner: torch.Tensor, n: int, points: torch.Tensor,
               by_score: bool = False) -> list[Detections]:
    """Split flat results into per-frame `Detections` (boxes, scores, landmarks), optionally best first."""
    b = boxes.detach().cpu().numpy().astype(np.float32).reshape(-1, 4)
    s = scores.detach().cpu().numpy().astype(np.float32).reshape(-1)
    p = points.detach().cpu().numpy().astype(np.float32).reshape(-1, 5, 2)
    o = owner.detach().cpu().numpy()
    out = []
    for i in range(n):
        mine = np.flatnonzero(o == i)
        if by_score:
            mine = mine[np.argsort(-s[mine], kind="stable")]
        out.append(Detections(b[mine], s[mine], p[mine]))
    return out


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, owner: torch.Tensor, threshold: float) -> torch.Tensor:
    """MTCNN's last suppression: drop a box when its overlap over the *smaller* box's area exceeds `threshold`
    with a better box of the same frame (removes a small box found inside a face). Returns kept indices.

    Not facenet-pytorch's `batched_nms_numpy`: it separates frames by shifting boxes by frame index x (largest
    coordinate + 1), which lets a box reaching past the left edge of one frame overlap a box of the frame before
    in a batch (a GPU batch here); going frame by frame cannot mix them."""
    b = boxes.detach().cpu().double().numpy()
    s = scores.detach().cpu().numpy()
    o = owner.detach().cpu().numpy()
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
    return torch.as_tensor(keep, dtype=torch.long, device=boxes.device)
