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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_prep.files import atomic_write, csv_text
from data_prep.synth_fakes import FAKE_KINDS, FakeMaker
from data_prep.synth_plan import (  # the settings and plans; public here too, where users look for them
    GENERATOR_VERSION, X264_PRESETS, ClipPlan, SynthConfig, SynthError, parse_resolution, plan_clip,
)
from data_prep.synth_photos import FacePhoto, cutout, face_photos, PHOTO_SETS
from data_prep.video_writer import H264Writer

__all__ = ["SynthConfig", "SynthError", "FacePhoto", "FAKE_KINDS", "PHOTO_SETS", "X264_PRESETS", "GENERATOR_VERSION",
           "face_photos", "make_dataset", "parse_resolution", "plan_clip"]

_CLIP_NAME = re.compile(r"^clip_\d{4,}\.mp4$")
_OWN_FILES = {"real", "fake", "labels.csv", "boxes.csv", "synth.json"}


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

    def __init__(self, cfg: SynthConfig, plan: ClipPlan) -> None:
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


def _make_pair(cfg: SynthConfig, plan: ClipPlan, real_path: Path, fake_path: Path | None) -> None:
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
    plans = [plan_clip(cfg, j, j in two_face) for j in range(cfg.n_real)]
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
