"""Detector weights that load without running code: a plain state dict plus JSON-able settings.

    save_detector("detector.pt", net, meta)        # atomic (temp file + rename)
    net, meta = load_detector("detector.pt")       # torch.load(weights_only=True); eval mode
    net, meta = load_detector("runs/.../best.ckpt")  # a training checkpoint works too (weights_only=True)

A pickled checkpoint can run arbitrary code when loaded; `weights_only=True` only rebuilds tensors and plain
containers, so a file from an untrusted source can at worst hold wrong numbers. `meta` records what inference
needs to feed the model the way it was trained (docs/architecture.md):

    model     DeepfakeDetector keyword arguments (pretrained off: nothing is downloaded to rebuild it)
    img_size  crop side; mean, std: normalisation of RGB in [0, 1]
    seq_len   T used in training; margin, stride: the extraction settings of the training crops
    extraction  the whole recipe of the training crops (extract_config.json's keys, the resize rule, the
              windowing: `deepfake.contract`); absent in detectors written before it travelled
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data_prep.files import atomic_path
from deepfake.contract import RecipeError, recipe_meta, recipe_of
from deepfake.model import DeepfakeDetector

__all__ = ["CheckpointError", "FORMAT", "META_KEYS", "build_meta", "save_detector", "load_detector",
           "check_unpacked_size", "check_input_meta"]

FORMAT = "deepfake-detector/1"
META_KEYS = ("model", "img_size", "mean", "std", "seq_len", "margin", "stride")


class CheckpointError(ValueError):
    """A file that is not a usable detector checkpoint; the message is one line."""


def build_meta(net: DeepfakeDetector, seq_len: int | None, margin: float | None, stride: int | None,
               extraction: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The meta of a detector: architecture, input format, and the data settings it was trained with.

    Args:
        net: the network.
        seq_len: frames per sequence in training.
        margin: face box margin of the training crops.
        stride: video frames between training crops.
        extraction: the training crops' extract_config.json settings (`deepfake.contract.index_extraction`); the
            ones it lacks are the extraction defaults, with crops at the model's input size.
        **extra: more JSON-able entries (e.g. validation metrics).
    """
    from deepfake import __version__

    recipe = recipe_meta(extraction, margin, stride, net.data_config["img_size"])
    meta = {"model": net.kwargs(), **net.data_config, "seq_len": seq_len, "margin": recipe["margin"],
            "stride": recipe["stride"], "extraction": recipe, "deepfake_version": __version__, **extra}
    return _plain(meta)


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """JSON round trip: only str/int/float/bool/None/list/dict survive, all of which weights_only can load."""
    try:
        return json.loads(json.dumps(meta))
    except (TypeError, ValueError) as e:
        raise ValueError(f"detector meta must be JSON-able: {e}") from e


def save_detector(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Writes `model`'s weights and `meta` to `path` atomically.

    Args:
        path: the file to write (conventionally `detector.pt`).
        model: the network; its state dict is stored on CPU.
        meta: at least the keys in `META_KEYS` (see `build_meta`).

    Returns:
        The path written.
    """
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"detector meta lacks {', '.join(missing)}")
    recipe_of(meta, os.fspath(path))  # a recipe inference could not honour is refused before anything is written
    path = Path(path)
    state = {k.replace("_orig_mod.", ""): v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "state_dict": state, "meta": _plain(meta)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _state_and_meta(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a detector checkpoint (holds a {type(obj).__name__})")
    if obj.get("format") == FORMAT:
        return obj["state_dict"], obj["meta"]
    if "state_dict" in obj and "pytorch-lightning_version" in obj:  # a Lightning training checkpoint
        meta = obj.get("detector_meta")
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path} is a Lightning checkpoint without detector settings (not written by "
                                  f"`deepfake fit`)")
        state = {k.removeprefix("net."): v for k, v in obj["state_dict"].items() if k.startswith("net.")}
        return state, meta
    raise CheckpointError(f"{path} is not a detector checkpoint (no detector weights and settings in it)")


def refusal(path: Path | str, message: str) -> str:
    """Why `torch.load(weights_only=True)` refused a file, in one line (PyTorch's message is a paragraph)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return (f"{path} can't be loaded safely: it asks to call {found.group(1)}, so loading it could run code; "
                f"it is not a detector checkpoint")
    found = re.search(r"Unsupported operand \d+|Unsupported class [\w.]+|Unsupported global: [\w. ]+", message)
    return f"{path} can't be loaded safely: not a PyTorch file of tensors ({found.group(0) if found else 'bad data'})"


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` with one-line errors: a file that would run code is refused by name.

    Raises:
        CheckpointError: refused (it asks to call something) or not a readable PyTorch file.
    """
    check_unpacked_size(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(refusal(path, str(e))) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch file ({' '.join(str(e).split())[:200]})") from e


def load_detector(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[DeepfakeDetector,
                                                                                                dict[str, Any]]:
    """Loads a detector saved by `save_detector`, or the network of a `deepfake fit` Lightning checkpoint.

    Loading never runs code from the file (`torch.load(weights_only=True)`).

    Args:
        path: `detector.pt` or a `.ckpt` from training.
        map_location: device for the weights (and the returned model).

    Returns:
        (model in eval mode on `map_location`, meta).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"detector checkpoint {path} does not exist")
    state, meta = _state_and_meta(safe_load(path, map_location), path)
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: detector settings lack {', '.join(missing)}")
    check_input_meta(meta, path)
    try:
        recipe_of(meta, os.fspath(path))
    except RecipeError as err:
        raise CheckpointError(str(err)) from None
    try:
        model = DeepfakeDetector(**{**meta["model"], "pretrained": False, "pretrained_file": None})
        model.load_state_dict({k.replace("_orig_mod.", ""): v for k, v in state.items()})
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights don't fit the recorded model "
                              f"({' '.join(str(e).split())[:300]})") from e
    return model.to(map_location).eval(), meta


def check_unpacked_size(path: str | os.PathLike, slack: int = 64 * 2**20, ratio: float = 4.0) -> None:
    """Refuse a checkpoint that would unpack to far more than its size on disk, before anything is unpacked.

    PyTorch writes its zip archives uncompressed, so a detector unpacks to about its own size; a deflated archive
    can hold gigabytes of zeros in a few megabytes (a zip bomb), and `torch.load` allocates what the archive
    declares. The declared sizes are what PyTorch's reader allocates and checks the data against, so summing them
    bounds memory without unpacking anything. Files that are not zip archives (PyTorch's legacy format) load
    what they hold and are not checked.

    Raises:
        CheckpointError: the entries declare more than `ratio` x the file's size + `slack` bytes.
    """
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        bound = ratio * os.path.getsize(path) + slack
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load says what is wrong with it
    if unpacked > bound:
        size = os.path.getsize(path)
        raise CheckpointError(f"{path} would unpack to {unpacked / 2**20:.0f} MiB from {size / 2**20:.1f} MiB on "
                              f"disk (over the bound of {bound / 2**20:.0f} MiB): not a detector checkpoint, refused "
                              "before loading")


def check_input_meta(meta: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse settings that would make a detector fail later with a traceback (a string `mean`, a zero `std`, a
    negative crop size): CheckpointError naming the file and the setting."""
    def bad(key: str, want: str) -> CheckpointError:
        return CheckpointError(f"{path}: detector setting {key} is {str(meta.get(key))[:60]!r}; expected {want}")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for key, positive in (("mean", False), ("std", True)):
        value = meta.get(key)
        if not (isinstance(value, (list, tuple)) and len(value) == 3
                and all(number(v) and (v > 0 or not positive) for v in value)):
            raise bad(key, "three " + ("positive numbers" if positive else "numbers") + " (one per RGB channel)")
    if not (isinstance(meta.get("img_size"), int) and 16 <= meta["img_size"] <= 2048):
        raise bad("img_size", "a crop side in pixels, 16 to 2048")
    if not isinstance(meta.get("model"), dict):
        raise bad("model", "the model's settings (a mapping)")
    for key in ("seq_len", "stride"):
        if meta.get(key) is not None and not (isinstance(meta[key], int) and meta[key] >= 1):
            raise bad(key, "a whole number >= 1")
    if meta.get("margin") is not None and not (number(meta["margin"]) and 0 <= meta["margin"] <= 2):
        raise bad("margin", "a share of the face box in [0, 2]")
