"""The LSTM ablation: what the temporal model and the temporal fakes each add, on fakes no model was trained on.

    python bench/ablation.py                          # into bench_output/ablation (about 20 min on 2 cores)
    python bench/ablation.py --seeds 0 1 2            # three training seeds per model
    python bench/ablation.py --quick                  # a smoke test with tiny settings (about 2 min)
    python bench/ablation.py --time-fakes             # only: frames/s of each fake kind on one core
    python bench/ablation.py --static-control 0.3 --models lstm-control frame-control   # the static-control rows

Three detectors with the same backbone and settings (`configs/sbi_tiny_cpu.yaml`: timm's test_efficientnet at 64 px,
T = 8, trained from the real clips of a `deepfake synth` set alone, every fake made on the fly):

- **lstm + temporal fakes**: the config as it ships (self-blends, reenact, flicker and morph fakes);
- **frame + temporal fakes**: the LSTM replaced by a linear head per frame (`model.net.temporal: frame`; a window's
  score is the mean of its frames' p(fake));
- **lstm, sbi only**: the LSTM trained on self-blends alone (`data.fakes.kinds: {sbi: 1}`);
- with `--static-control S`, **lstm + temporal + control** and **frame + temporal + control**: the first two with a
  share S of their real training sequences warped like reenact fakes but with the warp frozen over the sequence, and
  labelled real (`data.fakes.static_control`): per-frame warp traces in both classes, so only change over time
  tells a reenacted face from a real one.

Each is scored (`deepfake.cross.evaluate_sets`) on three held-out sets of another seed, extracted once: self-blended
fakes, face swaps and reenact clips (`deepfake synth --fake-kind sbi|swap|reenact`), each with its real clips.
Noise: a 95 % bootstrap interval of each AUC over videos (stratified, 2000 resamples), and for the two comparisons
that matter (lstm vs frame, temporal fakes vs sbi only) the paired bootstrap interval of the AUC difference on the
same videos; with several `--seeds` the table also gives each AUC's spread over training seeds. A difference counts
only where its interval excludes 0.

Prints a Markdown table, the machine (CPU model, cores) and the wall time; writes OUT/ablation.md and
OUT/ablation.json. Everything already made in OUT (synth sets, extractions, trained runs) is reused. It starts by
timing the fakes made on the fly (frames/s of each kind on one core, 64 and 240-px crops, T = 10), to compare with
the model's training frames/s (`bench/train.py`, and the trainings' own rate printed here).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "lstm + temporal fakes": {},
    "frame + temporal fakes": {"model.net.temporal": "frame"},
    "lstm, sbi only": {"data.fakes.kinds": {"sbi": 1.0}},
}
# With --static-control S: the LSTM and the frame model again, a share S of their real training sequences given a
# static control (`data.fakes.static_control`, `deepfake.fakes.static_control_sequence`).
CONTROL_MODELS = {
    "lstm + temporal + control": {},
    "frame + temporal + control": {"model.net.temporal": "frame"},
}
SHORT = {"lstm": "lstm + temporal fakes", "frame": "frame + temporal fakes", "sbi-only": "lstm, sbi only",
         "lstm-control": "lstm + temporal + control", "frame-control": "frame + temporal + control"}
# The paired comparisons reported, where both rows were trained.
COMPARISONS = [("lstm + temporal fakes", "frame + temporal fakes"), ("lstm + temporal fakes", "lstm, sbi only"),
               ("lstm + temporal + control", "frame + temporal + control"),
               ("lstm + temporal + control", "lstm + temporal fakes")]
SETS = ("sbi", "swap", "reenact")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_output/ablation", help="work folder (default %(default)s)")
    p.add_argument("--train-count", type=int, default=160, help="synth clips of the training set; only its real "
                                                                 "half is used (default %(default)s)")
    p.add_argument("--heldout-count", type=int, default=80, help="clips per held-out set (default %(default)s)")
    p.add_argument("--seconds", type=float, default=4.0, help="clip length (default %(default)s)")
    p.add_argument("--steps", type=int, default=400, help="optimiser steps per model (default %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="loader processes while training (default %(default)s)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--static-control", type=float, default=0.0, metavar="S",
                   help="also train the LSTM and the frame model with data.fakes.static_control S (a share of the "
                        "real training sequences, in (0, 1))")
    p.add_argument("--models", nargs="+", choices=list(SHORT), default=None,
                   help="only these rows (default: lstm frame sbi-only, and lstm-control frame-control with "
                        "--static-control); finished runs in OUT are reused either way")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke test, the numbers mean little")
    p.add_argument("--time-fakes", action="store_true", help="only time the fakes made on the fly, then stop")
    return p


def time_fakes(seconds: float = 1.0) -> str:
    """Frames/s of each on-the-fly fake kind in this process (one core), Markdown rows."""
    from data_prep.synth import face_photos
    from data_prep.track import square_crop
    from deepfake.fakes import FAKE_KINDS, Donor, FakeConfig, canonical_face_landmarks, fake_sequence

    photo, other = face_photos()[1], face_photos()[0]
    lines = ["| crop | " + " | ".join(FAKE_KINDS) + " |", "|---|" + "---|" * len(FAKE_KINDS)]
    for size in (64, 240):
        frames = np.stack([square_crop(photo.image, photo.box, 0.3, size)] * 10)
        donor = Donor(square_crop(other.image, other.box, 0.3, size), canonical_face_landmarks(size, 0.3))
        cells = []
        for kind in FAKE_KINDS:
            config, rng, n = FakeConfig(mode="sbi", kinds={kind: 1.0}), np.random.default_rng(0), 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                fake_sequence(frames, rng, 0.3, config, donor=lambda _: donor)
                n += len(frames)
            cells.append(f"{n / (time.perf_counter() - t0):.0f}")
        lines.append(f"| {size} px | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return f"{model}, {os.cpu_count()} cores"


def quietly(log: Path, work):
    """Runs work() with its stdout/stderr (Lightning, FFmpeg, tqdm) in `log`."""
    from deepfake.demo_stages import output_to as _output_to

    with _output_to(log):
        return work()


def make_data(out: Path, args, say) -> tuple[Path, dict[str, Path]]:
    """The training index (real clips; its fakes are left out by mode sbi) and one index per held-out set."""
    from data_prep import synth
    from data_prep.dataset import extract_dataset
    from data_prep.faces import ExtractConfig

    video = dict(width=320, height=240, seconds=args.seconds, fps=10.0, progress=False)
    extract = ExtractConfig(stride=2, size=64, device="cpu")
    jobs = [("train", args.train_count, 5, "sbi")] + [(f"heldout_{k}", args.heldout_count, 1000, k) for k in SETS]
    indexes = {}
    for name, count, seed, kind in jobs:
        clips, extracted = out / "data" / name, out / "extracted" / name
        if not (extracted / "index.csv").is_file():
            t0 = time.perf_counter()
            cfg = synth.SynthConfig(count=count, seed=seed, fake_kind=kind, **video)
            quietly(out / "logs" / "data.log", lambda: synth.make_dataset(clips, cfg))
            quietly(out / "logs" / "data.log", lambda: extract_dataset(clips, extracted, extract, layout="folder",
                                                                        workers=0))
            say(f"  {name}: {count} clips (seed {seed}, {kind}) synthesised and extracted "
                f"[{time.perf_counter() - t0:.0f} s]")
        indexes[name] = extracted / "index.csv"
    return indexes.pop("train"), indexes


def train_model(out: Path, name: str, overrides: dict, seed: int, index: Path, args, say) -> Path:
    """Trains one variant (reusing a finished run) and returns its detector.pt."""
    import yaml

    from deepfake import train

    slug = name.replace(" + ", "_").replace(", ", "_").replace(" ", "_")
    if "data.fakes.static_control" in overrides:  # a run per share
        slug += f"_{overrides['data.fakes.static_control']:g}"
    run_root = out / "runs" / f"{slug}_seed{seed}"
    done = sorted(run_root.rglob("detector.pt"))
    if done:
        return done[-1]
    config = yaml.safe_load((ROOT / "configs" / "sbi_tiny_cpu.yaml").read_text())
    config["seed_everything"] = seed
    config["trainer"]["max_steps"] = args.steps
    config["trainer"]["enable_progress_bar"] = False
    config["data"].update(index=str(index), num_workers=args.workers, persistent_workers=bool(args.workers))
    train.set_options(config, overrides)  # written into the config: a dict on the command line would be merged
    config_path = run_root.parent / f"{run_root.name}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.perf_counter()
    fitted = quietly(out / "logs" / f"{run_root.name}.log",
                      lambda: train.fit(config_path, {"run_dir": run_root, "run_name": "run"}))
    took = time.perf_counter() - t0
    frames = args.steps * config["data"]["batch_size"] * config["data"]["seq_len"]
    say(f"  trained {name} (seed {seed}, {args.steps} steps) [{took:.0f} s, {frames / took:.0f} training frames/s "
        f"with its validation]")
    return fitted.weights


def scores(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Videos, labels and p(fake) of the scored videos in an evaluation's predictions.csv."""
    with open(folder / "predictions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("status") == "ok" and r.get("p_fake") not in ("", None)]
    rows.sort(key=lambda r: r["video"])
    return ([r["video"] for r in rows], np.array([int(float(r["label"])) for r in rows]),
            np.array([float(r["p_fake"]) for r in rows]))


def auc_of(y: np.ndarray, p: np.ndarray) -> float:
    """The AUC of scores `p` for labels `y` (1 = fake), NaN when one class is missing."""
    from deepfake.metrics import ranking_metrics  # scikit-learn's AUC from one sort: fast enough to bootstrap

    value = ranking_metrics(y, p).get("auc")
    return float("nan") if value is None else float(value)


def bootstrap(y: np.ndarray, ps: list[np.ndarray], n: int, seed: int = 0) -> np.ndarray:
    """(n, len(ps)) AUCs of stratified resamples of the videos, the same resample for every score vector."""
    rng = np.random.default_rng(seed)
    real, fake = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    out = np.empty((n, len(ps)))
    for i in range(n):
        idx = np.concatenate([rng.choice(real, len(real)), rng.choice(fake, len(fake))])
        out[i] = [auc_of(y[idx], p[idx]) for p in ps]
    return out


def interval(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def models(args) -> dict[str, dict]:
    """The rows to train: name -> config overrides."""
    if not 0.0 <= args.static_control < 1.0:
        raise SystemExit(f"--static-control must be in [0, 1), got {args.static_control}")
    rows = dict(MODELS)
    if args.static_control > 0:
        rows.update({name: {**overrides, "data.fakes.static_control": args.static_control}
                     for name, overrides in CONTROL_MODELS.items()})
    names = [SHORT[m] for m in args.models] if args.models else list(rows)
    missing = [n for n in names if n not in rows]
    if missing:
        raise SystemExit(f"{', '.join(missing)}: needs --static-control S")
    return {n: rows[n] for n in names}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rows = models(args)
    if args.quick:
        args.train_count, args.heldout_count, args.seconds, args.steps, args.bootstrap = 16, 8, 2.0, 20, 200
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    start = time.perf_counter()
    say(f"ablation in {out} ({machine()}, torch threads {args.threads})")
    say("fakes made on the fly, frames/s on one core:\n" + time_fakes())
    if args.time_fakes:
        return 0
    train_index, sets = make_data(out, args, say)

    from deepfake.cross import evaluate_sets
    from deepfake.inference import PredictConfig
    from deepfake.metrics import binary_metrics

    results: dict[str, dict[int, dict[str, dict]]] = {}
    for name, overrides in rows.items():
        for seed in args.seeds:
            weights = train_model(out, name, overrides, seed, train_index, args, say)
            folder = weights.parent.parent / "eval"
            if not (folder / "cross.csv").is_file():
                quietly(out / "logs" / "evaluate.log", lambda: evaluate_sets(
                    [sets[f"heldout_{k}"] for k in SETS], folder, weights,
                    predict_config=PredictConfig(device="cpu")))
            per_set = {}
            for k in SETS:
                videos, y, p = scores(folder / f"heldout_{k}")
                m = binary_metrics(y, p)
                per_set[k] = {"videos": videos, "y": y, "p": p, "auc": m.get("auc"), "logloss": m.get("logloss")}
            results.setdefault(name, {})[seed] = per_set

    table = report(results, args)
    wall = time.perf_counter() - start
    footer = (f"\n{machine()}; {time.strftime('%Y-%m-%d')}; wall time {wall / 60:.1f} min (data, "
              f"{len(rows) * len(args.seeds)} trainings of {args.steps} steps, evaluations)"
              + (" -- --quick: a smoke test, the numbers mean little" if args.quick else ""))
    say("")
    say(table + footer)
    (out / "ablation.md").write_text(table + footer + "\n")
    summary = {name: {str(seed): {k: {"auc": v["auc"], "logloss": v["logloss"], "n": len(v["y"])}
                                  for k, v in per.items()} for seed, per in runs.items()}
               for name, runs in results.items()}
    (out / "ablation.json").write_text(json.dumps({"results": summary, "machine": machine(), "wall_s": wall,
                                                   "settings": vars(args)}, indent=2) + "\n")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def report(results: dict, args) -> str:
    """The Markdown table: per model and set, AUC [95 % bootstrap CI] and log loss (first seed; mean and spread
    over seeds when there are several), then the paired differences."""
    seeds = args.seeds
    names = list(results)
    lines = ["| model | " + " | ".join(f"{k} AUC [95% CI] | {k} log loss" for k in SETS) + " |",
             "|---|" + "---|---|" * len(SETS)]
    boots: dict[str, np.ndarray] = {}
    for k in SETS:
        first = results[names[0]][seeds[0]][k]
        same = all(results[n][s][k]["videos"] == first["videos"] for n in names for s in seeds)
        if same:  # the same videos scored by every model: paired resamples
            boots[k] = bootstrap(first["y"], [results[n][seeds[0]][k]["p"] for n in names], args.bootstrap)
    for i, name in enumerate(names):
        cells = []
        for k in SETS:
            aucs = [results[name][s][k]["auc"] for s in seeds]
            losses = [results[name][s][k]["logloss"] for s in seeds]
            ci = f" [{_fmt(interval(boots[k][:, i])[0])}, {_fmt(interval(boots[k][:, i])[1])}]" if k in boots else ""
            if len(seeds) > 1:
                auc = f"{_fmt(float(np.mean(aucs)))} ±{_fmt(float(np.std(aucs)))}{ci}"
                loss = f"{_fmt(float(np.mean(losses)))} ±{_fmt(float(np.std(losses)))}"
            else:
                auc, loss = f"{_fmt(aucs[0])}{ci}", _fmt(losses[0])
            cells += [auc, loss]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences of AUC on the same videos (first seed), 95 % bootstrap interval; * where it "
              "excludes 0:", "", "| comparison | " + " | ".join(SETS) + " |", "|---|" + "---|" * len(SETS)]
    for a, b in [(names.index(x), names.index(y)) for x, y in COMPARISONS if x in names and y in names]:
        cells = []
        for k in SETS:
            if k not in boots:
                cells.append("n/a")
                continue
            d = results[names[a]][seeds[0]][k]["auc"] - results[names[b]][seeds[0]][k]["auc"]
            lo, hi = interval(boots[k][:, a] - boots[k][:, b])
            cells.append(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 or hi < 0 else ''}")
        lines.append(f"| {names[a]} minus {names[b]} | " + " | ".join(cells) + " |")
    n = {k: len(results[names[0]][seeds[0]][k]["y"]) for k in SETS}
    lines += ["", f"Videos scored per set: {', '.join(f'{k} {v}' for k, v in n.items())}; seeds {seeds}; "
              f"{args.steps} steps; bootstrap {args.bootstrap} stratified resamples of the videos"
              + (f"; control rows: static_control {args.static_control:g}." if args.static_control > 0 else ".")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
