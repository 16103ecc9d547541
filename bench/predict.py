"""Benchmark `deepfake predict`: seconds per clip end to end, split by stage, and folder throughput.

    python bench/predict.py                                  # 10-s 1080p clip at 30 fps, CPU, EfficientNet-B1
    python bench/predict.py --device cuda --clips 64 --workers 4
    python bench/predict.py --resolution 640x360 --seconds 2 --clips 3 --repeat 1   # a quick check that it runs
    python bench/predict.py --folder                          # 20 clips, 10-s 720p: 1 and 2 workers vs decode floor

What is measured, on one clip made by `deepfake synth` (a real face moving over a background; H.264):
- ``end_to_end``: `deepfake.inference.predict_video` (decode, detect, track, crop, model), median of `--repeat`
  runs after one warm-up run;
- the stages, each timed on its own on the same clip: ``decode`` (every `stride`-th frame to RGB), ``detect``
  (MTCNN on the frames the extractor detects: every `detect_every`-th sampled frame, downscaled to
  `detect_size`; the extractor detects a few more where interpolation fails, so this is a lower bound),
  ``crop`` (square crops of the boxes, resized to the model's input), ``jpeg`` (encoding the crops as JPEG and
  decoding them again: predict holds them that way, as training reads them), ``model`` (the detector on the crops).
  Decoding runs on a background thread during detection in the real pipeline, so the stages can add up to
  more than ``end_to_end``;
- ``folder``: `--clips` copies of the clip through `iter_predictions` (`FaceExtractor.extract_many`, decoding
  overlapped with detection, `--workers` decode processes), in clips per second;
- ``explain``: what `deepfake predict --explain` adds per clip (`deepfake.explain.write_explanation` on the clip's
  faces: Grad-CAM through the LSTM, track<k>.png, heatmaps.npz), median of `--repeat`, and ``explain_ratio``,
  (end to end + explain) / end to end; ``explain_video``: what `--explain-video` adds on top (the explained MP4,
  timed once).

The detector is `--weights` when given, else a randomly initialised `DeepfakeDetector` of `--backbone` (as fast
as a trained one; nothing is downloaded). Results go to stdout and, with `--out`, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(fn, device, repeat: int) -> tuple[float, object]:
    """Median wall seconds of `repeat` calls of fn() (after the caller's warm-up) and the last result."""
    times, out = [], None
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def make_clip(folder: Path, resolution: str, seconds: float, fps: float) -> Path:
    """A real-face clip from `deepfake synth` (kept in `folder`, reused when already there)."""
    from deepfake.cli import synth

    status = synth.main([str(folder), "--count", "2", "--resolution", resolution, "--seconds", str(seconds),
                         "--fps", str(fps), "--seed", "0", "--no-progress"])
    if status != 0:
        raise SystemExit(f"bench: deepfake synth failed (status {status})")
    return folder / "real" / "clip_0000.mp4"


def build_detector(args, device: str):
    """The detector to time: the given weights, or a random-init model of `--backbone`."""
    from deepfake.inference import Detector

    if args.weights:
        return Detector.load(args.weights, device=device, batch_size=args.batch_size, precision=args.precision)
    import torch

    from deepfake.checkpoint import build_meta
    from deepfake.model import DeepfakeDetector

    torch.manual_seed(0)
    net = DeepfakeDetector(backbone=args.backbone, pretrained=False)
    meta = build_meta(net, seq_len=args.seq_len, margin=0.3, stride=args.stride)
    return Detector(net, meta, device=device, batch_size=args.batch_size, precision=args.precision)


def stage_times(clip: Path, detector, extractor, repeat: int) -> dict[str, float]:
    """Each stage of one clip timed on its own (see the module docstring)."""
    import cv2

    from data_prep.track import square_crop
    from data_prep.video import iter_frames, probe

    cfg = extractor.config
    device = detector.device
    info = probe(clip)

    decode_s, frames = _timed(lambda: [f for _, f in iter_frames(clip, cfg.stride, threads=cfg.decode_threads)],
                              device, repeat)
    scale = min(1.0, cfg.detect_size / max(info.width, info.height))
    size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    keys = sorted(set(range(0, len(frames), cfg.detect_every)) | {len(frames) - 1})

    def detect():
        small = np.stack([cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) if scale < 1 else frames[i]
                          for i in keys])
        return extractor.detector.detect(small)

    extractor.detector.detect(np.stack([frames[0]] * 2) if scale == 1 else
                              np.stack([cv2.resize(frames[0], size)] * 2))  # warm-up
    detect_s, dets = _timed(detect, device, repeat)
    boxes = [(d.boxes / scale if len(d.boxes) else d.boxes) for d in dets]
    box = next((b[0] for b in boxes if len(b)), None)
    if box is None:
        raise SystemExit("bench: no face detected in the benchmark clip")

    def crop():
        return np.stack([square_crop(f, box, cfg.margin, cfg.size) for f in frames])

    crop_s, crops = _timed(crop, device, repeat)
    from data_prep.faces import decode_jpeg, encode_jpeg

    # predict holds the crops as JPEG bytes (what training reads) and decodes them window by window.
    jpeg_s, _ = _timed(lambda: [decode_jpeg(encode_jpeg(c, cfg.quality)) for c in crops], device, repeat)
    detector.score_tracks([crops])  # warm-up (cuDNN autotuning, lazy init)
    model_s, _ = _timed(lambda: detector.score_tracks([crops]), device, repeat)
    return {"decode": decode_s, "detect": detect_s, "crop": crop_s, "jpeg": jpeg_s, "model": model_s,
            "sampled_frames": len(frames), "detected_frames": len(keys), "crops": len(crops)}


def explain_times(clip: Path, detector, extractor, repeat: int, data: Path) -> dict[str, float]:
    """`--explain` per clip (after one warm-up run), and `--explain-video` once."""
    from deepfake.explain import explain_faces, write_explained_video, write_explanation

    faces = extractor.extract(clip, jpeg=True)
    out = data / "explain"
    write_explanation(faces, detector, out, margin=extractor.config.margin)  # warm-up
    seconds, _ = _timed(lambda: write_explanation(faces, detector, out, margin=extractor.config.margin),
                        detector.device, repeat)
    expl = explain_faces(faces, detector, margin=extractor.config.margin)
    video_s, _ = _timed(lambda: write_explained_video(expl, clip, out / "explained.mp4"), detector.device, 1)
    return {"explain": seconds, "explain_video": video_s, "layer": expl.layer, "cells": expl.cells}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--weights", help="a detector checkpoint (default: random-init --backbone)")
    p.add_argument("--backbone", default="efficientnet_b1",
                   help="timm backbone without --weights (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=10, help="window length without --weights (default %(default)s)")
    p.add_argument("--stride", type=int, default=5, help="keep every N-th frame (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default: predict's, 1 on a CPU, 8 on a GPU)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="model precision (default auto)")
    p.add_argument("--detect-every", type=int, default=None, help="ExtractConfig.detect_every (default: its default)")
    p.add_argument("--detect-size", type=int, default=None, help="ExtractConfig.detect_size (default: its default)")
    p.add_argument("--decode-threads", type=int, default=None,
                   help="ExtractConfig.decode_threads, FFmpeg threads per video (default: its default)")
    p.add_argument("--resolution", default="1920x1080", help="clip size WxH (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default %(default)s)")
    p.add_argument("--fps", type=float, default=30.0, help="clip frame rate (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement, median (default %(default)s)")
    p.add_argument("--clips", type=int, default=8, help="clips for the folder throughput (0: skip; default 8)")
    p.add_argument("--workers", type=int, default=0, help="decode processes for the folder run (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--data", help="folder for the generated clip (kept; default a temporary folder)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--no-explain", dest="explain", action="store_false",
                   help="skip the explain stage (`deepfake predict --explain`)")
    p.add_argument("--folder", action="store_true",
                   help="folder throughput instead (bench/folder.py): --clips clips (default 20) of --resolution "
                        "(default 1280x720) for 1 and 2 workers beside the decode floor, per stage")
    p.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                   help="with --folder: the detector's runtime, as predict's --runtime (default auto)")
    args = p.parse_args(argv)
    if args.folder:
        return folder_main(args, sys.argv[1:] if argv is None else argv)

    import torch

    from data_prep.extractor import FaceExtractor
    from data_prep.faces import ExtractConfig
    from deepfake.inference import iter_predictions, predict_video

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    data = Path(args.data) if args.data else Path(tmp := tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        t0 = time.perf_counter()
        clip = make_clip(data / f"clip_{args.resolution}_{args.seconds:g}s_{args.fps:g}fps", args.resolution,
                         args.seconds, args.fps)
        print(f"clip: {clip} ({time.perf_counter() - t0:.1f} s to make)", file=sys.stderr)
        detector = build_detector(args, args.device)
        meta = detector.meta
        stride = args.stride if not args.weights else int(meta.get("stride") or args.stride)
        knobs = {k: v for k, v in (("detect_every", args.detect_every), ("detect_size", args.detect_size),
                                   ("decode_threads", args.decode_threads)) if v is not None}
        config = ExtractConfig(stride=stride, margin=float(meta.get("margin") or 0.3), size=detector.img_size,
                               device=str(detector.device), **knobs)
        extractor = FaceExtractor(config, workers=0)

        predict_video(clip, detector, extractor)  # warm-up
        e2e, result = _timed(lambda: predict_video(clip, detector, extractor), detector.device, args.repeat)
        if result["status"] != "ok":
            raise SystemExit(f"bench: the clip gave status {result['status']}: {result['error']}")
        stages = stage_times(clip, detector, extractor, args.repeat)
        explained = explain_times(clip, detector, extractor, args.repeat, data) if args.explain else None

        folder = None
        if args.clips > 0:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from folder import copies, model_seconds  # bench/folder.py, beside this file

            paths = copies(clip, data / "folder", args.clips)
            folder_extractor = FaceExtractor(config, workers=args.workers)
            with model_seconds(detector) as model_time:  # how much of the folder run the model takes
                _sync(detector.device)
                start = time.perf_counter()
                statuses = [pred.result["status"] for pred in iter_predictions(paths, detector, folder_extractor)]
                _sync(detector.device)
                seconds = time.perf_counter() - start
            folder = {"clips": args.clips, "workers": args.workers, "seconds": seconds,
                      "clips_per_s": args.clips / seconds, "ok": statuses.count("ok"), "model_s": model_time[0]}

        gpu = torch.cuda.get_device_name(detector.device) if detector.device.type == "cuda" else None
        report = {
            "clip": {"resolution": args.resolution, "seconds": args.seconds, "fps": args.fps},
            "device": str(detector.device), "gpu": gpu, "cpu_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "backbone": meta.get("model", {}).get("backbone"), "img_size": detector.img_size,
            "seq_len": detector.seq_len, "precision": detector.precision, "stride": config.stride,
            "detect_size": config.detect_size, "detect_every": config.detect_every,
            "decode_threads": config.decode_threads, "end_to_end_s": e2e, "stages_s": stages, "folder": folder,
            "explain_s": explained, "explain_ratio": (e2e + explained["explain"]) / e2e if explained else None,
            "torch": torch.__version__,
        }
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    s = report["stages_s"]
    print(f"{args.resolution}, {args.seconds:g} s at {args.fps:g} fps, stride {config.stride}: "
          f"{s['sampled_frames']} frames sampled, {s['detected_frames']} detected, {s['crops']} crops; "
          f"{report['backbone']} at {report['img_size']} px, T={report['seq_len']}, {report['precision']}; "
          f"detect_every {config.detect_every}, detect_size {config.detect_size}; device {report['device']}"
          + (f" ({gpu})" if gpu else f" ({report['cpu_threads']} threads)"))
    print(f"  end to end   {e2e:7.3f} s per clip")
    for k in ("decode", "detect", "crop", "jpeg", "model"):
        print(f"  {k:<12} {s[k]:7.3f} s")
    if folder:
        print(f"  folder       {folder['clips_per_s']:7.2f} clips/s ({folder['clips']} clips, {folder['workers']} "
              f"workers, {folder['seconds']:.2f} s of which model {folder['model_s']:.2f} s, {folder['ok']} ok)")
    if explained:
        print(f"  explain      {explained['explain']:7.3f} s (Grad-CAM on {explained['layer']}, {explained['cells']}x"
              f"{explained['cells']}; predict + explain = {report['explain_ratio']:.2f}x predict)")
        print(f"  explain video{explained['explain_video']:7.3f} s (the explained MP4, once)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def folder_main(args, argv: list[str]) -> int:
    """`--folder`: bench/folder.py, with its own defaults for what the command line leaves unset."""
    import platform as _platform

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import folder as folder_bench  # bench/folder.py, beside this file

    given = " ".join(argv)
    args.clips = args.clips if "--clips" in given else 20
    args.resolution = args.resolution if "--resolution" in given else "1280x720"
    tmp = None
    data = Path(args.data) if args.data else Path(tmp := tempfile.mkdtemp(prefix="bench-folder-"))
    data.mkdir(parents=True, exist_ok=True)
    try:
        report = folder_bench.run(args, data, make_clip, stage_times)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    report["machine"] = {"cpu": _cpu_name() or _platform.processor(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                           time.gmtime())}
    print(f"{report['machine']['cpu']}, {report['machine']['date']}")
    folder_bench.print_report(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


if __name__ == "__main__":
    sys.exit(main())
