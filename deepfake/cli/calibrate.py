"""`deepfake calibrate SOURCE --weights W`: refit the detector's calibration on a labelled set you trust.

    deepfake calibrate my_labelled_videos/ --weights detector.pt --out detector.mine.pt
    deepfake calibrate extracted/index.csv --weights detector.pt --split val

The work is `deepfake.recalibration.recalibrate`: SOURCE scored by the raw detector, a temperature (and maybe a
bias) fitted by video-level log loss (`deepfake.calibration`), a new detector file written atomically. Exit status:
0 written, 1 nothing written (too few videos to fit on, or none could be scored), 2 usage error (bad SOURCE,
missing weights, bad option), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from deepfake.cli.common import OneLineParser, UsageError, fail, path_arg, printed_warnings, stderr_line
from deepfake.inference import PRECISIONS, PredictConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="deepfake calibrate",
        description="Fit the detector's calibration (a temperature, and a bias when it measurably helps) on a "
                    "labelled set from your own domain, by video-level log loss, and write a new detector file "
                    "that predict, evaluate and submit then apply.",
        epilog="SOURCE: a labelled folder (DFDC part with metadata.json, DeeperForensics-1.0, real/ + fake/ and/or "
               "labels.csv) or an extracted index.csv, as `deepfake evaluate` takes it. Use videos the detector was "
               "not trained on. Exit status: 0 written, 1 nothing written (too few videos), 2 usage error.",
    )
    p.add_argument("source", metavar="SOURCE", type=path_arg,
                   help="labelled folder of videos, or an extracted index.csv")
    p.add_argument("--weights", metavar="CKPT", type=path_arg,
                   help="detector weights to calibrate (default $DEEPFAKE_WEIGHTS, else ~/.cache/deepfake/detector.pt)")
    p.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the weights")
    p.add_argument("--out", metavar="NEW.pt", type=path_arg, default=None,
                   help="the new detector file (default: beside the weights, NAME.calibrated.pt)")
    p.add_argument("--layout", default="auto", help="layout of a video SOURCE: auto, dfdc, deeperforensics, folder")
    p.add_argument("--split", default=None, help="use only this split of SOURCE (train, val, test)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="windows per forward pass (default: 1 on a CPU, 8 on a GPU)")
    p.add_argument("--stride", type=int, default=None, metavar="N",
                   help="keep every N-th frame (default: the checkpoint's; use what you predict with)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as for deepfake predict (default auto)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="decode processes (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


_fail = partial(fail, "deepfake calibrate")


def _line(name: str, m: dict | None) -> str:
    def num(key: str) -> str:
        v = (m or {}).get(key)
        return "n/a" if v is None else f"{v:.4f}"

    return f"  {name:<34} log loss {num('logloss')}   ECE {num('ece')}   Brier {num('brier')}   AUC {num('auc')}"


def main(args: list[str] | None = None) -> int:
    """`deepfake calibrate SOURCE --weights W [--out NEW.pt] [options]`; returns the exit status."""
    try:
        ns = _parser().parse_args(args)
        if ns.split is not None and ns.split not in ("train", "val", "test"):
            raise UsageError(f"--split must be train, val or test, got {ns.split!r}")
        config = PredictConfig(batch_size=ns.batch_size, device=ns.device, stride=ns.stride, workers=ns.workers,
                               precision=ns.precision, calibrated=False)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, ValueError) as err:
        return _fail(str(err))

    from deepfake.evaluation import EvaluationError
    from deepfake.recalibration import recalibrate
    from deepfake.weights import WeightsError

    try:
        with printed_warnings("deepfake calibrate"):
            result = recalibrate(ns.weights, ns.source, ns.out, layout=ns.layout, split=ns.split, config=config,
                                 sha256=ns.sha256, progress=not ns.no_progress, warn=stderr_line("deepfake calibrate"))
    except (EvaluationError, WeightsError, ValueError) as err:
        return _fail(str(err), getattr(err, "code", 2))
    except OSError as err:
        return _fail(f"can't write {ns.out or 'the new detector file'}: {err}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    record = result.record
    left_out = len(result.no_face) + len(result.errors)
    print(f"deepfake calibrate: {record['n_videos']} of {result.n_videos} videos scored ({record['n_real']} real, "
          f"{record['n_fake']} fake)" + (f"; {len(result.no_face)} without a face and {len(result.errors)} "
                                          f"unreadable left out" if left_out else ""))
    if record.get("temperature") is None:
        return _fail(f"nothing written: {record.get('skipped')}", 1)
    print(_line("raw scores:", record["before"]))
    replaced = record.get("replaces") or {}
    if replaced.get("on_this_set"):
        print(_line(f"old calibration (T {replaced['temperature']:.3f}):", replaced["on_this_set"]))
    print(_line(f"new calibration (T {record['temperature']:.3f}"
                + (f", b {record['bias']:+.3f}" if record["bias"] else "") + "):", record["after"]))
    print("  (measured on the videos it was fitted on: check it on others with `deepfake evaluate`)")
    if record.get("note"):
        print(f"deepfake calibrate: note: {record['note']}", file=sys.stderr)
    print(f"deepfake calibrate: wrote {result.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
