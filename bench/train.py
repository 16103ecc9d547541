"""Training throughput of the detector, and whether the data loader keeps up with it.

    python bench/train.py                                   # B1 + LSTM, 240 px, T=10 on CUDA if present
    python bench/train.py --device cuda --amp --compile     # bf16 autocast + channels_last + torch.compile
    python bench/train.py --device cpu --batch-size 2 --steps 3 --workers 2
    python bench/train.py --index out/extracted             # the loader on a real index (else a made-up one)
    python bench/train.py --index out/extracted --fakes sbi --fake-kinds sbi=0.5,reenact=0.5   # fakes made on the fly

Model: full training steps (forward, sum-over-time BCE, backward, AdamW step) on random frames already on the
device, timed after `--warmup` steps (compilation and cuDNN autotuning happen there), synchronised. Reports
frames/s (= sequences/s * T) and peak memory (CUDA: `max_memory_allocated`; CPU: the process's peak RSS).

Loader: `FaceSequenceDataModule.train_dataloader()` with the default (DFDC-style) augmentations, `--workers`
processes, the same batch size, T and crop size; sequences/s over `--loader-batches` batches after the
first (worker start-up excluded). Without `--index` it makes a crop folder of astronaut-photo "tracks" at the
crop size (JPEG, as extraction writes them) in a temporary folder. `--fakes sbi|both` makes the loader's fakes on the
fly from real tracks (`data.fakes`, with `--fake-kinds` shares), the work real-only training adds to each worker.

The last line is a JSON summary (`--json PATH` writes it to a file too).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake.data import FaceSequenceDataModule  # noqa: E402
from deepfake.fakes import FakeConfig  # noqa: E402
from deepfake.losses import sequence_bce  # noqa: E402
from deepfake.model import DeepfakeDetector  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--backbone", default="efficientnet_b1", help="timm backbone (default %(default)s)")
    p.add_argument("--img-size", type=int, default=240, help="crop side (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=10, help="T, frames per sequence (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 16 on GPU, 2 on CPU)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on GPU, 1 on CPU; "
                                                            "more with --compile)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last backbone (default: on for CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    p.add_argument("--index", default=None, help="index.csv (or its folder) for the loader benchmark")
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: min(8, CPUs))")
    p.add_argument("--loader-batches", type=int, default=None, help="timed loader batches (default: 2 x steps)")
    p.add_argument("--no-loader", action="store_true", help="skip the loader benchmark")
    p.add_argument("--fakes", choices=["labelled", "sbi", "both"], default="labelled",
                   help="where the loader's fakes come from (data.fakes.mode): sbi/both make them on the fly")
    p.add_argument("--fake-kinds", default="sbi=1",
                   help="with --fakes sbi/both: shares of the kinds made on the fly, e.g. sbi=0.5,reenact=0.5")
    p.add_argument("--json", default=None, help="also write the summary here")
    return p


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(args: argparse.Namespace, device: torch.device) -> dict:
    """Timed training steps on random frames; frames/s and peak memory."""
    torch.manual_seed(0)
    net = DeepfakeDetector(backbone=args.backbone, pretrained=False, img_size=args.img_size).to(device).train()
    if args.channels_last:
        net.set_channels_last(True)
    if args.compile:
        net.backbone.compile()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    b, t, s = args.batch_size, args.seq_len, args.img_size
    x = torch.randn(b, t, 3, s, s, device=device)
    y = (torch.arange(b, device=device) % 2).float()
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if args.amp
                else contextlib.nullcontext())

    def step() -> None:
        with autocast:
            loss = sequence_bce(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    elapsed = time.perf_counter() - start
    out = {
        "frames_per_s": b * t * args.steps / elapsed,
        "sequences_per_s": b * args.steps / elapsed,
        "step_ms": 1000 * elapsed / args.steps,
        "warmup_s": warmup_s,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
    }
    if device.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_rss_mb"] = _peak_rss_mb()
    return out


def make_crop_folder(root: Path, size: int, n_tracks: int = 32, n_crops: int = 30) -> Path:
    """index.csv + JPEG crops of moving astronaut-photo faces (half labelled fake), as extraction writes them."""
    import cv2
    from skimage import data

    photo = data.astronaut()
    rng = np.random.default_rng(0)
    header = ["video", "label", "split", "original", "track", "frame", "x1", "y1", "x2", "y2", "score", "crop"]
    rows = []
    for v in range(n_tracks):
        video = f"{'fake' if v % 2 else 'real'}/clip_{v:04d}.mp4"
        for f in range(n_crops):
            cx, cy = 217 + rng.normal(0, 8), 112 + rng.normal(0, 8)
            half = 65 * (1 + rng.normal(0, 0.03))
            crop = photo[int(cy - half):int(cy + half), int(cx - half):int(cx + half)]
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
            rel = f"crops/{Path(video).with_suffix('')}/t0_f{5 * f:06d}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            rows.append([video, v % 2, "train", f"real/clip_{v - v % 2:04d}.mp4", 0, 5 * f, cx - half, cy - half,
                         cx + half, cy + half, 0.99, rel])
    with open(root / "index.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return root


def bench_loader(args: argparse.Namespace, index: str) -> dict:
    """Sequences/s of the training loader (augmentations on) after its first batch."""
    kinds = {k: float(v) for k, v in (item.split("=") for item in args.fake_kinds.split(","))}
    dm = FaceSequenceDataModule(index, seq_len=args.seq_len, img_size=args.img_size, batch_size=args.batch_size,
                                num_workers=args.workers, pin_memory=torch.cuda.is_available(),
                                persistent_workers=False, val_fraction=0.0,
                                epoch_size=args.batch_size * (args.loader_batches + 1),
                                fakes=FakeConfig(mode=args.fakes, kinds=kinds))
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    next(loader)  # worker start-up
    start = time.perf_counter()
    n = 0
    for batch in loader:
        n += len(batch["frames"])
    elapsed = time.perf_counter() - start
    return {"sequences_per_s": n / elapsed, "frames_per_s": n * args.seq_len / elapsed, "workers": args.workers,
            "batches": n // args.batch_size}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    if gpu and not torch.cuda.is_available():
        print("bench/train.py: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    args.batch_size = args.batch_size or (16 if gpu else 2)
    args.amp = gpu if args.amp is None else args.amp
    args.channels_last = gpu if args.channels_last is None else args.channels_last
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1) + (5 if args.compile else 0)
    args.workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    args.loader_batches = args.loader_batches or 2 * args.steps
    if gpu:
        torch.backends.cudnn.benchmark = True
    summary = {
        "device": torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()}, "
                                                                  f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "backbone": args.backbone, "img_size": args.img_size, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "amp_bf16": args.amp, "channels_last": args.channels_last, "compile": args.compile,
    }
    print(f"model: {args.backbone} + LSTM, {args.img_size} px, T={args.seq_len}, batch {args.batch_size}, "
          f"{summary['device']}, bf16={args.amp}, channels_last={args.channels_last}, compile={args.compile}",
          flush=True)
    summary["model"] = m = bench_model(args, device)
    mem = f"peak GPU memory {m['peak_mem_mb']:.0f} MiB" if gpu else f"peak RSS {m['peak_rss_mb']:.0f} MiB"
    print(f"  train step {m['step_ms']:.1f} ms: {m['frames_per_s']:.1f} frames/s = {m['sequences_per_s']:.2f} "
          f"sequences/s; {mem}; warm-up {m['warmup_s']:.1f} s", flush=True)
    if not args.no_loader:
        with tempfile.TemporaryDirectory() as tmp:
            index = args.index or str(make_crop_folder(Path(tmp), args.img_size))
            summary["loader"] = ld = bench_loader(args, index)
        ratio = ld["sequences_per_s"] / m["sequences_per_s"]
        summary["loader_over_model"] = ratio
        print(f"loader (fakes {args.fakes}: {args.fake_kinds if args.fakes != 'labelled' else 'from the index'}): "
              f"{ld['sequences_per_s']:.1f} sequences/s ({ld['frames_per_s']:.0f} frames/s) with "
              f"{args.workers} workers = {ratio:.2f}x the model's {m['sequences_per_s']:.2f} sequences/s "
              f"({'keeps up' if ratio >= 1 else 'TOO SLOW: the model waits for data'})", flush=True)
    line = json.dumps(summary)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
