"""Progressive learning (EfficientNetV2, Tan & Le 2021): small crops and weak regularisation first, growing together.

Training is cut into `stages` equal runs of epochs. In stage i of M, the training crops are resized to
size_i, the augmentation strength is magnitude_i and the backbone's dropout is dropout_i, each linearly
interpolated from its minimum (stage 0) to its maximum (the last stage). Small images train fast and need little
regularisation; the last stage trains at full size with full regularisation. Validation, testing and the
exported detector stay at the evaluation size (the datamodule's `img_size`) throughout.

From a training config (any config; `configs/backbones/progressive.yaml` holds this block):

    trainer:
      callbacks:
        - class_path: deepfake.progressive.ProgressiveLearning
          init_args:
            stages: 4
            sizes: [0.5, null]       # <= 1: share of the evaluation size; > 1: pixels; null: the evaluation size
            magnitudes: [0.3, null]  # augment strength; null: the config's data.augment.strength
            dropouts: [0.1, null]    # backbone dropout; null: the config's model.net.drop_rate

How it reaches the data: the callback sets `FaceSequenceDataModule.train_img_size` and `augment.strength`
before the epoch that starts a stage and asks Lightning to rebuild the training loader for that epoch only
(`trainer.reload_dataloaders_every_n_epochs` is 1 for that epoch and the user's value otherwise), so loader
workers are restarted once per stage, not every epoch. The dropout is the backbone's `drop_rate` (timm models
apply it functionally before their head), set at the start of every epoch. A resumed run (`--ckpt_path`) picks up
the stage of the epoch it resumes at. `history` holds what each epoch trained with, and the values are logged as
`progressive/img_size`, `progressive/magnitude` and `progressive/dropout`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torch import nn

__all__ = ["ProgressiveLearning", "Stage", "stage_of_epoch", "interpolate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """What one stage of progressive learning trains with (None: left as configured)."""

    index: int
    img_size: int | None
    magnitude: float | None
    dropout: float | None


def interpolate(low: float, high: float, index: int, stages: int) -> float:
    """Linear interpolation from `low` (stage 0) to `high` (stage `stages - 1`); a single stage takes `high`."""
    if stages <= 1:
        return float(high)
    return float(low) + (float(high) - float(low)) * index / (stages - 1)


def stage_of_epoch(epoch: int, stages: int, max_epochs: int | None = None, epochs_per_stage: int | None = None) -> int:
    """The stage (0-based) that `epoch` (0-based) belongs to.

    Args:
        epoch: the training epoch.
        stages: number of stages.
        max_epochs: total epochs, cut into `stages` near-equal runs (the last epoch is always in the last stage
            when stages <= max_epochs).
        epochs_per_stage: epochs per stage instead (the last stage then lasts until training ends).

    Returns:
        The stage index in [0, stages - 1].
    """
    if epochs_per_stage is not None:
        return min(stages - 1, epoch // epochs_per_stage)
    if max_epochs is None or max_epochs < 1:
        raise ValueError("the schedule needs max_epochs or epochs_per_stage")
    return min(stages - 1, epoch * stages // max_epochs)


def _pair(name: str, value: Any) -> tuple[float, float | None] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair [min, max] (max may be null) or null, got {value!r}")
    low, high = value
    if low is None or isinstance(low, bool) or not isinstance(low, (int, float)):
        raise ValueError(f"{name}: min must be a number, got {low!r}")
    if high is not None and (isinstance(high, bool) or not isinstance(high, (int, float))):
        raise ValueError(f"{name}: max must be a number or null, got {high!r}")
    return float(low), None if high is None else float(high)


class ProgressiveLearning(Callback):
    """Grows the training image size, augmentation strength and dropout together over stages of epochs.

    Args:
        stages: number of stages M (the paper uses 4); capped at the number of epochs.
        sizes: [min, max] training crop side; a value <= 1 is a share of the evaluation size, > 1 pixels; max null
            is the evaluation size (`data.img_size`, else the model's). null: sizes are not changed.
        magnitudes: [min, max] augmentation strength (`data.augment.strength`, 0..2); max null is the configured
            strength. null: not changed.
        dropouts: [min, max] dropout of the backbone's pooled features (timm's `drop_rate`); max null is the
            configured `model.net.drop_rate`. null: not changed.
        epochs_per_stage: epochs in each stage; null cuts `trainer.max_epochs` into `stages` equal runs.
        size_multiple: the sizes of all stages but the last are rounded to a multiple of this (GPU-friendly
            shapes); the last stage trains at exactly the maximum.
    """

    def __init__(
        self,
        stages: int = 4,
        sizes: tuple[float, float | None] | None = (0.5, None),
        magnitudes: tuple[float, float | None] | None = (0.3, None),
        dropouts: tuple[float, float | None] | None = (0.1, None),
        epochs_per_stage: int | None = None,
        size_multiple: int = 8,
    ) -> None:
        super().__init__()
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise ValueError(f"stages must be an integer >= 1, got {stages!r}")
        if epochs_per_stage is not None and (not isinstance(epochs_per_stage, int) or epochs_per_stage < 1):
            raise ValueError(f"epochs_per_stage must be an integer >= 1 or null, got {epochs_per_stage!r}")
        if not isinstance(size_multiple, int) or size_multiple < 1:
            raise ValueError(f"size_multiple must be an integer >= 1, got {size_multiple!r}")
        self.sizes = _pair("sizes", sizes)
        self.magnitudes = _pair("magnitudes", magnitudes)
        self.dropouts = _pair("dropouts", dropouts)
        for v in self.sizes or ():
            if v is not None and not (0 < v <= 1 or (v == int(v) and 16 <= v <= 2048)):
                raise ValueError(f"sizes: {v} is neither a share of the evaluation size in (0, 1] nor a whole number "
                                 f"of pixels in [16, 2048]")
        for v in self.magnitudes or ():
            if v is not None and not 0 <= v <= 2:
                raise ValueError(f"magnitudes must be augmentation strengths in [0, 2], got {v}")
        for v in self.dropouts or ():
            if v is not None and not 0 <= v < 1:
                raise ValueError(f"dropouts must be in [0, 1), got {v}")
        if self.sizes is None and self.magnitudes is None and self.dropouts is None:
            raise ValueError("ProgressiveLearning with sizes, magnitudes and dropouts all null changes nothing")
        self.stages = stages
        self.epochs_per_stage = epochs_per_stage
        self.size_multiple = size_multiple
        self.schedule: list[Stage] = []
        self.history: list[dict[str, Any]] = []
        self._max_epochs: int | None = None
        self._user_reload = 0
        self._data_stage: int | None = None  # the stage whose size/magnitude the datamodule holds
        self._warned_loader = False

    # ------------------------------------------------------------------------------------------------ schedule

    def _size_px(self, value: float, eval_size: int) -> int:
        return int(round(value * eval_size)) if value <= 1 else int(value)

    def build_schedule(self, eval_size: int | None, magnitude: float | None, dropout: float | None,
                       stages: int | None = None) -> list[Stage]:
        """The stages for the given maxima (used when `sizes`/`magnitudes`/`dropouts` give max null).

        Args:
            eval_size: the evaluation crop side (needed when `sizes` is set).
            magnitude: the configured augmentation strength (needed when magnitudes' max is null).
            dropout: the configured backbone dropout (needed when dropouts' max is null).
            stages: number of stages; None: `self.stages`.

        Returns:
            One `Stage` per stage, in order.
        """
        size_range = mag_range = drop_range = None
        if self.sizes is not None:
            if eval_size is None:
                raise ValueError("ProgressiveLearning sizes need the evaluation size: set data.img_size or "
                                 "model.net.img_size")
            low = self._size_px(self.sizes[0], eval_size)
            high = eval_size if self.sizes[1] is None else self._size_px(self.sizes[1], eval_size)
            size_range = (low, high)
        if self.magnitudes is not None:
            mag_range = (self.magnitudes[0], magnitude if self.magnitudes[1] is None else self.magnitudes[1])
        if self.dropouts is not None:
            drop_range = (self.dropouts[0], dropout if self.dropouts[1] is None else self.dropouts[1])
        for name, r in (("sizes", size_range), ("magnitudes", mag_range), ("dropouts", drop_range)):
            if r is not None and (r[1] is None or r[0] > r[1]):
                raise ValueError(f"ProgressiveLearning {name} must grow: min {r[0]} > max {r[1]}; lower the min or "
                                 f"raise the max")
        n = self.stages if stages is None else int(stages)
        schedule = []
        for i in range(n):
            size = None
            if size_range is not None:
                size = size_range[1]
                if i < n - 1:
                    raw = interpolate(*size_range, i, n)
                    size = max(16, int(round(raw / self.size_multiple)) * self.size_multiple)
                    size = min(size, size_range[1])
            mag = None if mag_range is None else interpolate(*mag_range, i, n)
            drop = None if drop_range is None else interpolate(*drop_range, i, n)
            schedule.append(Stage(i, size, mag, drop))
        return schedule

    def stage_index(self, epoch: int) -> int:
        """The stage of a training epoch under the fitted schedule."""
        return stage_of_epoch(epoch, len(self.schedule), self._max_epochs, self.epochs_per_stage)

    # --------------------------------------------------------------------------------------------- targets

    @staticmethod
    def _backbone(pl_module: pl.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", pl_module)
        return getattr(net, "backbone", net)

    @classmethod
    def _get_dropout(cls, pl_module: pl.LightningModule) -> float | None:
        backbone = cls._backbone(pl_module)
        rate = getattr(backbone, "drop_rate", None)
        if isinstance(rate, (int, float)) and not isinstance(rate, bool):
            return float(rate)
        for name, module in backbone.named_modules():
            if isinstance(module, nn.Dropout) and name in ("head_drop", "head.drop"):
                return float(module.p)
        return None

    @classmethod
    def _set_dropout(cls, pl_module: pl.LightningModule, rate: float) -> None:
        backbone = cls._backbone(pl_module)
        if isinstance(getattr(backbone, "drop_rate", None), (int, float)):
            backbone.drop_rate = float(rate)  # timm applies F.dropout(p=self.drop_rate) before its head
        for name, module in backbone.named_modules():
            if isinstance(module, nn.Dropout) and name in ("head_drop", "head.drop"):
                module.p = float(rate)

    def _set_data(self, trainer: pl.Trainer, stage: Stage) -> None:
        dm = trainer.datamodule
        if stage.img_size is not None:
            dm.train_img_size = int(stage.img_size)
        if stage.magnitude is not None:
            if dataclasses.is_dataclass(dm.augment):  # AugmentConfig: a new one, validated by its __post_init__
                dm.augment = dataclasses.replace(dm.augment, strength=float(stage.magnitude))
            else:
                dm.augment.strength = float(stage.magnitude)
        self._data_stage = stage.index

    # ----------------------------------------------------------------------------------------------- hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if self.sizes is not None or self.magnitudes is not None:
            needs = (["img_size", "train_img_size"] if self.sizes is not None else []) + (
                ["augment"] if self.magnitudes is not None else [])
            if dm is None or any(not hasattr(dm, a) for a in needs):
                raise ValueError("ProgressiveLearning sizes/magnitudes need a FaceSequenceDataModule (a datamodule "
                                 f"with {', '.join(needs)}); set them to null to schedule only the dropout")
        eval_size = getattr(dm, "img_size", None)
        if eval_size is None and self.sizes is not None:
            eval_size = getattr(getattr(pl_module, "net", None), "img_size", None)
        magnitude = getattr(getattr(dm, "augment", None), "strength", None)
        dropout = self._get_dropout(pl_module)
        if self.dropouts is not None and dropout is None:
            raise ValueError(f"ProgressiveLearning dropouts: the backbone {type(self._backbone(pl_module)).__name__} "
                             f"has no drop_rate (or head_drop) to schedule; set dropouts to null")
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 1 else None
        if self.epochs_per_stage is None and max_epochs is None:
            raise ValueError("ProgressiveLearning needs trainer.max_epochs (or its epochs_per_stage) to place the "
                             "stages")
        self._max_epochs = max_epochs
        stages = self.stages
        if self.epochs_per_stage is None and stages > max_epochs:
            # More stages than epochs would skip the last stages: training must end at the full size.
            warnings.warn(f"ProgressiveLearning: {stages} stages in {max_epochs} epochs; using {max_epochs} "
                          f"stages of one epoch", UserWarning, stacklevel=2)
            stages = max_epochs
        self.schedule = self.build_schedule(eval_size, magnitude, dropout, stages)
        self._user_reload = int(trainer.reload_dataloaders_every_n_epochs or 0)
        log.info("progressive learning: %s", self.schedule)
        # Now, not at on_fit_start: configure_optimizers may build the training loader already (a schedule asking
        # for trainer.estimated_stepping_batches), and that first loader serves the first epoch.
        self._apply_epoch(trainer, pl_module, trainer.current_epoch)

    def _apply_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        stage = self.schedule[self.stage_index(epoch)]
        self._set_data(trainer, stage)
        if stage.dropout is not None:
            self._set_dropout(pl_module, stage.dropout)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Resuming: restored before the first training loader is built (for Lightning's usual strategies), so the
        # loader of the resumed epoch gets its stage's settings. The epoch is the fit loop's count of processed
        # epochs, which is what Lightning resumes at.
        try:
            epoch = int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
        except (KeyError, TypeError, ValueError):
            epoch = checkpoint.get("epoch")
            epoch = int(epoch) + 1 if isinstance(epoch, int) else None
        if epoch is not None and self.schedule:
            self._apply_epoch(trainer, pl_module, epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The loader of this epoch is built by now: back to the user's reload setting until the next stage.
        trainer.reload_dataloaders_every_n_epochs = self._user_reload
        epoch = trainer.current_epoch
        stage = self.schedule[self.stage_index(epoch)]
        if stage.dropout is not None:
            self._set_dropout(pl_module, stage.dropout)
        loader = trainer.train_dataloader
        built = getattr(getattr(loader, "dataset", None), "img_size", None)
        if stage.img_size is not None and built is not None and built != stage.img_size and not self._warned_loader:
            self._warned_loader = True
            warnings.warn(f"ProgressiveLearning: epoch {epoch} trains at {built} px instead of stage "
                          f"{stage.index}'s {stage.img_size} px (the loader was built before the schedule could "
                          f"apply); the next stage applies as planned", UserWarning, stacklevel=2)
        dm = trainer.datamodule
        entry = {"epoch": epoch, "stage": stage.index,
                 "img_size": built if built is not None else getattr(dm, "train_img_size", None),
                 "magnitude": getattr(getattr(dm, "augment", None), "strength", None),
                 "dropout": self._get_dropout(pl_module)}
        self.history.append(entry)
        for key in ("img_size", "magnitude", "dropout"):
            if entry[key] is not None and math.isfinite(float(entry[key])):
                pl_module.log(f"progressive/{key}", float(entry[key]), on_step=False, on_epoch=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        nxt = self.schedule[self.stage_index(trainer.current_epoch + 1)]
        if nxt.index != self._data_stage and (nxt.img_size is not None or nxt.magnitude is not None):
            self._set_data(trainer, nxt)
            trainer.reload_dataloaders_every_n_epochs = 1  # rebuild the training loader for the next epoch

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
