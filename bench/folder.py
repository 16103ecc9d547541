"""`bench/predict.py --folder`: folder throughput as a user gets it, beside the decode floor, and where the time goes.

    python bench/predict.py --folder                         # 20 clips, 10-s 720p, 1 and 2 workers, fast path
    python bench/predict.py --folder --clips 3 --seconds 2 --backbone test_efficientnet   # a quick check

- ``decode floor``: the same clips decoded at `--stride` (every kept frame to RGB) and nothing else, by 1 and 2
  processes: the most clips/s any pipeline over them could reach on this machine.
- ``predict``: `iter_predictions` over the clips with `--workers` 1 and 2 extraction processes (each decodes,
  detects, tracks and crops whole videos; the main process scores and writes each result to a JSON Lines log, as
  `deepfake predict -o out.jsonl` does), in clips/s and as a share of the floor with as many processes.
- ``stages``: one clip's stages timed alone (decode, detect, crop with JPEG round trip, model, write), seconds per
  clip: where the time goes.

The detector is loaded as `deepfake predict` loads it (`load_predictor`, `--runtime`, default auto: ONNX Runtime on
the CPU from an ONNX copy in a temporary cache, MTCNN on ONNX Runtime too).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Iterator
import os
import shutil
import time
from pathlib import Path


@contextlib.contextmanager
def model_seconds(detector) -> Iterator[list[float]]:
    """Inside the block, the seconds the detector's model takes add up in the one-item list it yields."""
    total = [0.0]
    score = detector.score_tracks_in_detail

    def timed_score(tracks):
        t = time.perf_counter()
        try:
            return score(tracks)
        finally:
            total[0] += time.perf_counter() - t

    detector.score_tracks_in_detail = timed_score
    try:
        yield total
    finally:
        detector.score_tracks_in_detail = score


def copies(clip: Path, folder: Path, n: int) -> list[Path]:
    """`n` copies of `clip` in `folder` (made once): copies, not links, so each is its own file to read."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        dst = folder / f"clip_{i:04d}.mp4"
        if not dst.exists():
            shutil.copy(clip, dst)
        paths.append(dst)
    return paths


def _decode_only(args: tuple[str, int]) -> int:
    from data_prep.video import iter_frames

    path, stride = args
    return sum(1 for _ in iter_frames(path, stride))


def decode_floor(paths: list[Path], stride: int, processes: int) -> float:
    """Clips per second decoding the clips at `stride` with `processes` processes, nothing else."""
    jobs = [(str(p), stride) for p in paths]
    start = time.perf_counter()
    if processes <= 1:
        for job in jobs:
            _decode_only(job)
    else:
        with mp.get_context("spawn").Pool(processes) as pool:
            pool.map(_decode_only, jobs, chunksize=1)
    return len(paths) / (time.perf_counter() - start)


def folder_run(paths: list[Path], detector, config, workers: int, out: Path) -> dict:
    """`iter_predictions` over the clips with `workers` extraction processes, results appended to a JSON Lines log."""
    from data_prep.extractor import FaceExtractor
    from deepfake.inference import iter_predictions
    from deepfake.results import ResultLog

    out.unlink(missing_ok=True)
    write = [0.0]
    statuses = []
    with model_seconds(detector) as model:
        with FaceExtractor(config, workers=workers) as extractor:
            log = ResultLog(out, "jsonl")
            start = time.perf_counter()
            for pred in iter_predictions(paths, detector, extractor):
                t = time.perf_counter()
                log.append(pred.result, pred.seconds)
                write[0] += time.perf_counter() - t
                statuses.append(pred.result["status"])
            seconds = time.perf_counter() - start
            log.close()
    return {"workers": workers, "seconds": seconds, "clips_per_s": len(paths) / seconds, "ok": statuses.count("ok"),
            "model_s": model[0], "write_s": write[0]}


def write_seconds(result: dict, out: Path, repeat: int = 20) -> float:
    """Seconds to append one result to a JSON Lines log."""
    from deepfake.results import ResultLog

    out.unlink(missing_ok=True)
    log = ResultLog(out, "jsonl")
    start = time.perf_counter()
    for _ in range(repeat):
        log.append(result, 1.0)
    log.close()
    return (time.perf_counter() - start) / repeat


def run(args, data: Path, make_clip, stage_times) -> dict:
    """The whole folder benchmark (`make_clip`, `stage_times`: bench/predict.py's); returns the report."""
    from data_prep.detector import cpu_count
    from deepfake.checkpoint import build_meta, save_detector
    from deepfake.inference import PredictConfig, load_predictor

    clip = make_clip(data / f"clip_{args.resolution}_{args.seconds:g}s_{args.fps:g}fps", args.resolution,
                     args.seconds, args.fps)
    paths = copies(clip, data / "folder", args.clips)
    weights = Path(args.weights) if args.weights else data / f"{args.backbone}_T{args.seq_len}.pt"
    if not weights.exists():
        import torch

        from deepfake.model import DeepfakeDetector

        torch.manual_seed(0)
        net = DeepfakeDetector(backbone=args.backbone, pretrained=False)
        save_detector(weights, net, build_meta(net, seq_len=args.seq_len, margin=0.3, stride=args.stride))
    os.environ.setdefault("DEEPFAKE_CACHE", str(data / "cache"))  # the ONNX copies: never the user's cache
    detector, extractor, _ = load_predictor(weights, PredictConfig(device="cpu", runtime=args.runtime,
                                                                   batch_size=args.batch_size))
    if detector.runtime_note:
        print(f"bench: {detector.runtime_note}")
    config = extractor.config
    counts = sorted({1, 2})
    floor = {n: decode_floor(paths, config.stride, n) for n in counts}
    runs = {w: folder_run(paths, detector, config, w, data / "out.jsonl") for w in counts}
    stages = stage_times(clip, detector, extractor, args.repeat)
    first = next(iter(runs.values()))
    import json

    result = json.loads((data / "out.jsonl").read_text().splitlines()[0])
    stages["write"] = write_seconds(result, data / "write.jsonl")
    return {"clips": args.clips, "clip": {"resolution": args.resolution, "seconds": args.seconds, "fps": args.fps},
            "stride": config.stride, "runtime": detector.runtime, "mtcnn_runtime": config.runtime,
            "cores": cpu_count(), "decode_floor_clips_per_s": floor,
            "predict": runs, "share_of_floor": {w: runs[w]["clips_per_s"] / floor[w] for w in counts},
            "stages_s": stages, "ok": first["ok"]}


def print_report(report: dict) -> None:
    c = report["clip"]
    print(f"folder: {report['clips']} clips, {c['seconds']:g}-s {c['resolution']} at {c['fps']:g} fps, stride "
          f"{report['stride']}; detector on {report['runtime']}, MTCNN on {report['mtcnn_runtime']}; "
          f"{report['cores']} cores")
    print(f"{'processes':>9} {'decode floor':>14} {'predict':>12} {'share':>7} {'model s':>8} {'write s':>8}")
    for w, r in report["predict"].items():
        print(f"{w:>9} {report['decode_floor_clips_per_s'][w]:10.2f} c/s {r['clips_per_s']:8.2f} c/s "
              f"{report['share_of_floor'][w]:7.0%} {r['model_s']:8.2f} {r['write_s']:8.3f}")
    s = report["stages_s"]
    print("one clip's stages alone, s: " + ", ".join(f"{k} {s[k]:.3f}" for k in ("decode", "detect", "crop", "jpeg",
                                                                                "model", "write")))
