"""The fakes of `deepfake synth`: how a fake clip is made from its real clip's frames, one parameter set per face.

- ``sbi``: a self-blended fake (`data_prep.sbi.self_blend`: the face's own jittered copy blended into it);
- ``swap``: a face swap (`data_prep.sbi.swap_face`: another person's inner face, aligned by the landmarks,
  colour-matched, blended);
- ``reenact``: the mouth and eyes warped over time (`data_prep.temporal.reenact_warp`: the jaw moves and the eyes
  narrow and glance to a rhythm of their own, 0.4-1.5 s periods), with no blending edge and no colour change;
- ``paste``: another person's face pasted with a hard edge (a swap whose mask is neither blurred nor deformed, at full
  opacity; still aligned and colour-matched);
- ``lowres``: the inner face re-rendered at 1/4 resolution (shrunk and enlarged back) and blended in, no colour
  change (a stand-in for a generator's soft output);
- ``part``: a face-part swap: only another person's eyes or mouth (one per clip), aligned, colour-matched, blended.

The generalization suite (`bench/generalize.py`) tests on every kind; the demo uses the first three.

Parameters depend only on the seed, the clip's pair number and its faces, so a clip's fake does not change with
`--count`; each kind draws from its own seeded stream, so adding a kind changes no other kind's clips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dataclasses import replace

from data_prep.fake_kinds import DONOR_KINDS, SYNTH_KINDS
from data_prep.sbi import BlendParams, sample_blend_params, self_blend, swap_face
from data_prep.synth_photos import FacePhoto, face_photos
from data_prep.temporal import ReenactParams, reenact_warp, sample_reenact_params

if TYPE_CHECKING:
    from data_prep.synth_plan import ClipPlan, SynthConfig

__all__ = ["FAKE_KINDS", "fake_params", "parts", "donors", "reenact_params", "FakeMaker"]

FAKE_KINDS = SYNTH_KINDS  # the kinds synth writes (data_prep.fake_kinds, the one table of kinds)
# Periods of the reenacted motion, in seconds (a slow talking rhythm).
REENACT_PERIODS_S = (0.4, 1.5)


def fake_params(cfg: SynthConfig, pair: int, n_faces: int) -> list[BlendParams]:
    """Blend parameters of a clip's faces (self-blends and swaps; hard-edged for ``paste``, colour kept and the face
    at 1/4 resolution for ``lowres``)."""
    rng = np.random.default_rng([cfg.seed, pair, 2])
    params = [sample_blend_params(rng) for _ in range(n_faces)]
    if cfg.fake_kind == "paste":
        params = [replace(p, mask_harmonics=(), mask_blur=0.0, blend_ratio=1.0) for p in params]
    elif cfg.fake_kind == "lowres":
        params = [BlendParams(resize=0.25, mask_axes=p.mask_axes, mask_offset=p.mask_offset,
                              mask_harmonics=p.mask_harmonics, mask_blur=p.mask_blur, drift=p.drift,
                              drift_period=p.drift_period, drift_phase=p.drift_phase) for p in params]
    return params


def parts(cfg: SynthConfig, pair: int, n_faces: int) -> list[str]:
    """For a face-part swap, the part each face of a clip gets: ``eyes`` or ``mouth`` (seeded)."""
    rng = np.random.default_rng([cfg.seed, pair, 5])
    return [str(rng.choice(["eyes", "mouth"])) for _ in range(n_faces)]


def donors(cfg: SynthConfig, plan: ClipPlan) -> list[FacePhoto]:
    """For a face swap, per face of the clip a photo of another person (seeded); in a set of one person
    (``unseen``), another photo of him."""
    photos = face_photos(cfg.people)
    rng = np.random.default_rng([cfg.seed, plan.pair, 3])

    def others(k: int) -> list[int]:
        people = [i for i, p in enumerate(photos) if p.person != photos[k].person]
        return people or [i for i in range(len(photos)) if i != k]

    return [photos[int(rng.choice(others(f.photo_index)))] for f in plan.faces]


def reenact_params(cfg: SynthConfig, pair: int, n_faces: int) -> list[ReenactParams]:
    """Motion of a reenacted clip's faces: mouth and eyes both, periods in video frames."""
    rng = np.random.default_rng([cfg.seed, pair, 4])
    lo, hi = (max(2.0, s * cfg.fps) for s in REENACT_PERIODS_S)
    return [sample_reenact_params(rng, mouth=True, eyes=True, period_range=(lo, max(hi, lo))) for _ in range(n_faces)]


class FakeMaker:
    """Makes the fake frames of one clip (`cfg.fake_kind`) from its real frames."""

    def __init__(self, cfg: SynthConfig, plan: ClipPlan) -> None:
        self.kind, self.faces = cfg.fake_kind, plan.faces
        n = len(plan.faces)
        self.params = fake_params(cfg, plan.pair, n) if self.kind != "reenact" else [None] * n
        self.donors = donors(cfg, plan) if self.kind in DONOR_KINDS else [None] * n
        self.regions = parts(cfg, plan.pair, n) if self.kind == "part" else ["face"] * n
        self.motion = reenact_params(cfg, plan.pair, n) if self.kind == "reenact" else [None] * n
        self.changed = [cfg.fake_faces == "all" or k == 0 for k in range(n)]  # "one": the first (left/top) face

    def __call__(self, frame: np.ndarray, i: int) -> np.ndarray:
        """Fake frame i from real frame i (a new array; `frame` is not modified)."""
        fake = frame
        for face, p, donor, motion, region, changed in zip(self.faces, self.params, self.donors, self.motion,
                                                           self.regions, self.changed):
            if not changed:
                continue
            if motion is not None:
                fake = reenact_warp(fake, face.landmarks[i], motion, i)
            elif donor is not None:
                fake = swap_face(fake, face.boxes[i], face.landmarks[i], donor.image, donor.landmarks, p,
                                 frame_index=i, region=region)
            else:
                fake = self_blend(fake, face.boxes[i], p, landmarks=face.landmarks[i], frame_index=i)
        return fake if fake is not frame else frame.copy()
