"""Benchmark `deepfake predict --ray local` against `deepfake predict --workers N` (the issue-30 targets).

    python bench/ray.py                               # 20 clips for throughput, 20 vs 200 clips for memory
    python bench/ray.py --clips 4 --memory-clips 8    # a quick check that it runs

What is measured, each as the real command in a subprocess (`deepfake predict ...`, fp32, CPU):
- ``plain``: `deepfake predict CLIPS --workers N`; ``ray``: `deepfake predict CLIPS --ray local --workers N` (a Ray
  instance of N CPUs started by the command, one actor a CPU). Wall seconds end to end (start-up included), and
  the start-up alone: the same command on one clip. ``marginal clips/s`` is (clips - 1) / (wall - wall on one clip):
  the rate once started.
- ``same rows``: the two CSVs have the same videos in the same order with the same status, verdict, faces and crops,
  and ``max |dp|`` is the largest difference of p_fake between them (the CSV's 6 decimals).
- ``peak memory``: the largest proportional set size (PSS: shared pages split between the processes sharing them)
  summed over the command's process tree (the command, Ray's GCS and raylet, its workers), sampled every 0.2 s,
  for `--clips` clips, and with --ray for `--memory-clips` clips too (copies of the clips).

The clips are `deepfake synth` clips (a real face moving over a background, H.264) at `--resolution`, `--seconds`
long; the detector is a randomly initialised `DeepfakeDetector` of `--backbone` (as fast as a trained one).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def _clips(folder: Path, n: int, resolution: str, seconds: float) -> list[Path]:
    from deepfake.cli import synth

    if synth.main([str(folder / "synth"), "--count", str(min(n, 20)), "--resolution", resolution, "--seconds",
                   str(seconds), "--fps", "25", "--seed", "0", "--no-progress"]) != 0:
        raise SystemExit("bench: deepfake synth failed")
    made = sorted((folder / "synth").rglob("*.mp4"))
    out = folder / f"clips{n}"
    out.mkdir()
    for i in range(n):  # copies, not links: predict scores a file reached twice once
        shutil.copy(made[i % len(made)], out / f"clip_{i:04d}.mp4")
    return sorted(out.glob("*.mp4"))


def _weights(folder: Path, backbone: str) -> Path:
    import torch

    from deepfake.checkpoint import build_meta, save_detector
    from deepfake.model import DeepfakeDetector

    torch.manual_seed(0)
    net = DeepfakeDetector(backbone=backbone, pretrained=False)
    return save_detector(folder / "detector.pt", net, build_meta(net, seq_len=5, margin=0.3, stride=5))


def _tree_pss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def _run(args: list[str], env: dict) -> tuple[float, int, int]:
    """(wall seconds, exit status, peak PSS of the process tree in bytes) of one predict command."""
    start = time.perf_counter()
    command = "import sys; from deepfake.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", command, "predict", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_pss(proc.pid))
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"bench: predict {' '.join(args[-4:])} failed ({proc.returncode}): {err[-2000:]}")
    return time.perf_counter() - start, proc.returncode, peak


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--memory-clips", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--resolution", default="640x360")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--backbone", default="efficientnet_b1")
    p.add_argument("--ray-first", action="store_true",
                   help="run --ray before the plain command (alternate between runs on a shared machine)")
    p.add_argument("--out", help="also write the figures here as JSON")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray_", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(ROOT)}
    try:
        clips = _clips(work, args.clips, args.resolution, args.seconds)
        many = _clips(work / "many", args.memory_clips, args.resolution, args.seconds) if args.memory_clips else []
        weights = _weights(work, args.backbone)
        common = ["--weights", str(weights), "--device", "cpu", "--precision", "fp32", "--no-progress",
                  "--workers", str(args.workers), "--format", "csv"]
        modes = {"plain": [], "ray": ["--ray", "local"]}
        if args.ray_first:
            modes = dict(reversed(modes.items()))
        report: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible",
                        "date": datetime.date.today().isoformat(), "clips": args.clips, "workers": args.workers,
                        "resolution": args.resolution, "seconds": args.seconds, "backbone": args.backbone}
        for mode, extra in modes.items():
            one, _, _ = _run([str(clips[0]), *common, *extra, "--output", str(work / f"{mode}_one.csv")], env)
            wall, rc, peak = _run([*map(str, clips), *common, *extra, "--output", str(work / f"{mode}.csv")], env)
            report[mode] = {"startup_s": round(one, 2), "wall_s": round(wall, 2), "exit": rc,
                            "clips_per_s": round(args.clips / wall, 3),
                            "marginal_clips_per_s": round((args.clips - 1) / max(wall - one, 1e-9), 3),
                            f"peak_pss_mb_{args.clips}": round(peak / 2**20)}
            if many and mode == "ray":  # the target: bounded streaming, so --ray's peak is what matters
                _, _, peak_many = _run([*map(str, many), *common, *extra, "--output", str(work / f"{mode}_many.csv")],
                                       env)
                report[mode][f"peak_pss_mb_{args.memory_clips}"] = round(peak_many / 2**20)
            print(mode, json.dumps(report[mode]), flush=True)
        plain, on_ray = _rows(work / "plain.csv"), _rows(work / "ray.csv")
        keys = ("video", "status", "verdict", "faces", "crops", "error")
        report["same_rows"] = len(plain) == len(on_ray) and all(
            all(a[k] == b[k] for k in keys) for a, b in zip(plain, on_ray))
        report["max_abs_dp"] = max((abs(float(a["p_fake"]) - float(b["p_fake"])) for a, b in zip(plain, on_ray)
                                    if a["p_fake"] and b["p_fake"]), default=None)
        report["ray_vs_plain_throughput"] = round(report["plain"]["wall_s"] / report["ray"]["wall_s"], 3)
        print(json.dumps(report, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
