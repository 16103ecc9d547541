"""`deepfake submit TEST_DIR --weights W`: an always-complete Kaggle DFDC `submission.csv`.

The rules (rows, prior, clipping, kill-safety, timing) are `deepfake.submission.make_submission`'s, which the
offline notebook calls too. Exit status: 0 written with the model, 1 written with the prior only (model not
loaded), 2 nothing written (usage error, no rows).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from deepfake.cli.common import OneLineParser, UsageError, add_max_pixels, fail, path_arg, printed_warnings
from deepfake.submission import SubmissionConfig, SubmissionError, make_submission

__all__ = ["main"]

_fail = partial(fail, "deepfake submit")


def _parser() -> argparse.ArgumentParser:
    d = SubmissionConfig()
    p = OneLineParser(
        prog="deepfake submit",
        description="Write a complete Kaggle DFDC submission (filename,label): one row per test video, p(fake) "
                    "clipped to [lo, hi]; videos without a score (no face, unreadable, missing, out of time) get "
                    "the prior; if the model can't be loaded, every row does.",
        epilog="Exit status: 0 written with the model, 1 written with the prior only (model not loaded), "
               "2 nothing written (usage error, no rows).")
    p.add_argument("test_dir", metavar="TEST_DIR", type=path_arg,
                   help="folder of test videos (searched recursively)")
    p.add_argument("--weights", metavar="CKPT", type=path_arg,
                   help="detector weights (default: $DEEPFAKE_WEIGHTS, else ~/.cache/deepfake/detector.pt)")
    p.add_argument("--out", "-o", default="submission.csv", metavar="CSV", type=path_arg,
                   help="output (default %(default)s)")
    p.add_argument("--sample-submission", metavar="CSV", type=path_arg,
                   help="sample_submission.csv: its filename column is the row list (Kaggle scores exactly those)")
    p.add_argument("--prior", type=float, default=d.prior,
                   help="p(fake) of a video without a score (default %(default)s)")
    p.add_argument("--clip", type=float, nargs=2, default=list(d.clip), metavar=("LO", "HI"),
                   help="clip every label to [LO, HI] (default 0.01 0.99)")
    p.add_argument("--device", default=d.device, help="auto (GPU when present), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                   help="windows of seq_len crops per forward pass (default: 1 on a CPU, 8 on a GPU)")
    p.add_argument("--workers", type=int, default=d.workers, metavar="N",
                   help="extraction processes, each taking whole videos (default 0: this process, decoding on a "
                        "thread overlapped with detection)")
    p.add_argument("--stride", type=int, default=None, metavar="N",
                   help="keep every N-th frame (default: the checkpoint's training stride)")
    p.add_argument("--precision", default=d.precision, help="auto (default), bf16, fp16 or fp32")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default=d.runtime,
                   help="auto (default): ONNX Runtime on the CPU when installed, else PyTorch; torch; onnx")
    p.add_argument("--no-calibration", action="store_true",
                   help="write raw scores: ignore the calibration (temperature) stored in the weights")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop scoring after this long; the videos left get the prior (default: no limit)")
    p.add_argument("--expected-videos", type=int, default=d.expected_videos, metavar="N",
                   help="project the timing to N videos (default %(default)s, the DFDC hidden test set)")
    add_max_pixels(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: list[str] | None = None) -> int:
    """`deepfake submit TEST_DIR [options]`; returns 0 (scored), 1 (prior only) or 2 (not written)."""
    try:
        ns = _parser().parse_args(args)
        config = SubmissionConfig(prior=ns.prior, clip=tuple(ns.clip), device=ns.device, batch_size=ns.batch_size,
                                  workers=ns.workers, stride=ns.stride, precision=ns.precision,
                                  calibrated=not ns.no_calibration, time_limit_s=ns.time_limit,
                                  expected_videos=ns.expected_videos, progress=not ns.no_progress,
                                  max_pixels=ns.max_pixels, runtime=ns.runtime)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, ValueError) as err:
        return _fail(err)
    try:
        with printed_warnings("deepfake submit"):
            report = make_submission(ns.test_dir, ns.weights, ns.out, sample_submission=ns.sample_submission,
                                     config=config)
    except SubmissionError as err:
        return _fail(err)
    except OSError as err:
        return _fail(f"can't write {ns.out}: {err}")
    print(report.summary(), flush=True)
    return 0 if report.model_loaded else 1


if __name__ == "__main__":
    sys.exit(main())
