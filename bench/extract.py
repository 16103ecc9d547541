"""Face-extraction benchmark: our extractor against the naive facenet-pytorch baseline, on `deepfake synth` clips.

    python bench/extract.py                                  # 2 clips, 10 s, 1080p, CPU
    python bench/extract.py --device cuda --count 4          # the same on a GPU
    python bench/extract.py --mode throughput --device cuda --workers 15 --copies 10   # clips/s over a folder

Modes:
- ``compare`` (default): in the same run, (a) the naive baseline, facenet-pytorch ``MTCNN(keep_all=True)
  .detect`` on every `stride`-th frame at full resolution, one frame at a time, plus the same square crops;
  (b) ``ours``: `FaceExtractor.extract`, one clip at a time in one process (the latency of one video); and
  (c) ``ours xN``: `FaceExtractor(workers=N).extract_many` over the clips `--copies` times, N processes
  each extracting whole videos (dataset throughput, in steady state: the pool is started and warmed up
  first). No box reuse: every clip is detected. All decode with the same decoder and are timed end to end
  (decode + detect + crop; no JPEG, no disk). Prints seconds per clip (scaled to a 10-s clip), crops/s, the
  speed ratios, and for each: recall against the clips' `boxes.csv` (a ground-truth face at a sampled frame
  counts as found when a crop box in that frame has IoU >= 0.5 with it) and the share of crops that match no
  ground-truth face (IoU < 0.5 with all of them), and "box IoU", the mean IoU of each found face with its crop's
  detector box (how tight the boxes are: the same face detected more or less exactly).
- ``throughput``: `deepfake-extract` over a folder of the clips (`--copies` hard links of each, so there are
  enough videos to keep `--workers` busy) into a fresh output folder: clips/s, with JPEG writing, resume files
  and index; with and without DFDC-style box reuse for the fakes.

Clips are made once with `deepfake synth` under `--work` and reused by later runs with the same settings.
Timings on a shared machine drift: compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.extractor import FaceExtractor  # noqa: E402
from data_prep.faces import ExtractConfig  # noqa: E402
from data_prep.pipeline import run_inline, video_job  # noqa: E402
from data_prep.track import iou_matrix, square_crop  # noqa: E402
from data_prep.video import VideoError, iter_frames  # noqa: E402
from data_prep.workers import default_workers  # noqa: E402
from deepfake.cli.extract import main as extract_main  # noqa: E402


def make_clips(work: Path, count: int, seconds: float, resolution: str, fps: float, seed: int) -> Path:
    """`deepfake synth` clips under `work` (made once per setting)."""
    from deepfake.cli import synth

    out = work / f"synth-{resolution}-{seconds:g}s-{fps:g}fps-{count}-seed{seed}"
    if (out / "boxes.csv").is_file() and (out / "labels.csv").is_file():
        return out
    status = synth.main([str(out), "--count", str(count), "--resolution", resolution, "--seconds", str(seconds),
                         "--fps", str(fps), "--seed", str(seed), "--no-progress"])
    if status != 0:
        raise SystemExit(f"deepfake synth failed with status {status}")
    return out


def read_truth(clips: Path) -> tuple[list[str], dict[tuple[str, int], list[np.ndarray]]]:
    with open(clips / "labels.csv", newline="") as f:
        videos = [row["video"] for row in csv.DictReader(f)]
    truth: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    with open(clips / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            truth[(row["video"], int(row["frame"]))].append(
                np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")], np.float32))
    return videos, truth


def score(video: str, found: list[tuple[int, np.ndarray]], truth, n_frames: int,
          stride: int) -> tuple[int, int, int, float]:
    """(ground-truth faces found, ground-truth faces at sampled frames, crops matching no face, sum over the found
    faces of their best IoU with a crop box)."""
    by_frame: dict[int, list[np.ndarray]] = defaultdict(list)
    for frame, box in found:
        by_frame[frame].append(box)
    hit = total = false = 0
    iou_sum = 0.0
    for frame in range(0, n_frames, stride):
        gt = truth.get((video, frame), [])
        crops = by_frame.get(frame, [])
        total += len(gt)
        if gt and crops:
            iou = iou_matrix(np.array(gt), np.array(crops))
            best = iou.max(axis=1)
            hit += int((best >= 0.5).sum())
            iou_sum += float(best[best >= 0.5].sum())
            false += int((iou.max(axis=0) < 0.5).sum())
        else:
            false += len(crops)
    return hit, total, false, iou_sum


def naive(path: str, mtcnn, stride: int, margin: float, size: int) -> tuple[list[tuple[int, np.ndarray]], int]:
    """The baseline: MTCNN.detect at full resolution on each kept frame, one frame at a time, then crops."""
    found, n = [], 0
    for index, frame in iter_frames(path, stride):
        n = index + 1
        boxes, _ = mtcnn.detect(frame)
        for box in [] if boxes is None else boxes:
            square_crop(frame, box, margin, size)
            found.append((index, np.asarray(box, np.float32)))
    return found, n


def compare(args, clips: Path) -> None:
    import torch
    from facenet_pytorch import MTCNN

    videos, truth = read_truth(clips)
    config = ExtractConfig(stride=args.stride, device=args.device, detect_size=args.detect_size,
                           detect_every=args.detect_every, refine_between=args.refine_between,
                           batch_size=args.batch_size, factor=args.factor, min_face_size=args.min_face_size)
    extractor = FaceExtractor(config)
    device = extractor.device
    baseline = MTCNN(keep_all=True, device=device)
    paths = [str(clips / v) for v in videos]
    seconds_per_clip = args.seconds
    # Warm-up (model load, kernel caches) on the first clip, for both, not timed.
    extractor.extract(paths[0])
    naive(paths[0], baseline, args.stride * 10, config.margin, config.size)

    # time, clips, crops, hit, total, false, IoU sum
    rows = {"naive": [0.0, 0, 0, 0, 0, 0, 0.0], "ours": [0.0, 0, 0, 0, 0, 0, 0.0]}

    def add(name: str, dt: float, video: str, found: list, n_frames: int) -> None:
        hit, total, false, iou_sum = score(video, found, truth, n_frames, args.stride)
        r = rows.setdefault(name, [0.0, 0, 0, 0, 0, 0, 0.0])
        r[0] += dt; r[1] += 1; r[2] += len(found); r[3] += hit; r[4] += total; r[5] += false; r[6] += iou_sum

    def boxes_of(faces) -> list[tuple[int, np.ndarray]]:
        return [(int(f), b) for tr in faces.tracks for f, b in zip(tr.frames, tr.boxes)]

    for i, (video, path) in enumerate(zip(videos, paths)):
        if i < args.naive_clips:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            found, n_frames = naive(path, baseline, args.stride, config.margin, config.size)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            add("naive", time.perf_counter() - t, video, found, n_frames)
            print(f"  naive {video}: {time.perf_counter() - t:.2f} s, {len(found)} crops", flush=True)
        t = time.perf_counter()
        faces = extractor.extract(path)
        dt = time.perf_counter() - t
        add("ours", dt, video, boxes_of(faces), faces.n_frames)
        print(f"  ours  {video}: {dt:.2f} s, {len(faces.tracks)} tracks, {faces.n_crops} crops", flush=True)
    if args.workers > 0:
        # Dataset throughput: whole videos in parallel processes, each with its own detector (steady state:
        # the pool is started and warmed up on one round of clips first, as it is once per run in practice).
        name = f"ours x{args.workers}"
        pooled = FaceExtractor(config, workers=args.workers, detect_in_main=args.detect_in_main)
        if pooled.detect_in_main:
            name += " central"
        for _ in pooled.extract_many(paths[:1] * args.workers):
            pass
        batch = [(v, p) for _ in range(args.copies) for v, p in zip(videos, paths)]
        t = time.perf_counter()
        results = list(pooled.extract_many([p for _, p in batch]))
        dt = (time.perf_counter() - t) / len(batch)
        pooled.close()
        for (video, _), (_, faces) in zip(batch, results):
            if isinstance(faces, VideoError):
                raise SystemExit(f"{video}: {faces}")
            add(name, dt, video, boxes_of(faces), faces.n_frames)
        print(f"  {name}: {len(batch)} clips, {dt:.2f} s per clip", flush=True)

    sent = sent_to_detector(paths[0], config, extractor.detector)
    print("\nGPU mode (workers decode, the main process detects), data a worker sends per clip to be detected: "
          + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sent.items()))
    print(f"\nclips: {len(videos)} x {args.resolution}, {args.seconds:g} s at {args.fps:g} fps, stride {args.stride} "
          f"| device {device} | torch threads {torch.get_num_threads()}")
    print(f"{'':7} {'s/10-s clip':>12} {'crops/s':>9} {'recall':>8} {'false crops':>12} {'box IoU':>8}")
    per_clip = {}
    for name, (t, n, crops, hit, total, false, iou_sum) in rows.items():
        if not n:
            continue
        per_clip[name] = t / n * (10.0 / seconds_per_clip)
        print(f"{name:7} {per_clip[name]:12.3f} {crops / t:9.1f} {hit / max(total, 1):8.4f} "
              f"{false / max(crops, 1):12.4f} {iou_sum / max(hit, 1):8.3f}")
    if "naive" in per_clip:
        for name in per_clip:
            if name != "naive":
                print(f"speed-up of {name}: {per_clip['naive'] / per_clip[name]:.1f}x")


def sent_to_detector(path: str, config, detector) -> dict[str, int]:
    """Bytes of the detection requests of one clip, pickled as a worker sends them to the detecting process."""
    import pickle

    sizes: dict[str, int] = defaultdict(int)

    class Recording:
        def run(self, request):
            kind = "full detections" if request.boxes is None else "re-fits"
            sizes[f"{kind} (frames)"] += len(pickle.dumps(request))
            sizes[f"{kind} (as sent)"] += len(pickle.dumps(request.for_sending()))
            return detector.run(request)

    run_inline(video_job(path, config), Recording())
    return dict(sizes)


def throughput(args, clips: Path) -> None:
    videos, _ = read_truth(clips)
    with open(clips / "labels.csv", newline="") as f:
        labels = list(csv.DictReader(f))
    folder = Path(args.work) / f"throughput-{clips.name}-x{args.copies}"
    if not (folder / "labels.csv").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        lines = ["video,label,original"]
        for copy in range(args.copies):
            for row in labels:
                src = clips / row["video"]
                name = f"{Path(row['video']).parent}/c{copy:03d}_{Path(row['video']).name}"
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                os.link(src, folder / name)
                orig = f"{Path(row['original']).parent}/c{copy:03d}_{Path(row['original']).name}"
                lines.append(f"{name},{row['label']},{orig}")
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    n = len(labels) * args.copies
    for reuse in (False,) if args.skip_throughput_reuse else (True, False):
        out = Path(args.work) / "throughput-out"
        shutil.rmtree(out, ignore_errors=True)
        cli = [str(folder), str(out), "--layout", "folder", "--stride", str(args.stride), "--device", args.device,
               "--workers", str(args.workers), "--detect-size", str(args.detect_size), "--detect-every",
               str(args.detect_every), "--batch-size", str(args.batch_size), "--no-progress",
               "--reuse-original-boxes" if reuse else "--no-reuse-original-boxes"]
        t = time.perf_counter()
        status = extract_main(cli)
        dt = time.perf_counter() - t
        print(f"throughput ({'with' if reuse else 'without'} box reuse for fakes): {n} clips in {dt:.1f} s = "
              f"{n / dt:.2f} clips/s ({args.workers} workers, status {status})", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["compare", "throughput", "both"], default="compare")
    p.add_argument("--clips", type=Path, help="existing `deepfake synth` output (default: make clips under --work)")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "extract")
    p.add_argument("--count", type=int, default=2, help="clips to make (half real, half fake)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--resolution", default="1920x1080")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stride", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--detect-size", type=int, default=ExtractConfig.detect_size)
    p.add_argument("--detect-every", type=int, default=ExtractConfig.detect_every)
    p.add_argument("--refine-between", action=argparse.BooleanOptionalAction,
                   default=ExtractConfig.refine_between)
    p.add_argument("--factor", type=float, default=ExtractConfig.factor)
    p.add_argument("--min-face-size", type=int, default=ExtractConfig.min_face_size)
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--naive-clips", type=int, default=1, help="clips to run the (slow) naive baseline on")
    p.add_argument("--workers", type=int, default=max(1, default_workers() + 1),
                   help="extraction processes for the throughput figures (default: one per core; 0: skip)")
    p.add_argument("--detect-in-main", action=argparse.BooleanOptionalAction, default=None,
                   help="with --workers: detect in the main process for all workers (default: on a GPU only)")
    p.add_argument("--copies", type=int, default=3,
                   help="times each clip is processed for the throughput figures (hard links in throughput mode)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip-throughput-reuse", action="store_true", help="throughput mode: only without reuse")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    clips = args.clips or make_clips(args.work, args.count, args.seconds, args.resolution, args.fps, args.seed)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu}, {cores} cores available; clips: {clips}")
    if args.mode in ("compare", "both"):
        compare(args, clips)
    if args.mode in ("throughput", "both"):
        throughput(args, clips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
