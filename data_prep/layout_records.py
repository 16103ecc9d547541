"""What a dataset layout produces (`VideoRecord`s in a `LayoutResult`), how it is asked (`LayoutOptions`), and
the spellings of labels and splits every layout accepts. The layouts themselves: `data_prep.layouts` (DFDC,
DeeperForensics-1.0, a folder, and the dispatcher) and `data_prep.layouts_bench` (the benchmark datasets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.files import OneLineError
from data_prep.index import LABELS

__all__ = ["LayoutError", "LayoutOptions", "LayoutResult", "VideoRecord", "parse_label", "parse_split"]

_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test", "testing": "test", "": ""}


class LayoutError(OneLineError):
    """SOURCE does not look like the layout asked for, or its label files are malformed; one line."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset.

    Attributes:
        path: the file (may not exist: a listed but missing video is reported by extraction).
        video: id, the path relative to SOURCE with `/` separators.
        label: 0 real, 1 fake.
        split: ``train``, ``val``, ``test`` or empty.
        original: id of the real video the fake was made from, or the video's own id.
        group: a proxy for who is in it, which splits keep on one side: the DFDC part folder, the DeeperForensics
            actor, labels.csv's `group` column; empty: the same as `original` (module docstring: not an identity).
    """

    path: Path
    video: str
    label: int
    split: str
    original: str
    group: str = ""
    dataset: str = ""
    method: str = ""


@dataclass(frozen=True)
class LayoutOptions:
    """A layout and its options: `name` (one of `LAYOUTS`), the FaceForensics++ `compression` (``c0``, ``c23``,
    ``c40``, ``raw``; None: the only one there, or c23) and `splits`, the folder of FF++'s official
    ``train.json`` / ``val.json`` / ``test.json`` (None: ``SOURCE/splits/`` when there)."""

    name: str = "auto"
    compression: str | None = None
    splits: str | os.PathLike | None = None


@dataclass
class LayoutResult:
    """Videos found under SOURCE, sorted by id, and what was left out.

    Attributes:
        layout: the layout used (never ``auto``).
        records: the videos.
        skipped: number of video files on disk that the layout's label files don't list.
        notes: one-line remarks worth telling the user (e.g. why videos were skipped).
    """

    layout: str
    records: list[VideoRecord]
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def parse_split(value: str, where: str) -> str:
    """A split's spelling (train/training, val/valid/validation/dev, test/testing, empty) -> train, val, test or
    empty; LayoutError naming `where` otherwise."""
    key = str(value or "").strip().lower()
    if key not in _SPLIT_ALIASES:
        raise LayoutError(f"{where}: unknown split {value!r} (expected train, val, test or empty)")
    return _SPLIT_ALIASES[key]


def parse_label(value: object, where: str) -> int:
    """A label's spelling (real/fake, 0/1) -> 0 or 1; LayoutError naming `where` otherwise."""
    key = str(value).strip().lower()
    if key not in LABELS:
        raise LayoutError(f"{where}: unknown label {value!r} (expected real/fake or 0/1)")
    return LABELS[key]
