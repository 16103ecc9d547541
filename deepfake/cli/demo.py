"""`deepfake demo [OUT_DIR]`: the whole pipeline on generated data, with a report (`deepfake.demo.run_demo`)."""

from __future__ import annotations

import argparse
import sys
from functools import partial

from deepfake.cli.common import OneLineParser, UsageError, fail, path_arg
from deepfake.demo import DemoConfig, DemoError, DemoFolderError, run_demo

__all__ = ["main"]

_fail = partial(fail, "deepfake demo")


def _parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = OneLineParser(prog="deepfake demo",
                      description="Run the whole pipeline on generated data: synth (training + held-out set), "
                                  "extract, fit the tiny CPU detector, evaluate on the held-out set, predict one clip "
                                  "with a plot; then print metrics, time per stage and where everything is. "
                                  "Re-running reuses finished stages.")
    p.add_argument("out_dir", nargs="?", default="demo_output", metavar="OUT_DIR", type=path_arg,
                   help="demo folder (default %(default)s): new, empty, or an earlier demo's")
    p.add_argument("--quick", action="store_true", help="a much smaller run (under a minute): checks the install")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    p.add_argument("--install-weights", action="store_true",
                   help="copy the trained detector to ~/.cache/deepfake/detector.pt, the default weights of "
                        "`deepfake predict` (off by default: it knows only the demo's generated fakes)")
    p.add_argument("--train-minutes", type=float, default=None, metavar="M",
                   help=f"stop training after M minutes (default {d.train_minutes:g}; quick: none)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help=f"training epochs (default {d.max_epochs}; quick: 3)")
    p.add_argument("--config", default=None, metavar="YAML",
                   help=f"training config, a path or a name in configs/ (default {d.config})")
    p.add_argument("--device", default=None,
                   help="device of detection, evaluation and prediction: auto, cpu, cuda (default auto); training "
                        "follows the config (CPU)")
    return p


def main(args: list[str] | None = None) -> int:
    """`deepfake demo [OUT_DIR] [options]`; returns 0 when the demo finished, 1 when a stage failed, 2 usage."""
    try:
        ns = _parser().parse_args(args)
        overrides = {k: v for k, v in (("train_minutes", ns.train_minutes), ("max_epochs", ns.epochs),
                                       ("config", ns.config), ("device", ns.device)) if v is not None}
        config = DemoConfig.quick_config(**overrides) if ns.quick else DemoConfig(**overrides)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, ValueError) as err:
        return _fail(err)
    try:
        run_demo(ns.out_dir, config, fresh=ns.fresh, install_weights=ns.install_weights)
    except DemoError as err:
        return _fail(err, 2 if isinstance(err, DemoFolderError) else 1)
    except KeyboardInterrupt:
        print("deepfake demo: interrupted; run it again to go on from the last finished stage", file=sys.stderr)
        return 130
    except OSError as err:
        return _fail(err, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
