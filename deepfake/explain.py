"""Explanations: where in each face crop the detector saw the fake (Grad-CAM), and the frames that decided.

    expl = explain_faces(faces, detector)                       # faces: a VideoFaces from the extractor
    paths = save_explanation(expl, "explain/clip")              # track<k>.png per face + heatmaps.npz
    write_explained_video(expl, "clip.mp4", "explain/clip/explained.mp4")   # the video, boxes and heat drawn on it

`deepfake predict --explain DIR [--explain-video]` does this for every video it scores.

Method (Grad-CAM, Selvaraju et al. 2017, taken through the LSTM). A face track is scored in windows of `seq_len`
crops, each window by the logit of its last step (`deepfake.scoring`). For each window that logit (calibrated when
the checkpoint is: the reported score's logit) is differentiated with respect to a feature map of the backbone at
every step of the window. The last step's logit depends on every crop of its window through the LSTM, so every
crop gets a gradient: how much, and where, that crop's features moved the window's score. Per crop and channel the
gradient is averaged over the map (the channel's weight); the weighted sum of the channels, clipped at 0, is the
crop's map, upsampled (bilinear) to the crop's size. A crop's map comes from the first window that holds it, as its
per-step score does. The model runs in eval mode, under autograd even when called inside `torch.inference_mode`;
no weight gets a gradient and only what follows the map is differentiated, in float32. The forward pass up to the
backbone's last map needs no gradient and runs at the detector's precision (bf16 where predict uses it), so the
scores under the crops are predict's and an explanation costs about one more forward pass of the backbone; an
inner map (below) is taken all in float32.

Which feature map: the backbone's last one (what is pooled) when it has at least `MIN_CELLS` cells a side at the
model's input size (EfficientNet-B1 at 240 px: 8x8), else the deepest stage of the backbone that has (timm's
`feature_info`; the tiny CPU model's 64-px input gives a 2x2 last map, so its stride-8 stage, 8x8, is used). On 40
of the demo's held-out self-blended fakes the tiny model's stride-8 map has 2.6x more heat per pixel inside the
blended region than outside it (median), its 2x2 last map 1.04x: it cannot place anything. README "Explanations:
where and when" has these figures and their limits.

How much each crop counts: its `weight`, its share of its window's total heat. The LSTM need not spread the score
evenly over a window; for the demo's model the weight grows towards the window's end (README).

Pictures: the colour says where, within a crop (each crop's map scaled to its own peak, so every crop shows its
hottest place); the opacity grows with the step's p(fake), so a crop the model calls real is only faintly tinted;
under each crop are its frame, its step's p(fake) and its weight. The raw maps (heatmaps.npz) are not scaled.

What the map is and is not. It says which regions of a crop pushed the fake score up, at the resolution of the map
(a cell of an 8x8 map is an eighth of the crop), nothing finer: not a segmentation of the manipulated pixels, and
not proof of anything. Every crop has a hottest place, a real face's too: read the heat with the score.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data_prep.files import atomic_path
from data_prep.track import crop_box
from deepfake.calibration import apply_calibration
from deepfake.scoring import TrackScore, contributions_of, steps_of, track_p_fake, track_windows, video_result

__all__ = ["TrackExplanation", "Explanation", "ExplainError", "MIN_CELLS", "resolve_layer", "gradcam_windows",
           "explain_faces", "save_explanation", "render_track", "write_explained_video", "write_explanation"]

MIN_CELLS = 7        # smallest side (cells) of the feature map Grad-CAM is taken on ("auto")
TILE_PX = 96         # side of a crop in track<k>.png
LABEL_PX = 16        # band under each crop with its frame number and score
ROW_LABEL_PX = 88    # column left of each row (a window) with its frames and score
MAX_ROWS = 12        # windows drawn per track in track<k>.png (evenly chosen when there are more; the npz has all)
HEADER_PX = 44


class ExplainError(ValueError):
    """An explanation that can't be made for this model (e.g. a backbone without a spatial feature map)."""


@dataclass
class TrackExplanation:
    """One face track's explanation.

    Attributes:
        track: the track number (predict's `faces[*].track`).
        frames: (N,) frame numbers of its crops.
        face_boxes: (N, 4) the detector's boxes, x1, y1, x2, y2 in video pixels.
        crop_boxes: (N, 4) the square each crop was cut from, x0, y0, x1, y1 in video pixels (may reach past the
            frame, where the crop is black): the crop's pixel (u, v) of S is video pixel (x0 + u * side / S, ...).
        cams: (N, h, w) float32 Grad-CAM of each crop at the feature map's resolution, >= 0, in the logit's units;
            `map(i)` / `maps` give them at the crop's size (bilinear), as heatmaps.npz stores them.
        side: the crops' side S in pixels.
        steps: (N,) p(fake) per step (each crop in the first window holding it).
        weights: (N,) each crop's share of its window's heat: the sum of its map over the sum of the window's maps.
        windows: (start, end, p_fake) per window, in crop indices (end exclusive).
        p_fake: the track's p(fake).
        top_frames: the frames that moved their window's score most, most decisive first (`deepfake.scoring`).
        crops: the crops themselves (arrays or `JpegCrops`), for drawing; not saved.
    """

    track: int
    frames: np.ndarray
    face_boxes: np.ndarray
    crop_boxes: np.ndarray
    cams: np.ndarray
    side: int
    steps: np.ndarray
    weights: np.ndarray
    windows: list[tuple[int, int, float]]
    p_fake: float
    top_frames: list[int]
    crops: Any = field(default=None, repr=False)

    def map(self, i: int) -> np.ndarray:
        """Crop i's map at the crop's size, (S, S) float32."""
        return _upsample(self.cams[i : i + 1], self.side)[0]

    @property
    def maps(self) -> np.ndarray:
        """Every crop's map at the crop's size, (N, S, S) float32 (N * S * S * 4 bytes: 14 MB for 60 crops of 240 px;
        `save_explanation` writes them in chunks instead)."""
        return _upsample(self.cams, self.side)


@dataclass
class Explanation:
    """A video's explanation: its tracks', the layer the maps were taken on and its side in cells."""

    video: str
    tracks: list[TrackExplanation]
    layer: str
    cells: int
    calibrated: bool
    fps: float = 0.0
    n_frames: int = 0
    width: int = 0
    height: int = 0


# ------------------------------------------------------------------------------------------------- Grad-CAM


def _backbone(model):
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "forward_features") or not hasattr(model, "forward_head"):
        raise ExplainError("explanations need a deepfake.model.DeepfakeDetector (a timm backbone + LSTM)")
    return backbone


def resolve_layer(model, layer: str = "auto", img_size: int | None = None) -> tuple[str, int]:
    """The feature map Grad-CAM is taken on, and its side in cells.

    Args:
        model: a `DeepfakeDetector`.
        layer: ``auto`` (module docstring), ``last`` (the map the backbone pools), or a module name of the backbone
            (e.g. ``blocks.2``; see ``model.backbone.feature_info``).
        img_size: the input side (default: the model's).

    Returns:
        (``last`` or a module name, cells a side at `img_size`).
    """
    backbone = _backbone(model)
    size = int(img_size or model.img_size)
    info = [(str(f["module"]), int(f["reduction"])) for f in getattr(backbone, "feature_info", [])]
    last_cells = math.ceil(size / info[-1][1]) if info else size // 32
    if layer == "last" or (layer == "auto" and (not info or last_cells >= MIN_CELLS)):
        return "last", last_cells
    if layer == "auto":
        fit = [(m, r) for m, r in info if math.ceil(size / r) >= MIN_CELLS]
        name, reduction = fit[-1] if fit else info[0]
        return name, math.ceil(size / reduction)
    modules = dict(backbone.named_modules())
    if layer not in modules:
        raise ValueError(f"layer {layer!r} is not a module of the backbone; try auto, last or one of "
                         f"{', '.join(m for m, _ in info)}")
    reduction = dict(info).get(layer)
    return layer, math.ceil(size / reduction) if reduction else 0


@contextmanager
def _no_weight_grads(model):
    """Weights that need no gradient for the duration: autograd then records only what follows the hooked map."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def gradcam_windows(detector, windows: Sequence[np.ndarray], layer: str = "last", precision: str = "auto"):
    """Grad-CAM of B windows of equal length.

    Args:
        detector: a `deepfake.inference.Detector`.
        windows: B arrays of (T, S, S, 3) uint8 RGB crops, T equal.
        layer: ``last`` or a backbone module name (`resolve_layer`).
        precision: ``auto``: with ``last``, the backbone's forward pass to its map (no gradient goes through it)
            runs at the detector's precision, as predict's does, so the scores are predict's; everything that is
            differentiated runs in float32. ``fp32``: all of it in float32. A hooked inner layer is all float32.

    Returns:
        (cams, logits): (B, T, h, w) float32 torch tensors of the maps (>= 0) on the detector's device, and (B, T)
        the (calibrated) logits of every step.
    """
    import torch

    model = detector.model
    backbone = _backbone(model)
    if getattr(model, "training", False):
        raise ExplainError("the model must be in eval mode (dropout and batch statistics would enter the map)")
    captured = []

    def keep(_module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise ExplainError(f"layer {layer!r} gives no (N, C, H, W) feature map")
        leaf = output.detach().float().requires_grad_(True)
        captured.append(leaf)
        return leaf

    with torch.inference_mode(False), torch.enable_grad(), _no_weight_grads(model), \
            torch.autocast(detector.device.type, enabled=False):
        x = detector.prepare(windows).float()  # (B, T, 3, S, S), made here: inference-mode tensors can't backprop
        b, t = x.shape[:2]
        if layer == "last":
            frames = x.flatten(0, 1)
            if getattr(model, "channels_last", False):
                frames = frames.contiguous(memory_format=torch.channels_last)
            low = detector.precision in ("bf16", "fp16") and precision == "auto"
            dtype = torch.float16 if detector.precision == "fp16" else torch.bfloat16
            with torch.no_grad(), torch.autocast(detector.device.type, dtype=dtype, enabled=low):
                fmap = backbone.forward_features(frames)
            if fmap.ndim != 4:
                raise ExplainError(f"the backbone's last feature map has shape {tuple(fmap.shape)}, not (N, C, H, W):"
                                   " Grad-CAM needs a convolutional map (try --explain on a CNN backbone)")
            keep(None, None, fmap)
            pooled = backbone.forward_head(captured[0])
            logits = model.forward_head(pooled.reshape(b, t, -1))
        else:
            handle = dict(backbone.named_modules())[layer].register_forward_hook(keep)
            try:
                logits = model(x)
            finally:
                handle.remove()
            if len(captured) != 1:
                raise ExplainError(f"layer {layer!r} ran {len(captured)} times in one forward pass; pick another")
        logits = apply_calibration(logits.float(), detector.calibration)
        (grads,) = torch.autograd.grad(logits[:, -1].sum(), captured[0])
    fmap = captured[0].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B*T, C, 1, 1): a channel's weight, averaged over the map
    cams = torch.relu((weights * fmap).sum(dim=1))  # (B*T, h, w)
    return cams.view(b, t, *cams.shape[-2:]).float(), logits.detach()


def _upsample(cams: np.ndarray, side: int) -> np.ndarray:
    """(n, h, w) maps -> (n, side, side) float32 (bilinear, pixel centres aligned: torch's align_corners=False)."""
    out = np.empty((len(cams), side, side), np.float32)
    for i, cam in enumerate(np.asarray(cams, np.float32)):
        out[i] = cv2.resize(cam, (side, side), interpolation=cv2.INTER_LINEAR)
    return np.maximum(out, 0.0, out=out)


def explain_faces(faces, detector, layer: str = "auto", margin: float | None = None,
                  threshold: float = 0.5, precision: str = "auto") -> Explanation:
    """Explain every face track of a video.

    Args:
        faces: its `data_prep.faces.VideoFaces` (`Prediction.faces`).
        detector: the `deepfake.inference.Detector` that scored it.
        layer: the feature map (`resolve_layer`).
        margin: the crop margin of the extraction (for the crop boxes); default the checkpoint's (as predict's).
        threshold: verdict threshold (only for the per-face summary; maps do not depend on it).
        precision: ``auto`` or ``fp32`` (`gradcam_windows`).

    Returns:
        The `Explanation`.
    """
    import torch

    name, cells = resolve_layer(detector.model, layer, detector.img_size)
    if margin is None:
        from data_prep.faces import ExtractConfig

        margin = float(detector.meta.get("margin") if detector.meta.get("margin") is not None
                       else ExtractConfig.margin)
    tracks = [t for t in faces.tracks if len(t.frames)]
    out: list[TrackExplanation] = []
    for track in tracks:
        crops = track.images()
        n = len(crops)
        side = int(crops.crop_shape[0] if hasattr(crops, "crop_shape") else np.asarray(crops[0]).shape[0])
        spans = track_windows(n, detector.seq_len)
        cams_of: np.ndarray | None = None  # (n, h, w), once the map's size is known
        weights = np.zeros(n, np.float64)
        done = np.zeros(n, bool)
        probs: list[np.ndarray | None] = [None] * len(spans)
        by_len: dict[int, list[int]] = {}
        for w, (s, e) in enumerate(spans):
            by_len.setdefault(e - s, []).append(w)
        for group in by_len.values():
            for start in range(0, len(group), detector.batch_size):
                chunk = group[start:start + detector.batch_size]
                cams, logits = gradcam_windows(detector, [crops[spans[w][0]:spans[w][1]] for w in chunk], name,
                                               precision)
                p = torch.sigmoid(logits).cpu().numpy().astype(np.float64)
                cams = cams.cpu().numpy()
                mass = cams.sum(axis=(2, 3), dtype=np.float64)  # (B, T)
                if cams_of is None:
                    cams_of = np.zeros((n, *cams.shape[-2:]), np.float32)
                for k, w in enumerate(chunk):
                    s, e = spans[w]
                    probs[w] = p[k]
                    fresh = np.flatnonzero(~done[s:e])  # each crop's map from the first window holding it
                    if len(fresh):
                        cams_of[s + fresh] = cams[k][fresh]
                        weights[s + fresh] = mass[k][fresh] / max(mass[k].sum(), 1e-30)
                        done[s + fresh] = True
        score = TrackScore(track_p_fake([float(q[-1]) for q in probs]), steps_of(n, spans, probs),
                           [(s, e, float(q[-1])) for (s, e), q in zip(spans, probs)],
                           contributions_of(n, spans, probs))
        face = video_result(faces.video, [(track.track, track.frames, score)], threshold)["faces"][0]
        boxes = np.asarray(track.boxes, np.float32).reshape(-1, 4)
        squares = np.array([(x0, y0, x0 + side_, y0 + side_) for x0, y0, side_ in (crop_box(b, margin) for b in boxes)],
                           np.float32).reshape(-1, 4)
        out.append(TrackExplanation(int(track.track), np.asarray(track.frames, np.int64), boxes, squares, cams_of, side,
                                    np.asarray(score.steps, np.float64), weights, score.windows, score.p_fake,
                                    list(face["top_frames"]), crops))
    return Explanation(str(faces.video), out, name, cells, detector.calibration is not None,
                       float(getattr(faces, "fps", 0.0) or 0.0), int(getattr(faces, "n_frames", 0) or 0),
                       int(getattr(faces, "width", 0) or 0), int(getattr(faces, "height", 0) or 0))


# ------------------------------------------------------------------------------------------------- pictures


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
                    f.write(_upsample(t.cams[start:start + chunk], t.side).astype("<f4").tobytes())


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


def write_explanation(faces, detector, folder: str | os.PathLike, *, video: bool = False, margin: float | None = None,
                      threshold: float = 0.5, layer: str = "auto") -> list[Path]:
    """`deepfake predict --explain`: explain a video's faces and write `folder/track<k>.png`, `folder/heatmaps.npz`
    and, with `video`, `folder/explained.mp4`; returns the paths written."""
    expl = explain_faces(faces, detector, layer=layer, margin=margin, threshold=threshold)
    written = save_explanation(expl, folder, threshold)
    if video:
        written.append(write_explained_video(expl, faces.video, Path(folder) / "explained.mp4"))
    return written
