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

Pictures and the annotated video: `deepfake.explain_render`; the types: `deepfake.explanation`.

What the map is and is not. It says which regions of a crop pushed the fake score up, at the resolution of the map
(a cell of an 8x8 map is an eighth of the crop), nothing finer: not a segmentation of the manipulated pixels, and
not proof of anything. Every crop has a hottest place, a real face's too: read the heat with the score.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from data_prep.track import crop_box
from deepfake.calibration import apply_calibration
# the pictures and the types are their own modules; their names stay importable from here, where users look first
from deepfake.explain_render import TILE_PX, render_track, save_explanation, write_explained_video  # noqa: F401
from deepfake.explanation import ExplainError, Explanation, TrackExplanation, upsample_cams  # noqa: F401
from deepfake.scoring import track_score, track_windows, video_result

__all__ = ["TrackExplanation", "Explanation", "ExplainError", "MIN_CELLS", "resolve_layer", "gradcam_windows",
           "explain_faces", "save_explanation", "render_track", "write_explained_video", "write_explanation"]

MIN_CELLS = 7        # smallest side (cells) of the feature map Grad-CAM is taken on ("auto")


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
        raw: list[np.ndarray | None] = [None] * len(spans)
        by_len: dict[int, list[int]] = {}
        for w, (s, e) in enumerate(spans):
            by_len.setdefault(e - s, []).append(w)
        for group in by_len.values():
            for start in range(0, len(group), detector.batch_size):
                chunk = group[start:start + detector.batch_size]
                cams, logits = gradcam_windows(detector, [crops[spans[w][0]:spans[w][1]] for w in chunk], name,
                                               precision)
                p = torch.sigmoid(logits).cpu().numpy().astype(np.float64)
                z = logits.cpu().numpy().astype(np.float64)
                if detector.calibration is not None:  # the logits come calibrated, l / T + b: back to l
                    z = (z - detector.calibration[1]) * detector.calibration[0]
                cams = cams.cpu().numpy()
                mass = cams.sum(axis=(2, 3), dtype=np.float64)  # (B, T)
                if cams_of is None:
                    cams_of = np.zeros((n, *cams.shape[-2:]), np.float32)
                for k, w in enumerate(chunk):
                    s, e = spans[w]
                    probs[w], raw[w] = p[k], z[k]
                    fresh = np.flatnonzero(~done[s:e])  # each crop's map from the first window holding it
                    if len(fresh):
                        cams_of[s + fresh] = cams[k][fresh]
                        weights[s + fresh] = mass[k][fresh] / max(mass[k].sum(), 1e-30)
                        done[s + fresh] = True
        score = track_score(n, spans, probs, raw)
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


def write_explanation(faces, detector, folder: str | os.PathLike, *, video: bool = False, margin: float | None = None,
                      threshold: float = 0.5, layer: str = "auto") -> list[Path]:
    """`deepfake predict --explain`: explain a video's faces and write `folder/track<k>.png`, `folder/heatmaps.npz`
    and, with `video`, `folder/explained.mp4`; returns the paths written."""
    expl = explain_faces(faces, detector, layer=layer, margin=margin, threshold=threshold)
    written = save_explanation(expl, folder, threshold)
    if video:
        written.append(write_explained_video(expl, faces.video, Path(folder) / "explained.mp4"))
    return written
