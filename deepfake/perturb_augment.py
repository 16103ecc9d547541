"""DeeperForensics-1.0 distortions as an albumentations transform, for training (`augment.perturb` in a config).

The distortions themselves (types, levels, per-frame kernels) are `deepfake.perturb`'s; this module only adapts
them to albumentations, with every random choice made once per call so a sequence's frames share them.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

# albumentations asks PyPI for a newer version on import unless told not to: a detector run makes no network calls.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402

from deepfake.perturb import (  # noqa: E402
    KINDS, LEVELS, MIX_COUNTS, Distortion, apply_distortion, check_frame,
)

__all__ = ["DeeperForensicsDistortion"]


def _range(value: int | Sequence[int], name: str, allowed: Sequence[int]) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    lo, hi = int(lo), int(hi)
    if not (min(allowed) <= lo <= hi <= max(allowed)):
        raise ValueError(f"{name} must be a range within {min(allowed)}-{max(allowed)} (low <= high), "
                         f"got {value!r}")
    return lo, hi


class DeeperForensicsDistortion(A.ImageOnlyTransform):
    """DeeperForensics-1.0 distortions as an albumentations transform (std/sing- and std/mix-style training).

    `mode="sing"` applies one random type at a random level; `mode="mix"` applies 2-4 distinct random types,
    each at a random level, in random order. Every random choice (types, levels, and a seed for block
    positions and noise) is made in `get_params`, once per call, so that all targets of one call get the same
    distortion: pass a sequence's frames as `images=` (N, H, W, 3) or through `additional_targets`, and every
    frame gets the same types, levels, blocks and noise pattern. (In the dataset, blocks and noise change from
    frame to frame; a fixed pattern per sequence is the price of identical parameters per frame.)

    VC has no video here: it is approximated by a JPEG encode at `VC_JPEG_QUALITY` (PSNR-matched to the CRF).
    Sizes (blur kernel, 8-px blocks) are in pixels of the image given, so the same level is relatively
    stronger on a small face crop than on a full 1080p frame. Put it before `Normalize`: it takes RGB uint8.

    Args:
        mode: "sing" or "mix".
        levels: level range (low, high) within 1-5, or one level.
        kinds: the types to draw from (default: all seven).
        mix_counts: range of the number of types in "mix" mode, within 2-4 (and at most `len(kinds)`).
        p: probability of applying the transform.
    """

    def __init__(self, mode: str = "sing", levels: int | Sequence[int] = (1, 5), kinds: Sequence[str] = KINDS,
                 mix_counts: int | Sequence[int] = (2, 4), p: float = 0.5) -> None:
        super().__init__(p=p)
        if mode not in ("sing", "mix"):
            raise ValueError(f"mode must be 'sing' or 'mix', got {mode!r}")
        if isinstance(kinds, str):
            kinds = [k.strip() for k in kinds.split(",")]
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds must be distinct types among {', '.join(KINDS)}, got {list(kinds)!r}")
        self.mode = mode
        self.levels = _range(levels, "levels", LEVELS)
        self.kinds = kinds
        self.mix_counts = _range(mix_counts, "mix_counts", MIX_COUNTS)
        if mode == "mix" and self.mix_counts[1] > len(kinds):
            raise ValueError(f"mix_counts {self.mix_counts} needs at least {self.mix_counts[1]} kinds, "
                             f"got {len(kinds)}")

    def get_params(self) -> dict:
        """Draw the distortion of this call: `ops` ((kind, level), ...) and `seed` for blocks and noise."""
        rng = self.random_generator
        lo, hi = self.levels
        n = 1 if self.mode == "sing" else int(rng.integers(self.mix_counts[0], self.mix_counts[1] + 1))
        picks = rng.choice(len(self.kinds), size=n, replace=False)
        ops = tuple((self.kinds[int(i)], int(rng.integers(lo, hi + 1))) for i in picks)
        return {"ops": ops, "seed": int(rng.integers(0, 2**63 - 1))}

    def apply(self, img: np.ndarray, ops: tuple = (), seed: int = 0, **params) -> np.ndarray:
        """Distort one image with the drawn parameters (deterministic given them)."""
        out = check_frame(img)
        rng = np.random.default_rng(seed)
        for kind, level in ops:
            out = apply_distortion(out, Distortion(kind, level), rng, vc_as_jpeg=True)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mode", "levels", "kinds", "mix_counts")
