"""Training logic: the LightningModule around `DeepfakeDetector` (loss, optimiser, schedule, video-level metrics).

Validation and test are scored the way `deepfake predict` scores videos (docs/architecture.md "Scores"): a
window's p(fake) is the sigmoid of its last step, a track's p(fake) the mean over its windows, a video's the
maximum over its tracks; the metrics (`deepfake.metrics.binary_metrics`: log loss with probabilities clipped to
[0.01, 0.99], balanced log loss, AUC, accuracy, AP) are computed per video and logged per epoch as
`val/logloss`, `val/balanced_logloss`, `val/auc`, `val/acc`, `val/ap` (and `test/...`); with several kinds of fakes
made on the fly, also `val/auc_<kind>` (each kind's fakes against the reals). Under DDP every rank's
window scores are gathered first, so the metrics are those of the whole set.

Each validation also keeps every window's raw last-step logit (`validation_windows`), and every checkpoint saved
right after a validation carries them (`"validation_windows"`): what `deepfake.train` fits the exported
detector's calibration on (`deepfake.calibration`), for exactly the weights of the checkpoint it exports.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, is_dataclass
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch

from deepfake.checkpoint import build_meta
from deepfake.losses import SequenceBCELoss, chance_loss
from deepfake.metrics import binary_metrics
from deepfake.model import DeepfakeDetector, DetectorConfig, last_valid
from deepfake.scoring import video_scores

__all__ = ["DeepfakeLitModule"]

# binary_metrics key -> logged name
_LOGGED = {"logloss": "logloss", "balanced_logloss": "balanced_logloss", "auc": "auc", "accuracy": "acc", "ap": "ap"}


class DeepfakeLitModule(pl.LightningModule):
    """Trains a `DeepfakeDetector` with the sum-over-time BCE loss.

    Args:
        net: the network's settings (`DetectorConfig`).
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay (not applied to biases and normalisation weights).
        backbone_lr_scale: learning rate of the backbone relative to `lr` (below 1 keeps pretrained features).
        scheduler: "cosine" (linear warm-up, then cosine decay to `min_lr_ratio * lr`), "onecycle" or "none";
            stepped every optimiser step.
        warmup: fraction of the training steps spent warming up.
        min_lr_ratio: final learning rate of the cosine schedule, relative to `lr`.
        label_smoothing: binary label smoothing of the loss targets (DFDC winners: about 0.01).
        channels_last: channels_last memory format for the backbone; None: on when training on CUDA.
        compile: `torch.compile` the backbone (first steps are slow while it compiles).
    """

    def __init__(
        self,
        net: DetectorConfig | None = None,
        lr: float = 3e-4,
        weight_decay: float = 1e-2,
        backbone_lr_scale: float = 1.0,
        scheduler: Literal["cosine", "onecycle", "none"] = "cosine",
        warmup: float = 0.05,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.01,
        channels_last: bool | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(net, dict):
            net = DetectorConfig(**net)
        net = net if net is not None else DetectorConfig()
        checks = [
            (lr > 0, f"lr must be > 0, got {lr}"),
            (weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}"),
            (backbone_lr_scale >= 0, f"backbone_lr_scale must be >= 0, got {backbone_lr_scale}"),
            (scheduler in ("cosine", "onecycle", "none"),
             f"scheduler must be cosine, onecycle or none, got {scheduler!r}"),
            (0 <= warmup < 1, f"warmup must be a fraction of training in [0, 1), got {warmup}"),
            (0 <= min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.save_hyperparameters()
        # Plain containers only, so that the Lightning checkpoint loads with torch.load(weights_only=True).
        for key, value in list(self.hparams.items()):
            if is_dataclass(value):
                self.hparams[key] = asdict(value)
        self.net = DeepfakeDetector(net)
        self.criterion = SequenceBCELoss(label_smoothing)
        # uint8 -> normalised float in one multiply-add: x * scale + shift == (x / 255 - mean) / std.
        mean, std = torch.tensor(self.net.mean), torch.tensor(self.net.std)
        self.register_buffer("_scale", (1.0 / (255.0 * std)).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_shift", (-mean / std).view(1, 1, 3, 1, 1), persistent=False)
        self.lr, self.weight_decay, self.backbone_lr_scale = lr, weight_decay, backbone_lr_scale
        self.scheduler, self.warmup, self.min_lr_ratio = scheduler, warmup, min_lr_ratio
        self.channels_last, self.compile_backbone = channels_last, compile
        self._compiled = False
        # Recorded in checkpoints when no datamodule with `extraction_meta()` is attached (plain dataloaders):
        # the defaults of the datamodule and of extraction; set it to what the data really is.
        self.data_meta: dict[str, Any] = {"seq_len": 10, "margin": 0.3, "stride": 5}
        self._outputs: dict[str, list[dict[str, torch.Tensor]]] = {"val": [], "test": []}
        # The last epoch's p(fake) per video, by video name where the datamodule names them (else by number).
        self.video_scores: dict[str, dict[str | int, float]] = {"val": {}, "test": {}}
        # The last validation's windows (index, track, video, label, raw last-step logit) and its global step.
        self.validation_windows: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------------- setup

    def setup(self, stage: str) -> None:
        on_cuda = self.trainer.strategy.root_device.type == "cuda"
        if self.channels_last if self.channels_last is not None else on_cuda:
            self.net.set_channels_last(True)
        if self.compile_backbone and not self._compiled:
            self.net.backbone.compile()  # in place: parameter names (and checkpoints) stay the same
            self._compiled = True

    def detector_meta(self) -> dict[str, Any]:
        """`deepfake.checkpoint` meta for this network and the data it is trained on."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data = dm.extraction_meta() if hasattr(dm, "extraction_meta") else self.data_meta
        return build_meta(self.net, **{k: data.get(k) for k in ("seq_len", "margin", "stride", "extraction")})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets deepfake.checkpoint.load_detector rebuild the network from the .ckpt alone.
        checkpoint["detector_meta"] = self.detector_meta()
        windows = self.validation_windows
        if windows is not None and windows["step"] == self.global_step:  # saved right after this validation
            checkpoint["validation_windows"] = {k: torch.from_numpy(v) for k, v in windows.items() if k != "step"}

    # ------------------------------------------------------------------------------------------------- steps

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        frames = batch["frames"]
        if frames.dtype == torch.uint8:
            batch["frames"] = torch.addcmul(self._shift, frames.float(), self._scale)  # (B, T, 3, H, W)
        return batch

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, H, W) normalised frames -> (B, T) logits."""
        return self.net(frames, lengths)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.net(batch["frames"], batch["length"])
        loss = self.criterion(logits, batch["label"], batch["length"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        # what a guess that ignores the frames would score: `after_fit` says so when the loss ends near it
        chance = chance_loss(batch["label"], batch["length"], logits.shape[1], self.criterion.label_smoothing)
        self.log("train/chance", chance, on_step=False, on_epoch=True, batch_size=len(logits))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        logits = self.net(batch["frames"], batch["length"])
        loss = self.criterion(logits, batch["label"], batch["length"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(logits))
        logit = last_valid(logits, batch["length"]).float().detach()
        self._outputs[stage].append({"index": batch["index"], "track": batch["track"], "video": batch["video"],
                                     "label": batch["label"].long(), "prob": torch.sigmoid(logit), "logit": logit})

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"].clear()

    def on_test_epoch_start(self) -> None:
        self._outputs["test"].clear()

    def on_validation_epoch_end(self) -> None:
        self._log_video_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_video_metrics("test")

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenation of `t` (1-D) over all processes; ranks may hold different lengths."""
        if self.trainer.world_size == 1:
            return t
        from torchmetrics.utilities.distributed import gather_all_tensors

        return torch.cat(gather_all_tensors(t))

    def _log_video_metrics(self, stage: str) -> None:
        outputs = self._outputs[stage]
        keys = ("index", "track", "video", "label", "prob", "logit")
        cat = {k: torch.cat([o[k] for o in outputs]) if outputs else
               torch.zeros(0, device=self.device, dtype=torch.float32 if k in ("prob", "logit") else torch.long)
               for k in keys}
        arrays = {k: self._gather(v).cpu().numpy() for k, v in cat.items()}
        outputs.clear()
        if len(arrays["index"]) == 0:
            return
        if stage == "val" and not self.trainer.sanity_checking:
            self.validation_windows = {"step": int(self.global_step),
                                       **{k: arrays[k] for k in ("index", "track", "video", "label", "logit")}}
        ids, y, p = video_scores(arrays["index"], arrays["track"], arrays["video"], arrays["label"], arrays["prob"])
        dm = getattr(self.trainer, "datamodule", None)
        names = dm.eval_dataset(stage).videos if hasattr(dm, "eval_dataset") else None
        self.video_scores[stage] = {(names[i] if names is not None else int(i)): float(q) for i, q in zip(ids, p)}
        metrics = binary_metrics(y, p)
        # Identical on every rank after the gather, so no further reduction.
        for key, name in _LOGGED.items():
            if metrics[key] is not None:
                self.log(f"{stage}/{name}", float(metrics[key]), prog_bar=name in ("logloss", "auc"), sync_dist=False)
        # Real-only training with several fake kinds: the AUC of each kind against the reals (`val/auc_<kind>`).
        kind_of = getattr(dm.eval_dataset(stage), "fake_kind_of_video", {}) if hasattr(dm, "eval_dataset") else {}
        kinds = np.array([kind_of.get(int(i), "") for i in ids])
        for kind in sorted(set(kind_of.values())):
            keep = (y == 0) | (kinds == kind)
            auc = binary_metrics(y[keep], p[keep]).get("auc")
            if auc is not None:
                self.log(f"{stage}/auc_{kind}", float(auc), sync_dist=False)

    # --------------------------------------------------------------------------------------------- optimiser

    def configure_optimizers(self) -> dict[str, Any]:
        groups = []
        for part, scale in ((self.net.backbone, self.backbone_lr_scale),
                            (torch.nn.ModuleList([self.net.lstm, self.net.fc]), 1.0)):
            decay, no_decay = [], []
            for name, p in part.named_parameters():
                if p.requires_grad:
                    (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
            groups += [{"params": decay, "lr": self.lr * scale, "weight_decay": self.weight_decay},
                       {"params": no_decay, "lr": self.lr * scale, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler == "none":
            return {"optimizer": optimizer}
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total < 1:
            warnings.warn("the number of training steps is unbounded (no max_epochs/max_steps); using a constant "
                          "learning rate", UserWarning, stacklevel=2)
            return {"optimizer": optimizer}
        total = int(total)
        if self.scheduler == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[g["lr"] for g in groups], total_steps=total, pct_start=max(self.warmup, 1e-3),
                cycle_momentum=False, div_factor=25.0, final_div_factor=1.0 / max(25.0 * self.min_lr_ratio, 1e-9))
        else:
            warmup_steps = int(self.warmup * total)
            floor = self.min_lr_ratio

            def cosine(step: int) -> float:
                if step < warmup_steps:
                    return (step + 1) / (warmup_steps + 1)
                progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
