"""Export a detector to a self-contained file that runs without timm: ONNX (for ONNX Runtime) or `torch.export`.

    result = export_detector("detector.pt", "onnx")              # -> detector.onnx beside it
    result = export_detector("detector.pt", "exported", "model.pt2")
    result.path, result.max_error                                # the file, its logits' distance from PyTorch's

Both formats hold the whole network (backbone and LSTM) and the detector's meta (`deepfake.checkpoint`: img_size,
mean, std, seq_len, margin, stride, calibration, ...) with an ``export`` entry saying how the file was made:

- ``onnx`` (.onnx): input ``windows`` (B, T, 3, S, S) float32, RGB scaled to [0, 1] and normalised with the meta's
  mean/std (what `deepfake.inference.Detector.prepare` makes), output ``logits`` (B, T); batch and steps are
  dynamic (the LSTM is ONNX's LSTM operator). Written by PyTorch's TorchScript-based ONNX exporter, opset 17: its
  graph runs about 1.3x faster in ONNX Runtime than the torch.export-based exporter's, whose LSTM is unrolled over a
  fixed number of steps (bench/export.py). The meta is in the model's metadata (``deepfake_meta``).
- ``exported`` (.pt2): a `torch.export` program with the same input and output; the batch is dynamic, the steps are
  fixed to `seq_len` (torch.export unrolls the LSTM), and shorter windows are padded at run time
  (`deepfake.runtime.ProgramNet`). The meta is the archive's extra file ``deepfake_meta.json``.

Every export is checked before it is kept: the file is loaded as `deepfake.inference.load_predictor` loads it and
must give PyTorch's logits within `tolerance` on random windows (full and shorter ones).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data_prep.files import atomic_path
from deepfake.checkpoint import load_detector
from deepfake.runtime import FORMATS, INPUT, META_FILE, META_KEY, OUTPUT, ExportError, load_exported
from deepfake.weights import sha256_of

__all__ = ["ExportResult", "export_detector", "check_export", "default_output", "OPSET", "TOLERANCE"]

OPSET = 17
TOLERANCE = 1e-4  # largest |logit difference| from PyTorch accepted when checking an export (float32)


@dataclass
class ExportResult:
    """What `export_detector` wrote.

    Attributes:
        path: the exported file.
        format: ``onnx`` or ``exported``.
        meta: the meta stored in it.
        max_error: the largest |logit difference| from the PyTorch model on the check's windows.
    """

    path: Path
    format: str
    meta: dict[str, Any]
    max_error: float


class _Windows(nn.Module):
    """The detector as exported: one input, the batch of windows, and the per-step logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(windows)  # (B, T, 3, S, S) -> (B, T)


def default_output(weights: str | os.PathLike, fmt: str) -> Path:
    """`detector.pt` -> `detector.onnx` / `detector.pt2`, beside the weights."""
    return Path(weights).with_suffix(FORMATS[fmt])


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    import onnx

    with warnings.catch_warnings():
        # The TorchScript-based exporter announces its deprecation and warns about LSTM batch sizes; neither
        # concerns the graph written (checked against PyTorch below).
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=[OUTPUT], do_constant_folding=True,
                          dynamic_axes={INPUT: {0: "batch", 1: "steps"}, OUTPUT: {0: "batch", 1: "steps"}})
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    model.producer_name = "deepfake export"
    onnx.save(model, str(path))


def _export_program(module: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LSTM weights "assigned during export": torch's own note, harmless
        program = torch.export.export(module, (example,), dynamic_shapes={INPUT: {0: batch}})
    torch.export.save(program, str(path), extra_files={META_FILE: json.dumps(meta)})


def _check(net, module: nn.Module, meta: dict[str, Any], steps: int, tolerance: float) -> float:
    """Largest |logit difference| between the exported net and PyTorch on random windows of `steps` crops and
    shorter ones; ExportError above `tolerance`."""
    generator = torch.Generator().manual_seed(0)
    size = int(meta["img_size"])
    worst = 0.0
    for b, t in ((3, steps), (2, max(1, steps // 2)), (1, 1)):
        x = torch.randn(b, t, 3, size, size, generator=generator)
        with torch.inference_mode():
            want = module(x).float()
            got = net(x).float().cpu()
        if got.shape != want.shape:
            raise ExportError(f"the exported model gives logits of shape {tuple(got.shape)} for {tuple(want.shape)}")
        worst = max(worst, float((got - want).abs().max()))
    if not worst <= tolerance:
        raise ExportError(f"the exported model's logits differ from PyTorch's by {worst:.2e} (more than "
                          f"{tolerance:g}); nothing written")
    return worst


def export_detector(weights: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None,
                    tolerance: float = TOLERANCE) -> ExportResult:
    """Export a detector checkpoint (`detector.pt` or a `deepfake fit` .ckpt) to ONNX or a torch.export program.

    Args:
        weights: the checkpoint (`deepfake.checkpoint.load_detector` reads it, safely).
        fmt: ``onnx`` or ``exported``.
        out: the file to write (default: the weights' name with .onnx / .pt2); written atomically, and only after
            its logits matched PyTorch's.
        tolerance: the largest |logit difference| from PyTorch accepted on the check's random windows.

    Returns:
        An `ExportResult`.

    Raises:
        ExportError: a format or model that can't be exported, or an export that does not match PyTorch.
        deepfake.checkpoint.CheckpointError, FileNotFoundError: weights that can't be loaded.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    weights = Path(weights).expanduser()
    out = Path(out).expanduser() if out is not None else default_output(weights, fmt)
    if out.suffix.lower() != FORMATS[fmt]:
        raise ExportError(f"{out}: a {fmt} export must end in {FORMATS[fmt]} (predict chooses how to load it by the "
                          f"suffix)")
    if out.resolve() == weights.resolve():
        raise ExportError(f"{out} is the weights file itself; give another --output")
    model, meta = load_detector(weights)
    seq_len = meta.get("seq_len")
    if not seq_len:
        raise ExportError(f"{weights} records no seq_len (frames per window): an exported model needs one")
    seq_len = int(seq_len)
    bidirectional = bool(meta.get("model", {}).get("bidirectional"))
    if fmt == "exported" and bidirectional:
        raise ExportError("a bidirectional LSTM can't be exported with torch.export (its steps are fixed and padding "
                          "would change the backward direction); use --format onnx")
    module = _Windows(model.float().eval()).eval()
    meta = {**meta, "export": {"format": fmt, "source": weights.name, "source_sha256": sha256_of(weights),
                               "torch": torch.__version__, "opset": OPSET if fmt == "onnx" else None,
                               "steps": None if fmt == "onnx" else seq_len,
                               "input": f"{INPUT}: (B, T, 3, img_size, img_size) float32, RGB / 255 normalised "
                                        f"with mean and std",
                               "output": f"{OUTPUT}: (B, T) per-step logits, before calibration"}}
    example = torch.randn(2, seq_len, 3, int(meta["img_size"]), int(meta["img_size"]))
    with atomic_path(out) as tmp:
        try:
            (_export_onnx if fmt == "onnx" else _export_program)(module, example, tmp, meta)
        except Exception as e:  # the exporters raise many types; say which model and why, in one line
            raise ExportError(f"can't export {weights} to {fmt} ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]})") from None
        net, stored = load_exported(tmp, "cpu")
        error = _check(net, module, stored, seq_len, tolerance)
    return ExportResult(out, fmt, meta, error)


def check_export(weights: str | os.PathLike, exported: str | os.PathLike, tolerance: float = TOLERANCE) -> float:
    """The check `export_detector` makes before keeping a file, on a file already written: its logits against the
    PyTorch model's of `weights` on random windows.

    Returns:
        The largest |logit difference|.

    Raises:
        ExportError: the file can't be loaded, records no seq_len, or differs by more than `tolerance`.
    """
    model, meta = load_detector(weights)
    net, stored = load_exported(exported, "cpu")
    steps = int(stored.get("seq_len") or meta.get("seq_len") or 0)
    if not steps:
        raise ExportError(f"{exported} records no seq_len (frames per window)")
    return _check(net, _Windows(model.float().eval()).eval(), stored, steps, tolerance)
