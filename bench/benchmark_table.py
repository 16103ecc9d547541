"""How long `deepfake benchmark` takes to turn stored scores into its table: the bootstrap intervals and one test
set's rows, on synthetic scores the size of the real test sets. Prints figures, asserts nothing.

    python bench/benchmark_table.py [--bootstrap 1000] [--videos 518] [--frames-per-video 30]

Sizes: Celeb-DF v2's test list has 518 videos; FF++'s test split 140 real and 5 x 140 fake videos; at stride 5 a
10-s clip gives about 60 sampled frames (30 with the defaults below: the same order).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from deepfake.benchmark_report import set_rows
from deepfake.metrics import bootstrap_intervals
from export import cpu_model  # bench/export.py, beside this file (a script's folder is on sys.path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--videos", type=int, default=518)
    p.add_argument("--frames-per-video", type=int, default=30)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    n, k = args.videos, args.frames_per_video
    y = rng.integers(0, 2, n)
    p_video = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"bootstrap {args.bootstrap} resamples")
    t = time.perf_counter()
    bootstrap_intervals(y, p_video, None, args.bootstrap)
    print(f"video level, {n} videos: {time.perf_counter() - t:.2f} s")
    y_f = np.repeat(y, k)
    p_f = np.clip(np.repeat(p_video, k) + rng.normal(0, 0.1, n * k), 0, 1)
    t = time.perf_counter()
    bootstrap_intervals(y_f, p_f, np.repeat(np.arange(n), k), args.bootstrap)
    print(f"frame level, {n * k} frames of {n} videos (whole videos resampled): {time.perf_counter() - t:.2f} s")
    # an FF++-like test set: 140 real and 5 x 140 fake videos, a row per method
    methods = ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter"]
    videos, frames = [], []
    for i in range(140 * 6):
        label, method = (0, "") if i < 140 else (1, methods[(i - 140) // 140])
        score = float(np.clip(0.3 * label + 0.7 * rng.random(), 0, 1))
        videos.append({"video": f"v{i}", "label": label, "method": method, "status": "ok", "p_fake": score})
        frames += [{"video": f"v{i}", "label": label, "method": method,
                    "p_fake": float(np.clip(score + rng.normal(0, 0.1), 0, 1))} for _ in range(k)]
    t = time.perf_counter()
    rows = set_rows("FF++", videos, frames, args.bootstrap)
    print(f"FF++-sized set ({len(videos)} videos, {len(frames)} frames, {len(rows)} rows): "
          f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
