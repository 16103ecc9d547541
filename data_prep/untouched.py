"""Which faces of a fake were left untouched: a fake's crop against its original's crop of the same frame.

A DFDC fake often manipulates one of two people; its other face is the original's, only re-encoded. When a fake is
cropped with its original's boxes (`data_prep.dataset`), each crop lines up pixel for pixel with the original's
crop of the same frame and track, so the two can be compared directly.

`face_change` is how much more the face differs than its surroundings do, in grey levels (0-255): both crops are
blurred (Gaussian, sigma 1/64 of the crop: codec noise is fine-grained, a manipulation changes shapes and shading),
then the mean absolute difference inside the face box (shrunk by a tenth per side, away from its edge) less the same
inside the crop's margin (outside the face box grown by a tenth, where a swap or a blend does not reach, in the
frame). Re-encoding changes both about alike, so an untouched face scores near 0 whatever the codec did; a
swapped, blended or reenacted face scores several grey levels and more. Measured on a two-person clip whose
right-hand face was swapped, H.264 CRF 18 to 33, 96 and 240-px crops: the untouched face 0.06-0.42, the swapped
one 21.8-22.9 (tests/test_untouched.py builds the clip). Training (`deepfake.data`, `data.untouched_tracks`) labels or
drops the fake's tracks whose typical crop scores under a threshold.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from data_prep.track import face_box_in_crop

__all__ = ["face_change", "is_untouched", "UNTOUCHED_BELOW"]

# A track whose median crop changes less than this many grey levels more inside the face than around it counts
# as untouched (tests/test_untouched.py measures both kinds on two-person fakes).
UNTOUCHED_BELOW = 1.5


@lru_cache(maxsize=8)  # one crop size and margin per extraction: made once, not for every crop
def _regions(size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (size, size) of the inner face and of the margin ring of a crop cut with `margin` (read-only:
    they are shared between calls)."""
    lo, _, hi, _ = face_box_in_crop(size, margin)
    side = hi - lo
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    inner = ((xx >= lo + side / 10) & (xx < hi - side / 10) & (yy >= lo + side / 10) & (yy < hi - side / 10))
    face_grown = ((xx >= lo - side / 10) & (xx < hi + side / 10) & (yy >= lo - side / 10) & (yy < hi + side / 10))
    ring = ~face_grown
    inner.flags.writeable = ring.flags.writeable = False
    return inner, ring


def face_change(fake: np.ndarray, original: np.ndarray, margin: float) -> float:
    """How much a fake's face crop differs from its original's beyond what its surroundings do (module docstring).

    Args:
        fake: (S, S, 3) uint8 crop of the fake.
        original: (S, S, 3) uint8 crop of the original at the same frame with the same box.
        margin: the margin the crops were cut with.

    Returns:
        Grey levels (>= 0): inner-face mean absolute difference minus the margin's (floored at 0). Parts of the
        margin that are black in both crops (beyond the frame) do not count.
    """
    if fake.shape != original.shape:
        raise ValueError(f"crops of different shapes: {fake.shape} and {original.shape}")
    sigma = fake.shape[0] / 64  # codec noise is fine-grained; a manipulation changes shapes and shading
    a, b = (cv2.GaussianBlur(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), sigma)
            for c in (fake, original))
    diff = np.abs(a - b)
    inner, ring = _regions(fake.shape[0], margin)
    ring = ring & ((a > 0) | (b > 0))
    around = float(diff[ring].mean()) if ring.any() else 0.0
    return max(0.0, float(diff[inner].mean()) - around)


def is_untouched(changes: np.ndarray | None, below: float = UNTOUCHED_BELOW) -> bool:
    """Whether a fake's face track was left as it was: its crops' median `face_change` is under `below` grey levels.

    A track without measurements (not cropped with its original's boxes, or an index from before they were kept)
    is never called untouched."""
    if changes is None or not len(changes):
        return False
    return float(np.median(changes)) < below
