"""`deepfake synth`'s settings (`SynthConfig`) and its plans: what each clip shows (which photo, where, how it
moves, the light), drawn from the seed before anything is rendered. `data_prep.synth` renders and writes the
clips; `data_prep.synth_fakes` makes their fakes.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np

from data_prep.fake_kinds import SYNTH_KINDS as FAKE_KINDS
from data_prep.synth_photos import check_people, cutout, face_photos
from data_prep.video_writer import X264_THREADS

__all__ = ["SynthConfig", "SynthError", "ClipPlan", "FacePlan", "plan_clip", "parse_resolution", "RESOLUTIONS",
           "X264_PRESETS", "GENERATOR_VERSION", "FACE_HEIGHT_RANGE"]


class SynthError(Exception):
    """A problem the user can fix (an output folder that is not ours, ...); the message is one line."""


# Bump when a change to the generator changes the frames it writes (invalidates resumable output).
GENERATOR_VERSION = 1

RESOLUTIONS = {"360p": (640, 360), "480p": (854, 480), "540p": (960, 540), "720p": (1280, 720),
               "1080p": (1920, 1080)}
MIN_SIDE, MAX_SIDE = 128, 4096
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# Face box height as a fraction of the frame height (the zoom moves within this range; MTCNN finds faces
# of this size down to 320x240).
FACE_HEIGHT_RANGE = (0.25, 0.45)



# --------------------------------------------------------------------------------------------------- settings


def parse_resolution(text: str) -> tuple[int, int]:
    """`WxH` (e.g. `1280x720`, `720x1280` for portrait) or a name (`360p` ... `1080p`) -> (width, height)."""
    key = text.strip().lower()
    if key in RESOLUTIONS:
        return RESOLUTIONS[key]
    match = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", key)
    if not match:
        names = ", ".join(RESOLUTIONS)
        raise ValueError(f"resolution {text!r} is not WxH (e.g. 1280x720 or 720x1280) or one of {names}")
    return int(match.group(1)), int(match.group(2))


@dataclass
class SynthConfig:
    """Settings of one synthetic dataset.

    Args:
        count: total number of clips; count // 2 are fakes, each made from one of the real clips.
        width: frame width in pixels (even, for H.264 yuv420p).
        height: frame height in pixels (even); portrait (height > width) works too.
        seconds: length of every clip.
        fps: frames per second (may be fractional, e.g. 29.97).
        seed: seed of everything random; the same settings give identical frames.
        multi_face: fraction of the real clips (and so of their fakes) that show two faces.
        crf: x264 constant rate factor (lower: better quality, larger files).
        preset: x264 preset; faster presets write bigger files.
        fake_kind: how fakes are made (`data_prep.synth_fakes`): ``sbi`` (self-blended: the face's own jittered copy
            blended into it), ``swap`` (a face swap: another person's inner face, aligned by the landmarks,
            colour-matched, blended) or ``reenact`` (the mouth and eyes warped over time; no blending, no colour
            change).
        fake_faces: in a clip with two faces, ``all`` (both manipulated) or ``one`` (only the left or top one: a
            DFDC-style fake that leaves the other person as they were; training's `data.untouched_tracks` deals
            with such tracks).
        people: the photo set the clips show (`data_prep.synth_photos.PHOTO_SETS`, a folder of face photos, or
            several joined with ``+``: `check_people`; ``demo`` by default).
        progress: show a progress bar over clips.
    """

    count: int = 20
    width: int = 1280
    height: int = 720
    seconds: float = 4.0
    fps: float = 25.0
    seed: int = 0
    multi_face: float = 0.0
    crf: int = 18
    preset: str = "veryfast"
    fake_kind: str = "sbi"
    fake_faces: str = "all"
    people: str = "demo"
    progress: bool = True

    def __post_init__(self) -> None:
        w, h = self.width, self.height
        if not isinstance(self.count, int) or self.count < 2:
            raise ValueError(f"--count must be at least 2 (a real clip and its fake), got {self.count}")
        if min(w, h) < MIN_SIDE:
            raise ValueError(f"resolution {w}x{h} is too small for a detectable face; "
                             f"use at least {MIN_SIDE}x{MIN_SIDE} (e.g. 320x240)")
        if max(w, h) > MAX_SIDE:
            raise ValueError(f"resolution {w}x{h} is too large; the longest side may be at most {MAX_SIDE}")
        if w % 2 or h % 2:
            raise ValueError(f"resolution {w}x{h}: H.264 (yuv420p) needs an even width and height, "
                             f"e.g. {w + w % 2}x{h + h % 2}")
        if not (math.isfinite(self.fps) and 0 < self.fps <= 240):
            raise ValueError(f"--fps must be in (0, 240], got {self.fps}")
        if not (math.isfinite(self.seconds) and 0 < self.seconds <= 3600):
            raise ValueError(f"--seconds must be in (0, 3600], got {self.seconds}")
        if self.n_frames < 1:
            raise ValueError(f"--seconds {self.seconds} at --fps {self.fps} gives no frame; make the clip longer")
        if not 0.0 <= self.multi_face <= 1.0:
            raise ValueError(f"--multi-face is a fraction of clips in [0, 1], got {self.multi_face}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer, got {self.seed}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"--crf must be in [0, 51], got {self.crf}")
        if self.fake_kind not in FAKE_KINDS:
            raise ValueError(f"--fake-kind must be one of {', '.join(FAKE_KINDS)}, got {self.fake_kind!r}")
        check_people(self.people)
        if self.multi_face > 0 and len({p.person for p in face_photos(self.people)}) < 2:
            raise ValueError(f"--multi-face needs two people, and --people {self.people} shows one")
        if self.fake_faces not in ("all", "one"):
            raise ValueError(f"--fake-faces must be all or one, got {self.fake_faces!r}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")

    @property
    def n_frames(self) -> int:
        """Frames per clip."""
        return int(round(self.seconds * self.fps))

    @property
    def n_fake(self) -> int:
        """Number of fake clips (count // 2)."""
        return self.count // 2

    @property
    def n_real(self) -> int:
        """Number of real clips (count - count // 2)."""
        return self.count - self.count // 2

    @property
    def rate(self) -> Fraction:
        """Frame rate as a fraction (29.97 -> 30000/1001)."""
        ntsc = round(self.fps * 1.001)
        if ntsc > 0 and abs(self.fps - ntsc / 1.001) < 0.005 and abs(self.fps - round(self.fps)) > 0.005:
            return Fraction(ntsc * 1000, 1001)
        return Fraction(self.fps).limit_denominator(1001)

    def multi_face_pairs(self) -> set[int]:
        """Numbers of the real clips (pairs) that show two faces: a seeded choice of round(fraction * real)."""
        if self.multi_face <= 0:
            return set()
        n = min(self.n_real, max(1, round(self.multi_face * self.n_real)))
        order = np.random.default_rng([self.seed, 7]).permutation(self.n_real)
        return {int(i) for i in order[:n]}

    def manifest(self) -> dict:
        """What determines the written files; an earlier run with the same manifest can be resumed."""
        settings = {k: v for k, v in asdict(self).items() if k != "progress"}
        for key, default in (("fake_faces", "all"), ("people", "demo")):  # defaults left out: older folders resume
            if settings[key] == default:
                del settings[key]
        return {"generator": GENERATOR_VERSION, "x264_threads": X264_THREADS, "config": settings}


# ------------------------------------------------------------------------------------------------------ plans


def _wave(rng: np.random.Generator, t: np.ndarray, fmin: float = 0.04, fmax: float = 0.3, n: int = 3) -> np.ndarray:
    """A smooth random signal in [-1, 1] over times t (seconds): a normalised sum of a few slow sinusoids."""
    freq = rng.uniform(fmin, fmax, n)
    phase = rng.uniform(0, 2 * math.pi, n)
    amp = rng.uniform(0.3, 1.0, n)
    return (amp[:, None] * np.sin(2 * math.pi * freq[:, None] * t[None, :] + phase[:, None])).sum(0) / amp.sum()


@dataclass
class FacePlan:
    photo_index: int
    cell: tuple[int, int, int, int]  # x0, y0, x1, y1: the part of the frame this person may cover
    matrices: np.ndarray  # (N, 2, 3) cutout pixels -> frame pixels
    boxes: np.ndarray  # (N, 4) face box in frame pixels
    landmarks: np.ndarray  # (N, 5, 2)


@dataclass
class ClipPlan:
    pair: int
    faces: list[FacePlan]
    light: np.ndarray  # (N, 3): gain, contrast, colour temperature in [-1, 1]
    pan: np.ndarray  # (N, 2) int: background offset
    pad: tuple[int, int]  # background canvas padding (x, y)


def plan_face(rng: np.random.Generator, cfg: SynthConfig, photo_index: int, cell: tuple[int, int, int, int],
               t: np.ndarray) -> FacePlan:
    cut = cutout(photo_index, cfg.people)
    fx1, fy1, fx2, fy2 = cut.box
    box_w, box_h = fx2 - fx1, fy2 - fy1
    aspect = box_w / box_h
    cx0, cy0, cx1, cy1 = cell
    cell_w, cell_h = cx1 - cx0, cy1 - cy0
    # Face height range in pixels: 25-45% of the frame height, smaller where the cell (or a narrow portrait
    # frame) has no room for the face plus a margin.
    hi = min(FACE_HEIGHT_RANGE[1] * cfg.height, 0.8 * cell_h, 0.75 * cell_w / aspect)
    lo = min(FACE_HEIGHT_RANGE[0] * cfg.height, 0.75 * hi)
    centre, amp = rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.25)
    face_h = lo + (hi - lo) * np.clip(centre + amp * _wave(rng, t), 0.0, 1.0)
    h_max = float(face_h.max())
    w_max = h_max * aspect
    margin = 0.06 * h_max
    x_lo, x_hi = cx0 + margin + w_max / 2, cx1 - margin - w_max / 2
    y_lo, y_hi = cy0 + margin + h_max / 2, cy1 - margin - h_max / 2
    positions = []
    for lo_, hi_ in ((x_lo, x_hi), (y_lo, y_hi)):
        half = max(0.0, (hi_ - lo_) / 2)
        mid = (lo_ + hi_) / 2 + rng.uniform(-0.5, 0.5) * half
        swing = max(0.0, half - abs(mid - (lo_ + hi_) / 2)) * rng.uniform(0.3, 1.0)
        positions.append(mid + swing * _wave(rng, t))
    face_cx, face_cy = positions
    tilt = np.deg2rad(rng.uniform(0.0, 6.0) * _wave(rng, t))

    scale = face_h / box_h
    cos_t, sin_t = np.cos(tilt) * scale, np.sin(tilt) * scale
    src_cx, src_cy = (fx1 + fx2) / 2, (fy1 + fy2) / 2
    n = len(t)
    matrices = np.empty((n, 2, 3))
    matrices[:, 0, 0], matrices[:, 0, 1] = cos_t, -sin_t
    matrices[:, 1, 0], matrices[:, 1, 1] = sin_t, cos_t
    matrices[:, 0, 2] = face_cx - (cos_t * src_cx - sin_t * src_cy)
    matrices[:, 1, 2] = face_cy - (sin_t * src_cx + cos_t * src_cy)
    # The box of a slightly tilted face is, like a detector's, about as big as the upright face's box.
    half_w, half_h = face_h * aspect / 2, face_h / 2
    boxes = np.stack([face_cx - half_w, face_cy - half_h, face_cx + half_w, face_cy + half_h], 1)
    boxes = np.clip(boxes, 0, [cfg.width, cfg.height, cfg.width, cfg.height])
    lm = np.concatenate([cut.landmarks, np.ones((5, 1))], 1)  # (5, 3) homogeneous
    landmarks = np.einsum("nij,kj->nki", matrices, lm)
    return FacePlan(photo_index, cell, matrices, boxes, landmarks)


def plan_clip(cfg: SynthConfig, pair: int, two_faces: bool) -> ClipPlan:
    """Motion, zoom, tilt and light of every frame of real clip `pair` (and so of its fake)."""
    rng = np.random.default_rng([cfg.seed, pair, 0])
    t = np.arange(cfg.n_frames) / cfg.fps
    photos = face_photos(cfg.people)
    first = (pair + cfg.seed) % len(photos)
    w, h = cfg.width, cfg.height
    if two_faces:
        other = [i for i, p in enumerate(photos) if p.person != photos[first].person]
        second = int(rng.choice(other))
        if w >= h:
            cells = [(0, 0, w // 2, h), (w // 2, 0, w, h)]
        else:
            cells = [(0, 0, w, h // 2), (0, h // 2, w, h)]
        faces = [plan_face(rng, cfg, first, cells[0], t), plan_face(rng, cfg, second, cells[1], t)]
    else:
        faces = [plan_face(rng, cfg, first, (0, 0, w, h), t)]
    gain = rng.uniform(0.85, 1.05) + rng.uniform(0.03, 0.12) * _wave(rng, t)
    contrast = rng.uniform(0.9, 1.1) + rng.uniform(0.02, 0.08) * _wave(rng, t)
    temperature = np.clip(rng.uniform(-0.6, 0.6) + rng.uniform(0.1, 0.4) * _wave(rng, t), -1, 1)
    pad = (max(2, round(0.03 * w)), max(2, round(0.03 * h)))
    pan = np.stack([np.rint(p * (1 + rng.uniform(0.2, 1.0) * _wave(rng, t))) for p in pad], 1).astype(int)
    return ClipPlan(pair, faces, np.stack([gain, contrast, temperature], 1), pan, pad)
