"""`deepfake evaluate SOURCE --out DIR`: video-level metrics of a detector on a labelled set, clean and distorted.

    deepfake evaluate dfdc_train_part_49/ --weights detector.pt --out eval/
    deepfake evaluate extracted/index.csv --weights detector.pt --out eval/ --split val
    deepfake evaluate demo/ --weights detector.pt --out eval/ --perturb GB:3,JPEG,mix:2

What it computes and writes is `deepfake.evaluation` (its docstring lists the files). Exit status: 0 when the
metrics were written (videos in error are listed, not fatal), 1 when no video could be scored, 2 for a usage
error (bad SOURCE, missing weights, bad option), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from deepfake.cli.common import (
    OneLineParser, UsageError, add_max_pixels, add_model_options, fail, path_arg, printed_warnings, stderr_line,
)
from deepfake.evaluation import EvaluateConfig, EvaluationError, evaluate
from deepfake.inference import PredictConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="deepfake evaluate",
        description="Video-level metrics of a detector on a labelled set (log loss, balanced log loss, AUC, "
                    "accuracy, AP, EER, ECE, Brier, confusion), over the scored videos and over all of them with "
                    "the unscored ones at the prior; a ROC curve, a reliability diagram and per-video predictions; "
                    "optionally under DeeperForensics-1.0 distortions (--perturb).",
        epilog="SOURCE: a labelled folder (DFDC part with metadata.json, DeeperForensics-1.0, real/ + fake/ and/or "
               "labels.csv) or an extracted index.csv (crops scored directly). Videos without a face are left out "
               "of the metrics and listed, unless --no-face-prior gives them a probability; unreadable videos are "
               "always left out and listed. The all-videos metrics count both at the prior (--no-face-prior, else "
               "0.5).",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", type=path_arg,
                   help="labelled folder of videos, or an extracted index.csv; several: one table, a row a set "
                        "(OUT/cross.csv and cross.md; each set's files in OUT/<set>/)")
    p.add_argument("--out", required=True, metavar="DIR", type=path_arg, help="output folder (metrics.json, roc.png, "
                                                               "reliability.png, predictions.csv, robustness.*)")
    add_model_options(p)
    add_max_pixels(p)
    p.add_argument("--layout", default="auto",
                   help="layout of a video SOURCE: auto, dfdc, deeperforensics, folder, ffpp, dfd, celebdf, dfdcp, "
                        "dfdc-test (docs/benchmark.md)")
    p.add_argument("--split", default=None, help="evaluate only this split (train, val, test)")
    p.add_argument("--split-file", default=None, metavar="CSV", type=path_arg,
                   help="a training run's split.csv: its splits replace SOURCE's, so --split val scores exactly the "
                        "videos that run held out")
    p.add_argument("--no-face-prior", type=float, default=None, metavar="P",
                   help="score videos without a face as p(fake)=P and count them (default: leave them out); "
                        "also the prior of the all-videos metrics (default 0.5)")
    p.add_argument("--perturb", default=None, metavar="SPEC",
                   help="also evaluate under distortions: all, TYPE (CS, CC, BW, GNC, GB, JPEG, VC), TYPE:LEVEL, "
                        "mix:N, comma-separated")
    p.add_argument("--seed", type=int, default=0, help="seed of the distortions (default %(default)s)")
    return p


_fail = partial(fail, "deepfake evaluate")


def main(args: list[str] | None = None) -> int:
    """`deepfake evaluate SOURCE --out DIR [options]`; returns the exit status (0 ok, 1 nothing scored, 2 usage)."""
    try:
        ns = _parser().parse_args(args)
        pconfig = PredictConfig(threshold=ns.threshold, batch_size=ns.batch_size, device=ns.device, stride=ns.stride,
                                workers=ns.workers, precision=ns.precision, calibrated=not ns.no_calibration,
                                max_pixels=ns.max_pixels, runtime=ns.runtime)
        config = EvaluateConfig(threshold=ns.threshold, no_face_prior=ns.no_face_prior, layout=ns.layout,
                                split=ns.split, split_file=ns.split_file, perturb=ns.perturb, seed=ns.seed)
        if config.perturb is not None:
            from deepfake.perturb import parse_perturb

            parse_perturb(config.perturb)  # a bad spec is a usage error before any work
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, ValueError) as err:
        return _fail(str(err))

    from deepfake.weights import WeightsError

    try:
        with printed_warnings("deepfake evaluate"):  # e.g. a --stride unlike the detector's training crops'
            if len(ns.sources) > 1:
                from deepfake.cross import evaluate_sets, markdown_table

                rows = evaluate_sets(ns.sources, ns.out, ns.weights, ns.sha256, pconfig, config,
                                     progress=not ns.no_progress, say=print, warn=stderr_line("deepfake evaluate"))
                print(markdown_table(rows), end="")
                print(f"deepfake evaluate: wrote {ns.out}/cross.csv, cross.md and a folder per set", file=sys.stderr)
                return 0
            report = evaluate(ns.sources[0], ns.out, ns.weights, ns.sha256, pconfig, config,
                              progress=not ns.no_progress, say=print, warn=stderr_line("deepfake evaluate"))
    except (EvaluationError, WeightsError, ValueError) as err:
        return _fail(str(err), getattr(err, "code", 2))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    print(f"deepfake evaluate: wrote {ns.out}/metrics.json, roc.png, reliability.png, predictions.csv"
          + (", robustness.csv/.json/.png" if "robustness" in report else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
