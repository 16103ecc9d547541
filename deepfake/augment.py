"""Training augmentations, applied alike to every frame of a sequence.

Augmentations (the DFDC winners' set) run through albumentations' `images=` target, so every frame of a sequence
gets the same random parameters (same flip, crop shift, JPEG quality, colour change, cut-out part), as a real video
would. One `strength` knob scales their probabilities and magnitudes (0: flips only), which is what progressive
learning (EfficientNetV2) grows over training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np

from data_prep.track import face_box_in_crop

__all__ = ["AugmentConfig", "FacePartCutout", "build_augment", "DEFAULT_MARGIN"]

# Face box margin the crops were cut with when the index does not say (data_prep's default: 30 % per side).
DEFAULT_MARGIN = 0.3


@dataclass
class AugmentConfig:
    """Training augmentations (DFDC winners' set), each scaled by `strength`.

    Args:
        strength: scales every probability and magnitude below; 1.0 is the DFDC-style default (JPEG quality
            60-100, shift 10 %, scale 20 %, rotation 10 degrees, ...), 0 leaves flips only. At most 2.
        flip: horizontal flips (p 0.5, not scaled).
        jpeg: JPEG re-compression, quality from 100 - 40 * strength to 100.
        noise: Gaussian noise.
        blur: Gaussian blur.
        color: brightness/contrast or hue/saturation/value jitter.
        gray: conversion to grey: true (probability 0.1, scaled by `strength`), false, or a probability of its own
            (not scaled), e.g. 0.3 so that a detector trained on colour faces meets grey ones (CCTV, old footage).
        soften: a probability (not scaled) of shrinking the whole crop to 40-75 % and enlarging it back, both
            classes alike: a soft real face (low-resolution footage, a small face scaled up) then looks like
            training's reals, and what is left to tell a fake by is the inner face differing from its surroundings;
            0 (default): off.
        geometric: shift, scale and rotation (the face stays roughly centred).
        cutout: face-part cut-out: blacks out the eyes, nose, mouth or one half of the face, placed from the
            crop margin, so the model can't rely on one region.
        perturb: DeeperForensics-1.0 distortions as augmentation: keyword arguments of
            `deepfake.perturb_augment.DeeperForensicsDistortion` (e.g. `{mode: sing, levels: [1, 5], p: 0.3}`; `mode:
            mix` for std/mix-style training); None: off.
    """

    strength: float = 1.0
    flip: bool = True
    jpeg: bool = True
    noise: bool = True
    blur: bool = True
    color: bool = True
    gray: bool | float = True
    soften: float = 0.0
    geometric: bool = True
    cutout: bool = True
    perturb: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.strength, (int, float)) and 0.0 <= self.strength <= 2.0):
            raise ValueError(f"augment strength must be in [0, 2], got {self.strength!r}")
        if not isinstance(self.gray, bool) and not (isinstance(self.gray, (int, float)) and 0.0 <= self.gray <= 1.0):
            raise ValueError(f"augment gray must be true, false or a probability in [0, 1], got {self.gray!r}")
        if isinstance(self.soften, bool) or not (isinstance(self.soften, (int, float)) and 0.0 <= self.soften <= 1.0):
            raise ValueError(f"augment soften must be a probability in [0, 1], got {self.soften!r}")
        if self.perturb is not None and not isinstance(self.perturb, dict):
            raise ValueError(f"augment perturb must be a mapping of DeeperForensicsDistortion arguments or null, "
                             f"got {self.perturb!r}")


class FacePartCutout(A.ImageOnlyTransform):
    """Blacks out one part of the face (eyes, nose, mouth, left or right half) in a face crop.

    The DFDC winners cut out face parts found by landmarks; an albumentations transform sees only the images, so
    the parts are placed from the crop's geometry (`data_prep.track.face_box_in_crop`: extraction centres the face
    box with `margin` of its size on each side), at their usual places in a frontal face box, jittered. All images
    of one call get the same part.

    Args:
        margin: the crop margin per side, as a fraction of the face box.
        p: probability of applying the transform.
    """

    # (x1, y1, x2, y2) as fractions of the face box.
    PARTS = {
        "eyes": (0.08, 0.22, 0.92, 0.52),
        "nose": (0.35, 0.35, 0.65, 0.72),
        "mouth": (0.22, 0.65, 0.78, 0.92),
        "left": (0.0, 0.0, 0.5, 1.0),
        "right": (0.5, 0.0, 1.0, 1.0),
    }

    def __init__(self, margin: float = DEFAULT_MARGIN, p: float = 0.5) -> None:
        super().__init__(p=p)
        if not 0.0 <= margin <= 2.0:
            raise ValueError(f"margin must be in [0, 2], got {margin}")
        self.margin = float(margin)

    def get_params(self) -> dict:
        """Draw the part and its jitter: `box` as fractions of the crop."""
        rng = self.random_generator
        names = list(self.PARTS)
        x1, y1, x2, y2 = self.PARTS[names[int(rng.integers(len(names)))]]
        jx, jy = rng.uniform(-0.06, 0.06, size=2)
        lo, _, hi, _ = face_box_in_crop(1.0, self.margin)  # the face box as fractions of the crop
        to_crop = lambda v, j: float(np.clip(lo + (v + j) * (hi - lo), 0.0, 1.0))  # noqa: E731
        return {"box": (to_crop(x1, jx), to_crop(y1, jy), to_crop(x2, jx), to_crop(y2, jy))}

    def apply(self, img: np.ndarray, box: tuple = (0.0, 0.0, 0.0, 0.0), **params) -> np.ndarray:
        """Cut the drawn part out of one image."""
        h, w = img.shape[:2]
        x1, y1, x2, y2 = int(box[0] * w), int(box[1] * h), int(math.ceil(box[2] * w)), int(math.ceil(box[3] * h))
        out = img.copy()
        out[y1:y2, x1:x2] = 0
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("margin",)


def build_augment(cfg: AugmentConfig, margin: float = DEFAULT_MARGIN) -> A.Compose | None:
    """The albumentations pipeline for `cfg`; call it as `pipeline(images=frames)` with frames (T, H, W, 3) uint8.

    Args:
        cfg: which augmentations and how strong.
        margin: crop margin the crops were made with (places the face-part cut-out).

    Returns:
        The pipeline, or None when nothing is enabled.
    """
    s = float(cfg.strength)
    p = lambda base: float(min(1.0, base * s))  # noqa: E731
    t: list[A.BasicTransform] = []
    if cfg.flip:
        t.append(A.HorizontalFlip(p=0.5))
    if s > 0:
        if cfg.geometric:
            t.append(A.Affine(translate_percent=(-0.1 * s, 0.1 * s), scale=(1 - 0.2 * min(s, 1.5), 1 + 0.2 * s),
                              rotate=(-10 * s, 10 * s), border_mode=cv2.BORDER_CONSTANT, fill=0, p=p(0.5)))
        if cfg.color:
            t.append(A.OneOf([
                A.RandomBrightnessContrast(brightness_limit=0.2 * s, contrast_limit=0.2 * s),
                A.HueSaturationValue(hue_shift_limit=10 * s, sat_shift_limit=20 * s, val_shift_limit=15 * s),
            ], p=p(0.5)))
        if cfg.gray is True:
            t.append(A.ToGray(p=p(0.1)))
        elif cfg.gray:  # a probability of its own
            t.append(A.ToGray(p=float(cfg.gray)))
        if cfg.soften:
            t.append(A.Downscale(scale_range=(0.4, 0.75), p=float(cfg.soften),
                                 interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}))
        if cfg.cutout:
            t.append(FacePartCutout(margin=margin, p=p(0.25)))
        if cfg.blur:
            t.append(A.GaussianBlur(blur_limit=(3, 3 + 2 * max(0, round(s))), sigma_limit=(0.3, 0.3 + s), p=p(0.1)))
        if cfg.noise:
            t.append(A.GaussNoise(std_range=(0.005, 0.005 + 0.03 * s), p=p(0.1)))
        if cfg.jpeg:
            t.append(A.ImageCompression(quality_range=(max(10, round(100 - 40 * s)), 100), p=p(0.5)))
    if cfg.perturb:
        from deepfake.perturb_augment import DeeperForensicsDistortion  # lazy: optional, and pulls in PyAV

        t.append(DeeperForensicsDistortion(**cfg.perturb))
    return A.Compose(t) if t else None
