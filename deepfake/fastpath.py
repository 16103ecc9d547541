"""Which runtime scores a detector: ONNX Runtime on the CPU by default, PyTorch where only it will do.

    loaded = load_model("detector.pt", runtime="auto", device="cpu")
    loaded.model, loaded.meta, loaded.runtime        # an OnnxNet and "onnx", or a DeepfakeDetector and "torch"
    loaded.note                                      # one line for the user, or None

With the export extra installed (onnx, onnxruntime), `--runtime auto` (the default of predict, evaluate, serve and
submit) scores a `detector.pt` on the CPU with an ONNX copy of it, about 1.5-2x faster and without importing timm:

1. `detector.onnx` beside it, when that file says it was exported from these weights (its meta's
   ``export.source_sha256``; `deepfake fit` writes it);
2. else `<cache>/onnx/<sha256 of detector.pt>.onnx`, used when the record beside it (`<sha256>.json`) says this
   very file (its own SHA-256) passed the check against PyTorch;
3. else the weights are exported there once (`deepfake.export.export_detector`, checked against PyTorch before it
   is kept), with one line saying so.

`<cache>` is `data_prep.files.cache_folder()`: `$DEEPFAKE_CACHE`, else `$XDG_CACHE_HOME/deepfake`, else
`~/.cache/deepfake`. Steps 1 and 2 hash the weights and read the cache without importing torch, so a cached
detector scores in a process that never imports it (with `data_prep.mtcnn`'s ONNX backend for the face detector).

PyTorch scores instead (by itself, with a note only when ONNX was asked for by name) for what needs it: a GPU,
`--precision bf16`/`fp16`, explanations and calibration refits (the caller says so with `needs_torch`). A cached
export that fails its check is deleted and PyTorch scores, with one line saying why; so does a cache folder that
can't be written. `--runtime torch` always takes the PyTorch weights; `--runtime onnx` fails (one line) where ONNX
Runtime is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.files import atomic_write, cache_folder, sha256_of
from deepfake.calibration import apply_calibration
from deepfake.detector import Detector
from deepfake.runtime import load_by_suffix  # noqa: F401 - public here too (`Detector.load`)

__all__ = ["RUNTIMES", "Loaded", "NumpyDetector", "export_cache", "load_model", "load_by_suffix", "detector_for",
           "onnx_runtime_installed"]

RUNTIMES = ("auto", "torch", "onnx")
log = logging.getLogger(__name__)


def export_cache() -> Path:
    """Where ONNX copies of detector.pt files are kept: `<cache>/onnx`, one `<sha256>.onnx` and its record each."""
    return cache_folder() / "onnx"


def onnx_runtime_installed() -> bool:
    """ONNX Runtime importable (found without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


@dataclass
class Loaded:
    """A loaded detector network and how it runs.

    Attributes:
        model: a `deepfake.model.DeepfakeDetector`, or an exported net (`deepfake.runtime.OnnxNet`, `ProgramNet`).
        meta: the detector's meta.
        runtime: ``torch``, ``onnx`` or ``torch.export`` (a .pt2 file).
        path: the file the network was loaded from (the ONNX copy when one scores).
        note: one line for the user (an export made, a cached one deleted, PyTorch used instead), or None.
    """

    model: Any
    meta: dict[str, Any]
    runtime: str
    path: Path
    note: str | None = None


def load_model(weights: str | os.PathLike, runtime: str = "auto", device: str = "auto", precision: str = "auto",
               needs_torch: str | None = None) -> Loaded:
    """The network that scores `weights`, on the runtime the rules of the module docstring choose.

    Args:
        weights: a detector.pt / .ckpt, or an exported .onnx / .pt2 (which run as they are).
        runtime: ``auto``, ``torch`` or ``onnx``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: the precision asked for (bf16 and fp16 need PyTorch).
        needs_torch: what the caller will do that needs PyTorch (e.g. ``--explain``), or None.

    Raises:
        ValueError: a runtime that can't be honoured (one line; `deepfake.runtime.ExportError` for exported files).
        deepfake.checkpoint.CheckpointError and others from loading the PyTorch weights.
    """
    from data_prep.detector import resolve_device
    from deepfake.runtime import exported_format, load_exported

    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    path = Path(weights)
    kind = exported_format(path)
    if kind is not None:
        if runtime == "torch" and kind == "onnx":
            raise ValueError(f"--runtime torch: {path} is an ONNX file; give the PyTorch weights (detector.pt)")
        net, meta = load_exported(path, device)
        return Loaded(net, meta, "onnx" if kind == "onnx" else "torch.export", path)
    resolved = resolve_device(device)
    why_torch = (needs_torch or (f"--precision {precision}" if precision in ("bf16", "fp16") else None)
                 or (f"--device {resolved}" if resolved != "cpu" and runtime == "auto" else None))
    note = None
    if runtime == "onnx" and not onnx_runtime_installed():
        raise ValueError("--runtime onnx needs ONNX Runtime (pip install 'deepfake[export]'), or use --runtime torch")
    if runtime == "onnx" and why_torch:
        note = f"{why_torch} needs PyTorch: scoring with the PyTorch weights instead of ONNX Runtime"
    elif runtime != "torch" and not why_torch and onnx_runtime_installed():
        found, note, net = _onnx_copy(path, resolved)
        if found is not None:
            net, meta = (net, net.meta) if net is not None else load_exported(found, resolved)
            return Loaded(net, meta, "onnx", found, note)
    from deepfake.checkpoint import load_detector

    model, meta = load_detector(path)
    return Loaded(model, meta, "torch", path, note)


def _onnx_copy(weights: Path, device: str) -> tuple[Path | None, str | None, Any]:
    """An ONNX copy of `weights` that may be used (beside it, cached, or exported now), a note, and the net when it
    was loaded on the way (the one beside the weights, to read whose weights it is); or (None, why, None)."""
    from deepfake.runtime import ExportError, load_exported

    sha = sha256_of(weights)
    beside = weights.with_suffix(".onnx")
    if beside.is_file():
        try:
            net, meta = load_exported(beside, device)
            if meta.get("export", {}).get("source_sha256") == sha:
                return beside, None, net
        except ExportError as err:
            log.info("not using %s: %s", beside, err)
    folder = export_cache()
    onnx, record = folder / f"{sha}.onnx", folder / f"{sha}.json"
    if onnx.is_file():
        if _record_of(record).get("onnx_sha256") == sha256_of(onnx):
            return onnx, None, None
        # Not known to have passed the check (no record, or the file changed since): check it now.
        from deepfake.export import check_export

        try:
            error = check_export(weights, onnx)
        except ExportError as err:
            _remove(onnx, record)
            return None, (f"the cached ONNX copy {onnx} failed its check against PyTorch ({err}); deleted it; "
                          f"scoring with PyTorch"), None
        if not _write_record(onnx, record, sha, weights, error):
            return None, f"can't write the ONNX cache {folder}: scoring with PyTorch", None
        return onnx, None, None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError("not writable")
        from deepfake.export import export_detector

        result = export_detector(weights, "onnx", onnx)
    except OSError as err:
        return None, f"can't write the ONNX cache {folder} ({err.strerror or err}): scoring with PyTorch", None
    except ExportError as err:
        return None, f"{weights.name} can't run on ONNX Runtime ({err}): scoring with PyTorch", None
    if not _write_record(onnx, record, sha, weights, result.max_error):
        _remove(onnx)
        return None, f"can't write the ONNX cache {folder}: scoring with PyTorch", None
    return onnx, (f"exported {weights.name} to ONNX once (logits within {result.max_error:.1e} of PyTorch's): "
                  f"{onnx}; later runs start from it (--runtime torch: PyTorch)"), None


def _record_of(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(onnx: Path, record: Path, sha: str, weights: Path, error: float) -> bool:
    """Record that `onnx` (by its own hash) passed the check against `weights`; False when it can't be written."""
    from deepfake.export import TOLERANCE

    try:
        atomic_write(record, json.dumps({"onnx_sha256": sha256_of(onnx), "source_sha256": sha, "source": str(weights),
                                         "max_error": error, "tolerance": TOLERANCE}, indent=1) + "\n")
    except OSError:
        return False
    return True


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def detector_for(loaded: Loaded, config) -> Detector:
    """The `Detector` over a loaded network with a `deepfake.inference.PredictConfig`'s settings: a `NumpyDetector`
    (no torch) for ONNX Runtime on the CPU, else `Detector`; `runtime` and `runtime_note` say how it runs."""
    if loaded.runtime == "onnx" and loaded.model.device == "cpu" and config.precision in ("auto", "fp32"):
        detector: Detector = NumpyDetector(loaded.model, loaded.meta, batch_size=config.batch_size,
                                           calibrated=config.calibrated)
    else:
        detector = Detector(loaded.model, loaded.meta, device=config.device, batch_size=config.batch_size,
                            precision=config.precision, calibrated=config.calibrated)
    detector.runtime, detector.runtime_note = loaded.runtime, loaded.note
    return detector


class NumpyDetector(Detector):
    """`deepfake.inference.Detector` over an ONNX Runtime net on the CPU, in NumPy: no torch is imported.

    Windows are prepared and normalised as `Detector.prepare` does (the same float32 arithmetic), scored by
    `OnnxNet.run` and calibrated by the same rule; windowing and scoring are `Detector`'s own code.
    """

    def __init__(self, net, meta: dict, batch_size: int | None = None, calibrated: bool = True) -> None:  # noqa: D107
        self.read_meta(meta, batch_size, calibrated, "cpu")
        self.exported, self.model, self.device, self.precision = True, net, "cpu", "fp32"
        self._mean = np.asarray(meta["mean"], np.float32).reshape(1, 1, 3, 1, 1) * np.float32(255)
        self._std = np.asarray(meta["std"], np.float32).reshape(1, 1, 3, 1, 1) * np.float32(255)

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """(B, T, S, S, 3) uint8 RGB crops -> (B, T, 3, img_size, img_size) float32, normalised."""
        batch = np.stack([self._resize(np.asarray(c, dtype=np.uint8)) for c in crops])
        return (batch.transpose(0, 1, 4, 2, 3).astype(np.float32) - self._mean) / self._std

    def probabilities(self, logits) -> np.ndarray:
        """(B, T) logits -> (B, T) p(fake), calibrated when the detector is."""
        z = apply_calibration(np.asarray(logits, np.float32), self.calibration)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def _forward(self, batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits = np.asarray(self.model.run(self.prepare(batch)), np.float32)
        return logits, self.probabilities(logits)
