"""MTCNN's three networks and the box suppression of its cascade, without importing facenet-pytorch or torchvision.

`data_prep.mtcnn` runs the cascade with the networks facenet-pytorch trained. Importing facenet-pytorch imports
torchvision, and importing `torchvision.ops` imports `torch._dynamo`: together about 1.5-2 s of a 2-core CPU at the
start of every `deepfake predict`, for three small networks and a non-maximum suppression. Here:

- `PNet`, `RNet`, `ONet` are facenet-pytorch's modules, the same layers under the same names, loaded from the
  weight files inside the installed facenet-pytorch (found with `importlib.util.find_spec`, which does not run the
  package): `load_nets()`.
- `TorchNets`: `data_prep.mtcnn`'s PyTorch backend for the networks (CPU, and a GPU with batched resampling).
- The suppression is `data_prep.nms` (NumPy, torchvision's result). `roi_align` is torchvision's, imported on first
  use (only the GPU path resamples with it).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from data_prep.mtcnn_backend import weights_folder

__all__ = ["PNet", "RNet", "ONet", "load_nets", "weights_folder", "roi_align", "TorchNets",
           "NETS_BATCH"]

NETS_BATCH = 512  # R-Net / O-Net inputs per call: bounds GPU memory when a batch has many candidates


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


def load_nets() -> tuple[PNet, RNet, ONet]:
    """The three networks with facenet-pytorch's trained weights, in eval mode on the CPU."""
    folder = weights_folder()
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, ("pnet", "rnet", "onet")):
        net.load_state_dict(torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True))
        net.eval()
    return nets


def roi_align(*args, **kwargs) -> torch.Tensor:
    """`torchvision.ops.roi_align`, imported on first use (the GPU path only)."""
    from torchvision.ops import roi_align as torchvision_roi_align

    return torchvision_roi_align(*args, **kwargs)


class TorchNets:
    """`data_prep.mtcnn`'s PyTorch backend: the three networks on a torch device.

    On the CPU the pyramid and the candidates are resampled by OpenCV (`data_prep.mtcnn.opencv_pyramid`,
    `cpu_stage_inputs`, as ONNX Runtime's backend does); on a GPU by torch's area interpolation and one
    `roi_align` call per stage for a whole batch, the frames kept on the device. Channels-last: the same outputs,
    about 1.5x faster on the CPU (P-Net's max-pooling is its bottleneck in the default layout).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.torch_device = torch.device(device)
        self.device = str(device)
        self.opencv_resampling = self.torch_device.type == "cpu"
        self.pnet_, self.rnet_, self.onet_ = (net.to(self.torch_device, memory_format=torch.channels_last).eval()
                                              for net in load_nets())

    # The networks by name, settable (tests swap in facenet-pytorch's own).
    @property
    def nets(self) -> dict[str, nn.Module]:
        return {"pnet": self.pnet_, "rnet": self.rnet_, "onet": self.onet_}

    def load(self, frames: np.ndarray) -> _Frames:
        return _Frames(frames, self.torch_device)

    @torch.inference_mode()
    def pnet(self, frames: _Frames, sizes: list[tuple[int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from data_prep.mtcnn_backend import normalise, opencv_pyramid

        if self.opencv_resampling:
            levels = (torch.from_numpy(normalise(level)) for level in opencv_pyramid(frames.array, sizes))
        else:
            levels = ((torch.nn.functional.interpolate(frames.tensor, size=size, mode="area") - 127.5) * 0.0078125
                      for size in sizes)
        for level in levels:
            reg, prob = self.pnet_(level.to(self.torch_device).contiguous(memory_format=torch.channels_last))
            yield reg.float().cpu().numpy(), prob[:, 1].float().cpu().numpy()

    @torch.inference_mode()
    def stage(self, name: str, frames: _Frames, boxes: np.ndarray, owner: np.ndarray, side: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.opencv_resampling:  # OpenCV's area resize of each box: cheaper on the CPU than roi_align
            from data_prep.mtcnn_backend import cpu_stage_inputs

            crops = torch.from_numpy(cpu_stage_inputs(frames.array, boxes, owner, side))
        else:  # one batched call: a loop of small operations would leave a GPU idle
            b = torch.as_tensor(boxes, device=self.torch_device)
            # 1-based inclusive corners -> continuous pixel edges [x1 - 1, x2).
            rois = torch.cat([torch.as_tensor(owner, device=self.torch_device)[:, None].to(b.dtype), b[:, :2] - 1,
                              b[:, 2:]], dim=1)
            crops = (roi_align(frames.tensor, rois, (side, side), spatial_scale=1.0, sampling_ratio=-1,
                               aligned=True) - 127.5) * 0.0078125
        return self._run(self.nets[name], crops)

    @torch.inference_mode()
    def onet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from data_prep.mtcnn_backend import normalise

        return self._run(self.onet_, torch.from_numpy(normalise(crops)))

    def _run(self, net: nn.Module, crops: torch.Tensor):
        """A net on (N, 3, s, s) normalised inputs, in chunks: offsets (N, 4), probabilities (N,), landmarks or None."""
        crops = crops.to(self.torch_device).contiguous(memory_format=torch.channels_last)
        outputs = [net(crops[i:i + NETS_BATCH]) for i in range(0, len(crops), NETS_BATCH)]
        if not outputs:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 10), np.float32)
        points = torch.cat([o[1] for o in outputs]).float().cpu().numpy() if len(outputs[0]) == 3 else None
        return (torch.cat([o[0] for o in outputs]).float().cpu().numpy(),
                torch.cat([o[-1] for o in outputs])[:, 1].float().cpu().numpy(), points)


class _Frames:
    """A batch of frames as given (uint8 NHWC NumPy) and, made on first use, as a float NCHW tensor on the device."""

    def __init__(self, frames: np.ndarray, device: torch.device) -> None:
        self.array, self.device, self._tensor = frames, device, None

    @property
    def tensor(self) -> torch.Tensor:
        if self._tensor is None:
            self._tensor = torch.from_numpy(self.array).to(self.device).permute(0, 3, 1, 2).float()
        return self._tensor
