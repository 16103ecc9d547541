r"""`deepfake fit | validate | test`: training and evaluation of the detector through LightningCLI.

    deepfake fit --config configs/b1_lstm.yaml --data.index out/extracted
    deepfake fit --config configs/b1_lstm.yaml --data.index out/extracted \
        --ckpt_path runs/b1_lstm/version_0/checkpoints/last.ckpt          # resume (into a new version_N)
    deepfake validate --config runs/b1_lstm/version_0/config.yaml --ckpt_path runs/.../best-....ckpt
    deepfake fit --config configs/b1_lstm.yaml --print_config        # the full resolved configuration

Every run writes to RUN_DIR/RUN_NAME/version_N/ (`--run_dir`, `--run_name`; default runs/deepfake): the resolved
`config.yaml`, `metrics.csv` (CSV logger), TensorBoard events, and `checkpoints/` with the best checkpoint by
`val/logloss` (`--checkpoint.*` configures it) and `last.ckpt`. After `fit`, the best network is exported as
`checkpoints/detector.pt` (plain weights + settings; `deepfake.checkpoint.load_detector` loads it with
`weights_only=True`), which `deepfake predict` uses.

On a GPU the defaults are bf16 mixed precision and channels_last; several GPUs or nodes go through Lightning's
DDP (`--trainer.devices 8 --trainer.strategy ddp`, plus `--trainer.num_nodes N` under SLURM or torchrun).
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from deepfake.checkpoint import CheckpointError, load_detector, save_detector
from deepfake.data import FaceSequenceDataModule, IndexFileError
from deepfake.lit import DeepfakeLitModule

__all__ = ["DeepfakeCLI", "export_detector", "main"]

SEED = 42
DETECTOR_FILE = "detector.pt"


class UserError(Exception):
    """A configuration or input problem; shown as one line without a traceback."""


def default_precision() -> str:
    """bf16 mixed precision where the GPU supports it, else full precision."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _next_version(root: Path) -> int:
    versions = [int(m.group(1)) for p in root.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(versions, default=-1) + 1


def export_detector(lit: DeepfakeLitModule, checkpoint: str | Path | None, out_dir: str | Path) -> Path:
    """Writes `detector.pt` into `out_dir`: the network of `checkpoint` (a `deepfake fit` .ckpt), or of `lit`.

    Args:
        lit: the trained module (used when there is no checkpoint file, e.g. validation was off).
        checkpoint: the best checkpoint of the run, or None.
        out_dir: where to write.

    Returns:
        The path of the exported file.
    """
    if checkpoint and Path(checkpoint).is_file():
        net, meta = load_detector(checkpoint)  # weights_only=True, as any user of the file will
    else:
        net, meta = lit.net, lit.detector_meta()
    return save_detector(Path(out_dir) / DETECTOR_FILE, net, meta)


class DeepfakeCLI(LightningCLI):
    """LightningCLI with the project's defaults: checkpoints on val/logloss, CSV + TensorBoard logs per run,
    bf16 on GPU, and `detector.pt` exported after `fit`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str, default="runs", help="folder of all runs (default: runs)")
        parser.add_argument("--run_name", type=str, default="deepfake",
                            help="this experiment's subfolder; runs go to RUN_DIR/RUN_NAME/version_N")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/logloss",
            "checkpoint.mode": "min",
            "checkpoint.save_top_k": 1,
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-epoch{epoch:03d}-logloss{val/logloss:.4f}",
            "checkpoint.auto_insert_metric_name": False,
            "trainer.precision": default_precision(),
        })

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError) as e:  # settings rejected by a constructor
            raise UserError(" ".join(str(e).split())) from e

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        logger = self._get(self.config_init, "trainer", default={}).get("logger")
        if logger is None or logger is True:
            # CSV first: its folder is the run folder (checkpoints/, config.yaml); both loggers share it.
            root = Path(self._get(self.config_init, "run_dir")).expanduser()
            name = self._get(self.config_init, "run_name")
            version = _next_version(root / name)
            kwargs["logger"] = [CSVLogger(root, name=name, version=version),
                                TensorBoardLogger(root, name=name, version=version, default_hp_metric=False)]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        out_dir = Path(best).parent if best else Path(callback.dirpath if callback and callback.dirpath
                                                       else trainer.log_dir or ".")
        path = export_detector(self.model, best or None, out_dir)
        score = getattr(callback, "best_model_score", None)
        where = f" (best {callback.monitor} {float(score):.4f}: {best})" if score is not None and best else ""
        print(f"deepfake fit: detector weights in {path}{where}")


def main(args: list[str] | None = None) -> int:
    """`deepfake fit|validate|test [options]` (LightningCLI); returns the exit status.

    Args:
        args: the subcommand and its options, e.g. `["fit", "--config", "configs/tiny_cpu.yaml"]`.
    """
    args = list(sys.argv[1:] if args is None else args)
    command = args[0] if args else "fit"
    # LightningCLI warns when `args` is given while sys.argv holds arguments too, which is how `deepfake` calls us.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # The module (not the datamodule) normalises uint8 frames on the device, on purpose.
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")
    try:
        DeepfakeCLI(
            DeepfakeLitModule,
            FaceSequenceDataModule,
            seed_everything_default=SEED,
            args=args,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,  # the module's own AdamW + schedule, set through model.*
            parser_kwargs={"prog": "deepfake", "description": "Train and evaluate the deepfake detector."},
        )
    except SystemExit as e:  # --help, --print_config, argument errors (already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except (UserError, IndexFileError, CheckpointError) as e:
        print(f"deepfake {command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
