"""Self-Blended Images: a fake face made from a real face alone.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022. A colour- and geometry-jittered
copy of the face region is blended back into the same frame through a soft, randomly deformed elliptical mask.
The result carries the traces real face-swaps share (a blending boundary, a colour/sharpness mismatch between
the inner face and its surroundings, slight misalignment) without any identity change, so it is an honest,
known fake.

Only the region around the face is read and written, so a 1080p or 4K frame costs about as much as the face.
Parameters are drawn once per clip (`sample_blend_params`) and reused for every frame, which keeps the fake
temporally consistent; a mild, smooth per-frame drift (driven by `frame_index`) is the only change over time.

    rng = np.random.default_rng(0)
    params = sample_blend_params(rng)
    fake = self_blend(frame, box, params, landmarks=landmarks, frame_index=i)

Pure numpy + OpenCV; frames are RGB uint8 (grayscale (H, W) and (H, W, 1) frames work too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["BlendParams", "sample_blend_params", "self_blend", "swap_face", "blend_region", "part_geometry",
           "REGION_SCALE", "SWAP_REGIONS"]

# What `swap_face` replaces: the inner face, or one part of it (a face-part swap).
SWAP_REGIONS = ("face", "eyes", "mouth")

# Every pixel that `self_blend` changes lies inside the face box scaled by this factor about its centre
# (clipped to the frame). Callers and tests can rely on it: outside that region the frame is untouched.
REGION_SCALE = 2.0

# Resolution at which the mask is drawn and blurred (longest side of the region, pixels); it is smooth, so
# drawing it small and resizing it up costs almost nothing and changes nothing visible.
_MASK_RES = 128


@dataclass(frozen=True)
class BlendParams:
    """How one self-blended fake is made. Sizes are fractions of the face box, so one set fits any frame size.

    Colour jitter of the blended copy:
        hue: hue shift in degrees.
        saturation: saturation factor.
        brightness: added to every channel, as a fraction of 255.
        contrast: contrast factor about mid-grey.
        rgb_shift: per-channel (R, G, B) offsets, as fractions of 255.
    Geometry jitter of the blended copy:
        scale: (x, y) scale about the mask centre.
        shift: (x, y) translation as fractions of the box width and height.
        resize: the copy is shrunk by this factor and enlarged back (1.0: no resize blur).
    Mask (an ellipse inside the face, its outline deformed by a few harmonics, then Gaussian-blurred):
        mask_axes: ellipse semi-axes as fractions of the box half-width and half-height.
        mask_offset: (x, y) offset of the ellipse centre as fractions of the box width and height.
        mask_harmonics: (amplitude, phase) of the outline's harmonics 2, 3, 4, ...; the radius is multiplied by
            1 + sum(amplitude * cos(k * angle + phase)).
        mask_blur: Gaussian sigma of the mask edge as a fraction of the box's longer side.
        blend_ratio: peak opacity of the blended copy (1.0: the mask centre is entirely the copy).
    Drift over frames (mild, smooth; 0 keeps every frame identical up to the face's own motion):
        drift: relative amplitude of the drift of blend ratio, shift and scale.
        drift_period: period of the drift in frames.
        drift_phase: phase of the drift in radians.
    """

    hue: float = 0.0
    saturation: float = 1.0
    brightness: float = 0.0
    contrast: float = 1.0
    rgb_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    shift: tuple[float, float] = (0.0, 0.0)
    resize: float = 1.0
    mask_axes: tuple[float, float] = (0.85, 0.9)
    mask_offset: tuple[float, float] = (0.0, 0.03)
    mask_harmonics: tuple[tuple[float, float], ...] = ()
    mask_blur: float = 0.06
    blend_ratio: float = 1.0
    drift: float = 0.0
    drift_period: float = 90.0
    drift_phase: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (-180.0 <= self.hue <= 180.0, f"hue must be in [-180, 180] degrees, got {self.hue}"),
            (self.saturation >= 0.0, f"saturation must be >= 0, got {self.saturation}"),
            (self.contrast >= 0.0, f"contrast must be >= 0, got {self.contrast}"),
            (len(self.rgb_shift) == 3, f"rgb_shift needs 3 values, got {self.rgb_shift}"),
            (len(self.scale) == 2 and min(self.scale) > 0, f"scale needs 2 positive values, got {self.scale}"),
            (len(self.shift) == 2, f"shift needs 2 values, got {self.shift}"),
            (0.05 <= self.resize <= 1.0, f"resize must be in [0.05, 1], got {self.resize}"),
            (len(self.mask_axes) == 2 and 0 < min(self.mask_axes) and max(self.mask_axes) <= 1.2,
             f"mask_axes must be 2 values in (0, 1.2], got {self.mask_axes}"),
            (len(self.mask_offset) == 2 and max(abs(v) for v in self.mask_offset) <= 0.25,
             f"mask_offset must be 2 values in [-0.25, 0.25], got {self.mask_offset}"),
            (sum(abs(a) for a, _ in self.mask_harmonics) < 0.5,
             f"mask_harmonics amplitudes must sum to < 0.5, got {self.mask_harmonics}"),
            (0.0 <= self.mask_blur <= 0.25, f"mask_blur must be in [0, 0.25], got {self.mask_blur}"),
            (0.0 <= self.blend_ratio <= 1.0, f"blend_ratio must be in [0, 1], got {self.blend_ratio}"),
            (0.0 <= self.drift <= 0.5, f"drift must be in [0, 0.5], got {self.drift}"),
            (self.drift_period > 0, f"drift_period must be > 0, got {self.drift_period}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def sample_blend_params(rng: np.random.Generator, *, drift: bool = True) -> BlendParams:
    """Draws the parameters of one self-blended fake (one clip).

    The ranges follow the SBI paper's augmentations (RGB shift, hue/saturation/value, brightness/contrast,
    small scale and translation, resize blur, blend ratio), with a floor on the colour change so that every
    fake differs visibly from its source.

    Args:
        rng: the source of randomness; the same generator state gives the same parameters.
        drift: allow a mild per-frame drift (for videos); False gives identical treatment of every frame.

    Returns:
        The parameters, to pass to `self_blend` for every frame of the clip.
    """

    def signed(low: float, high: float) -> float:
        return float(rng.choice([-1.0, 1.0]) * rng.uniform(low, high))

    rgb = rng.uniform(-0.08, 0.08, size=3)
    strongest = int(np.argmax(np.abs(rgb)))
    rgb[strongest] = math.copysign(max(abs(rgb[strongest]), 0.04), rgb[strongest] or 1.0)
    n_harmonics = 3
    harmonics = tuple(
        (float(rng.uniform(0.0, 0.06)), float(rng.uniform(0.0, 2 * math.pi))) for _ in range(n_harmonics)
    )
    return BlendParams(
        hue=float(rng.uniform(-8.0, 8.0)),
        saturation=float(rng.uniform(0.8, 1.25)),
        brightness=signed(0.02, 0.08),
        contrast=float(rng.uniform(0.85, 1.15)),
        rgb_shift=(float(rgb[0]), float(rgb[1]), float(rgb[2])),
        scale=(float(rng.uniform(0.95, 1.05)), float(rng.uniform(0.95, 1.05))),
        shift=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
        resize=float(rng.uniform(0.45, 0.9)) if rng.random() < 0.5 else 1.0,
        mask_axes=(float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.85, 1.05))),
        mask_offset=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(0.0, 0.06))),
        mask_harmonics=harmonics,
        mask_blur=float(rng.uniform(0.03, 0.08)),
        blend_ratio=float(rng.choice([0.5, 0.75, 1.0, 1.0, 1.0])),
        drift=float(rng.uniform(0.0, 0.1)) if drift else 0.0,
        drift_period=float(rng.uniform(50.0, 150.0)),
        drift_phase=float(rng.uniform(0.0, 2 * math.pi)),
    )


def _mask_geometry(box: np.ndarray, params: BlendParams, landmarks: np.ndarray | None) -> tuple[float, ...]:
    """Centre (x, y), semi-axes (a, b) and roll angle (radians) of the mask ellipse in frame pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    if landmarks is not None:
        # MTCNN's 5 points: left eye, right eye, nose, mouth left, mouth right. The ellipse is centred between
        # the eyes and the mouth, sized by the eye distance and eye-mouth distance, rolled with the eye line.
        pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        eyes, mouth = pts[:2].mean(0), pts[3:].mean(0)
        d_eye = float(np.linalg.norm(pts[1] - pts[0]))
        d_mouth = float(np.linalg.norm(mouth - eyes))
        angle = math.atan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0])
        up = np.array([math.sin(angle), -math.cos(angle)])  # face "up" direction, frame y grows downwards
        centre = (eyes + mouth) / 2 + 0.12 * d_mouth * up
        half_w, half_h = max(1.05 * d_eye, 0.3 * bw), max(1.35 * d_mouth, 0.3 * bh)
    else:
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        half_w, half_h, angle = bw / 2, bh / 2, 0.0
    cx = centre[0] + params.mask_offset[0] * bw
    cy = centre[1] + params.mask_offset[1] * bh
    return cx, cy, params.mask_axes[0] * half_w, params.mask_axes[1] * half_h, angle


def part_geometry(landmarks: np.ndarray, part: str) -> tuple[float, float, float, float, float]:
    """Centre (x, y), semi-axes (a, b) and roll (radians) of an ellipse around the eyes or the mouth, from the 5
    MTCNN landmarks: the eyes' ellipse spans both eyes and brows, the mouth's the lips and a little around them."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eyes, mouth = pts[:2].mean(0), pts[3:].mean(0)
    d_eye = float(np.linalg.norm(pts[1] - pts[0]))
    if part == "eyes":
        angle = math.atan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0])
        return float(eyes[0]), float(eyes[1]) - 0.1 * d_eye, 0.95 * d_eye, 0.45 * d_eye, angle
    if part == "mouth":
        angle = math.atan2(pts[4, 1] - pts[3, 1], pts[4, 0] - pts[3, 0])
        width = max(float(np.linalg.norm(pts[4] - pts[3])), 0.5 * d_eye)
        return float(mouth[0]), float(mouth[1]), 0.85 * width, 0.5 * width, angle
    raise ValueError(f"part must be eyes or mouth, got {part!r}")


def blend_region(frame_shape: tuple[int, ...], box: np.ndarray) -> tuple[int, int, int, int]:
    """The part of a frame `self_blend` may change: the box scaled by `REGION_SCALE`, clipped to the frame.

    Args:
        frame_shape: the frame's shape, (H, W) or (H, W, C).
        box: face box (x1, y1, x2, y2) in pixels.

    Returns:
        (x0, y0, x1, y1) integer pixel bounds, x1/y1 exclusive; empty (x0 >= x1 or y0 >= y1) when the box is
        outside the frame.
    """
    h, w = frame_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = REGION_SCALE * (x2 - x1) / 2, REGION_SCALE * (y2 - y1) / 2
    return (max(0, math.floor(cx - hw)), max(0, math.floor(cy - hh)),
            min(w, math.ceil(cx + hw)), min(h, math.ceil(cy + hh)))


def _draw_mask(roi_w: int, roi_h: int, geometry: tuple[float, ...], params: BlendParams, blur: float) -> np.ndarray:
    """Soft mask (roi_h, roi_w) float32 in [0, 1]; geometry is in ROI pixels."""
    cx, cy, a, b, angle = geometry
    f = min(1.0, _MASK_RES / max(roi_w, roi_h))
    mw, mh = max(2, round(roi_w * f)), max(2, round(roi_h * f))
    # Pixel centres of the small grid, in ROI pixels.
    xs = (np.arange(mw, dtype=np.float32) + 0.5) * (roi_w / mw) - 0.5
    ys = (np.arange(mh, dtype=np.float32) + 0.5) * (roi_h / mh) - 0.5
    dx, dy = xs[None, :] - cx, ys[:, None] - cy
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    u = (dx * cos_a + dy * sin_a) / max(a, 1e-3)
    v = (-dx * sin_a + dy * cos_a) / max(b, 1e-3)
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    radius = np.ones_like(theta)
    for k, (amp, phase) in enumerate(params.mask_harmonics, start=2):
        radius += amp * np.cos(k * theta + phase)
    mask = (rho <= radius).astype(np.float32)
    sigma = blur * f
    if sigma > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    if (mw, mh) != (roi_w, roi_h):
        mask = cv2.resize(mask, (roi_w, roi_h), interpolation=cv2.INTER_LINEAR)
    return mask


def _jitter_colour(roi: np.ndarray, params: BlendParams) -> np.ndarray:
    """Hue/saturation, brightness/contrast and RGB shift of an RGB (or gray) uint8 region."""
    out = roi
    if out.shape[2] == 3 and (params.hue != 0.0 or params.saturation != 1.0):
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + round(params.hue / 2)) % 180).astype(np.uint8)
        hsv[..., 1] = cv2.convertScaleAbs(hsv[..., 1], alpha=params.saturation)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    levels = np.arange(256, dtype=np.float32)
    shifts = params.rgb_shift[: out.shape[2]] if out.shape[2] == 3 else (float(np.mean(params.rgb_shift)),)
    lut = np.stack([(levels - 128.0) * params.contrast + 128.0 + 255.0 * (params.brightness + s) for s in shifts], -1)
    lut = np.clip(np.rint(lut), 0, 255).astype(np.uint8).reshape(1, 256, len(shifts))
    return cv2.LUT(out, lut if lut.shape[2] > 1 else lut[..., 0]).reshape(out.shape)


def _blend_setup(frame: np.ndarray, box, params: BlendParams, return_mask: bool):
    """What a blend of one face starts from: the box (float64), a copy of the frame to write, the full-frame mask
    (or None), the region that may change, the box size, and whether there is nothing to blend."""
    box = np.asarray(box, dtype=np.float64).reshape(4)
    full_mask = np.zeros(frame.shape[:2], np.float32) if return_mask else None
    rx0, ry0, rx1, ry1 = blend_region(frame.shape, box)
    bw, bh = box[2] - box[0], box[3] - box[1]
    empty = rx1 - rx0 < 4 or ry1 - ry0 < 4 or bw < 2 or bh < 2 or params.blend_ratio <= 0
    return box, frame.copy(), full_mask, (rx0, ry0, rx1, ry1), (bw, bh), empty


def self_blend(
    frame: np.ndarray,
    box: np.ndarray | tuple[float, float, float, float],
    params: BlendParams,
    landmarks: np.ndarray | None = None,
    frame_index: int = 0,
    return_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Makes a self-blended fake of one face in a frame.

    Args:
        frame: (H, W, 3) RGB uint8 frame (or (H, W) / (H, W, 1) grayscale); not modified.
        box: face box (x1, y1, x2, y2) in pixels, tight around the face like an MTCNN box.
        params: from `sample_blend_params`; keep them fixed over a clip's frames.
        landmarks: optional (5, 2) MTCNN landmarks (eyes, nose, mouth corners); they centre, size and roll the
            mask with the face. Without them the mask is an upright ellipse inside the box.
        frame_index: the frame's index in its clip, for the mild drift of `params.drift`.
        return_mask: also return the blend opacity.

    Returns:
        The fake frame (a new array, same shape and dtype). With `return_mask`, also the (H, W) float32
        opacity in [0, 1] of the jittered copy. Only pixels inside `blend_region(frame.shape, box)` change.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise ValueError(f"frame must be an (H, W[, C]) uint8 array, got {frame.dtype} {frame.shape}")
    box, out, full_mask, (rx0, ry0, rx1, ry1), (bw, bh), empty = _blend_setup(frame, box, params, return_mask)
    if empty:
        return (out, full_mask) if return_mask else out

    # A smooth drift of opacity, position and scale; 0 at drift=0, so a still face gives identical frames.
    wobble = params.drift * math.sin(2 * math.pi * frame_index / params.drift_period + params.drift_phase)
    wobble2 = params.drift * math.cos(2 * math.pi * frame_index / params.drift_period + 1.7 * params.drift_phase)
    ratio = float(np.clip(params.blend_ratio * (1 + 0.5 * wobble), 0.0, 1.0))
    shift_x = (params.shift[0] + 0.1 * wobble) * bw
    shift_y = (params.shift[1] + 0.1 * wobble2) * bh
    scale_x, scale_y = params.scale[0] * (1 + 0.1 * wobble2), params.scale[1] * (1 + 0.1 * wobble)

    roi = out[ry0:ry1, rx0:rx1]
    squeeze = roi.ndim == 2
    roi3 = roi[..., None] if squeeze else roi
    roi_h, roi_w = roi3.shape[:2]
    cx, cy, a, b, angle = _mask_geometry(box, params, landmarks)
    cx, cy = cx - rx0, cy - ry0

    # Geometry jitter: scale about the mask centre, then shift; borders reflect (the mask is ~0 there).
    m = np.array([[scale_x, 0.0, cx - scale_x * cx + shift_x], [0.0, scale_y, cy - scale_y * cy + shift_y]])
    src = cv2.warpAffine(roi3, m, (roi_w, roi_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    src = src.reshape(roi3.shape)
    if params.resize < 1.0:
        small = (max(2, round(roi_w * params.resize)), max(2, round(roi_h * params.resize)))
        src = cv2.resize(cv2.resize(src, small, interpolation=cv2.INTER_AREA), (roi_w, roi_h),
                         interpolation=cv2.INTER_LINEAR).reshape(roi3.shape)
    src = _jitter_colour(src, params)

    mask = _draw_mask(roi_w, roi_h, (cx, cy, a, b, angle), params, params.mask_blur * max(bw, bh)) * ratio
    blended = roi3.astype(np.float32)
    blended += mask[..., None] * (src.astype(np.float32) - blended)
    np.rint(blended, out=blended)
    roi3[...] = np.clip(blended, 0, 255).astype(np.uint8)
    if full_mask is not None:
        full_mask[ry0:ry1, rx0:rx1] = mask
        return out, full_mask
    return out


def swap_face(
    frame: np.ndarray,
    box: np.ndarray | tuple[float, float, float, float],
    landmarks: np.ndarray,
    donor: np.ndarray,
    donor_landmarks: np.ndarray,
    params: BlendParams,
    frame_index: int = 0,
    return_mask: bool = False,
    region: str = "face",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """A face swap: another person's inner face, aligned, colour-matched and blended into this face.

    The donor photo is warped onto the face by the similarity transform that best maps its 5 landmarks onto the
    face's, its colours are matched to the face's under the mask (mean and spread of each L*a*b* channel, Reinhard
    et al.'s transfer as face-swap tools use it: a grey face gets a grey donor, a warm one a warm one), and it is
    blended through the same soft, deformed mask as a self-blended fake (`params` gives the mask, its blur, the blend
    ratio and their drift; its colour and geometry jitter are not used: the identity change is the manipulation).

    Args:
        frame: (H, W, 3) RGB uint8 frame; not modified.
        box: the face's box (x1, y1, x2, y2).
        landmarks: the face's (5, 2) MTCNN landmarks in this frame.
        donor: (h, w, 3) RGB uint8 photo of another person.
        donor_landmarks: (5, 2) landmarks of the donor's face in `donor`.
        params: blend parameters (`sample_blend_params`), fixed over a clip.
        frame_index: the frame's index in its clip (drift).
        return_mask: also return the blend opacity.
        region: ``face`` (the inner face), or ``eyes`` / ``mouth`` (a face-part swap: only that part, its ellipse
            from `part_geometry`, still deformed, blurred and blended as `params` say).

    Returns:
        The fake frame; with `return_mask`, also the (H, W) float32 opacity. Only pixels inside
        `blend_region(frame.shape, box)` change.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be an (H, W, 3) uint8 array, got {frame.dtype} {frame.shape}")
    box, out, full_mask, (rx0, ry0, rx1, ry1), (bw, bh), empty = _blend_setup(frame, box, params, return_mask)
    if empty:
        return (out, full_mask) if return_mask else out
    wobble = params.drift * math.sin(2 * math.pi * frame_index / params.drift_period + params.drift_phase)
    ratio = float(np.clip(params.blend_ratio * (1 + 0.5 * wobble), 0.0, 1.0))

    # The donor, aligned onto the face in ROI coordinates.
    target = np.asarray(landmarks, np.float64).reshape(5, 2) - (rx0, ry0)
    m, _ = cv2.estimateAffinePartial2D(np.asarray(donor_landmarks, np.float64).reshape(5, 2), target)
    if m is None:
        return (out, full_mask) if return_mask else out
    roi = out[ry0:ry1, rx0:rx1]
    roi_h, roi_w = roi.shape[:2]
    src = cv2.warpAffine(np.ascontiguousarray(donor), m, (roi_w, roi_h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT_101)
    if region not in SWAP_REGIONS:
        raise ValueError(f"region must be one of {', '.join(SWAP_REGIONS)}, got {region!r}")
    cx, cy, a, b, angle = (_mask_geometry(box, params, landmarks) if region == "face"
                           else part_geometry(landmarks, region))
    mask = _draw_mask(roi_w, roi_h, (cx - rx0, cy - ry0, a, b, angle), params, params.mask_blur * max(bw, bh)) * ratio

    # Colour transfer under the mask, in L*a*b*: the donor's skin tone and light become the face's. (Per RGB channel
    # a colour donor stays colourful on a grey face: each channel keeps its own deviations.)
    weight = mask[..., None] + 1e-6
    roi_f = roi.astype(np.float32)
    src_lab = cv2.cvtColor(src.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    roi_lab = cv2.cvtColor(roi_f / 255.0, cv2.COLOR_RGB2LAB)

    def stats(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = (img * weight).sum((0, 1)) / weight.sum((0, 1))
        std = np.sqrt(((img - mean) ** 2 * weight).sum((0, 1)) / weight.sum((0, 1))) + 1e-3
        return mean, std

    (sm, ss), (tm, ts) = stats(src_lab), stats(roi_lab)
    matched = np.clip((src_lab - sm) / ss * ts + tm, (0.0, -127.0, -127.0), (100.0, 127.0, 127.0))
    src_f = cv2.cvtColor(matched.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0
    blended = roi_f + mask[..., None] * (src_f - roi_f)
    roi[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if full_mask is not None:
        full_mask[ry0:ry1, rx0:rx1] = mask
        return out, full_mask
    return out
