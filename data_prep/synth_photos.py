"""The face photos `deepfake synth`'s clips show: real photos that ship inside installed packages (scikit-image's
astronaut, Eileen Collins, and matplotlib's Grace Hopper, plus their mirror images), each with its face box and 5
landmarks, and their soft-edged head-and-shoulders cut-outs.

Photo sets (`PHOTO_SETS`, `SynthConfig.people`): ``demo`` (the four above, what the demo and the tests use), and two
sets for the generalization suite (`bench/generalize.py`) that share no person, so a detector trained on one is
tested on people it never saw:
- ``suite-train``: the astronaut only: the photo, its mirror image and a re-lit, recoloured copy of each (warmer,
  darker skin, lower contrast);
- ``suite-test``: Grace Hopper and scikit-image's cameraman (`skimage.data.camera()`, a grey photo of another man in
  three-quarter view), each with its mirror image: two people, so the test set's face swaps swap two unseen people.
``unseen`` is the cameraman alone (the photo and its mirror image): the one person neither the demo nor the suite's
training shows, for the demo's column on an unseen person. With one person, a swap's donor is his other photo (the
mirror image's face onto the photo and back), and clips show one face.

Any other people: a folder of photos (`folder_photos`: every clear face MTCNN finds in its images is a person of its
own, with its mirror image), and sets joined with ``+`` (``suite-train+photos/``: the astronaut's photos and the
folder's). `check_people` says what a value may be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["FacePhoto", "PHOTO_SETS", "IMAGE_EXTENSIONS", "MIN_FACE_PX", "MIN_FACE_SCORE", "image_files",
           "check_people", "folder_photos", "face_photos", "cutout"]


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
_CAMERA_BOX = (199.22, 118.93, 254.27, 192.27)
_CAMERA_LANDMARKS = ((234.39, 147.16), (252.32, 149.61), (250.75, 169.12), (231.23, 180.41), (243.45, 181.94))

PHOTO_SETS = ("demo", "suite-train", "suite-test", "unseen")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MIN_FACE_PX = 64  # a folder photo's face narrower than this is left out: scaled up into a clip it would be a blur
MIN_FACE_SCORE = 0.98  # MTCNN's probability a folder photo's face needs


def _mirror(photo: FacePhoto) -> FacePhoto:
    w = photo.image.shape[1]
    x1, y1, x2, y2 = photo.box
    lm = photo.landmarks.copy()
    lm[:, 0] = w - 1 - lm[:, 0]
    lm = lm[[1, 0, 2, 4, 3]]  # the mirrored left eye is the new right eye, and so on
    return FacePhoto(f"{photo.name}_mirror", photo.person, np.ascontiguousarray(photo.image[:, ::-1]),
                     np.array([w - x2, y1, w - x1, y2]), lm)


def _relit(photo: FacePhoto) -> FacePhoto:
    """The same person re-lit and recoloured: warmer and darker skin, lower contrast (a fixed curve per channel)."""
    levels = np.arange(256, dtype=np.float32) / 255
    curves = [np.clip(((levels ** gamma - 0.5) * 0.85 + 0.5) * gain, 0, 1)
              for gamma, gain in ((1.25, 0.95), (1.45, 0.85), (1.7, 0.72))]
    lut = np.rint(np.stack(curves, -1) * 255).astype(np.uint8)
    image = np.stack([lut[photo.image[..., c], c] for c in range(3)], -1)
    return FacePhoto(f"{photo.name}_relit", photo.person, image, photo.box, photo.landmarks)


def image_files(folder: str | Path) -> list[Path]:
    """The photos of a folder: its files named with an `IMAGE_EXTENSIONS` suffix, sorted by name."""
    return sorted(f for f in Path(folder).expanduser().iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)


def check_people(people: str) -> None:
    """ValueError (one line) unless `people` is a photo set (`PHOTO_SETS`), a folder holding images, or such values
    joined with ``+``."""
    for part in str(people).split("+"):
        if part in PHOTO_SETS:
            continue
        folder = Path(part).expanduser()
        if not folder.is_dir():
            raise ValueError(f"people must be one of {', '.join(PHOTO_SETS)} or a folder of face photos (several "
                             f"joined with +), got {part!r}")
        if not image_files(folder):
            raise ValueError(f"people: {folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})")


@lru_cache(maxsize=8)
def folder_photos(folder: str) -> tuple[FacePhoto, ...]:
    """Every clear face in the images of `folder` (`IMAGE_EXTENSIONS`, by name), each a person of its own named
    ``<file stem>_<k>`` (k counts a photo's faces left to right): MTCNN (`data_prep.detector.FaceDetector`, on the
    CPU) finds its box and landmarks; faces below `MIN_FACE_SCORE` or narrower than `MIN_FACE_PX` are left out.
    A group photo gives several people (a face's cut-out may show a neighbour's edge). ValueError when no face is
    left."""
    from PIL import Image

    from data_prep.detector import FaceDetector
    from data_prep.faces import ExtractConfig

    detector = FaceDetector(ExtractConfig(device="cpu"))
    photos = []
    for path in image_files(folder):
        try:
            with Image.open(path) as im:
                image = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        except OSError as err:
            raise ValueError(f"people: can't read {path}: {err}") from None
        found = detector.detect(image[None])[0]
        keep = [i for i in range(len(found.boxes)) if found.scores[i] >= MIN_FACE_SCORE
                and found.boxes[i, 2] - found.boxes[i, 0] >= MIN_FACE_PX]
        for k, i in enumerate(sorted(keep, key=lambda i: float(found.boxes[i, 0]))):
            name = f"{path.stem}_{k}"
            photos.append(FacePhoto(name, name, image, found.boxes[i].astype(np.float64),
                                    found.landmarks[i].astype(np.float64)))
    if not photos:
        raise ValueError(f"people: no face of at least {MIN_FACE_PX} px (MTCNN p >= {MIN_FACE_SCORE}) in the "
                         f"images of {folder}")
    return tuple(photos)


@lru_cache(maxsize=8)
def face_photos(people: str = "demo") -> tuple[FacePhoto, ...]:
    """The face photos of a photo set (`PHOTO_SETS`, module docstring; ``demo``: astronaut, Grace Hopper, and their
    mirror images), of a folder (`folder_photos`, each with its mirror image), or of several joined with ``+``."""
    import skimage.data
    from matplotlib import cbook
    from PIL import Image

    check_people(people)
    if "+" in people:
        return tuple(photo for part in people.split("+") for photo in face_photos(part))
    if people not in PHOTO_SETS:
        photos = folder_photos(str(Path(people).expanduser().resolve()))
        return photos + tuple(_mirror(p) for p in photos)
    astronaut = FacePhoto("astronaut", "astronaut", skimage.data.astronaut()[..., :3].copy(),
                          np.array(_ASTRONAUT_BOX), np.array(_ASTRONAUT_LANDMARKS))
    if people == "suite-train":
        return astronaut, _mirror(astronaut), _relit(astronaut), _relit(_mirror(astronaut))
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace_image = np.asarray(Image.open(f).convert("RGB")).copy()
    grace = FacePhoto("grace_hopper", "grace_hopper", grace_image, np.array(_GRACE_BOX), np.array(_GRACE_LANDMARKS))
    camera = FacePhoto("cameraman", "cameraman", np.repeat(skimage.data.camera()[..., None], 3, 2),
                       np.array(_CAMERA_BOX), np.array(_CAMERA_LANDMARKS))
    if people == "unseen":
        return camera, _mirror(camera)
    if people == "suite-test":
        return grace, camera, _mirror(grace), _mirror(camera)
    return astronaut, grace, _mirror(astronaut), _mirror(grace)


@dataclass(frozen=True, eq=False)
class _Cutout:
    """A head-and-shoulders cut of a photo with a soft-edged alpha channel, at some scale."""

    rgba: np.ndarray  # (h, w, 4) uint8
    box: np.ndarray  # (4,) face box in cutout pixels
    landmarks: np.ndarray  # (5, 2)


@lru_cache(maxsize=16)
def cutout(photo_index: int, people: str = "demo") -> _Cutout:
    """Photo `photo_index` of `face_photos(people)` cut out around the head and shoulders (cached)."""
    photo = face_photos(people)[photo_index]
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
