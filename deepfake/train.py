r"""Training: the detector's LightningCLI (`deepfake fit | validate | test`) and `fit()` for code that trains.

    deepfake fit --config configs/b1_lstm.yaml --data.index out/extracted
    deepfake fit --config configs/b1_lstm.yaml --data.index out/extracted \
        --ckpt_path runs/b1_lstm/version_0/checkpoints/last.ckpt          # resume (into a new version_N)
    deepfake validate --config runs/b1_lstm/version_0/config.yaml --ckpt_path runs/.../best-....ckpt
    deepfake fit --config configs/b1_lstm.yaml --print_config        # the full resolved configuration

Every run writes to RUN_DIR/RUN_NAME/version_N/ (`--run_dir`, `--run_name`; default runs/deepfake): the resolved
`config.yaml`, `metrics.csv` (CSV logger), TensorBoard events, and `checkpoints/` with the best checkpoint by
`val/balanced_logloss` (the mean of the real and fake classes' log losses; `--checkpoint.*` configures it) and
`last.ckpt`. After `fit`, the best network is exported as `checkpoints/detector.pt` (plain weights + settings;
`deepfake.checkpoint.load_detector` loads it with `weights_only=True`), which `deepfake predict` uses. Its meta holds
a calibration fitted on that checkpoint's validation videos (`deepfake.calibration`: a temperature, maybe a bias;
skipped, and said so, when the validation set is too small), which predict, evaluate and submit apply unless told
`--no-calibration`.

On a GPU the defaults are bf16 mixed precision and channels_last; several GPUs or nodes go through Lightning's
DDP (`--trainer.devices 8 --trainer.strategy ddp`, plus `--trainer.num_nodes N` under SLURM or torchrun).
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from deepfake.calibration import VideoLogits, describe, fit_calibration
from deepfake.checkpoint import load_detector, refusal, safe_load, save_detector
from deepfake.data import FaceSequenceDataModule
from deepfake.lit import DeepfakeLitModule
from deepfake.losses import STALLED_RATIO, learned_nothing

__all__ = ["DeepfakeCLI", "UserError", "export_detector", "validation_calibration", "lightning_cli", "fit",
           "FitResult"]

log = logging.getLogger(__name__)

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


def validation_calibration(lit: DeepfakeLitModule, checkpoint: str | Path | None) -> dict[str, Any]:
    """The calibration record (`deepfake.calibration.fit_calibration`) fitted on the validation windows saved with
    `checkpoint`, or, without a checkpoint file, on `lit`'s last validation when it scored the current weights.
    Without such windows (validation off, a checkpoint of an older version) the record says it was skipped."""
    windows = None
    if checkpoint and Path(checkpoint).is_file():
        saved = safe_load(checkpoint)
        found = saved.get("validation_windows") if isinstance(saved, dict) else None
        windows = {k: v.numpy() for k, v in found.items()} if isinstance(found, dict) else None
    elif lit.validation_windows is not None and lit.validation_windows["step"] == lit.global_step:
        windows = lit.validation_windows
    if not windows or not len(windows.get("index", ())):
        return {"temperature": None, "bias": None, "fitted_on": "fit validation",
                "skipped": "no validation scores were kept with the exported weights (validation off, or a "
                           "checkpoint written before calibration existed): scores left raw"}
    data = VideoLogits.from_windows(*(windows[k] for k in ("index", "track", "video", "label", "logit")))
    return fit_calibration(data, "fit validation")


def export_detector(lit: DeepfakeLitModule, checkpoint: str | Path | None, out_dir: str | Path,
                    calibration: dict[str, Any] | None = None, validation: dict[str, Any] | None = None) -> Path:
    """Writes `detector.pt` into `out_dir`: the network of `checkpoint` (a `deepfake fit` .ckpt), or of `lit`.

    Args:
        lit: the trained module (used when there is no checkpoint file, e.g. validation was off).
        checkpoint: the best checkpoint of the run, or None.
        out_dir: where to write.
        calibration: a calibration record for the meta (`validation_calibration`), or None for none.
        validation: what the checkpoint's choice and the calibration were fitted on (the meta's `validation`,
            `FaceSequenceDataModule.validation_meta`), or None.

    Returns:
        The path of the exported file.
    """
    if checkpoint and Path(checkpoint).is_file():
        net, meta = load_detector(checkpoint)  # weights_only=True, as any user of the file will
    else:
        net, meta = lit.net, lit.detector_meta()
    if calibration is not None:
        meta = {**meta, "calibration": calibration}
    if validation is not None:
        meta = {**meta, "validation": validation}
    return save_detector(Path(out_dir) / DETECTOR_FILE, net, meta)


class DeepfakeCLI(LightningCLI):
    """LightningCLI with the project's defaults: checkpoints on val/balanced_logloss, CSV + TensorBoard logs per run,
    bf16 on GPU, and `detector.pt` exported after `fit`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str, default="runs", help="folder of all runs (default: runs)")
        parser.add_argument("--run_name", type=str, default="deepfake",
                            help="this experiment's subfolder; runs go to RUN_DIR/RUN_NAME/version_N")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            # Balanced: training draws real and fake alike, while validation sets rarely are (DFDC: 84 % fake).
            "checkpoint.monitor": "val/balanced_logloss",
            "checkpoint.mode": "min",
            "checkpoint.save_top_k": 1,
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-epoch{epoch:03d}-balanced_logloss{val/balanced_logloss:.4f}",
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

    def _parse_ckpt_path(self) -> None:
        # Lightning reads `--ckpt_path` here (weights_only=True) and lets PyTorch's paragraph-long refusal through
        # as a traceback: say it in one line instead.
        try:
            super()._parse_ckpt_path()
        except pickle.UnpicklingError as e:
            sub = self.config.get("subcommand")
            raise UserError(refusal(self.config[sub].get("ckpt_path"), str(e))) from None

    def after_fit(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        out_dir = Path(best).parent if best else Path(callback.dirpath if callback and callback.dirpath
                                                       else trainer.log_dir or ".")
        calibration = validation_calibration(self.model, best or None)
        validation = self.datamodule.validation_meta() if hasattr(self.datamodule, "validation_meta") else None
        path = export_detector(self.model, best or None, out_dir, calibration, validation)
        self.detector_path = path
        score = getattr(callback, "best_model_score", None)
        where = f" (best {callback.monitor} {float(score):.4f}: {best})" if score is not None and best else ""
        # what the command prints when the run ends (`deepfake.cli.train`); the library only records it
        self.fit_report = [f"detector weights in {path}{where}", f"calibration: {describe(calibration)}"]
        onnx = write_onnx_copy(path)
        if onnx:
            self.fit_report.append(onnx)
        for line in self.fit_report:
            log.info(line)
        stalled = stalled_training(trainer.callback_metrics)
        if stalled:  # last, so a reader of the report (fit() returns it) sees it beside the weights' path
            self.fit_report.append(f"warning: {stalled}")


def stalled_training(metrics: dict[str, Any]) -> str | None:
    """One line when the last training epoch's loss ended at `STALLED_RATIO` of a constant guess's or above (the
    network learned nothing and its detector scores at chance), else None; `metrics` as Lightning's
    `callback_metrics` (`train/loss_epoch`, `train/chance`)."""
    loss, chance = metrics.get("train/loss_epoch"), metrics.get("train/chance")
    if loss is None or chance is None or not learned_nothing(float(loss), float(chance)):
        return None
    return (f"the last epoch's training loss {float(loss):.3f} is {float(loss) / float(chance):.2f} x a constant "
            f"guess's ({float(chance):.3f}; >= {STALLED_RATIO} means stalled): this run learned nothing and its "
            f"detector scores at chance. Train again with another seed_everything, a lower model.lr or more "
            f"trainer.max_steps (docs/training.md)")


def write_onnx_copy(weights: Path) -> str | None:
    """`detector.onnx` beside `detector.pt` when the export extra is installed (what predict, evaluate, serve and
    submit score with on a CPU: `deepfake.fastpath`), checked against PyTorch; a line saying what happened, or None
    without ONNX Runtime. A model that can't be exported keeps its detector.pt (the fast path exports nothing)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
        return None
    from deepfake.export import export_detector as export_file
    from deepfake.runtime import ExportError

    try:
        result = export_file(weights, "onnx")
    except (ExportError, OSError) as err:
        return f"no detector.onnx written ({err}); predict scores with the PyTorch weights"
    return f"ONNX copy for CPU inference in {result.path} (logits within {result.max_error:.1e} of PyTorch's)"


def lightning_cli(args: list[str], trainer_defaults: dict[str, Any] | None = None) -> DeepfakeCLI:
    """Run `DeepfakeCLI` with a subcommand and its options, e.g. `["fit", "--config", "configs/tiny_cpu.yaml"]`.

    Raises:
        SystemExit: --help, --print_config, or an argument error (already printed by jsonargparse).
        UserError, IndexFileError, CheckpointError: a configuration or input problem (one line).
    """
    # LightningCLI warns when `args` is given while sys.argv holds arguments too, which is how `deepfake` calls us.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # The module (not the datamodule) normalises uint8 frames on the device, on purpose.
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")
    return DeepfakeCLI(
        DeepfakeLitModule,
        FaceSequenceDataModule,
        seed_everything_default=SEED,
        args=args,
        trainer_defaults=trainer_defaults or {},
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the module's own AdamW + schedule, set through model.*
        parser_kwargs={"prog": "deepfake", "description": "Train and evaluate the deepfake detector."},
    )


@dataclass
class FitResult:
    """What a training run left: its folder (config.yaml, metrics.csv, checkpoints/) and `detector.pt`."""

    run_dir: Path
    weights: Path
    report: list[str] = field(default_factory=list)  # what `deepfake fit` prints at the end, one line each


def option_text(value: Any) -> str:
    """A setting as it is typed after `--key` on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def set_options(config: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Dotted settings (`{"data.fakes.kinds": {...}}`) written into a config's nested dicts, in place; returns it.
    A dict value goes in whole, where `--key VALUE` on a command line would be merged into what is there."""
    for key, value in options.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def fit(config: str | Path, overrides: dict[str, Any] | None = None, callbacks: list | None = None) -> FitResult:
    """Train a detector from a config file, as `deepfake fit --config CONFIG --KEY VALUE ...` does.

    Args:
        config: a training config (YAML).
        overrides: dotted settings on top of it, e.g. `{"data.index": "out/extracted", "trainer.max_epochs": 20}`.
        callbacks: Lightning callbacks added to the trainer's (e.g. a progress reporter).

    Returns:
        The run folder and the exported `detector.pt`.

    Raises:
        UserError: a bad setting, or the run exported no weights.
    """
    args = ["fit", "--config", str(config)]
    for key, value in (overrides or {}).items():
        args += [f"--{key}", option_text(value)]
    try:
        cli = lightning_cli(args, {"callbacks": list(callbacks or [])})
    except SystemExit as exit_:
        raise UserError(f"training settings rejected (exit status {exit_.code}): {' '.join(args)}") from None
    weights = getattr(cli, "detector_path", None)
    if weights is None:
        raise UserError("training finished without exporting detector weights")
    return FitResult(run_dir=Path(cli.trainer.log_dir or weights.parent.parent), weights=Path(weights),
                     report=list(getattr(cli, "fit_report", [])))
