"""Benchmark `deepfake predict` as a user runs it: a whole process on one clip, PyTorch weights against exported.

    python bench/startup.py                          # B1 + LSTM, one 10-s 1080p clip at 30 fps, median of 3
    python bench/startup.py --resolution 640x360 --seconds 2 --repeat 1 --backbone test_efficientnet --img-size 64
                                                     # a quick check that it runs

Each run is a fresh interpreter (`sys.executable`) running `deepfake.cli.main(["predict", CLIP, ...])`, timed from
just before the process is started to its exit (``whole_s``), with two marks taken inside it: when the command
starts (``main_s``: the interpreter and `deepfake.cli` imported) and when the first frame of the clip is decoded
(``first_frame_s``: everything the command does before it reads the video, imports and model loading included).
Beside them, in the same run and in alternation, `python -c "import torch"` (``import_torch``): the issue-18
target is `predict` with B1 in at most 2x its time. The variants:

- ``pytorch``: `--weights detector.pt --runtime torch` (a random-init `DeepfakeDetector` of `--backbone`, saved as
  `deepfake fit` saves one; timm is imported to rebuild it): the path every user got before issue 29;
- ``pt_auto``: `--weights detector.pt` as a user runs it now (`--runtime auto`, `deepfake.fastpath`): the ONNX copy
  beside it (`deepfake fit` writes one) or in the cache, found by the file's SHA-256 before torch is imported;
  predict then imports no torch at all (MTCNN on ONNX Runtime too);
- ``onnx``: `--weights detector.onnx` (ONNX Runtime, no timm, no torchvision);
- ``exported``: after `deepfake export --format exported` (.pt2, torch.export; with `--exported`).

Every variant runs once untimed first (the one-time exports into the cache: MTCNN's nets, a `detector.pt`'s copy),
in a cache folder of its own under `--data` (`DEEPFAKE_CACHE`).

Rounds alternate the variants (a different one first each round); medians of `--repeat`. `--importtime` also runs
each variant once under `python -X importtime` and prints the modules that cost most to import.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export import cpu_model  # noqa: E402 - bench/export.py, beside this file
from predict import make_clip  # noqa: E402 - bench/predict.py, beside this file

# Run inside the timed process: marks when the command starts and when the first frame is decoded, then predicts.
CHILD = """
import sys, time, json
marks = {"main": time.time()}
import data_prep.pipeline as pipeline
decode = pipeline.iter_decoded
def first_marked(*args, **kwargs):
    for item in decode(*args, **kwargs):
        marks.setdefault("first_frame", time.time())
        yield item
pipeline.iter_decoded = first_marked
from deepfake.cli import main
status = main(["predict", *sys.argv[2:]])
marks["end"] = time.time()
with open(sys.argv[1], "w") as f:
    json.dump({"status": status, **marks}, f)
"""


def run_predict(clip: Path, weights: Path, marks: Path, out: Path, env: dict, extra: tuple = ()) -> dict:
    """One whole `deepfake predict` process: its wall time and marks, seconds from before it was started."""
    args = [str(clip), "--weights", str(weights), "--device", "cpu", "--format", "json", "-o", str(out),
            "--no-progress", *extra]
    start = time.time()
    done = subprocess.run([sys.executable, "-c", CHILD, str(marks), *args], capture_output=True, text=True, env=env)
    whole = time.time() - start
    if done.returncode != 0 or not marks.is_file():
        raise SystemExit(f"bench: predict failed ({done.returncode}): {done.stderr[-1500:]}")
    m = json.loads(marks.read_text())
    marks.unlink()
    result = json.loads(out.read_text())[0]
    if result["status"] != "ok":
        raise SystemExit(f"bench: the clip gave status {result['status']}: {result['error']}")
    return {"whole_s": whole, "main_s": m["main"] - start, "first_frame_s": m.get("first_frame", m["end"]) - start,
            "p_fake": result["p_fake"], "runtime": result.get("runtime")}


def run_import_torch(env: dict) -> dict:
    start = time.time()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env)
    return {"whole_s": time.time() - start}


def import_costs(clip: Path, weights: Path, env: dict, top: int = 12) -> list[tuple[float, str]]:
    """The top-level modules costing most to import in one `predict` run (cumulative seconds, `-X importtime`)."""
    code = "import sys\nfrom deepfake.cli import main\nmain(['predict', *sys.argv[1:]])"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, str(clip), "--weights", str(weights),
                           "--device", "cpu", "--format", "json", "--no-progress"], capture_output=True, text=True,
                          env=env)
    costs = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            if cumulative.strip().isdigit() and not name.startswith("   "):  # top-level imports only
                costs.append((int(cumulative) / 1e6, name.rstrip()))
    return sorted(costs, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="efficientnet_b1", help="timm backbone (default %(default)s)")
    p.add_argument("--img-size", type=int, default=None, help="crop side (default: the backbone's)")
    p.add_argument("--seq-len", type=int, default=10, help="window length (default %(default)s)")
    p.add_argument("--stride", type=int, default=5, help="keep every N-th frame (default %(default)s)")
    p.add_argument("--resolution", default="1920x1080", help="clip size WxH (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default %(default)s)")
    p.add_argument("--fps", type=float, default=30.0, help="clip frame rate (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="rounds, median (default %(default)s)")
    p.add_argument("--exported", action="store_true", help="also time the torch.export (.pt2) file")
    p.add_argument("--importtime", action="store_true", help="also print each variant's costliest imports")
    p.add_argument("--data", help="folder for the clip, weights and exports (kept; default a temporary folder)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    import torch

    from data_prep.detector import cpu_count
    from deepfake.checkpoint import build_meta, save_detector
    from deepfake.export import default_output, export_detector
    from deepfake.model import DeepfakeDetector

    tmp = None
    data = Path(args.data) if args.data else Path(tmp := tempfile.mkdtemp(prefix="bench-startup-"))
    data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEEPFAKE_CACHE": str(data / "cache")}
    try:
        clip = make_clip(data / f"clip_{args.resolution}_{args.seconds:g}s_{args.fps:g}fps", args.resolution,
                         args.seconds, args.fps)
        weights = data / f"{args.backbone}_{args.img_size or 'default'}_T{args.seq_len}.pt"
        if not weights.exists():
            torch.manual_seed(0)
            net = DeepfakeDetector(backbone=args.backbone, pretrained=False, img_size=args.img_size)
            save_detector(weights, net, build_meta(net, seq_len=args.seq_len, margin=0.3, stride=args.stride))
        files = {"pytorch": weights, "pt_auto": weights}
        for fmt in ["onnx"] + (["exported"] if args.exported else []):
            target = default_output(weights, fmt)
            files[fmt] = target if target.exists() else export_detector(weights, fmt, target).path
        extra = {"pytorch": ("--runtime", "torch")}
        for name, path in files.items():  # untimed: the one-time exports into the cache
            run_predict(clip, path, data / "marks.json", data / "out.json", env, extra.get(name, ()))

        runs: dict[str, list[dict]] = {name: [] for name in ["import_torch", *files]}
        names = list(runs)
        for r in range(args.repeat):
            for name in names[r % len(names):] + names[:r % len(names)]:  # a different first variant each round
                if name == "import_torch":
                    runs[name].append(run_import_torch(env))
                else:
                    runs[name].append(run_predict(clip, files[name], data / "marks.json", data / "out.json", env,
                                                  extra.get(name, ())))
                print(f"round {r + 1}: {name} {runs[name][-1]['whole_s']:.2f} s", file=sys.stderr)
        median = {name: {k: statistics.median(run[k] for run in rs) for k in rs[0] if k.endswith("_s")}
                  for name, rs in runs.items()}
        base = median["import_torch"]["whole_s"]
        report = {
            "machine": {"cpu": cpu_model(), "cores": cpu_count(), "date": time.strftime("%Y-%m-%d"),
                        "torch": torch.__version__},
            "clip": {"resolution": args.resolution, "seconds": args.seconds, "fps": args.fps},
            "model": {"backbone": args.backbone, "seq_len": args.seq_len, "stride": args.stride},
            "median_s": median, "runs": runs,
            "ratio_to_import_torch": {n: m["whole_s"] / base for n, m in median.items()},
            "p_fake": {n: rs[0]["p_fake"] for n, rs in runs.items() if n != "import_torch"},
            "runtime": {n: rs[0]["runtime"] for n, rs in runs.items() if n != "import_torch"},
        }
        if args.importtime:
            report["imports"] = {name: import_costs(clip, path, env) for name, path in files.items()}
    finally:
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    mach = report["machine"]
    print(f"{mach['cpu']}, {mach['cores']} cores, {mach['date']}; torch {mach['torch']}")
    print(f"deepfake predict, {args.backbone} + LSTM (seq_len {args.seq_len}, stride {args.stride}), one "
          f"{args.seconds:g}-s {args.resolution} clip at {args.fps:g} fps, CPU; median of {args.repeat}, alternating")
    print(f"{'run':<13} {'whole s':>8} {'x import torch':>15} {'command starts':>15} {'first frame':>12}")
    for name, m in median.items():
        print(f"{name:<13} {m['whole_s']:8.2f} {report['ratio_to_import_torch'][name]:15.2f} "
              f"{m.get('main_s', float('nan')):15.2f} {m.get('first_frame_s', float('nan')):12.2f}")
    for name, costs in report.get("imports", {}).items():
        print(f"imports of {name} (cumulative s): " + ", ".join(f"{n.strip()} {s:.2f}" for s, n in costs))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
