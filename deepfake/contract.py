"""What travels with a detector: the recipe that decides what its model sees, checked, defaulted and reported.

A detector's meta (`deepfake.checkpoint`, and the exported files' copy of it) holds, besides `img_size`, `mean`,
`std` (normalisation) and `seq_len` at its top level, the recipe of its training crops:

    meta["extraction"] = {"stride": 5, "margin": 0.3, "size": 240, "quality": 90, "detect_size": 640, ...,
                          "resize": "area-down-linear-up", "windows": "tail-aligned"}

keyed as `extract_config.json` (`data_prep.faces.OUTPUT_SETTINGS`), plus the crop resize rule
(`data_prep.track.RESIZE_RULE`) and how a track is cut into windows (`WINDOWS`, `deepfake.scoring.track_windows`).
Inference extracts faces with exactly those settings, crops at `size` resized to `img_size` by the one rule:

    config, notes = extract_config_for(meta, "detector.pt", stride=None, device="cpu")  # notes: one-line warnings
    record = extraction_record(meta, config)      # the `extraction` object of predict's JSON and metrics.json

A detector written before the recipe travelled (no `extraction`) gets the extraction defaults it was trained with
(its recorded stride and margin, crops at its `img_size`), said in a note. A recipe the extractor can't honour (a
size it can't make, a missing or mistyped field, an unknown resize rule) is refused with `RecipeError`, one line
naming the field (docs/contract.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from data_prep.faces import OUTPUT_SETTINGS, ExtractConfig, output_settings
from data_prep.index import EXTRACT_SETTINGS
from data_prep.track import RESIZE_RULE

__all__ = ["WINDOWS", "RECIPE_KEYS", "RecipeError", "ExtractionWarning", "recipe_meta", "recipe_of",
           "extract_config_for", "extraction_record", "index_extraction", "index_differences"]

log = logging.getLogger(__name__)

# Consecutive windows of seq_len crops, the last one ending at the track's end (`deepfake.scoring.track_windows`).
WINDOWS = "tail-aligned"
RECIPE_KEYS = (*OUTPUT_SETTINGS, "resize", "windows")
_DEFAULTS = output_settings(ExtractConfig())


class RecipeError(ValueError):
    """A detector whose recorded extraction can't be honoured; the message is one line naming the field."""


class ExtractionWarning(UserWarning):
    """What the model sees differs from, or is assumed to be, its training's; one line."""


def recipe_meta(extraction: dict[str, Any] | None, margin: float | None = None, stride: int | None = None,
                size: int | None = None) -> dict[str, Any]:
    """The recipe a new detector records: `extraction` (extract_config.json keys; missing ones take the extraction
    defaults), with `margin`/`stride` when given (what the training data says) and `size` when it has none."""
    recipe = {**_DEFAULTS, **({"size": int(size)} if size else {}),
              **{k: v for k, v in (extraction or {}).items() if k in OUTPUT_SETTINGS and v is not None}}
    recipe.update({k: v for k, v in (("margin", margin), ("stride", stride)) if v is not None})
    return {**recipe, "resize": RESIZE_RULE, "windows": WINDOWS}


def _check_type(key: str, value: Any, name: str) -> None:
    default = _DEFAULTS[key]
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:  # thresholds: three numbers
        ok = isinstance(value, list) and len(value) == 3 and all(isinstance(t, (int, float)) for t in value)
    if not ok:
        raise RecipeError(f"{name}: extraction.{key} is {value!r}, not a {type(default).__name__} like "
                          f"{default!r}; the detector's recorded extraction can't be honoured")


def _check_size(meta: dict[str, Any], name: str) -> int:
    size = meta.get("img_size")
    if not (isinstance(size, int) and not isinstance(size, bool) and 16 <= size <= 2048):
        raise RecipeError(f"{name}: img_size {size!r} is not a crop side the extractor can make (an integer in "
                          f"[16, 2048] pixels)")
    return size


def recipe_of(meta: dict[str, Any], name: str = "the detector") -> tuple[dict[str, Any], list[str]]:
    """The recipe a detector records, and the keys it did not record (filled with the defaults it was trained with).

    Args:
        meta: the detector's meta.
        name: what to call the detector in messages (its file).

    Raises:
        RecipeError: a size the extractor can't make, a missing or mistyped field, an unknown resize rule or windowing.
    """
    img_size = _check_size(meta, name)
    recorded = meta.get("extraction")
    if recorded is None:  # written before the recipe travelled: what the code of that time used
        recipe = recipe_meta(None, meta.get("margin"), meta.get("stride"), img_size)
        given = {k for k in ("margin", "stride") if meta.get(k) is not None}
        return recipe, [k for k in RECIPE_KEYS if k not in given]
    if not isinstance(recorded, dict):
        raise RecipeError(f"{name}: extraction is a {type(recorded).__name__}, not an object of extraction settings")
    missing = [k for k in RECIPE_KEYS if k not in recorded]
    if missing:
        raise RecipeError(f"{name}: the recorded extraction lacks extraction.{missing[0]}"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                          + "; re-export the detector or restore the field")
    for key in OUTPUT_SETTINGS:
        _check_type(key, recorded[key], name)
    for key, known in (("resize", RESIZE_RULE), ("windows", WINDOWS)):
        if recorded[key] != known:
            raise RecipeError(f"{name}: extraction.{key} {recorded[key]!r} is not one this version applies "
                              f"({known!r})")
    try:
        ExtractConfig(**{k: recorded[k] for k in OUTPUT_SETTINGS})
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{name}: extraction.{' '.join(str(err).split())}") from None
    return {k: recorded[k] for k in RECIPE_KEYS}, []


def extract_config_for(meta: dict[str, Any], name: str = "the detector", stride: int | None = None,
                       device: str = "auto") -> tuple[ExtractConfig, list[str]]:
    """The extraction settings that feed this detector what it was trained on, and one-line notes to warn with.

    Args:
        meta: the detector's meta.
        name: what to call the detector in the notes.
        stride: a user's override of the recorded stride (None: the recorded one).
        device: where faces are detected (the other settings that change only speed keep their defaults).

    Returns:
        (config, notes): a note says which defaults an old detector was given, and which override changes the
        model's input (the setting and both values).

    Raises:
        RecipeError: see `recipe_of`.
    """
    recipe, defaulted = recipe_of(meta, name)
    notes = []
    if defaulted:
        notes.append(f"{name} records no {', '.join(defaulted)} (written before the extraction recipe "
                     f"travelled with a detector): using the defaults it was trained with, "
                     + ", ".join(f"{k} {recipe[k]}" for k in defaulted))
    settings = {k: recipe[k] for k in OUTPUT_SETTINGS}
    if stride is not None and stride != settings["stride"]:
        notes.append(f"stride {stride} overrides the detector's stride {settings['stride']} (its training crops'): "
                     f"the model sees faces sampled unlike its training")
        settings["stride"] = stride
    settings["thresholds"] = tuple(settings["thresholds"])
    return ExtractConfig(**settings, device=device), notes


def extraction_record(meta: dict[str, Any], settings: ExtractConfig | dict[str, Any] | None) -> dict[str, Any]:
    """The `extraction` object of a result: the settings the crops were made with (`settings`: an `ExtractConfig`, or
    extract_config.json's dict, whose missing keys are null), keyed as in extract_config.json, then the resize
    rule, the windowing and the model's input (`img_size`, `mean`, `std`, `seq_len`)."""
    if isinstance(settings, ExtractConfig):
        settings = output_settings(settings)
    settings = settings or {}
    return {**{k: settings.get(k) for k in OUTPUT_SETTINGS}, "resize": RESIZE_RULE, "windows": WINDOWS,
            **{k: meta.get(k) for k in ("img_size", "mean", "std", "seq_len")}}


def index_extraction(index_dir: str | Path, tracks: list, margin: float | None = None,
                     stride: int | None = None) -> dict[str, Any]:
    """The extraction settings of an index's crops, for the detector trained on them (`recipe_meta`).

    From `extract_config.json` beside the index (`deepfake-extract` writes it); what it does not say takes the
    extraction defaults (logged), except the stride, inferred from the frame steps, and the size, read from a crop.

    Args:
        index_dir: the index's folder.
        tracks: its `data_prep.index.FaceTrackRecord`s (`frames`, `crops`).
        margin, stride: the data config's values when it sets them (they win).
    """
    import cv2
    import numpy as np

    try:
        data = json.loads((Path(index_dir) / EXTRACT_SETTINGS).read_text())
    except (OSError, ValueError):
        data = None
    found = {k: data[k] for k in OUTPUT_SETTINGS if isinstance(data, dict) and data.get(k) is not None}
    if "stride" not in found:
        steps = np.concatenate([np.diff(t.frames) for t in tracks if len(t.frames) > 1] or [np.array([1])])
        found["stride"] = int(max(1, np.median(steps)))
    first = next((t.crops[0] for t in tracks if t.crops), None)
    image = cv2.imread(first) if "size" not in found and first else None
    if image is not None:
        found["size"] = int(image.shape[0])
    found.update({k: v for k, v in (("margin", margin), ("stride", stride)) if v is not None})
    unknown = [k for k in OUTPUT_SETTINGS if k not in found]
    if unknown:
        log.warning("%s says nothing of %s: the detector records the extraction defaults for them (%s)",
                    Path(index_dir) / EXTRACT_SETTINGS, ", ".join(unknown),
                    ", ".join(f"{k} {_DEFAULTS[k]}" for k in unknown))
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-6
    return a == b


def index_differences(settings: dict[str, Any] | None, meta: dict[str, Any], name: str = "the index") -> str | None:
    """One line naming each setting of an index's crops (extract_config.json) that differs from the detector's
    training crops (both values), or None when they agree (or the index does not say)."""
    if not isinstance(settings, dict):
        return None
    try:
        recipe, _ = recipe_of(meta)
    except RecipeError:
        return None
    changed = [f"{k} {settings[k]} (trained on {recipe[k]})" for k in OUTPUT_SETTINGS
               if k != "size" and settings.get(k) is not None and not _same(settings[k], recipe[k])]
    if not changed:
        return None
    return f"{name}'s crops were made unlike the detector's training crops: {', '.join(changed)}; its scores may be off"
