"""Exported detectors at inference: an ONNX file run by ONNX Runtime, or a `torch.export` program, without timm.

    net, meta = load_exported("detector.onnx", device="cpu")     # or detector.pt2
    logits = net(windows)          # (B, T, 3, S, S) float32 normalised -> (B, T) logits, torch tensors

`deepfake.export` writes the files; `deepfake.inference.Detector` takes such a net in place of the PyTorch model,
so windowing, scoring and calibration are the same code for every format, and only the step from a batch of
windows to logits differs. Neither format needs timm, torchvision or the `deepfake.model` code: an ONNX file is a
graph of standard operators, a `.pt2` file a graph of ATen operators. The detector's meta (`deepfake.checkpoint`:
img_size, mean, std, seq_len, margin, stride, calibration, ...) travels inside the file: in the ONNX model's
metadata (`deepfake_meta`), in the `.pt2` archive's extra file `deepfake_meta.json`.

Safety: an ONNX file holds no code. `torch.export.load` falls back to unpickling for some parts of an archive, so a
`.pt2` file is first checked to hold only raw tensors and JSON (`check_program`); one that asks for unpickling is
refused, as `deepfake.checkpoint` refuses a checkpoint that would run code.

What an exported net can't do: explanations (Grad-CAM needs the PyTorch model's gradients and layers), refitting
the calibration into a new detector.pt (`deepfake calibrate`), reduced precision (exported in float32).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from data_prep.files import OneLineError

__all__ = ["ExportError", "FORMATS", "META_KEY", "META_FILE", "INPUT", "OUTPUT", "exported_format", "load_by_suffix",
           "load_exported", "check_program", "OnnxNet", "ProgramNet"]

# format name (`deepfake export --format`) -> file suffix
FORMATS = {"onnx": ".onnx", "exported": ".pt2"}
META_KEY = "deepfake_meta"          # ONNX metadata_props key of the detector's meta (JSON)
META_FILE = "deepfake_meta.json"    # the same in a .pt2 archive's extra files
INPUT, OUTPUT = "windows", "logits"


class ExportError(OneLineError, ValueError):
    """An exported detector file that can't be used (or a model that can't be exported); the message is one line."""


def exported_format(path: str | os.PathLike) -> str | None:
    """``onnx`` or ``exported`` for a file of those suffixes (any case), else None (a PyTorch checkpoint)."""
    suffix = Path(path).suffix.lower()
    return next((name for name, s in FORMATS.items() if s == suffix), None)


def _meta_of(text: str | bytes | None, path: Path) -> dict[str, Any]:
    if not text:
        raise ExportError(f"{path} holds no detector settings ({META_KEY}); it was not written by `deepfake export`")
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise ExportError(f"{path}: its detector settings are not JSON ({e})") from None
    missing = [k for k in ("img_size", "mean", "std", "seq_len") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ExportError(f"{path}: detector settings lack {', '.join(missing)}")
    return meta


class OnnxNet:
    """A detector exported to ONNX, run by ONNX Runtime: (B, T, 3, S, S) float32 -> (B, T) logits.

    Args:
        path: the .onnx file.
        device: ``cpu``, or ``cuda``/``cuda:N`` when ONNX Runtime has its CUDA provider (onnxruntime-gpu).
        threads: intra-op threads (default: every core this process may use).
    """

    format = "onnx"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        from data_prep.detector import cpu_count

        self.path = Path(path)
        options = ort.SessionOptions()
        # All graph optimisations (constant folding, Conv+BN+activation fusion, NCHWc layouts) and one thread per
        # core: measured in bench/export.py.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or cpu_count()
        options.log_severity_level = 3  # errors only: the file's own warnings are not the user's business
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ExportError(f"--device {device}: this ONNX Runtime has no CUDA provider (install "
                                  f"onnxruntime-gpu), or use --device cpu")
            index = int(device.partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as e:  # onnxruntime's own exception types: a file that is not a loadable ONNX model
            raise ExportError(f"{self.path} is not a loadable ONNX model ({' '.join(str(e).split())[:200]})") from None
        self.device = device
        self.meta = _meta_of(self.session.get_modelmeta().custom_metadata_map.get(META_KEY), self.path)
        names = [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]
        if names != ([INPUT], [OUTPUT]):
            raise ExportError(f"{self.path}: expected input {INPUT!r} and output {OUTPUT!r}, found {names}")

    def __call__(self, windows):
        """(B, T, 3, S, S) float32 torch tensor -> (B, T) float32 logits, a torch tensor on the CPU."""
        import torch

        x = windows.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run(x))

    def run(self, windows):
        """(B, T, 3, S, S) float32 NumPy array -> (B, T) float32 logits, a NumPy array (no torch involved)."""
        import numpy as np

        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(windows, dtype=np.float32)})[0]


def check_program(path: str | os.PathLike) -> None:
    """Refuse a `.pt2` archive that `torch.export.load` would unpickle (code could run): every weight and constant
    must be a raw tensor, and the example inputs must load with `torch.load(weights_only=True)`.

    Raises:
        ExportError: not a `.pt2` archive, or one that asks for unpickling.
    """
    import io

    import torch

    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ExportError(f"{path} is not a torch.export archive ({e})") from None
    with archive:
        names = archive.namelist()
        configs = [n for n in names if n.endswith(("_weights_config.json", "_constants_config.json"))]
        if not any(n.endswith("_weights_config.json") for n in configs):
            raise ExportError(f"{path} is not a torch.export archive of raw weights (no weights config)")
        for name in configs:
            for fqn, entry in json.loads(archive.read(name)).get("config", {}).items():
                if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
                    raise ExportError(f"{path} can't be loaded safely: {fqn} is stored pickled (loading it could run "
                                      f"code); export it again with `deepfake export`")
        for name in names:
            if "data/weights/" in name and name.endswith(".pt") or "data/constants/" in name and name.endswith(".pt"):
                raise ExportError(f"{path} can't be loaded safely: {name} is a pickled file (loading it could run "
                                  f"code); export it again with `deepfake export`")
            if "data/sample_inputs/" in name:
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception:  # noqa: BLE001 - anything weights_only refuses is refused here
                    raise ExportError(f"{path} can't be loaded safely: {name} is not plain tensors (loading it "
                                      f"could run code)") from None


class ProgramNet:
    """A detector exported by `torch.export` (.pt2): (B, T, 3, S, S) float32 -> (B, T) logits.

    torch.export fixes the number of steps (its LSTM is unrolled over `steps`); a window of fewer crops (a track
    shorter than `seq_len`) is padded with copies of its last crop and the logits of its own steps are returned.
    A forward-only LSTM never lets a later step change an earlier one, so these equal the unpadded window's.

    Args:
        path: the .pt2 file (checked by `check_program` first).
        device: where the program runs (``cpu``, ``cuda``...).
    """

    format = "exported"

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        import torch

        self.path = Path(path)
        check_program(self.path)
        extra = {META_FILE: ""}
        try:
            program = torch.export.load(str(self.path), extra_files=extra)
        except Exception as e:  # torch's serde raises many types for a damaged or foreign archive
            raise ExportError(f"{self.path} is not a loadable torch.export program "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        self.meta = _meta_of(extra.get(META_FILE), self.path)
        self.steps = int(self.meta.get("export", {}).get("steps") or self.meta["seq_len"])
        self.device = device
        self.module = program.module().to(device)

    def __call__(self, windows):
        """(B, T, 3, S, S) float32 torch tensor, T <= steps -> (B, T) float32 logits on the net's device."""
        import torch

        t = windows.shape[1]
        if t > self.steps:
            raise ExportError(f"{self.path} takes windows of at most {self.steps} crops, got {t}")
        x = windows.to(self.device, torch.float32)
        if t < self.steps:
            x = torch.cat([x, x[:, -1:].expand(-1, self.steps - t, -1, -1, -1)], dim=1)
        return self.module(x)[:, :t]


def load_exported(path: str | os.PathLike, device: str = "auto") -> tuple[OnnxNet | ProgramNet, dict[str, Any]]:
    """An exported detector by its suffix (.onnx: ONNX Runtime; .pt2: torch.export) and its meta.

    Args:
        path: the file.
        device: ``auto`` (a GPU when there is one that the runtime can use), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ExportError: not an exported detector, or not loadable (one line).
    """
    from data_prep.detector import resolve_device

    kind = exported_format(path)
    if kind == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ExportError(f"{path}: ONNX models run on ONNX Runtime, which is not installed "
                              f"(pip install 'deepfake[export]' or pip install onnxruntime)") from None
        if device == "auto":  # a GPU only where this ONNX Runtime can use one
            has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
            device = resolve_device("auto") if has_cuda else "cpu"
        net: OnnxNet | ProgramNet = OnnxNet(path, device)
    elif kind == "exported":
        net = ProgramNet(path, resolve_device(device))
    else:
        raise ExportError(f"{path}: not an exported detector (expected {' or '.join(FORMATS.values())})")
    return net, net.meta


def load_by_suffix(path: str | os.PathLike, device: str = "auto"):
    """(model, meta) of a weights file by its suffix alone: .onnx / .pt2 -> an exported net (`deepfake.runtime`,
    without timm), anything else -> a PyTorch `DeepfakeDetector` (`deepfake.checkpoint`);
    `deepfake.detector.Detector.load`'s."""
    from deepfake.runtime import exported_format, load_exported

    if exported_format(path):
        return load_exported(path, device)
    from deepfake.checkpoint import load_detector

    return load_detector(path)
