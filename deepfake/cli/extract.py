"""`deepfake-extract SOURCE OUT_DIR` (also `deepfake extract`): a dataset's videos -> face crops + index.csv.

    deepfake-extract data/dfdc_train_part_0 crops/ [--size auto --size-from configs/backbones/tf_efficientnet_b4.yaml]
    deepfake-extract SRC OUT --shard K/N          # one of N machines; the last to finish merges index.csv
    deepfake-extract OUT --merge                  # merge finished shards by hand

The work is `data_prep.dataset.extract_dataset` (what OUT_DIR holds, resuming, shards, box reuse) over
`data_prep.extractor.FaceExtractor`; this module parses the options, resolves ``--size auto`` from a training
config or checkpoint (`deepfake.scaling.resolve_crop_size`, the reason the command sits on the `deepfake` side),
shows a progress bar and prints the summary. Exit status: 0 when the run finished (failed videos are listed in
failures.csv), 1 when the index itself could not be written (a full disk: run the same command again to resume),
2 for a usage error (bad option, unknown layout, settings differing from OUT_DIR's, an OUT_DIR that can't be
written), 130 when interrupted (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path

from data_prep.faces import ExtractConfig
from data_prep.layouts import LAYOUTS, LayoutOptions
from data_prep.layouts_bench import COMPRESSIONS
from deepfake.cli.common import OneLineParser, UsageError, add_config_options, fail

__all__ = ["main"]


def _parse_shard(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value or "")
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise argparse.ArgumentTypeError(
            f"--shard takes K/N with 0 <= K < N (K is 0-based, e.g. $SLURM_ARRAY_TASK_ID/4), got {value!r}")
    return int(m.group(1)), int(m.group(2))


# the ExtractConfig fields that are options of the command (the others are tuned in Python only)
CONFIG_OPTIONS = ("stride", "margin", "quality", "device", "batch_size", "detect_size", "min_face_size", "factor",
                  "detect_every", "refine_between", "min_score", "min_track_len", "min_track_score", "max_pixels")


def _parser() -> argparse.ArgumentParser:
    d = ExtractConfig()
    p = OneLineParser(
        prog="deepfake-extract",
        usage="deepfake-extract SOURCE OUT_DIR [options]\n       deepfake-extract OUT_DIR --merge",
        description="Detect, track and crop the faces of a dataset's videos: OUT_DIR/crops/**.jpg + OUT_DIR/index.csv "
                    "(one row per crop), OUT_DIR/failures.csv (video,reason). Re-running resumes.",
        epilog="Sharding over N machines: run `deepfake-extract SRC OUT --shard K/N` for K = 0..N-1 into the same "
               "OUT (shared disk); the last shard to finish merges index.csv, or run `deepfake-extract OUT --merge`.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="SOURCE (dataset folder) and OUT_DIR (output folder); "
                   "with --merge just OUT_DIR")
    p.add_argument("--layout", default="auto", choices=LAYOUTS,
                   help="dataset layout (default: auto, picked from what SOURCE contains); see docs/benchmark.md for "
                        "ffpp, dfd, celebdf, dfdcp, dfdc-test")
    p.add_argument("--compression", default=None, choices=COMPRESSIONS,
                   help="FaceForensics++ / DFD: the compression folder to read (default: the only one there, or c23)")
    p.add_argument("--splits", default=None, metavar="DIR",
                   help="FaceForensics++: the folder of the official train.json, val.json, test.json "
                        "(default: SOURCE/splits/ when there)")
    p.add_argument("--size", default=str(d.size),
                   help="crop side in pixels, or auto: the input size of the model in --size-from "
                        "(default %(default)s)")
    p.add_argument("--size-from", default=None, metavar="CONFIG_OR_CHECKPOINT",
                   help="with --size auto: a training config (e.g. configs/backbones/tf_efficientnet_b4.yaml) or a "
                        "detector checkpoint (detector.pt, .ckpt)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that each extract whole videos with their own detector; 0: all in this process "
                        "(default: one per CPU core, at most 16)")
    # ExtractConfig's settings: their defaults and help come from the dataclass, the one place that says them
    add_config_options(p, ExtractConfig, list(CONFIG_OPTIONS), max_pixels={"metavar": "N"})
    p.add_argument("--reuse-original-boxes", action=argparse.BooleanOptionalAction, default=True,
                   help="crop a fake with the boxes of its original (DFDC metadata.json, labels.csv) when that is "
                        "in SOURCE and has the same frame count and size (default on)")
    p.add_argument("--shard", type=_parse_shard, default=(0, 1), metavar="K/N",
                   help="process shard K of N (0-based); per-shard index files, merged when all are done")
    p.add_argument("--merge", action="store_true", help="only merge finished shards into index.csv")
    p.add_argument("--limit", type=int, default=None, help="process at most this many videos (trying settings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="extract on Ray (the ray extra): `local` (the default when ADDRESS is left out) starts Ray "
                        "here with --workers CPUs, HOST:PORT joins a cluster, auto uses $RAY_ADDRESS; SOURCE and "
                        "OUT_DIR must be on a disk every node sees (docs/scale.md)")
    return p


def main(args: list[str] | None = None) -> int:
    """Run `deepfake-extract`; returns the exit status: 0 when the run finished (failed videos are listed in
    failures.csv), 2 for a usage error (bad option, unknown layout, settings differing from OUT_DIR's), 130 when
    interrupted.
    """
    # Imported here, not above: the worker processes re-import this module (spawn) and need none of it (pandas).
    from data_prep.dataset import DatasetError, extract_dataset, merge_shards
    from data_prep.extractor import FaceExtractor
    from data_prep.ray_extract import RayError  # Ray itself is imported only with --ray

    parser = _parser()
    try:
        opts = parser.parse_args(args)
        if opts.merge and len(opts.paths) not in (1, 2):
            raise UsageError("--merge takes OUT_DIR (or SOURCE OUT_DIR)")
        if not opts.merge and len(opts.paths) != 2:
            raise UsageError("give SOURCE and OUT_DIR")
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except UsageError as err:
        return fail("deepfake-extract", f"{err} (deepfake-extract --help)")
    if not all(p.strip() for p in opts.paths):  # Path("") is the current folder: never what was meant
        print("deepfake-extract: error: an empty path was given (SOURCE and OUT_DIR must be named)", file=sys.stderr)
        return 2
    if opts.merge:
        out = Path(opts.paths[-1])
        try:
            rows, failures, shards = merge_shards(out)
        except DatasetError as err:
            print(f"deepfake-extract: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            print(f"deepfake-extract: error: can't write the merged index in {out}: {err.strerror or err}",
                  file=sys.stderr)
            return 1
        print(f"merged {shards} shards: {out / 'index.csv'} ({rows} crops), {failures} failures")
        return 0
    source, out = Path(opts.paths[0]), Path(opts.paths[1])
    try:
        from deepfake.scaling import resolve_crop_size

        size = resolve_crop_size(opts.size, opts.size_from)
        if opts.size_from and opts.size.strip().lower() != "auto":
            print(f"deepfake-extract: note: --size {size} given, --size-from {opts.size_from} ignored", file=sys.stderr)
        config = ExtractConfig(size=size, **{name: getattr(opts, name) for name in CONFIG_OPTIONS})
    except ValueError as err:
        print(f"deepfake-extract: {err}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int, tracks: int, failures: int) -> None:
        nonlocal bar
        if bar is None:  # extraction starts
            bar = tqdm(total=total, unit="video", disable=opts.no_progress or not total, dynamic_ncols=True,
                       desc="extract")
        if done:
            bar.update(done - bar.n)
            bar.set_postfix(tracks=tracks, failures=failures, refresh=False)
        if done == total:  # the last video: the bar is done before the index is written
            bar.close()

    def warn(message: str) -> None:  # above the bar, which is redrawn under it
        tqdm.write(f"deepfake-extract: {message}", file=sys.stderr)

    stack = contextlib.ExitStack()  # the Ray session, with --ray
    try:
        layout = LayoutOptions(opts.layout, opts.compression, opts.splits)
        engine = FaceExtractor
        if opts.ray:
            from data_prep.ray_extract import RayFaceExtractor, ray_session

            session = stack.enter_context(ray_session(opts.ray, num_cpus=opts.workers or None))
            engine = lambda config, _workers: RayFaceExtractor(config, session, opts.workers)  # noqa: E731
        summary = extract_dataset(source, out, config, layout=layout, shard=opts.shard, limit=opts.limit,
                                  workers=opts.workers, reuse_original_boxes=opts.reuse_original_boxes,
                                  progress=progress, warn=warn, engine=engine)
    except (DatasetError, RayError) as err:  # RayError: with --ray, the cluster can't be reached or used
        print(f"deepfake-extract: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a disk that filled up or went read-only while the index was written
        if bar is not None:
            bar.close()
        where = f": {err.filename}" if err.filename else ""
        print(f"deepfake-extract: error: can't write {out}{where}: {err.strerror or err}; free space or fix the "
              f"folder, then run the same command again to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if bar is None:  # before extraction started: nothing to resume
            raise
        bar.close()
        print("deepfake-extract: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        stack.close()
    written = f"{summary.index}"
    if summary.merged is not None:
        written += f" (all {summary.shards} shards done: merged into {summary.merged})"
    print(f"{summary.videos} videos, {summary.tracks} face tracks, {summary.failures} failures")
    print(f"extracted {summary.done_now} now ({summary.already_done} already done) in {summary.elapsed:.1f} s on "
          f"{summary.device}; index: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
