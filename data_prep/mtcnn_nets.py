"""MTCNN's three networks and the box suppression of its cascade, without importing facenet-pytorch or torchvision.

`data_prep.mtcnn` runs the cascade with the networks facenet-pytorch trained. Importing facenet-pytorch imports
torchvision, and importing `torchvision.ops` imports `torch._dynamo`: together about 1.5-2 s of a 2-core CPU at the
start of every `deepfake predict`, for three small networks and a non-maximum suppression. Here:

- `PNet`, `RNet`, `ONet` are facenet-pytorch's modules, the same layers under the same names, loaded from the
  weight files inside the installed facenet-pytorch (found with `importlib.util.find_spec`, which does not run the
  package): `load_nets()`.
- `batched_nms` gives torchvision's result (the same indices in the same order) on CPU tensors by the same
  arithmetic in NumPy; CUDA tensors go to torchvision's kernel, imported on first use. `roi_align` is torchvision's,
  imported on first use (only the GPU path of `data_prep.mtcnn` resamples with it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["PNet", "RNet", "ONet", "load_nets", "weights_folder", "batched_nms", "nms", "roi_align"]

# torchvision switches from one suppression over shifted boxes to one per frame above this many box coordinates on
# the CPU; both are kept so that the kept boxes and their order are torchvision's.
_VANILLA_ABOVE = 4000


class PNet(nn.Module):
    """MTCNN's proposal network: 12x12 windows -> box offsets (N, 4, h, w) and face probabilities (N, 2, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """MTCNN's refinement network: (N, 3, 24, 24) -> box offsets (N, 4) and face probabilities (N, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # the trained weights expect (N, W, H, C) flattened
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """MTCNN's output network: (N, 3, 48, 48) -> box offsets (N, 4), five landmarks (N, 10), probabilities (N, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


def weights_folder() -> Path:
    """The folder of facenet-pytorch's trained MTCNN weights (pnet.pt, rnet.pt, onet.pt), found without importing
    the package (its `__init__` imports torchvision).

    Raises:
        ModuleNotFoundError: facenet-pytorch is not installed (one line).
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("facenet-pytorch is not installed: face detection needs its MTCNN weights "
                                  "(pip install facenet-pytorch)")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if (folder / "pnet.pt").is_file():
            return folder
    raise ModuleNotFoundError(f"facenet-pytorch at {list(spec.submodule_search_locations)} has no data/pnet.pt: "
                              f"reinstall it (pip install --force-reinstall facenet-pytorch)")


def load_nets() -> tuple[PNet, RNet, ONet]:
    """The three networks with facenet-pytorch's trained weights, in eval mode on the CPU."""
    folder = weights_folder()
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, ("pnet", "rnet", "onet")):
        net.load_state_dict(torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True))
        net.eval()
    return nets


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's `nms` on CPU tensors: indices of the kept boxes, best score first.

    The same steps as torchvision's CPU kernel, in float32: boxes in order of decreasing score (ties in input
    order), each kept box suppressing the later ones whose IoU with it exceeds the threshold, the IoU computed as
    inter / (area_i + area_j - inter) with areas (x2 - x1) * (y2 - y1) and compared in double precision.
    """
    b = boxes.detach().cpu().numpy()
    s = scores.detach().cpu().numpy()
    if not len(b):
        return torch.empty(0, dtype=torch.long)
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
    return torch.as_tensor(keep, dtype=torch.long)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """`torchvision.ops.batched_nms`: suppression within each index value (frame), kept indices best first.

    CPU tensors are suppressed here, by torchvision's own two strategies (boxes shifted apart by index below 4000
    coordinates, one suppression per index above), so the result is torchvision's to the bit; CUDA tensors go to
    torchvision's kernel.
    """
    if boxes.device.type != "cpu":
        from torchvision.ops import batched_nms as torchvision_batched_nms

        return torchvision_batched_nms(boxes, scores, idxs, iou_threshold)
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    if boxes.numel() > _VANILLA_ABOVE:
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for index in torch.unique(idxs):
            mine = torch.where(idxs == index)[0]
            keep_mask[mine[nms(boxes[mine], scores[mine], iou_threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def roi_align(*args, **kwargs) -> torch.Tensor:
    """`torchvision.ops.roi_align`, imported on first use (the GPU path only)."""
    from torchvision.ops import roi_align as torchvision_roi_align

    return torchvision_roi_align(*args, **kwargs)
