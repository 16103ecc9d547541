"""The face photos `deepfake synth`'s clips show: real photos that ship inside installed packages (scikit-image's
astronaut, Eileen Collins, and matplotlib's Grace Hopper, plus their mirror images), each with its face box and 5
landmarks, and their soft-edged head-and-shoulders cut-outs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["FacePhoto", "face_photos", "cutout"]


@dataclass(frozen=True, eq=False)
class FacePhoto:
    """A real face photo with its face box and 5 landmarks (as facenet-pytorch MTCNN finds them).

    Args:
        name: short name (`astronaut`, `grace_hopper`, `..._mirror`).
        person: who it shows; two-face clips pair two different people.
        image: (H, W, 3) RGB uint8.
        box: (4,) face box x1, y1, x2, y2 in image pixels.
        landmarks: (5, 2) left eye, right eye, nose, mouth left, mouth right (image left/right).
    """

    name: str
    person: str
    image: np.ndarray = field(repr=False)
    box: np.ndarray
    landmarks: np.ndarray


# MTCNN (facenet-pytorch 2.5.3, keep_all) on the unmodified photos; measured once, stored so that making data
# needs no detector.
_ASTRONAUT_BOX = (181.05, 62.16, 267.75, 172.05)
_ASTRONAUT_LANDMARKS = ((205.01, 101.73), (246.76, 103.71), (224.67, 128.96), (201.72, 139.25), (245.27, 141.86))
_GRACE_BOX = (174.40, 119.56, 355.65, 340.46)
_GRACE_LANDMARKS = ((221.67, 192.21), (309.83, 186.13), (269.36, 239.17), (232.65, 279.65), (306.64, 275.93))


def _mirror(photo: FacePhoto) -> FacePhoto:
    w = photo.image.shape[1]
    x1, y1, x2, y2 = photo.box
    lm = photo.landmarks.copy()
    lm[:, 0] = w - 1 - lm[:, 0]
    lm = lm[[1, 0, 2, 4, 3]]  # the mirrored left eye is the new right eye, and so on
    return FacePhoto(f"{photo.name}_mirror", photo.person, np.ascontiguousarray(photo.image[:, ::-1]),
                     np.array([w - x2, y1, w - x1, y2]), lm)


@lru_cache(maxsize=1)
def face_photos() -> tuple[FacePhoto, ...]:
    """The four face photos clips are made from: astronaut, Grace Hopper, and their mirror images."""
    import skimage.data
    from matplotlib import cbook
    from PIL import Image

    astronaut = FacePhoto("astronaut", "astronaut", skimage.data.astronaut()[..., :3].copy(),
                          np.array(_ASTRONAUT_BOX), np.array(_ASTRONAUT_LANDMARKS))
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace_image = np.asarray(Image.open(f).convert("RGB")).copy()
    grace = FacePhoto("grace_hopper", "grace_hopper", grace_image, np.array(_GRACE_BOX), np.array(_GRACE_LANDMARKS))
    return astronaut, grace, _mirror(astronaut), _mirror(grace)


@dataclass(frozen=True, eq=False)
class _Cutout:
    """A head-and-shoulders cut of a photo with a soft-edged alpha channel, at some scale."""

    rgba: np.ndarray  # (h, w, 4) uint8
    box: np.ndarray  # (4,) face box in cutout pixels
    landmarks: np.ndarray  # (5, 2)


@lru_cache(maxsize=8)
def cutout(photo_index: int) -> _Cutout:
    """Photo `photo_index` of `face_photos()` cut out around the head and shoulders (cached)."""
    photo = face_photos()[photo_index]
    img_h, img_w = photo.image.shape[:2]
    x1, y1, x2, y2 = photo.box
    bw, bh = x2 - x1, y2 - y1
    cx0, cx1 = max(0, int(x1 - 0.9 * bw)), min(img_w, int(math.ceil(x2 + 0.9 * bw)))
    cy0, cy1 = max(0, int(y1 - 0.7 * bh)), min(img_h, int(math.ceil(y2 + 1.4 * bh)))
    rgb = photo.image[cy0:cy1, cx0:cx1]
    h, w = rgb.shape[:2]
    # A rounded-rectangle vignette (superellipse) that fades to 0 at the cut's edges.
    u = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    v = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
    d = (np.abs(u)[None, :] ** 4 + np.abs(v)[:, None] ** 4) ** 0.25
    alpha = np.clip((1.0 - d) / 0.15, 0.0, 1.0)
    rgba = np.dstack([rgb, np.rint(alpha * 255).astype(np.uint8)])
    offset = np.array([cx0, cy0], dtype=np.float64)
    return _Cutout(rgba, photo.box - np.tile(offset, 2), photo.landmarks - offset)
