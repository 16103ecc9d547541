r"""`deepfake fit | validate | test`: training and evaluation of the detector through LightningCLI.

    deepfake fit --config configs/b1_lstm.yaml --data.index out/extracted
    deepfake fit --config configs/b1_lstm.yaml --data.index out/extracted \\
        --ckpt_path runs/b1_lstm/version_0/checkpoints/last.ckpt          # resume (into a new version_N)
    deepfake validate --config runs/b1_lstm/version_0/config.yaml --ckpt_path runs/.../best-....ckpt
    deepfake fit --config configs/b1_lstm.yaml --print_config        # the full resolved configuration

What a run writes is described in `deepfake.train`.
"""

from __future__ import annotations

import sys

from data_prep.index import IndexFileError
from deepfake.checkpoint import CheckpointError
from deepfake.train import UserError, lightning_cli

__all__ = ["main"]


def main(args: list[str] | None = None) -> int:
    """`deepfake fit|validate|test [options]` (LightningCLI); returns the exit status.

    Args:
        args: the subcommand and its options, e.g. `["fit", "--config", "configs/tiny_cpu.yaml"]`.
    """
    args = list(sys.argv[1:] if args is None else args)
    command = args[0] if args else "fit"
    try:
        cli = lightning_cli(args)
    except SystemExit as e:  # --help, --print_config, argument errors (already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except (UserError, IndexFileError, CheckpointError) as e:
        print(f"deepfake {command}: error: {e}", file=sys.stderr)
        return 2
    for line in getattr(cli, "fit_report", ()):  # where the detector went, its calibration, its ONNX copy
        print(f"deepfake {command}: {line}", file=sys.stderr if line.startswith("warning:") else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
