"""Demo data: a small labelled video dataset of real faces and self-blended fakes (`deepfake synth`).

Real clips show real face photos that ship inside installed packages (scikit-image's astronaut, Eileen
Collins, and matplotlib's Grace Hopper, plus their mirror images) moving, zooming, tilting and changing light
over a background, encoded as H.264. Each fake is the same clip with the face replaced by a self-blended
version of itself (`data_prep.sbi`), with blend parameters drawn per clip; with `--fake-kind swap`, by a face
swap: another person's inner face, aligned by the landmarks, colour-matched and blended in (`data_prep.sbi.swap_face`),
a manipulation of another kind for cross-manipulation evaluation; with `--fake-kind reenact`, by the same clip with the
mouth and eyes warped over time (`data_prep.temporal`), a manipulation that shows only over time
(`data_prep.synth_fakes`). Everything is seeded: the same
arguments give identical frames, and a clip's content depends only on the seed, its pair number and the
video settings, not on `--count`.

Output (paths in the CSVs are relative to OUT_DIR, `/`-separated):

    OUT_DIR/real/clip_0000.mp4 ...   real clips (clip_0000 .. clip_{R-1})
    OUT_DIR/fake/clip_000R.mp4 ...   fakes (clip_R .. clip_{count-1}); fake clip_{R+j} is made from real clip_j
    OUT_DIR/labels.csv               video,label,original   label is `real` or `fake`; original is the real
                                     clip a fake was made from (a real clip's own path for a real clip)
    OUT_DIR/boxes.csv                video,frame,x1,y1,x2,y2   ground-truth face box, one row per face per frame
                                     (two rows per frame in two-face clips, left/top face first)
    OUT_DIR/synth.json               the settings that made the set (lets an interrupted run resume)

`--count` is the total number of clips: count // 2 fakes and count - count // 2 real clips.

The face photos are `data_prep.synth_photos`'s; how fakes are made from real frames is `data_prep.synth_fakes`'s.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from data_prep.files import atomic_write, csv_text
from data_prep.synth_fakes import FAKE_KINDS, FakeMaker
from data_prep.synth_fakes import fake_params as _fake_params  # noqa: F401 - the name tests and tools import
from data_prep.synth_photos import FacePhoto, cutout, face_photos, PHOTO_SETS
from data_prep.video_writer import X264_THREADS, H264Writer

__all__ = ["SynthConfig", "SynthError", "FacePhoto", "FAKE_KINDS", "PHOTO_SETS", "face_photos", "make_dataset",
           "parse_resolution"]

# Bump when a change to the generator changes the frames it writes (invalidates resumable output).
GENERATOR_VERSION = 1

RESOLUTIONS = {"360p": (640, 360), "480p": (854, 480), "540p": (960, 540), "720p": (1280, 720),
               "1080p": (1920, 1080)}
MIN_SIDE, MAX_SIDE = 128, 4096
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# Face box height as a fraction of the frame height (the zoom moves within this range; MTCNN finds faces
# of this size down to 320x240).
FACE_HEIGHT_RANGE = (0.25, 0.45)

_CLIP_NAME = re.compile(r"^clip_\d{4,}\.mp4$")
_OWN_FILES = {"real", "fake", "labels.csv", "boxes.csv", "synth.json"}


class SynthError(Exception):
    """A problem the user can fix (an output folder that is not ours, ...); the message is one line."""


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
        people: the photo set the clips show (`data_prep.synth_photos.PHOTO_SETS`; ``demo`` by default).
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
        if self.people not in PHOTO_SETS:
            raise ValueError(f"people must be one of {', '.join(PHOTO_SETS)}, got {self.people!r}")
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
class _FacePlan:
    photo_index: int
    cell: tuple[int, int, int, int]  # x0, y0, x1, y1: the part of the frame this person may cover
    matrices: np.ndarray  # (N, 2, 3) cutout pixels -> frame pixels
    boxes: np.ndarray  # (N, 4) face box in frame pixels
    landmarks: np.ndarray  # (N, 5, 2)


@dataclass
class _ClipPlan:
    pair: int
    faces: list[_FacePlan]
    light: np.ndarray  # (N, 3): gain, contrast, colour temperature in [-1, 1]
    pan: np.ndarray  # (N, 2) int: background offset
    pad: tuple[int, int]  # background canvas padding (x, y)


def _plan_face(rng: np.random.Generator, cfg: SynthConfig, photo_index: int, cell: tuple[int, int, int, int],
               t: np.ndarray) -> _FacePlan:
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
    return _FacePlan(photo_index, cell, matrices, boxes, landmarks)


def _plan_clip(cfg: SynthConfig, pair: int, two_faces: bool) -> _ClipPlan:
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
        faces = [_plan_face(rng, cfg, first, cells[0], t), _plan_face(rng, cfg, second, cells[1], t)]
    else:
        faces = [_plan_face(rng, cfg, first, (0, 0, w, h), t)]
    gain = rng.uniform(0.85, 1.05) + rng.uniform(0.03, 0.12) * _wave(rng, t)
    contrast = rng.uniform(0.9, 1.1) + rng.uniform(0.02, 0.08) * _wave(rng, t)
    temperature = np.clip(rng.uniform(-0.6, 0.6) + rng.uniform(0.1, 0.4) * _wave(rng, t), -1, 1)
    pad = (max(2, round(0.03 * w)), max(2, round(0.03 * h)))
    pan = np.stack([np.rint(p * (1 + rng.uniform(0.2, 1.0) * _wave(rng, t))) for p in pad], 1).astype(int)
    return _ClipPlan(pair, faces, np.stack([gain, contrast, temperature], 1), pan, pad)


# ------------------------------------------------------------------------------------------------- rendering


def _background(cfg: SynthConfig, pair: int, pad: tuple[int, int]) -> np.ndarray:
    """A (H + 2 pad_y, W + 2 pad_x, 3) RGB canvas: a blurred photo, a tinted tiled texture, a gradient or noise."""
    import skimage.data

    rng = np.random.default_rng([cfg.seed, pair, 1])
    cw, ch = cfg.width + 2 * pad[0], cfg.height + 2 * pad[1]
    kind = ["photo", "texture", "gradient", "noise"][pair % 4 if rng.random() < 0.5 else int(rng.integers(4))]
    # Work at a modest size and enlarge once: backgrounds are soft, and this keeps 4K as cheap as 360p.
    scale = min(1.0, 640 / max(cw, ch))
    sw, sh = max(8, round(cw * scale)), max(8, round(ch * scale))
    if kind == "photo":
        # Photos without faces (a face in the background would be a real face with no ground-truth box).
        image = getattr(skimage.data, str(rng.choice(["coffee", "rocket", "hubble_deep_field"])))()[..., :3]
        if rng.random() < 0.5:
            image = image[:, ::-1]
        ih, iw = image.shape[:2]
        zoom = max(sw / iw, sh / ih) * rng.uniform(1.0, 1.4)
        image = cv2.resize(np.ascontiguousarray(image), (math.ceil(iw * zoom), math.ceil(ih * zoom)),
                           interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
        oy, ox = int(rng.integers(0, image.shape[0] - sh + 1)), int(rng.integers(0, image.shape[1] - sw + 1))
        small = cv2.GaussianBlur(image[oy:oy + sh, ox:ox + sw], (0, 0), rng.uniform(1.5, 4.0))
    elif kind == "texture":
        gray = getattr(skimage.data, str(rng.choice(["brick", "gravel", "grass"])))()
        side = max(8, round(gray.shape[1] * rng.uniform(0.3, 0.7)))
        tile = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)
        # Mirror-tiling hides the seams.
        block = np.block([[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]])
        reps = (math.ceil(sh / block.shape[0]), math.ceil(sw / block.shape[1]))
        gray = np.tile(block, reps)[:sh, :sw].astype(np.float32) / 255
        tint = rng.uniform(0.35, 1.0, 3).astype(np.float32)
        small = np.clip(gray[..., None] * tint * 255 * rng.uniform(0.7, 1.2), 0, 255).astype(np.uint8)
        small = cv2.GaussianBlur(small, (0, 0), rng.uniform(0.6, 2.0))
    elif kind == "gradient":
        c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
        ramp = (xx / sw - 0.5) * math.cos(angle) + (yy / sh - 0.5) * math.sin(angle)
        ramp = (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
        small = (c0 + (c1 - c0) * ramp[..., None]).astype(np.float32)
        blobs = cv2.resize(rng.normal(0, 12, (4, 6, 3)).astype(np.float32), (sw, sh), interpolation=cv2.INTER_CUBIC)
        small = np.clip(small + blobs, 0, 255).astype(np.uint8)
    else:
        grid = rng.uniform(0, 255, (int(rng.integers(3, 8)), int(rng.integers(4, 10)), 3)).astype(np.float32)
        small = cv2.resize(grid, (sw, sh), interpolation=cv2.INTER_CUBIC)
        small = cv2.GaussianBlur(small, (0, 0), 0.05 * max(sw, sh))
        small = np.clip(small + rng.normal(0, 4, small.shape).astype(np.float32), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (cw, ch), interpolation=cv2.INTER_LINEAR))


class _Renderer:
    """Draws the frames of one real clip from its plan, touching only what changes from frame to frame."""

    def __init__(self, cfg: SynthConfig, plan: _ClipPlan) -> None:
        self.cfg, self.plan = cfg, plan
        self.canvas = _background(cfg, plan.pair, plan.pad)
        self.frame = np.empty((cfg.height, cfg.width, 3), np.uint8)
        self.cutouts = []
        for face in plan.faces:
            cut = cutout(face.photo_index, cfg.people)
            # Shrink the cutout once per clip to about its on-screen size, so per-frame warps never minify
            # (which would alias); per-frame scale then stays near 1.
            box_h = cut.box[3] - cut.box[1]
            mean_scale = float(np.mean(face.boxes[:, 3] - face.boxes[:, 1])) / box_h
            pre = min(1.0, mean_scale)
            rgba = cut.rgba
            if pre < 1.0:
                size = (max(2, round(rgba.shape[1] * pre)), max(2, round(rgba.shape[0] * pre)))
                rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
                pre_x, pre_y = size[0] / cut.rgba.shape[1], size[1] / cut.rgba.shape[0]
            else:
                pre_x = pre_y = 1.0
            self.cutouts.append((rgba, np.diag([1 / pre_x, 1 / pre_y, 1.0])))
        self.levels = np.arange(256, dtype=np.float32)

    def render(self, i: int) -> np.ndarray:
        """Frame i of the real clip, (H, W, 3) RGB uint8 (a buffer reused by the next call)."""
        cfg, plan = self.cfg, self.plan
        ox, oy = plan.pan[i]
        frame = self.frame
        np.copyto(frame, self.canvas[oy:oy + cfg.height, ox:ox + cfg.width])
        for face, (rgba, unscale) in zip(plan.faces, self.cutouts):
            m = face.matrices[i] @ unscale
            h, w = rgba.shape[:2]
            corners = m @ np.array([[0, w, w, 0], [0, 0, h, h], [1, 1, 1, 1]], dtype=np.float64)
            gx0, gy0, gx1, gy1 = face.cell
            x0 = max(gx0, int(math.floor(corners[0].min())))
            y0 = max(gy0, int(math.floor(corners[1].min())))
            x1 = min(gx1, int(math.ceil(corners[0].max())) + 1)
            y1 = min(gy1, int(math.ceil(corners[1].max())) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            m_roi = m.copy()
            m_roi[:, 2] -= (x0, y0)
            layer = cv2.warpAffine(rgba, m_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
            alpha = layer[..., 3].astype(np.float32) * (1 / 255)
            roi = frame[y0:y1, x0:x1]
            roi[...] = cv2.blendLinear(np.ascontiguousarray(layer[..., :3]), np.ascontiguousarray(roi), alpha,
                                       1.0 - alpha)
        gain, contrast, temperature = plan.light[i]
        channel = np.array([1 + 0.07 * temperature, 1.0, 1 - 0.07 * temperature], np.float32)
        curve = ((self.levels - 128.0) * contrast + 128.0) * gain
        lut = np.clip(np.rint(curve[:, None] * channel[None, :]), 0, 255).astype(np.uint8).reshape(1, 256, 3)
        cv2.LUT(frame, lut, dst=frame)
        return frame


def _writer(path: Path, cfg: SynthConfig) -> H264Writer:
    # mbtree off: with it, libx264 (as shipped in PyAV's wheels) now and then writes a different bitstream for the
    # same frames, which breaks "same arguments, same files". It costs a little compression, nothing else.
    return H264Writer(path, cfg.rate, crf=cfg.crf, preset=cfg.preset, x264_params="mbtree=0")


# ------------------------------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class _Clip:
    video: str  # path relative to OUT_DIR
    label: str  # real / fake
    original: str
    pair: int


def _clips(cfg: SynthConfig) -> list[_Clip]:
    reals = [_Clip(f"real/clip_{j:04d}.mp4", "real", f"real/clip_{j:04d}.mp4", j) for j in range(cfg.n_real)]
    fakes = [_Clip(f"fake/clip_{cfg.n_real + j:04d}.mp4", "fake", reals[j].video, j) for j in range(cfg.n_fake)]
    return reals + fakes


def _prepare_out_dir(out: Path, manifest: dict) -> bool:
    """Makes OUT_DIR ready; returns True when finished clips of an identical earlier run can be kept."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "synth.json"
    entries = {p.name for p in out.iterdir()}
    if entries and not marker.is_file():
        raise SynthError(f"{out} is not empty and holds no `deepfake synth` dataset; choose a new or empty folder")
    resume = False
    if marker.is_file():
        try:
            resume = json.loads(marker.read_text(encoding="utf-8")) == manifest
        except (OSError, ValueError):
            resume = False
    for sub in ("real", "fake"):
        folder = out / sub
        folder.mkdir(exist_ok=True)
        for p in folder.iterdir():
            # Leftovers of a killed run, and (with other settings) our own earlier clips; nothing else.
            if p.name.endswith(".partial") or (not resume and _CLIP_NAME.match(p.name)):
                p.unlink()
    if not resume:
        for name in ("labels.csv", "boxes.csv"):
            (out / name).unlink(missing_ok=True)
        atomic_write(marker, json.dumps(manifest, indent=2) + "\n")
    return resume


def _make_pair(cfg: SynthConfig, plan: _ClipPlan, real_path: Path, fake_path: Path | None) -> None:
    """Renders real clip `plan.pair` once and writes it and (when asked) its fake (`cfg.fake_kind`)."""
    renderer = _Renderer(cfg, plan)
    writers = [_writer(real_path, cfg)]
    if fake_path is not None:
        writers.append(_writer(fake_path, cfg))
        make_fake = FakeMaker(cfg, plan)
    try:
        for i in range(cfg.n_frames):
            frame = renderer.render(i)
            writers[0].write(frame)
            if fake_path is not None:
                writers[1].write(make_fake(frame, i))
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise


def make_dataset(out_dir: str | os.PathLike, config: SynthConfig | None = None) -> Path:
    """Writes the synthetic dataset (see the module docstring for the layout).

    An interrupted run resumes: with the same settings, finished clips in OUT_DIR are kept; with other
    settings, the earlier `deepfake synth` output there is replaced.

    Args:
        out_dir: output folder; created if missing; must be empty or hold an earlier `deepfake synth` output.
        config: the settings; default `SynthConfig()`.

    Returns:
        The output folder.

    Raises:
        SynthError: the output folder cannot be used.
        OSError: writing failed.
    """
    from tqdm.auto import tqdm

    cfg = config or SynthConfig()
    out = Path(out_dir)
    resume = _prepare_out_dir(out, cfg.manifest())
    clips = _clips(cfg)
    two_face = cfg.multi_face_pairs()
    plans = [_plan_clip(cfg, j, j in two_face) for j in range(cfg.n_real)]
    fakes_of = {c.pair: c for c in clips if c.label == "fake"}
    with tqdm(total=len(clips), unit="clip", desc="deepfake synth", disable=not cfg.progress) as bar:
        for plan in plans:
            real_path = out / f"real/clip_{plan.pair:04d}.mp4"
            fake = fakes_of.get(plan.pair)
            fake_path = out / fake.video if fake else None
            todo = [p for p in (real_path, fake_path) if p is not None]
            if resume and all(p.is_file() for p in todo):
                bar.update(len(todo))
                continue
            _make_pair(cfg, plan, real_path, fake_path)
            bar.update(len(todo))

    atomic_write(out / "labels.csv", csv_text(([c.video, c.label, c.original] for c in clips),
                                              ["video", "label", "original"]))
    boxes = ([clip.video, i, *(f"{v:.1f}" for v in face.boxes[i])]
             for clip in clips for i in range(cfg.n_frames) for face in plans[clip.pair].faces)
    atomic_write(out / "boxes.csv", csv_text(boxes, ["video", "frame", "x1", "y1", "x2", "y2"]))
    return out
