"""MTCNN's three networks on ONNX Runtime: `data_prep.mtcnn`'s backend for a CPU process that never imports torch.

    nets = OnnxNets()                     # exports the nets into the cache the first time (imports torch then)
    cascade = MTCNNCascade(runtime="onnx")

The networks are exported once from the weight files `data_prep.mtcnn_nets.load_nets` reads (facenet-pytorch's
pnet.pt, rnet.pt, onet.pt) into `<cache>/mtcnn-onnx/<hash>/` (`data_prep.files.cache_folder`; `<hash>`: of the three
weight files together, so another facenet-pytorch version gets its own export). Each file is checked against its
PyTorch net before it is kept (outputs within `TOLERANCE` on random inputs of several sizes); the folder is
complete or absent (written under a temporary name and renamed). Later processes find it by the weight files' hash
without importing torch. The cascade's rule (thresholds, suppressions, boxes) is `data_prep.mtcnn`'s alone, so both
backends give the same boxes but for the networks' float32 rounding (`tests/test_mtcnn_onnx.py`).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.files import atomic_folder, cache_folder
from data_prep.mtcnn_backend import cpu_stage_inputs, normalise, opencv_pyramid, weights_folder

__all__ = ["OnnxNets", "export_nets", "nets_folder", "TOLERANCE", "NAMES"]

NAMES = ("pnet", "rnet", "onet")
TOLERANCE = 1e-5  # largest |output difference| from the PyTorch nets accepted when exporting
_SIDES = {"rnet": 24, "onet": 48}
_OUTPUTS = {"pnet": ["reg", "prob"], "rnet": ["reg", "prob"], "onet": ["reg", "points", "prob"]}


def nets_folder() -> Path:
    """Where the ONNX nets of the installed facenet-pytorch weights are (or go): `<cache>/mtcnn-onnx/<hash>`."""
    digest = hashlib.sha256()
    folder = weights_folder()
    for name in NAMES:
        digest.update((folder / f"{name}.pt").read_bytes())
    return cache_folder() / "mtcnn-onnx" / digest.hexdigest()[:16]


def export_nets(folder: Path) -> float:
    """Export P-Net, R-Net and O-Net to `folder` (pnet.onnx, rnet.onnx, onet.onnx), each checked against PyTorch.

    Returns:
        The largest |output difference| seen in the checks.

    Raises:
        ValueError: an export differs from PyTorch by more than `TOLERANCE` (nothing is kept).
        OSError: the folder can't be written.
    """
    import warnings

    import torch

    from data_prep.mtcnn_nets import load_nets

    worst = 0.0
    with atomic_folder(folder, replace=False) as tmp:  # another process's finished export wins
        for name, net in zip(NAMES, load_nets()):
            path = tmp / f"{name}.onnx"
            side = _SIDES.get(name, 37)
            dynamic = {0: "n", 2: "h", 3: "w"} if name == "pnet" else {0: "n"}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(net, (torch.randn(2, 3, side, side),), str(path), dynamo=False, opset_version=17,
                                  input_names=["x"], output_names=_OUTPUTS[name],
                                  dynamic_axes={"x": dynamic, **{o: {0: "n"} for o in _OUTPUTS[name]}})
            session = _session(path, 1)
            generator = torch.Generator().manual_seed(0)
            shapes = [(3, side, side), (1, side, side)] + ([(2, 61, 45), (1, 12, 12)] if name == "pnet" else [])
            for n, h, w in shapes:
                x = torch.rand(n, 3, h, w, generator=generator) * 2 - 1
                with torch.inference_mode():
                    want = [o.numpy() for o in net(x)]
                got = session.run(_OUTPUTS[name], {"x": x.numpy()})
                worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(got, want)))
            if not worst <= TOLERANCE:
                raise ValueError(f"MTCNN's {name} on ONNX Runtime differs from PyTorch by {worst:.1e} (more than "
                                 f"{TOLERANCE:g})")
    return worst


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(0, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxNets:
    """`data_prep.mtcnn`'s ONNX Runtime backend (the CPU): the networks exported once (`export_nets`), the pyramid
    and the candidates resampled by OpenCV as the PyTorch backend does on the CPU.

    Args:
        threads: intra-op threads per network (0: ONNX Runtime's default, one per core).
        folder: the exported nets (default `nets_folder()`, exported there when missing).
    """

    device = "cpu"

    def __init__(self, threads: int = 0, folder: Path | None = None) -> None:
        folder = folder or nets_folder()
        if not all((folder / f"{n}.onnx").is_file() for n in NAMES):
            export_nets(folder)
        self.folder = folder
        try:
            self.sessions = {name: _session(folder / f"{name}.onnx", threads) for name in NAMES}
        except Exception as err:  # onnxruntime's own types: a damaged file in the cache; the next run exports again
            shutil.rmtree(folder, ignore_errors=True)
            raise ValueError(f"{folder} held damaged ONNX nets (deleted): {' '.join(str(err).split())[:200]}") from None

    @property
    def opencv_resampling(self) -> bool:
        return True

    @opencv_resampling.setter
    def opencv_resampling(self, value: bool) -> None:
        if not value:
            raise ValueError("MTCNN on ONNX Runtime resamples with OpenCV only")

    def load(self, frames: np.ndarray) -> np.ndarray:
        return frames

    def pnet(self, frames: np.ndarray, sizes: list[tuple[int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for level in opencv_pyramid(frames, sizes):
            reg, prob = self.sessions["pnet"].run(None, {"x": normalise(level)})
            yield reg, prob[:, 1]

    def stage(self, name: str, frames: np.ndarray, boxes: np.ndarray, owner: np.ndarray, side: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self._run(name, cpu_stage_inputs(frames, boxes, owner, side))

    def onet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._run("onet", normalise(crops))

    def _run(self, name: str, x: np.ndarray):
        if not len(x):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 10), np.float32)
        out = self.sessions[name].run(None, {"x": np.ascontiguousarray(x)})
        return out[0], out[-1][:, 1], (out[1] if name == "onet" else None)
