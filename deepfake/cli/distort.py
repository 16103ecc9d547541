"""`deepfake distort SRC... --out DIR --perturb SPEC`: DeeperForensics-1.0-style distorted copies of videos.

The distortions themselves are `deepfake.perturb`'s (the same code `deepfake evaluate --perturb` and training
augmentation use).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from data_prep.files import atomic_write, csv_text, iter_videos
from deepfake.perturb import applied_distortions, distort_video, parse_perturb, video_seed

__all__ = ["main"]


def _find_sources(paths: Iterable[str]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """(file, output name relative to the distortion folder) for each video, and (path, reason) for bad ones."""
    found: list[tuple[Path, str]] = []
    bad: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = list(iter_videos(p))
            if not files:
                bad.append((raw, "no video files in this folder"))
            found += [(f, f.relative_to(p).with_suffix(".mp4").as_posix()) for f in files]
        elif p.exists():
            found.append((p, Path(p.name).with_suffix(".mp4").as_posix()))
        else:
            bad.append((raw, "missing: no such file or folder"))
    return found, bad


def _write_meta(folder: Path, rows: list[dict]) -> None:
    atomic_write(folder / "distortions.csv", csv_text(sorted(rows, key=lambda r: r["video"]),
                                                      ["video", "source", "distortion", "seed", "applied"]))


def main(args: list[str] | None = None) -> int:
    """`deepfake distort SRC... --out DIR --perturb SPEC [--seed K]`.

    Writes `DIR/<distortion folder>/<video>.mp4` for every video and distortion (folder `GB_3`, `mix_2`, ...;
    videos found in a folder SRC keep their path below it) and `DIR/<folder>/distortions.csv` (video, source,
    distortion, seed, applied: the single-type distortions applied, e.g. `CS:2 GB:4`). Each video gets its own
    seed from `--seed`, its output path and the distortion (`video_seed`). Existing outputs are kept (an
    interrupted run resumes) unless `--overwrite`.

    Returns:
        0 when every video was written, 1 when any failed (each failure is one line on stderr), 2 for bad
        arguments.
    """
    from data_prep.video import VideoError
    from deepfake.cli.common import OneLineParser, UsageError, fail, path_arg

    parser = OneLineParser(prog="deepfake distort",
                           description="Write DeeperForensics-1.0-style distorted copies of videos.")
    parser.add_argument("src", nargs="+", type=path_arg, help="video files or folders (searched recursively)")
    parser.add_argument("--out", required=True, type=path_arg, help="output folder")
    parser.add_argument("--perturb", required=True,
                        help="all | TYPE | TYPE:LEVEL | mix | mix:N | clean, comma-separated (e.g. GB:3,JPEG); "
                             "types CS CC BW GNC GB JPEG VC, levels 1-5, N 2-4")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that already exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    try:
        ns = parser.parse_args(args)
        distortions = parse_perturb(ns.perturb)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, ValueError) as err:
        return fail("deepfake distort", f"{err} (deepfake distort --help)")
    out = Path(ns.out)
    sources, bad = _find_sources(ns.src)
    for path, reason in bad:
        print(f"deepfake distort: {path}: {reason}", file=sys.stderr)
    names: dict[str, Path] = {}
    unique: list[tuple[Path, str]] = []
    for path, name in sources:
        if name in names and names[name].resolve() != path.resolve():
            print(f"deepfake distort: {path}: skipped, same output name {name} as {names[name]}", file=sys.stderr)
            bad.append((str(path), "duplicate output name"))
            continue
        if name not in names:
            names[name] = path
            unique.append((path, name))

    from tqdm import tqdm

    failed: set[str] = set()
    done = 0
    bar = tqdm(total=len(unique) * len(distortions), unit="video", disable=ns.no_progress, file=sys.stderr)
    for d in distortions:
        folder = out / d.dirname
        rows: list[dict] = []
        for path, name in unique:
            if name in failed:  # a source that failed once fails for every distortion: say it once
                bar.update(1)
                continue
            seed = video_seed(ns.seed, name, d.name)
            dst = folder / name
            try:
                if ns.overwrite or not dst.is_file():
                    distort_video(path, dst, d, seed=seed)
            except (VideoError, ValueError, OSError) as err:
                failed.add(name)
                bar.write(f"deepfake distort: {path}: {err}", file=sys.stderr)
                continue
            finally:
                bar.update(1)
            done += 1
            applied = " ".join(p.name for p in applied_distortions(d, seed)) or "clean"
            rows.append({"video": name, "source": os.fspath(path), "distortion": d.name, "seed": seed,
                         "applied": applied})
        if rows:
            _write_meta(folder, rows)
    bar.close()
    n_bad = len(failed) + len(bad)
    print(f"deepfake distort: {done} videos in {out} ({len(distortions)} distortions x "
          f"{len(unique) - len(failed)} videos); {n_bad} failed", file=sys.stderr)
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
