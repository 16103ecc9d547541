"""`deepfake benchmark CONFIG`: one detector on several test sets, one table (video and frame AUC, AP, EER, log loss,
each with a bootstrap 95% interval, per test set and manipulation method) beside the published figures.

    deepfake benchmark configs/benchmark_ffpp_sbi_b1_lstm.yaml --weights runs/ffpp_sbi/detector.pt

The work is `deepfake.benchmark.run_benchmark` (the CONFIG format is in its docstring; docs/benchmark.md has the
recipes); this module parses the options and prints the table. Sets already scored with the same weights are not
scored again. Exit status: 0 when the table was written, 1 when no set could be scored or OUT can't be written,
2 for a usage error (bad CONFIG, missing weights), 130 when interrupted (run it again to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from functools import partial

from deepfake.benchmark import BenchmarkError, load_config, run_benchmark
from deepfake.cli.common import OneLineParser, UsageError, fail, stderr_line
from deepfake.inference import PRECISIONS, PredictConfig

__all__ = ["main"]

_fail = partial(fail, "deepfake benchmark")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="deepfake benchmark",
                      description="Score one detector on the test sets of CONFIG and write OUT/benchmark.md, .csv, "
                                  ".json and .png: video and frame AUC, AP, EER and log loss with bootstrap 95% "
                                  "intervals, per test set and manipulation method, beside the published figures "
                                  "(SBI, LAA-Net, FakeSTormer, DeepfakeBench's EfficientNet-B4).")
    p.add_argument("config", metavar="CONFIG", help="benchmark YAML (see docs/benchmark.md)")
    p.add_argument("--weights", default=None, metavar="CKPT", help="detector weights (default: CONFIG's weights)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: CONFIG's out)")
    p.add_argument("--bootstrap", type=int, default=None, metavar="N",
                   help="bootstrap resamples per interval (default: CONFIG's, else 1000; 0: no intervals)")
    p.add_argument("--rescore", action="store_true", help="score every test set again, even those already scored")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="windows per forward pass (default: 1 on a CPU, 8 on a GPU)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="model precision (default auto)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="decode processes for video sources")
    p.add_argument("--no-calibration", action="store_true", help="raw scores: ignore the weights' calibration")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: list[str] | None = None) -> int:
    """`deepfake benchmark CONFIG [options]`; returns the exit status."""
    try:
        ns = _parser().parse_args(args)
        config = load_config(ns.config)
        overrides = {k: v for k, v in (("weights", ns.weights), ("out", ns.out), ("bootstrap", ns.bootstrap))
                     if v is not None}
        config = dataclasses.replace(config, **overrides)
        pconfig = PredictConfig(threshold=config.threshold, batch_size=ns.batch_size, device=ns.device,
                                workers=ns.workers, precision=ns.precision, calibrated=not ns.no_calibration)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, BenchmarkError, ValueError) as err:
        return _fail(str(err))

    from deepfake.benchmark_report import markdown_report
    from deepfake.weights import WeightsError

    try:
        report = run_benchmark(config, pconfig, rescore=ns.rescore, progress=not ns.no_progress, say=print,
                               warn=stderr_line("deepfake benchmark"))
    except (BenchmarkError, WeightsError, ValueError) as err:
        return _fail(str(err), getattr(err, "code", 2))
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume", 130)
    print(markdown_report(report), end="")
    print(f"deepfake benchmark: wrote {config.out}/benchmark.md, benchmark.csv, benchmark.json, benchmark.png",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
