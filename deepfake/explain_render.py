"""Explanations as pictures and video: `track<k>.png` per face, `heatmaps.npz`, and the annotated video.

Pictures: the colour says where, within a crop (each crop's map scaled to its own peak, so every crop shows its
hottest place); the opacity grows with the step's p(fake), so a crop the model calls real is only faintly tinted;
under each crop are its frame, its step's p(fake) and its weight. The raw maps (heatmaps.npz) are not scaled.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from data_prep.files import atomic_path
from deepfake.explanation import ExplainError, Explanation, TrackExplanation, upsample_cams

__all__ = ["save_explanation", "render_track", "write_explained_video", "TILE_PX"]

TILE_PX = 96         # side of a crop in track<k>.png
LABEL_PX = 16        # band under each crop with its frame number and score
ROW_LABEL_PX = 88    # column left of each row (a window) with its frames and score
MAX_ROWS = 12        # windows drawn per track in track<k>.png (evenly chosen when there are more; the npz has all)
HEADER_PX = 44


def _score_rgb(p: float) -> tuple[int, int, int]:
    """Green (p 0) through yellow (0.5) to red (1)."""
    p = float(np.clip(p, 0.0, 1.0)) if np.isfinite(p) else 0.5
    return int(round(230 * min(1.0, 2 * p))), int(round(200 * min(1.0, 2 * (1 - p)))), 0


def _heat_layers(heat: np.ndarray, p_fake: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A raw map -> (colour (H, W, 3) float32 RGB, opacity (H, W, 1) float32): the map scaled to its own peak for
    the colour, the opacity growing with it and with the step's p(fake) (module docstring)."""
    heat = np.nan_to_num(np.asarray(heat, np.float32))
    peak = float(np.percentile(heat, 99.5)) if heat.size else 0.0
    h = np.clip(heat / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(heat)
    colour = cv2.applyColorMap(np.rint(h * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
    strength = 0.2 + 0.8 * (float(np.clip(p_fake, 0.0, 1.0)) if np.isfinite(p_fake) else 0.5)
    return colour, (0.65 * strength * h)[..., None]


def _overlay(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32)
    out += alpha * (colour - out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4, colour=(0, 0, 0),
          thickness: int = 1) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def _colour_bar(width: int, height: int) -> np.ndarray:
    ramp = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    colour, _ = _heat_layers(ramp)
    return colour.astype(np.uint8)


def render_track(expl: Explanation, track: TrackExplanation, threshold: float = 0.5) -> np.ndarray:
    """track<k>.png as an RGB array: one row per window (its frames and score on the left), each crop with its
    heat overlaid at its step in the window, its frame number and step score under it; top frames boxed."""
    spans = track.windows
    rows = list(range(len(spans)))
    if len(rows) > MAX_ROWS:
        rows = sorted(set(np.linspace(0, len(spans) - 1, MAX_ROWS).round().astype(int).tolist()))
    owner = np.full(len(track.frames), -1)
    for w, (s, e, _) in enumerate(spans):
        owner[s:e][owner[s:e] < 0] = w
    cols = max(e - s for s, e, _ in spans)
    cell_h = TILE_PX + LABEL_PX + 6
    width = max(ROW_LABEL_PX + cols * (TILE_PX + 4) + 4, 560)
    img = np.full((HEADER_PX + len(rows) * cell_h + 4, width, 3), 255, np.uint8)
    name = Path(expl.video).name
    shown = "" if len(rows) == len(spans) else f" ({len(rows)} of {len(spans)} windows shown)"
    _text(img, f"{name}  face {track.track}: p(fake) {track.p_fake:.3f}"
               f"{' (calibrated)' if expl.calibrated else ''}{shown}", (6, 16), 0.5, thickness=1)
    _text(img, f"Grad-CAM on {expl.layer} ({expl.cells}x{expl.cells}); colour: where in the crop (own peak), "
               "strength: step p(fake); under: frame, p(fake), weight; framed: top frames", (6, 34), 0.37,
          (60, 60, 60))
    bar_w = 90
    if width - bar_w - 40 > 420:
        img[8:18, width - bar_w - 24:width - 24] = _colour_bar(bar_w, 10)
        _text(img, "0", (width - bar_w - 34, 18), 0.35)
        _text(img, "max", (width - 22, 18), 0.3)
    top = set(int(f) for f in track.top_frames)
    for r, w in enumerate(rows):
        s, e, p = spans[w]
        y = HEADER_PX + r * cell_h
        _text(img, f"f{track.frames[s]}-{track.frames[e - 1]}", (4, y + TILE_PX // 2 - 4), 0.35)
        _text(img, f"window {p:.2f}", (4, y + TILE_PX // 2 + 12), 0.35, _score_rgb(p))
        for i in range(s, e):
            if owner[i] != w:
                continue
            x = ROW_LABEL_PX + (i - s) * (TILE_PX + 4)
            crop = np.asarray(track.crops[i], np.uint8)
            tile = cv2.resize(crop, (TILE_PX, TILE_PX), interpolation=cv2.INTER_AREA)
            step = float(track.steps[i])
            heat = cv2.resize(track.cams[i], (TILE_PX, TILE_PX), interpolation=cv2.INTER_LINEAR)
            img[y:y + TILE_PX, x:x + TILE_PX] = _overlay(tile, *_heat_layers(heat, step))
            if int(track.frames[i]) in top:
                cv2.rectangle(img, (x - 2, y - 2), (x + TILE_PX + 1, y + TILE_PX + 1), (200, 0, 200), 2)
            _text(img, f"f{track.frames[i]} {step:.2f} {track.weights[i]:.0%}", (x + 2, y + TILE_PX + 12), 0.35,
                  (200, 0, 0) if step >= threshold else (0, 120, 0))
    return img


def save_explanation(expl: Explanation, folder: str | os.PathLike, threshold: float = 0.5) -> list[Path]:
    """Write `folder/track<k>.png` per face and `folder/heatmaps.npz`; returns the paths written.

    heatmaps.npz holds `video`, `layer`, `cells`, `calibrated`, `tracks` (K,), and per track k: `track<k>_maps`
    (N, S, S) float32 at the crop size, `track<k>_frames` (N,), `track<k>_crop_boxes` and `track<k>_face_boxes`
    (N, 4) x1, y1, x2, y2 in video pixels, `track<k>_steps` (N,) p(fake) per step, `track<k>_weights` (N,) each
    crop's share of its window's heat, `track<k>_windows` (W, 2) first and last frame of each window,
    `track<k>_window_p` (W,), `track<k>_top_frames`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    arrays: dict[str, np.ndarray] = {
        "video": np.array(expl.video), "layer": np.array(expl.layer), "cells": np.array(expl.cells),
        "calibrated": np.array(expl.calibrated),
        "tracks": np.array([t.track for t in expl.tracks], np.int64)}
    for t in expl.tracks:
        k = f"track{t.track}"
        arrays.update({f"{k}_frames": t.frames,
                       f"{k}_crop_boxes": t.crop_boxes, f"{k}_face_boxes": t.face_boxes,
                       f"{k}_steps": t.steps.astype(np.float32), f"{k}_weights": t.weights.astype(np.float32),
                       f"{k}_windows": np.array([(t.frames[s], t.frames[e - 1]) for s, e, _ in t.windows],
                                                np.int64).reshape(-1, 2),
                       f"{k}_window_p": np.array([p for _, _, p in t.windows], np.float32),
                       f"{k}_top_frames": np.array(t.top_frames, np.int64)})
        path = folder / f"{k}.png"
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), render_track(expl, t, threshold)[..., ::-1]):
                raise OSError(f"could not write {path}")
        written.append(path)
    path = folder / "heatmaps.npz"
    with atomic_path(path) as tmp:
        _write_npz(tmp, arrays, {f"track{t.track}_maps": t for t in expl.tracks})
    written.append(path)
    return written


def _write_npz(path: Path, arrays: dict[str, np.ndarray], maps: dict[str, TrackExplanation],
               chunk: int = 256) -> None:
    """An `np.load`-able .npz (deflated) of `arrays` and of each track's maps at the crop size, the maps upsampled
    and written `chunk` crops at a time: a long video's maps never sit in memory whole (an hour at stride 5 and
    240 px would be 5 GB)."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        for key, t in maps.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                          "shape": (len(t.cams), t.side, t.side)}
                np.lib.format.write_array_header_2_0(f, header)
                for start in range(0, len(t.cams), chunk):
                    f.write(upsample_cams(t.cams[start:start + chunk], t.side).astype("<f4").tobytes())


# ------------------------------------------------------------------------------------------------- the video


class _TrackPainter:
    """Draws one track on the frames of the video: box coloured by the current step's score, heat in its crop."""

    def __init__(self, track: TrackExplanation) -> None:
        self.t = track
        self.frames = track.frames.astype(np.float64)
        gaps = np.diff(track.frames)
        self.half = max(1, int(np.median(gaps)) // 2 + 1) if len(gaps) else 1
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _layers(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        if j not in self._cache:
            self._cache = {j: _heat_layers(self.t.map(j), float(self.t.steps[j]))}  # frames come in order
        return self._cache[j]

    def draw(self, frame: np.ndarray, index: int) -> None:
        f = self.frames
        if len(f) == 0 or index < f[0] - self.half or index > f[-1] + self.half:
            return  # shown from half a stride before the track's first crop to half a stride after its last
        j = int(np.clip(np.searchsorted(f, index), 0, len(f) - 1))
        if j > 0 and abs(f[j - 1] - index) <= abs(f[j] - index):
            j -= 1  # the nearest crop: its map and score

        def at(boxes: np.ndarray) -> np.ndarray:  # boxes between crops, linearly interpolated
            return np.array([np.interp(index, f, boxes[:, c]) for c in range(4)])

        h, w = frame.shape[:2]
        x0, y0, x1, y1 = at(self.t.crop_boxes)
        side = max(1, int(round(x1 - x0)))
        ix0, iy0 = int(round(x0)), int(round(y0))
        sx0, sy0, sx1, sy1 = max(ix0, 0), max(iy0, 0), min(ix0 + side, w), min(iy0 + side, h)
        if sx1 > sx0 and sy1 > sy0:
            colour, alpha = self._layers(j)
            colour = cv2.resize(colour, (side, side), interpolation=cv2.INTER_LINEAR)
            alpha = cv2.resize(alpha, (side, side), interpolation=cv2.INTER_LINEAR)[..., None]
            cut = (slice(sy0 - iy0, sy1 - iy0), slice(sx0 - ix0, sx1 - ix0))
            frame[sy0:sy1, sx0:sx1] = _overlay(frame[sy0:sy1, sx0:sx1], colour[cut], alpha[cut])
        p = float(self.t.steps[j])
        rgb = _score_rgb(p)
        bx0, by0, bx1, by1 = (int(round(v)) for v in at(self.t.face_boxes))
        thick = max(2, round(h / 300))
        cv2.rectangle(frame, (bx0, by0), (bx1, by1), rgb, thick, cv2.LINE_AA)
        scale = max(0.45, h / 900)
        label = f"face {self.t.track}: {p:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick // 2 + 1)
        ty = by0 - thick if by0 - th - base - thick > 0 else min(h - 2, by1 + th + base + thick)
        tx = int(np.clip(bx0, 0, max(0, w - tw - 4)))
        cv2.rectangle(frame, (tx, ty - th - base), (tx + tw + 4, ty + base // 2), rgb, -1)
        _text(frame, label, (tx + 2, ty - base // 2), scale, (0, 0, 0), thick // 2 + 1)


def write_explained_video(expl: Explanation, source: str | os.PathLike, out: str | os.PathLike,
                          crf: int = 23, preset: str = "veryfast") -> Path:
    """The video with each face's box coloured by its current score (green 0, yellow 0.5, red 1) and the heat of
    the nearest crop overlaid in the square the crop was cut from: H.264 (PyAV, libx264, yuv420p) at the source's
    frame rate, every frame of the source (a side of odd length is padded by one black pixel)."""
    from data_prep.video import iter_frames
    from data_prep.video_writer import H264Writer, frame_rate

    painters = [_TrackPainter(t) for t in expl.tracks]
    out = Path(out)
    writer = H264Writer(out, frame_rate(expl.fps), crf=crf, preset=preset)  # odd sides padded by one black pixel
    try:
        for index, frame in iter_frames(source):
            canvas = frame.copy()
            for painter in painters:
                painter.draw(canvas, index)
            writer.write(canvas)
        if writer.frames == 0:
            raise ExplainError(f"{source}: no frame could be decoded for the explained video")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return out
