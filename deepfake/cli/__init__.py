"""The `deepfake` command: one entry point, one subcommand per stage.

The commands live in this package (`deepfake.cli.<name>`), each a thin `main(args)` over library calls: argument
parsing, progress and printing. Nothing in the library imports from here. This file only dispatches, importing a
command's module lazily so that `deepfake --help` stays fast and a broken optional stage cannot break the others.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, help). fit/validate/test go to LightningCLI, which takes the subcommand itself.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("deepfake.cli.demo",
             "run the whole pipeline on generated demo data (synth, extract, fit, evaluate, predict)"),
    "synth": ("deepfake.cli.synth", "write a labelled demo dataset: real face clips and self-blended fakes"),
    "extract": ("deepfake.cli.extract", "videos -> face-crop sequences + index.csv (same as deepfake-extract)"),
    "fit": ("deepfake.cli.train", "train a detector (LightningCLI; --config, --print_config)"),
    "validate": ("deepfake.cli.train", "validate a checkpoint on the validation split"),
    "test": ("deepfake.cli.train", "evaluate a checkpoint on the test split"),
    "predict": ("deepfake.cli.predict", "score videos, folders or globs: table, JSON or CSV, optional plots"),
    "evaluate": ("deepfake.cli.evaluate",
                 "metrics on a labelled set: log loss, AUC, accuracy, AP, EER, ECE, Brier, ROC and reliability"),
    "benchmark": ("deepfake.cli.benchmark", "the cross-dataset table: one detector on several test sets (FF++, "
                                            "Celeb-DF, DFD, DFDC, DFDC preview), video and frame AUC beside the "
                                            "published figures"),
    "calibrate": ("deepfake.cli.calibrate", "refit the detector's calibration (temperature) on a labelled set you "
                                            "trust; writes a new detector file"),
    "distort": ("deepfake.cli.distort", "write DeeperForensics-1.0-style distorted copies of videos"),
    "export": ("deepfake.cli.export", "write the detector as ONNX or a torch.export program, which predict, evaluate "
                                      "and serve load without timm"),
    "submit": ("deepfake.cli.submit", "write a complete Kaggle DFDC submission.csv (filename,label) for test videos"),
    "serve": ("deepfake.cli.serve", "an HTTP API and a web page: post videos, read verdicts, plots and explanations"),
}
PASS_SUBCOMMAND = {"fit", "validate", "test"}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: deepfake COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`deepfake COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> int:
    """Run `deepfake COMMAND ...`; returns the process exit status."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if args[0] in {"-V", "--version"}:
        from deepfake import __version__

        print(f"deepfake {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"deepfake: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    status = module.main([name, *rest] if name in PASS_SUBCOMMAND else rest)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
