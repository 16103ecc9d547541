"""Temporal fakes: manipulations whose traces show only over time, made from a real face sequence.

A frame-by-frame detector can't see these; a model over the frames of a track can. Three kinds:

- **reenact** (`reenact_warp`): the mouth and/or eyes warped by a smooth displacement field confined to them, driven
  by a signal of its own over time (the mouth opens and closes, the eyes narrow and glance, out of step with
  anything else in the clip): a self-reenactment stand-in with no blending edge and no colour change.
  With `ReenactParams.frozen_at` the signals are read at one time for every frame: the same warp on every frame, a
  static control that carries a reenacted frame's traces and nothing that changes over time.
- **flicker** (`flicker_params`): self-blending (`data_prep.sbi`) whose opacity, colour and placement jump from frame
  to frame instead of drifting smoothly.
- **morph** (`morph_warp`): the face's shape drifting slowly over the sequence (widening or narrowing of the lower
  face, a stretch of its height): a smooth field over the face, growing frame by frame.

One parameter set per sequence (`sample_reenact_params`, `sample_morph_params`), drawn from a seeded generator;
frame t of a sequence is a pure function of the frame, its landmarks, the parameters and t. Warps are backward maps
(`cv2.remap`) computed only on the region's bounding box, and a pixel whose displacement is zero is copied, not
resampled, so everything outside the region is untouched. Landmarks are MTCNN's 5 points (left eye, right eye,
nose, left mouth corner, right mouth corner) in frame pixels; `canonical_landmarks` places them in a face box when a
detector gave none.

    params = sample_reenact_params(np.random.default_rng(0))
    fake = [reenact_warp(f, lm, params, t) for t, (f, lm) in enumerate(zip(frames, landmarks))]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from data_prep.sbi import BlendParams

__all__ = ["CANONICAL_LANDMARKS", "canonical_landmarks", "ReenactParams", "sample_reenact_params", "reenact_warp",
           "reenact_regions", "MorphParams", "sample_morph_params", "morph_warp", "morph_region", "flicker_params"]

# The 5 landmarks as fractions (x, y) of a face box: the mean of MTCNN's points on frontal faces (the box is
# MTCNN's, about forehead to chin). Used where a face track has no landmarks of its own.
CANONICAL_LANDMARKS = np.array([[0.29, 0.36], [0.73, 0.36], [0.50, 0.58], [0.31, 0.74], [0.70, 0.74]], np.float32)


def canonical_landmarks(box: np.ndarray | tuple[float, float, float, float]) -> np.ndarray:
    """(5, 2) landmarks of a frontal face in box (x1, y1, x2, y2), frame pixels."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    return (CANONICAL_LANDMARKS * [x2 - x1, y2 - y1] + [x1, y1]).astype(np.float32)


def _signal(t: float, periods: tuple[float, ...], phases: tuple[float, ...]) -> float:
    """A smooth signal in [-1, 1] at time t (frames): the mean of a few sinusoids."""
    return sum(math.sin(2 * math.pi * t / p + ph) for p, ph in zip(periods, phases)) / max(1, len(periods))


def _bump(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """(1 - r^2)^2 inside the ellipse (cx, cy, rx, ry), 0 outside: smooth, and exactly 0 at and beyond its edge."""
    r2 = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2
    return np.where(r2 < 1.0, (1.0 - np.minimum(r2, 1.0)) ** 2, 0.0).astype(np.float32)


def _plateau(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, rx: float, ry: float,
             inner: float = 0.6) -> np.ndarray:
    """1 inside `inner` of the ellipse's radius, a smoothstep down to exactly 0 at its edge, 0 outside (slope at most
    1.5 / (1 - inner) in units of the radius)."""
    r = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    u = np.clip((r - inner) / (1.0 - inner), 0.0, 1.0)
    return (1.0 - u * u * (3.0 - 2.0 * u)).astype(np.float32)


def _remap_region(frame: np.ndarray, bounds: tuple[int, int, int, int], field) -> np.ndarray:
    """A new frame where the region `bounds` (x0, y0, x1, y1) is resampled at `field(xs, ys) -> (dx, dy)` (backward
    displacements in pixels); pixels with zero displacement keep their value exactly."""
    out = frame.copy()
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(0, bounds[0]), max(0, bounds[1]), min(w, bounds[2]), min(h, bounds[3])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = field(xs, ys)
    moved = (dx != 0) | (dy != 0)
    if not moved.any():
        return out
    # The map reads the whole frame, so content is pulled in from outside the region where the field points there.
    warped = cv2.remap(frame, xs + dx, ys + dy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    roi = out[y0:y1, x0:x1]
    roi[moved] = warped.reshape(roi.shape)[moved]
    return out


def _check(frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise ValueError(f"frame must be an (H, W[, C]) uint8 array, got {frame.dtype} {frame.shape}")
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise ValueError(f"landmarks must be 5 finite (x, y) points, got shape {pts.shape}")
    return frame, pts


# ----------------------------------------------------------------------------------------------------- reenact


@dataclass(frozen=True)
class ReenactParams:
    """How one reenacted sequence moves (sizes relative to the face's own landmarks, times in frames).

    Attributes:
        mouth: amplitude of the jaw's up-and-down movement (fraction of the mouth region's half-height; 0: the mouth
            is untouched).
        mouth_periods: periods of the mouth's opening signal, in frames.
        mouth_phases: their phases (radians).
        mouth_bias: constant part of the opening, in units of `mouth` (>0: open on average, <0: pressed).
        eyes: amplitude of the eyes' narrowing and widening (a vertical stretch about the eye's centre).
        gaze: amplitude of a sideways glance (fraction of the eye region's half-width).
        eye_periods: periods of the eyes' signal, in frames.
        eye_phases: their phases (radians).
        frozen_at: None: the signals run over the frames (a reenacted sequence). A time in frames: every frame reads
            the signals at that time, so the warp is the same on every frame (a static control: the per-frame traces
            of a reenacted face with nothing changing over time; `deepfake.fakes.static_control_sequence`).
    """

    mouth: float = 0.0
    mouth_periods: tuple[float, ...] = (6.0,)
    mouth_phases: tuple[float, ...] = (0.0,)
    mouth_bias: float = 0.0
    eyes: float = 0.0
    gaze: float = 0.0
    eye_periods: tuple[float, ...] = (9.0,)
    eye_phases: tuple[float, ...] = (0.0,)
    frozen_at: float | None = None

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.mouth <= 0.6, f"mouth must be in [0, 0.6], got {self.mouth}"),
            (0.0 <= self.eyes <= 0.6, f"eyes must be in [0, 0.6], got {self.eyes}"),
            (0.0 <= self.gaze <= 0.4, f"gaze must be in [0, 0.4], got {self.gaze}"),
            (abs(self.mouth_bias) <= 1.0, f"mouth_bias must be in [-1, 1], got {self.mouth_bias}"),
            (len(self.mouth_periods) == len(self.mouth_phases) and min(self.mouth_periods, default=2) >= 2,
             "mouth_periods (>= 2 frames) and mouth_phases must have the same length"),
            (len(self.eye_periods) == len(self.eye_phases) and min(self.eye_periods, default=2) >= 2,
             "eye_periods (>= 2 frames) and eye_phases must have the same length"),
            (self.frozen_at is None or math.isfinite(self.frozen_at),
             f"frozen_at must be a finite time or None, got {self.frozen_at}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def mouth_at(self, t: float) -> float:
        """Mouth opening at frame t, as a fraction of the region's half-height (negative: pressed together)."""
        t = t if self.frozen_at is None else self.frozen_at
        raw = self.mouth * (self.mouth_bias + _signal(t, self.mouth_periods, self.mouth_phases)) / 2
        return float(np.clip(raw, -self.mouth, self.mouth))

    def eyes_at(self, t: float) -> tuple[float, float]:
        """(vertical, horizontal) eye movement at frame t."""
        t = t if self.frozen_at is None else self.frozen_at
        s = _signal(t, self.eye_periods, self.eye_phases)
        g = _signal(t + 0.37 * self.eye_periods[0], self.eye_periods, self.eye_phases) if self.eye_periods else 0.0
        return self.eyes * s, self.gaze * g


def sample_reenact_params(rng: np.random.Generator, *, mouth: bool | None = None, eyes: bool | None = None,
                          period_range: tuple[float, float] = (2.5, 12.0)) -> ReenactParams:
    """Draws one reenacted sequence's motion.

    Args:
        rng: the source of randomness.
        mouth: warp the mouth; None: drawn (the mouth in 4 of 5 sequences, always when the eyes are not warped).
        eyes: warp the eyes; None: drawn (half of the sequences).
        period_range: the signal periods' range in frames of the sequence (crops of a track come every `stride`
            video frames: a 2-8 Hz speech rhythm at 25 fps and stride 5 is 1-2.5 crops; slower motion is longer).

    Returns:
        The parameters, to pass to `reenact_warp` for every frame of the sequence.
    """
    use_eyes = bool(rng.random() < 0.5) if eyes is None else eyes
    use_mouth = (bool(rng.random() < 0.8) or not use_eyes) if mouth is None else mouth
    lo, hi = period_range

    def periods(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (tuple(float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) for _ in range(n)),
                tuple(float(rng.uniform(0, 2 * math.pi)) for _ in range(n)))

    mouth_periods, mouth_phases = periods(2)
    eye_periods, eye_phases = periods(2)
    return ReenactParams(
        mouth=float(rng.uniform(0.3, 0.55)) if use_mouth else 0.0,
        mouth_periods=mouth_periods, mouth_phases=mouth_phases,
        mouth_bias=float(rng.uniform(-0.3, 0.6)),
        eyes=float(rng.uniform(0.3, 0.55)) if use_eyes else 0.0,
        gaze=float(rng.uniform(0.15, 0.35)) if use_eyes else 0.0,
        eye_periods=eye_periods, eye_phases=eye_phases,
    )


def reenact_regions(landmarks: np.ndarray) -> dict[str, tuple[float, float, float, float]]:
    """The ellipses (cx, cy, rx, ry) in frame pixels that `reenact_warp` may change: `mouth`, `left_eye`,
    `right_eye`. Sizes follow the distance between the eyes, so they scale with the face."""
    pts = np.asarray(landmarks, np.float64).reshape(5, 2)
    d_eye = max(2.0, float(np.linalg.norm(pts[1] - pts[0])))
    d_mouth = max(2.0, float(np.linalg.norm(pts[4] - pts[3])))
    mouth = (pts[3] + pts[4]) / 2
    out = {"mouth": (float(mouth[0]), float(mouth[1] + 0.1 * d_eye), 0.5 * d_mouth + 0.3 * d_eye, 0.45 * d_eye)}
    for name, p in (("left_eye", pts[0]), ("right_eye", pts[1])):
        out[name] = (float(p[0]), float(p[1]), 0.4 * d_eye, 0.28 * d_eye)
    return out


def _bounds(ellipses) -> tuple[int, int, int, int]:
    """The integer bounds (x0, y0, x1, y1), x1/y1 exclusive, of ellipses (cx, cy, rx, ry)."""
    e = np.asarray(ellipses, np.float64).reshape(-1, 4)
    return (math.floor((e[:, 0] - e[:, 2]).min()), math.floor((e[:, 1] - e[:, 3]).min()),
            math.ceil((e[:, 0] + e[:, 2]).max()) + 1, math.ceil((e[:, 1] + e[:, 3]).max()) + 1)


def reenact_warp(frame: np.ndarray, landmarks: np.ndarray, params: ReenactParams, frame_index: int) -> np.ndarray:
    """Frame `frame_index` of a reenacted sequence: the mouth and/or eyes moved by `params`' signals.

    The lower lip and jaw move down (the mouth opens) or up (it presses shut); the eyes are narrowed or widened
    vertically and shifted sideways (a glance). Each displacement is weighted by a smooth bump
    that is 0 on the edge of its region (`reenact_regions`), so nothing outside changes and there is no seam.

    Args:
        frame: (H, W, 3) RGB or (H, W) uint8; not modified.
        landmarks: (5, 2) MTCNN landmarks of the face in this frame.
        params: from `sample_reenact_params`, the same for every frame of the sequence.
        frame_index: the frame's index in the sequence.

    Returns:
        A new frame.
    """
    frame, pts = _check(frame, landmarks)
    regions = reenact_regions(pts)
    moves = []
    opening = params.mouth_at(frame_index)
    if params.mouth > 0 and opening != 0:
        moves.append((regions["mouth"], 0.0, opening, True))
    eye_v, eye_h = params.eyes_at(frame_index)
    if params.eyes > 0 or params.gaze > 0:
        for name in ("left_eye", "right_eye"):
            moves.append((regions[name], eye_h, -eye_v, False))
    if not moves:
        return frame.copy()

    def field(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = np.zeros_like(xs), np.zeros_like(ys)
        for (cx, cy, rx, ry), shift, amount, is_mouth in moves:
            w = _bump(xs, ys, cx, cy, rx, ry)
            # Backward maps. The bump's slope is at most 1.43 / ry, so a translation of up to 0.6 ry and a stretch
            # of up to 0.6 keep them fold-free.
            if is_mouth:
                dy -= w * amount * ry  # the jaw translated down (amount > 0) or up
            else:
                dy -= w * amount * (ys - cy)  # the eye stretched about its centre line
            dx -= w * shift * rx
        return dx, dy

    return _remap_region(frame, _bounds([m[0] for m in moves]), field)


# ------------------------------------------------------------------------------------------------------- morph


@dataclass(frozen=True)
class MorphParams:
    """A slow drift of the face's shape over a sequence (fractions of the face box, per frame).

    Attributes:
        width_start: horizontal stretch of the lower face at frame 0 (0: its own shape).
        width_rate: change of that stretch per frame.
        height_start: vertical stretch of the face at frame 0.
        height_rate: change per frame.
    """

    width_start: float = 0.0
    width_rate: float = 0.0
    height_start: float = 0.0
    height_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("width_start", "height_start"):
            if abs(getattr(self, name)) > 0.2:
                raise ValueError(f"{name} must be in [-0.2, 0.2], got {getattr(self, name)}")
        for name in ("width_rate", "height_rate"):
            if abs(getattr(self, name)) > 0.05:
                raise ValueError(f"{name} must be in [-0.05, 0.05] per frame, got {getattr(self, name)}")

    def at(self, t: float) -> tuple[float, float]:
        """(width, height) stretch at frame t, each clipped to [-0.2, 0.2] (where the warp stays fold-free)."""
        return (float(np.clip(self.width_start + self.width_rate * t, -0.2, 0.2)),
                float(np.clip(self.height_start + self.height_rate * t, -0.2, 0.2)))


def sample_morph_params(rng: np.random.Generator, n_frames: int = 10) -> MorphParams:
    """Draws one slow morph: over `n_frames` the lower face widens or narrows by 12-20 % of the box and the face's
    height changes by up to 6 %, from a random starting shape."""
    n = max(5, int(n_frames))  # a short sequence drifts no faster than a 5-frame one

    def drift(lo: float, hi: float) -> float:
        return float(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi)) / (n - 1)

    return MorphParams(width_start=float(rng.uniform(-0.03, 0.03)), width_rate=drift(0.12, 0.2),
                       height_start=float(rng.uniform(-0.03, 0.03)), height_rate=drift(0.0, 0.06))


def morph_region(box: np.ndarray | tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The ellipse (cx, cy, rx, ry) that `morph_warp` may change: the face box's, 1.3 times as large."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    return (x1 + x2) / 2, (y1 + y2) / 2 + 0.05 * (y2 - y1), 0.65 * (x2 - x1), 0.65 * (y2 - y1)


def morph_warp(frame: np.ndarray, box: np.ndarray | tuple[float, float, float, float], landmarks: np.ndarray,
               params: MorphParams, frame_index: int) -> np.ndarray:
    """Frame `frame_index` of a morphing sequence: the lower face (below the eyes) stretched sideways and the face
    stretched vertically about its centre, by amounts that drift linearly over the frames.

    Args:
        frame: (H, W, 3) RGB or (H, W) uint8; not modified.
        box: the face box (x1, y1, x2, y2) in this frame.
        landmarks: (5, 2) MTCNN landmarks in this frame (the eye line bounds the widening from above).
        params: from `sample_morph_params`, the same for every frame.
        frame_index: the frame's index in the sequence.

    Returns:
        A new frame; only pixels inside `morph_region(box)` differ from `frame`.
    """
    frame, pts = _check(frame, landmarks)
    cx, cy, rx, ry = morph_region(box)
    sx, sy = params.at(frame_index)
    if sx == 0 and sy == 0:
        return frame.copy()
    eye_y = float(pts[:2, 1].mean())
    span = max(1.0, cy + ry - eye_y)

    def field(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # A plateau over the face, so the jaw line itself moves; it falls to 0 at the region's edge.
        w = _plateau(xs, ys, cx, cy, rx, ry)
        lower = np.clip((ys - eye_y) / span * 2.0, 0.0, 1.0)  # 0 at the eyes, 1 from the mouth down
        dx = -w * lower * sx * (xs - cx) / (1 + sx)
        dy = -w * sy * (ys - cy) / (1 + sy)
        return dx, dy

    return _remap_region(frame, _bounds([(cx, cy, rx, ry)]), field)


# ----------------------------------------------------------------------------------------------------- flicker


def flicker_params(params: BlendParams, rng: np.random.Generator, n_frames: int) -> list[BlendParams]:
    """Per-frame blend parameters that jump between frames: each frame redraws the opacity (from faint to full),
    and, from a random frame on, the colour offset and the copy's placement, so the blend flickers instead of
    drifting smoothly. Use with `data_prep.sbi.self_blend`, frame t with element t.

    Args:
        params: the sequence's base parameters (`sample_blend_params`); its smooth drift is turned off.
        rng: the source of randomness (the jumps are drawn here, once per sequence).
        n_frames: frames in the sequence.

    Returns:
        n_frames parameter sets.
    """
    base = replace(params, drift=0.0)
    ratios = rng.uniform(0.15, 1.0, n_frames)
    ratios[rng.permutation(n_frames)[: max(1, n_frames // 3)]] = rng.uniform(0.0, 0.1)  # frames with the blend gone
    out = []
    for t in range(n_frames):
        jump = rng.random() < 0.5
        rgb = tuple(float(v) for v in np.clip(np.asarray(base.rgb_shift) + (rng.uniform(-0.05, 0.05, 3) if jump
                                                                             else 0.0), -0.2, 0.2))
        shift = tuple(float(v) for v in np.clip(np.asarray(base.shift) + (rng.uniform(-0.04, 0.04, 2) if jump
                                                                          else 0.0), -0.1, 0.1))
        out.append(replace(base, blend_ratio=float(ratios[t]), rgb_shift=rgb, shift=shift))
    return out
