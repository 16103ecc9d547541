"""Benchmark exported detectors: model time per clip, ONNX Runtime and torch.export against PyTorch, in one run.

    python bench/export.py                                   # B1 + LSTM, the windows of one 10-s clip, median of 5
    python bench/export.py --backbone test_efficientnet --img-size 64 --repeat 1   # a quick check that it runs

What is timed: `deepfake.inference.Detector.score_tracks` (the code predict runs: windows of `seq_len` crops ->
model -> calibrated per-step scores) on the crops of one face track of a 10-s clip at 30 fps kept every `--stride`-th
frame (60 crops at stride 5), the same crops for every variant. The variants, timed in alternation (round-robin, one
round per `--repeat`, median), after one warm-up call each:

- ``pytorch_fp32``: the PyTorch model (channels_last, as predict runs it) in float32: what predict runs on CPUs
  without native bfloat16 (the 2-core AMD EPYC of issue 18);
- ``pytorch_auto``: the same with `--precision auto` (bfloat16 where the CPU has AVX512-BF16/AMX, else float32);
- ``onnx``: the `deepfake export --format onnx` file on ONNX Runtime as predict runs it (all graph optimisations,
  one intra-op thread per core);
- ``onnx_basic``, ``onnx_extended``, ``onnx_1thread``: the same file with ONNX Runtime's basic or extended graph
  optimisations only, or one thread: what each setting brings;
- ``exported``: the `--format exported` torch.export program (.pt2) run eagerly by PyTorch.

The ratio reported is each variant's time over ``pytorch_fp32``'s (and over ``pytorch_auto``'s). Crops are random
pixels: the model's time does not depend on what the crops show. The detector is a randomly initialised
`DeepfakeDetector` of `--backbone` (as fast as a trained one) unless `--weights` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    """The CPU's model name (what lscpu prints), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def onnx_session(path: Path, level: str, threads: int):
    """An ONNX Runtime session of `path` with graph optimisation `level` (basic, extended, all) and `threads`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="a detector checkpoint (default: random-init --backbone)")
    p.add_argument("--backbone", default="efficientnet_b1",
                   help="timm backbone without --weights (default %(default)s)")
    p.add_argument("--img-size", type=int, default=None, help="crop side without --weights (default: the backbone's)")
    p.add_argument("--seq-len", type=int, default=10, help="window length without --weights (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length the crops stand for (default %(default)s)")
    p.add_argument("--fps", type=float, default=30.0, help="its frame rate (default %(default)s)")
    p.add_argument("--stride", type=int, default=5, help="keep every N-th frame (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default %(default)s)")
    p.add_argument("--repeat", type=int, default=5, help="timed rounds, median (default %(default)s)")
    p.add_argument("--no-exported", dest="exported", action="store_false", help="skip the .pt2 variant")
    p.add_argument("--data", help="folder for the weights and exports (kept; default a temporary folder)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from data_prep.detector import cpu_count
    from deepfake.checkpoint import build_meta, save_detector
    from deepfake.export import default_output, export_detector
    from deepfake.inference import Detector
    from deepfake.model import DeepfakeDetector

    tmp = None
    data = Path(args.data) if args.data else Path(tmp := tempfile.mkdtemp(prefix="bench-export-"))
    data.mkdir(parents=True, exist_ok=True)
    try:
        weights = Path(args.weights) if args.weights else data / f"{args.backbone}.pt"
        if not args.weights and not weights.exists():
            torch.manual_seed(0)
            net = DeepfakeDetector(backbone=args.backbone, pretrained=False, img_size=args.img_size)
            save_detector(weights, net, build_meta(net, seq_len=args.seq_len, margin=0.3, stride=args.stride))
        formats = ["onnx", "exported"] if args.exported else ["onnx"]
        files, export_s = {}, {}
        for fmt in formats:
            start = time.perf_counter()
            result = export_detector(weights, fmt, data / default_output(weights, fmt).name)
            export_s[fmt] = time.perf_counter() - start
            files[fmt] = result.path
            print(f"{fmt}: {result.path} in {export_s[fmt]:.1f} s, logits within {result.max_error:.1e}",
                  file=sys.stderr)

        cores = cpu_count()
        variants = {
            "pytorch_fp32": Detector.load(weights, device="cpu", precision="fp32", batch_size=args.batch_size),
            "pytorch_auto": Detector.load(weights, device="cpu", precision="auto", batch_size=args.batch_size),
            "onnx": Detector.load(files["onnx"], device="cpu", batch_size=args.batch_size),
        }
        for name, level, threads in (("onnx_basic", "basic", cores), ("onnx_extended", "extended", cores),
                                     ("onnx_1thread", "all", 1)):
            detector = Detector.load(files["onnx"], device="cpu", batch_size=args.batch_size)
            detector.model.session = onnx_session(files["onnx"], level, threads)
            variants[name] = detector
        if args.exported:
            variants["exported"] = Detector.load(files["exported"], device="cpu", batch_size=args.batch_size)

        reference = variants["pytorch_fp32"]
        n_crops = math.ceil(args.seconds * args.fps / args.stride)
        size = reference.img_size
        track = np.random.default_rng(0).integers(0, 256, (n_crops, size, size, 3), dtype=np.uint8)
        want = reference.score_tracks([track])[0][1]
        diffs = {}
        for name, detector in variants.items():  # warm-up, and the scores each gives
            diffs[name] = float(np.abs(detector.score_tracks([track])[0][1] - want).max())
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.repeat):
            for name in names[r % len(names):] + names[:r % len(names)]:  # a different first variant each round
                start = time.perf_counter()
                variants[name].score_tracks([track])
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) for name, t in times.items()}
        report = {
            "machine": {"cpu": cpu_model(), "cores": cores, "date": time.strftime("%Y-%m-%d"),
                        "torch": torch.__version__, "onnxruntime": ort.__version__,
                        "torch_threads": torch.get_num_threads()},
            "model": {"backbone": reference.meta["model"].get("backbone"), "img_size": size,
                      "seq_len": reference.seq_len, "crops": n_crops, "batch_size": args.batch_size,
                      "auto_precision": variants["pytorch_auto"].precision},
            "export_s": export_s, "model_s": median, "runs_s": times,
            "ratio_vs_fp32": {n: median[n] / median["pytorch_fp32"] for n in median},
            "ratio_vs_auto": {n: median[n] / median["pytorch_auto"] for n in median},
            "max_step_difference": diffs,
        }
    finally:
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    m = report["model"]
    print(f"{report['machine']['cpu']}, {report['machine']['cores']} cores, {report['machine']['date']}; torch "
          f"{report['machine']['torch']}, onnxruntime {report['machine']['onnxruntime']}")
    print(f"{m['backbone']} + LSTM at {m['img_size']} px, seq_len {m['seq_len']}: {m['crops']} crops (one face, "
          f"{args.seconds:g} s at {args.fps:g} fps, stride {args.stride}); median of {args.repeat}, alternating; "
          f"pytorch_auto runs {m['auto_precision']}")
    print(f"{'variant':<15} {'s/clip':>8} {'vs fp32':>8} {'vs auto':>8} {'max |step diff|':>16}")
    for name in median:
        ratios = f"{report['ratio_vs_fp32'][name]:8.2f} {report['ratio_vs_auto'][name]:8.2f}"
        print(f"{name:<15} {median[name]:8.3f} {ratios} {diffs[name]:16.1e}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
