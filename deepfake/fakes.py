"""Fakes made on the fly from real face sequences, for training that generalises to manipulations never seen.

Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): a colour- and geometry-jittered copy of a real face is
blended back into itself through a soft, deformed mask (`data_prep.sbi`). The fake carries what face swaps share
(a blending boundary, a colour or sharpness mismatch between the inner face and its surroundings) without any one
generator's fingerprint, so a detector trained on it learns those traces instead.

Here a whole sequence of crops is blended with ONE set of parameters (`data_prep.sbi.sample_blend_params`),
drifting smoothly over the T frames when `drift` is on, so the LSTM sees a temporally consistent fake. The face
box inside a crop follows from the crop's geometry (extraction centres the face box with `margin` of its side on
every side); the mask is drawn around it. Blending runs before the usual augmentations.

`data.fakes` selects where the training fakes come from:
- ``labelled``: the index's fakes only (the default, as before);
- ``sbi``: self-blended copies of the real tracks only, for real-only data (labelled fakes in the index are left
  out of training and validation, so the run measures what it trains);
- ``both``: labelled fakes plus self-blended ones, `sbi_share` of the fake draws being self-blended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from data_prep.sbi import sample_blend_params, self_blend

__all__ = ["FakeConfig", "face_box_in_crop", "self_blend_sequence"]

MODES = ("labelled", "sbi", "both")


@dataclass
class FakeConfig:
    """Where training fakes come from (module docstring).

    Attributes:
        mode: ``labelled``, ``sbi`` or ``both``.
        sbi_share: with ``both``, the share of fake draws that are self-blended (the rest are labelled fakes).
        drift: let the blend parameters drift smoothly over a sequence (False: the same on every frame).
    """

    mode: Literal["labelled", "sbi", "both"] = "labelled"
    sbi_share: float = 0.5
    drift: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"data.fakes.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 < self.sbi_share < 1.0:
            raise ValueError(f"data.fakes.sbi_share must be in (0, 1), got {self.sbi_share}")

    @property
    def self_blended(self) -> bool:
        return self.mode in ("sbi", "both")

    @property
    def labelled(self) -> bool:
        return self.mode in ("labelled", "both")


def face_box_in_crop(size: int, margin: float) -> np.ndarray:
    """The face box (x1, y1, x2, y2) inside a square crop of side `size` cut with `margin` per side."""
    lo = margin / (1 + 2 * margin) * size
    hi = (1 + margin) / (1 + 2 * margin) * size
    return np.array([lo, lo, hi, hi], np.float32)


def self_blend_sequence(frames: np.ndarray, rng: np.random.Generator, margin: float, drift: bool = True) -> np.ndarray:
    """A self-blended fake of a real crop sequence: one set of blend parameters for all its frames.

    Args:
        frames: (T, S, S, 3) uint8 RGB crops of one face track.
        rng: the random generator (the data loader's, per worker and seed).
        margin: the margin the crops were cut with.
        drift: smooth drift of the parameters over the frames.

    Returns:
        (T, S, S, 3) uint8: the fake sequence.
    """
    params = sample_blend_params(rng, drift=drift)
    box = face_box_in_crop(frames.shape[1], margin)
    return np.stack([self_blend(f, box, params, frame_index=t) for t, f in enumerate(frames)])
