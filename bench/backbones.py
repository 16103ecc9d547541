"""Benchmark the backbone family: params, GMACs, inference and training frames/s of the detector per backbone.

    python bench/backbones.py                                    # every backbone, CPU, fp32 (slow: B7 on CPU)
    python bench/backbones.py --device cuda --amp bf16 --channels-last
    python bench/backbones.py --models tf_efficientnet_b0 --steps 1 --warmup 0 --batch-size 1 --seq-len 2  # quick check

For each backbone of `deepfake.scaling.BACKBONES` (or `--models`, any timm names), at its own input resolution:
- ``params``: parameters of the whole detector (backbone without classifier + LSTM(512) + linear head), in M;
- ``GMACs``: multiply-accumulates of the backbone on one image (`torch.utils.flop_counter.FlopCounterMode` on the
  meta device, so nothing is computed; MACs = FLOPs / 2). The LSTM head adds 4 * (F + 512) * 512 MACs per frame
  (0.004 GMACs for F = 1280), left out;
- ``infer``: frames/s of `DeepfakeDetector.forward` on (B, T, 3, H, W) random input in eval mode under
  `torch.inference_mode`;
- ``train``: frames/s of forward + backward (`logits.mean().backward()`; no optimiser step) in train mode;
- ``peak``: peak GPU memory of the training step (CUDA only), which is what limits the batch in a config.
Each speed is the median over `--repeat` timings of `--steps` steps, after `--warmup` steps. `--batch-size auto`
(default) takes on CUDA the largest power-of-two number of sequences, up to `--max-frames` frames, whose
training step fits in `--memory-fraction` of the GPU, and on CPU one sequence; inference uses the same batch.

Beside ours, the table shows timm's published figures for the ImageNet model (with its 1000-class classifier)
at the same resolution, where the CSV has that model: params, GMACs and inference img/s from
results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv (RTX 4090, AMP, NCHW, PyTorch 2.4.0, CUDA 12.4) and
training img/s from results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv (RTX 3090, AMP, NCHW, PyTorch 1.12,
CUDA 11.3), in huggingface/pytorch-image-models. Those are other GPUs and plain classifiers: compare shapes of
the curve, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

# timm's published figures: model -> (img size, params M, GMACs, infer img/s RTX 4090 AMP, train img/s RTX 3090 AMP).
# Read from the two CSVs named in the module docstring (rows for these models at these sizes); None: no row.
TIMM_PUBLISHED: dict[str, tuple[int, float, float, float, float | None]] = {
    "tf_efficientnet_b0": (224, 5.29, 0.40, 7640.80, 1395.32),
    "tf_efficientnet_b1": (240, 7.79, 0.71, 4891.58, 863.78),
    "tf_efficientnet_b2": (260, 9.11, 1.02, 3827.63, 626.11),
    "tf_efficientnet_b3": (300, 12.23, 1.87, 2265.14, 370.15),
    "tf_efficientnet_b4": (380, 19.34, 4.49, 1110.38, 194.83),
    "tf_efficientnet_b5": (456, 30.39, 10.46, 553.22, 92.16),
    "tf_efficientnet_b6": (528, 43.04, 19.40, 322.38, 54.38),
    "tf_efficientnet_b7": (600, 66.35, 38.33, 189.69, 31.40),
    "tf_efficientnetv2_s": (300, 21.46, 5.35, 2217.63, 389.10),
    "tf_efficientnetv2_m": (384, 54.14, 15.85, 871.16, 142.41),
    "tf_efficientnetv2_l": (384, 118.52, 36.10, 486.38, 82.74),
    "resnet50": (224, 25.56, 4.11, 4217.60, 826.06),
    # timm's own B1 (configs/b1_lstm.yaml); its 3090 training row is at 224 px, not 240, so none here.
    "efficientnet_b1": (240, 7.79, 0.71, 5515.48, None),
}


@dataclass
class Result:
    """One backbone's figures (None where not measured)."""

    model: str
    img_size: int
    params_m: float
    backbone_params_m: float
    gmacs: float
    batch: int | None = None
    seq_len: int | None = None
    infer_fps: float | None = None
    train_fps: float | None = None
    peak_gb: float | None = None
    error: str | None = None


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def backbone_gmacs(name: str, img_size: int) -> float:
    """Backbone GMACs on one image at `img_size` (counted on the meta device: no memory, no compute)."""
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, 3, img_size, img_size, device="meta"))
    return counter.get_total_flops() / 2e9


def _autocast(device, amp: str):
    import torch

    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def _train_step(net, x, device, amp: str) -> None:
    with _autocast(device, amp):
        logits = net(x)
    logits.float().mean().backward()
    for p in net.parameters():
        p.grad = None


def _infer_step(net, x, device, amp: str) -> None:
    import torch

    with torch.inference_mode(), _autocast(device, amp):
        net(x)


def _time(fn, device, steps: int, warmup: int, repeat: int) -> float:
    """Median seconds per step over `repeat` timings of `steps` steps, after `warmup` steps."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def _fits(net, device, seq: int, seq_len: int, size: int, amp: str, channels_last: bool,
          memory_fraction: float) -> bool:
    """Whether a training step on `seq` sequences fits in `memory_fraction` of the GPU."""
    import torch

    x = _input(seq, seq_len, size, device, channels_last)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        _train_step(net, x, device, amp)
        _sync(device)
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        del x
        for p in net.parameters():
            p.grad = None
        torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    return torch.cuda.max_memory_allocated(device) <= memory_fraction * total


def _input(seq: int, seq_len: int, size: int, device, channels_last: bool):
    import torch

    x = torch.randn(seq, seq_len, 3, size, size, device=device)
    if channels_last:  # the detector flattens to (B*T, 3, H, W); channels_last applies to that 4-D view
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(seq, seq_len, 3, size, size)
    return x


def auto_batch(net, device, seq_len: int, size: int, amp: str, channels_last: bool, max_frames: int,
               memory_fraction: float) -> int:
    """Sequences per batch: on CUDA the largest power of two whose training step fits; on CPU 1."""
    if device.type != "cuda":
        return 1
    best, seq = 0, 1
    while seq * seq_len <= max_frames and _fits(net, device, seq, seq_len, size, amp, channels_last,
                                                 memory_fraction):
        best, seq = seq, seq * 2
    if best == 0:
        raise RuntimeError(f"one sequence of {seq_len} frames at {size} px does not fit on the GPU; lower --seq-len")
    return best


def bench_model(name: str, opts: argparse.Namespace) -> Result:
    """All figures of one backbone."""
    import torch

    from deepfake.model import DeepfakeDetector
    from deepfake.scaling import input_size_for

    size = opts.img_size or input_size_for(name)
    gmacs = backbone_gmacs(name, size)
    device = torch.device(opts.device)
    net = DeepfakeDetector(backbone=name, pretrained=False, img_size=size).to(device)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    backbone_params = sum(p.numel() for p in net.backbone.parameters()) / 1e6
    result = Result(model=name, img_size=size, params_m=params, backbone_params_m=backbone_params, gmacs=gmacs)
    if opts.no_speed:
        return result
    if opts.channels_last:
        net.set_channels_last(True)
    seq_len = opts.seq_len
    if opts.batch_size == "auto":
        batch = auto_batch(net, device, seq_len, size, opts.amp, opts.channels_last, opts.max_frames,
                           opts.memory_fraction)
    else:
        batch = int(opts.batch_size)
    result.batch, result.seq_len = batch, seq_len
    frames = batch * seq_len
    x = _input(batch, seq_len, size, device, opts.channels_last)

    net.eval()
    sec = _time(lambda: _infer_step(net, x, device, opts.amp), device, opts.steps, opts.warmup, opts.repeat)
    result.infer_fps = frames / sec

    net.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sec = _time(lambda: _train_step(net, x, device, opts.amp), device, opts.steps, opts.warmup, opts.repeat)
    result.train_fps = frames / sec
    if device.type == "cuda":
        result.peak_gb = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def _input_size(name: str) -> int:
    from deepfake.scaling import input_size_for

    try:
        return input_size_for(name)
    except ValueError:
        return 0


def _fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def markdown_table(results: list[Result]) -> str:
    """The results as a Markdown table, timm's published figures beside ours."""
    from deepfake.scaling import BACKBONES

    head = ("| backbone | timm name | px | params M | GMACs | timm params M / GMACs | batch (seq x T) | infer fr/s "
            "| train fr/s | peak GB | timm infer img/s (4090) | timm train img/s (3090) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        label = BACKBONES[r.model].label if r.model in BACKBONES else r.model
        pub = TIMM_PUBLISHED.get(r.model)
        pub = pub if pub is not None and pub[0] == r.img_size else None
        batch = "" if r.batch is None else f"{r.batch} x {r.seq_len}"
        cells = [label, f"`{r.model}`", str(r.img_size), _fmt(r.params_m, 2), _fmt(r.gmacs, 2),
                 f"{pub[1]:.2f} / {pub[2]:.2f}" if pub else "", batch, _fmt(r.infer_fps), _fmt(r.train_fps),
                 _fmt(r.peak_gb, 1), _fmt(pub[3] if pub else None), _fmt(pub[4] if pub else None)]
        if r.error:
            cells[6] = f"error: {r.error}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _machine(device: str) -> str:
    import torch

    import timm

    where = platform.processor() or platform.machine()
    if device.startswith("cuda") and torch.cuda.is_available():
        where = torch.cuda.get_device_name(torch.device(device))
    return (f"{where}; torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} CPU threads, "
            f"Python {platform.python_version()}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/backbones.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None,
                   help="comma-separated timm names (default: the family in deepfake.scaling.BACKBONES)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="autocast dtype (default none: fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for the backbone")
    p.add_argument("--batch-size", default="auto", help="sequences per batch, or auto (default)")
    p.add_argument("--seq-len", type=int, default=10, help="frames per sequence T (default 10)")
    p.add_argument("--img-size", type=int, default=None, help="input side for every model (default: each its own)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per timing (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--repeat", type=int, default=3, help="timings per figure, median reported (default 3)")
    p.add_argument("--max-frames", type=int, default=1024, help="auto batch: at most this many frames (default 1024)")
    p.add_argument("--memory-fraction", type=float, default=0.85,
                   help="auto batch: peak memory allowed, share of the GPU (default 0.85)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-speed", action="store_true", help="only params and GMACs (fast, no timing)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def main(args: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0 ok, 1 a model failed, 2 usage error)."""
    parser = _parser()
    opts = parser.parse_args(args)
    import torch

    from deepfake.scaling import BACKBONES

    if opts.batch_size != "auto" and not (opts.batch_size.isdigit() and int(opts.batch_size) >= 1):
        parser.error(f"--batch-size must be a positive integer or auto, got {opts.batch_size!r}")
    if opts.seq_len < 1 or opts.steps < 1 or opts.warmup < 0 or opts.repeat < 1:
        parser.error("--seq-len, --steps and --repeat must be >= 1, --warmup >= 0")
    if not 0 < opts.memory_fraction <= 1:
        parser.error(f"--memory-fraction must be in (0, 1], got {opts.memory_fraction}")
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    names = [m.strip() for m in opts.models.split(",") if m.strip()] if opts.models else list(BACKBONES)
    import timm

    unknown = [n for n in names if not timm.is_model(n)]
    if unknown:
        parser.error(f"not timm models: {', '.join(unknown)}")

    print(f"# backbones on {_machine(opts.device)}; amp {opts.amp}, channels_last {opts.channels_last}, "
          f"T = {opts.seq_len}", flush=True)
    results, failed = [], False
    for name in names:
        start = time.perf_counter()
        try:
            result = bench_model(name, opts)
        except (RuntimeError, ValueError) as e:  # OOM, a model that can't take the size: report, go on
            failed = True
            result = Result(model=name, img_size=opts.img_size or _input_size(name), params_m=float("nan"),
                            backbone_params_m=float("nan"), gmacs=float("nan"), error=" ".join(str(e).split())[:120])
        finally:
            if opts.device.startswith("cuda"):
                torch.cuda.empty_cache()
        results.append(result)
        print(f"{name}: {json.dumps(asdict(result))} ({time.perf_counter() - start:.0f} s)", file=sys.stderr,
              flush=True)
    print(markdown_table(results))
    if opts.json:
        payload = {"machine": _machine(opts.device), "options": vars(opts), "results": [asdict(r) for r in results]}
        Path(opts.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
