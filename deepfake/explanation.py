"""What an explanation is: one video's Grad-CAM maps per face track, with the scores and frames they go with.

Made by `deepfake.explain.explain_faces`; drawn and saved by `deepfake.explain_render`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = ["ExplainError", "TrackExplanation", "Explanation", "upsample_cams"]


def upsample_cams(cams: np.ndarray, side: int) -> np.ndarray:
    """(n, h, w) maps -> (n, side, side) float32 (bilinear, pixel centres aligned: torch's align_corners=False)."""
    out = np.empty((len(cams), side, side), np.float32)
    for i, cam in enumerate(np.asarray(cams, np.float32)):
        out[i] = cv2.resize(cam, (side, side), interpolation=cv2.INTER_LINEAR)
    return np.maximum(out, 0.0, out=out)


class ExplainError(ValueError):
    """An explanation that can't be made for this model (e.g. a backbone without a spatial feature map)."""


@dataclass
class TrackExplanation:
    """One face track's explanation.

    Attributes:
        track: the track number (predict's `faces[*].track`).
        frames: (N,) frame numbers of its crops.
        face_boxes: (N, 4) the detector's boxes, x1, y1, x2, y2 in video pixels.
        crop_boxes: (N, 4) the square each crop was cut from, x0, y0, x1, y1 in video pixels (may reach past the
            frame, where the crop is black): the crop's pixel (u, v) of S is video pixel (x0 + u * side / S, ...).
        cams: (N, h, w) float32 Grad-CAM of each crop at the feature map's resolution, >= 0, in the logit's units;
            `map(i)` / `maps` give them at the crop's size (bilinear), as heatmaps.npz stores them.
        side: the crops' side S in pixels.
        steps: (N,) p(fake) per step (each crop in the first window holding it).
        weights: (N,) each crop's share of its window's heat: the sum of its map over the sum of the window's maps.
        windows: (start, end, p_fake) per window, in crop indices (end exclusive).
        p_fake: the track's p(fake).
        top_frames: the frames that moved their window's score most, most decisive first (`deepfake.scoring`).
        crops: the crops themselves (arrays or `JpegCrops`), for drawing; not saved.
    """

    track: int
    frames: np.ndarray
    face_boxes: np.ndarray
    crop_boxes: np.ndarray
    cams: np.ndarray
    side: int
    steps: np.ndarray
    weights: np.ndarray
    windows: list[tuple[int, int, float]]
    p_fake: float
    top_frames: list[int]
    crops: Any = field(default=None, repr=False)

    def map(self, i: int) -> np.ndarray:
        """Crop i's map at the crop's size, (S, S) float32."""
        return upsample_cams(self.cams[i : i + 1], self.side)[0]

    @property
    def maps(self) -> np.ndarray:
        """Every crop's map at the crop's size, (N, S, S) float32 (N * S * S * 4 bytes: 14 MB for 60 crops of 240 px;
        `save_explanation` writes them in chunks instead)."""
        return upsample_cams(self.cams, self.side)


@dataclass
class Explanation:
    """A video's explanation: its tracks', the layer the maps were taken on and its side in cells."""

    video: str
    tracks: list[TrackExplanation]
    layer: str
    cells: int
    calibrated: bool
    fps: float = 0.0
    n_frames: int = 0
    width: int = 0
    height: int = 0
