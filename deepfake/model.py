"""The detector network: a timm backbone per frame, an LSTM over the frames of a face track, one logit per step.

    x (B, T, 3, H, W) -> backbone, pooled -> (B, T, F) -> LSTM(512) -> Linear -> (B, T) logits

The LSTM is unidirectional by default, so step t only sees frames 0..t and the clip's score is the last valid
step (DeeperForensics-1.0's recipe; docs/architecture.md "Scores"). The module knows nothing of training: the
LightningModule in `deepfake.lit` owns the loss, optimiser and metrics.

    net = DeepfakeDetector(backbone="efficientnet_b1", pretrained=True)
    logits = net(x, lengths)                  # (B, T); padded steps (t >= length) are garbage, mask them
    p_fake = torch.sigmoid(last_valid(logits, lengths))
    net.img_size, net.mean, net.std           # what inputs must look like (from timm's pretrained config)

`temporal: frame` replaces the LSTM by a linear head on each frame (the ablation's frame model): step t then outputs
the logit of the mean of the per-frame p(fake) of frames 0..t, so the last step, the one `deepfake.scoring` reads,
is the mean of the window's frame scores, and scoring, training and explanations need no second rule.

Inputs are RGB scaled to [0, 1] and normalised with `mean`/`std`. Constructor keywords are those of
`DetectorConfig`; `net.kwargs()` gives them back for `deepfake.checkpoint.save_detector`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["DetectorConfig", "DeepfakeDetector", "last_valid", "valid_mask", "running_mean_logits", "TEMPORAL_HEADS"]

TEMPORAL_HEADS = ("lstm", "frame")

@dataclass
class DetectorConfig:
    """Settings of `DeepfakeDetector`; they are its constructor keywords and what a checkpoint records.

    Args:
        backbone: any timm model name (`timm.list_models()`), e.g. `efficientnet_b1`, `tf_efficientnetv2_s`,
            `resnet50`; a pretrained tag (`efficientnet_b1.ra4_e3600_r240_in1k`) picks those weights.
        pretrained: start from ImageNet weights: downloaded by timm, or read from `pretrained_file`. Without
            network access and without a file, training starts from random weights with a warning.
        pretrained_file: a local weights file (.pth, .bin or .safetensors, as timm publishes them) for offline
            use, e.g. on Kaggle.
        img_size: side of the square input crops; None takes the backbone's own pretrained resolution
            (B1: 240, B4: 380). Convolutional backbones accept any size.
        drop_rate: dropout on the pooled per-frame features (timm's `drop_rate`).
        drop_path_rate: stochastic depth of the backbone (timm's `drop_path_rate`).
        lstm_hidden: LSTM hidden units.
        lstm_layers: stacked LSTM layers.
        lstm_dropout: dropout between stacked LSTM layers (needs lstm_layers > 1).
        bidirectional: a bidirectional LSTM; the last step then also sees the future of the window, which is
            fine for scoring whole windows but breaks the "step t sees frames <= t" reading. Off by default.
        head_dropout: dropout on the LSTM outputs before the final linear layer.
        backbone_kwargs: extra keywords for `timm.create_model` (e.g. `{"img_size": 384}` for a ViT).
        temporal: ``lstm`` (the LSTM over the frames) or ``frame`` (a linear head per frame, the step's output the
            running mean of the frame probabilities; the `lstm_*` and `bidirectional` settings are then unused).
            Checkpoints from before this setting are LSTM models.
    """

    backbone: str = "efficientnet_b1"
    pretrained: bool = True
    pretrained_file: str | None = None
    img_size: int | None = None
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0
    lstm_hidden: int = 512
    lstm_layers: int = 1
    lstm_dropout: float = 0.0
    bidirectional: bool = False
    head_dropout: float = 0.0
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    temporal: str = "lstm"

    def __post_init__(self) -> None:
        if self.temporal not in TEMPORAL_HEADS:
            raise ValueError(f"temporal must be one of {', '.join(TEMPORAL_HEADS)}, got {self.temporal!r}")
        if not isinstance(self.backbone, str) or not timm.is_model(self.backbone):
            raise ValueError(f"backbone {self.backbone!r} is not a timm model; see timm.list_models() "
                             f"(e.g. efficientnet_b1, tf_efficientnetv2_s, resnet50)")
        if self.img_size is not None and not (isinstance(self.img_size, int) and 16 <= self.img_size <= 2048):
            raise ValueError(f"img_size must be an integer in [16, 2048] or null (the backbone's own), "
                             f"got {self.img_size!r}")
        for name in ("drop_rate", "drop_path_rate", "lstm_dropout", "head_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.lstm_hidden < 1 or self.lstm_layers < 1:
            raise ValueError(f"lstm_hidden and lstm_layers must be >= 1, got {self.lstm_hidden}, {self.lstm_layers}")
        if self.pretrained_file is not None:
            self.pretrained_file = str(self.pretrained_file)
        self.backbone_kwargs = dict(self.backbone_kwargs or {})


def _create_backbone(cfg: DetectorConfig) -> nn.Module:
    """timm backbone without classifier (pooled features), pretrained when asked and possible."""
    kwargs = dict(num_classes=0, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate, **cfg.backbone_kwargs)
    if not cfg.pretrained:
        return timm.create_model(cfg.backbone, pretrained=False, **kwargs)
    if cfg.pretrained_file:
        path = Path(os.path.expanduser(cfg.pretrained_file))
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_file {path} does not exist; give a timm weights file "
                                    f"(.pth/.bin/.safetensors) for {cfg.backbone}, or pretrained_file: null")
        return timm.create_model(cfg.backbone, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    try:
        return timm.create_model(cfg.backbone, pretrained=True, **kwargs)
    except Exception as e:  # offline, hub unreachable, or no published weights: train from scratch, loudly
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        warnings.warn(
            f"could not get ImageNet weights for {cfg.backbone} ({type(e).__name__}: {reason}); the backbone "
            f"starts from RANDOM weights. Offline, pass pretrained_file=PATH (a timm .pth/.safetensors file); "
            f"pretrained=False silences this warning.",
            UserWarning,
            stacklevel=3,
        )
        return timm.create_model(cfg.backbone, pretrained=False, **kwargs)


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True at the valid (unpadded) steps."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def running_mean_logits(frame_logits: torch.Tensor) -> torch.Tensor:
    """(B, T) per-frame logits -> (B, T): at step t the logit of the mean of sigmoid(logit) over frames 0..t.

    log(mean p) - log(mean (1 - p)) = log(cumsum p) - log(cumsum (1 - p)), with 1 - p taken as sigmoid(-logit) so
    that both sums keep their precision; ops that ONNX export supports (logcumsumexp is not one of them).
    """
    tiny = torch.finfo(frame_logits.dtype).tiny
    return (torch.log(torch.sigmoid(frame_logits).cumsum(dim=1).clamp_min(tiny))
            - torch.log(torch.sigmoid(-frame_logits).cumsum(dim=1).clamp_min(tiny)))


def last_valid(logits: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The logit of each sequence's last valid step: (B, T) -> (B,); the clip's score."""
    if lengths is None:
        return logits[:, -1]
    index = (lengths.to(device=logits.device, dtype=torch.long) - 1).clamp(min=0)
    return logits.gather(1, index[:, None]).squeeze(1)


class DeepfakeDetector(nn.Module):
    """timm backbone -> LSTM -> Linear: (B, T, 3, H, W) frames of a face track to (B, T) fake logits.

    Args:
        config: the settings; or give `DetectorConfig`'s fields as keywords instead.
        **kwargs: `DetectorConfig` fields (used when `config` is None).
    """

    def __init__(self, config: DetectorConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise TypeError("give either a DetectorConfig or keywords, not both")
        self.config = config if config is not None else DetectorConfig(**kwargs)
        cfg = self.config
        self.backbone = _create_backbone(cfg)
        # The pooled feature size: timm's `head_hidden_size` where a model has a head conv after pooling
        # (MobileNetV3: 960 before it, 1024/1280 after), else `num_features`.
        self.num_features = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)
        self.lstm: nn.LSTM | None = None
        if cfg.temporal == "lstm":
            self.lstm = nn.LSTM(
                input_size=self.num_features,
                hidden_size=cfg.lstm_hidden,
                num_layers=cfg.lstm_layers,
                dropout=cfg.lstm_dropout if cfg.lstm_layers > 1 else 0.0,
                bidirectional=cfg.bidirectional,
                batch_first=True,
            )
        self.head_drop = nn.Dropout(cfg.head_dropout)
        head_in = cfg.lstm_hidden * (2 if cfg.bidirectional else 1) if self.lstm is not None else self.num_features
        self.fc = nn.Linear(head_in, 1)
        data_cfg = timm.data.resolve_model_data_config(self.backbone)
        self.img_size: int = int(cfg.img_size or data_cfg["input_size"][-1])
        self.mean: tuple[float, ...] = tuple(float(v) for v in data_cfg["mean"])
        self.std: tuple[float, ...] = tuple(float(v) for v in data_cfg["std"])
        self.channels_last = False

    # ------------------------------------------------------------------------------------------------ settings

    def kwargs(self) -> dict[str, Any]:
        """Constructor keywords that rebuild this architecture without downloading anything (pretrained off)."""
        out = asdict(self.config)
        out.update(pretrained=False, pretrained_file=None, img_size=self.img_size)
        return out

    @property
    def data_config(self) -> dict[str, Any]:
        """What inputs must look like: `img_size`, `mean`, `std` (RGB in [0, 1], then (x - mean) / std)."""
        return {"img_size": self.img_size, "mean": list(self.mean), "std": list(self.std)}

    def set_channels_last(self, enabled: bool = True) -> DeepfakeDetector:
        """Run the backbone in channels_last memory format (faster convolutions with tensor cores)."""
        self.channels_last = bool(enabled)
        self.backbone.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    # ------------------------------------------------------------------------------------------------- forward

    def _pooled(self, frames: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        return self.backbone(frames)  # (N, F), pooled (and dropped out with drop_rate)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame pooled backbone features: (B, T, 3, H, W) -> (B, T, F).

        Padded frames (t >= length) are not run through the backbone (their features are zero), so they cost
        nothing and do not enter batch-norm statistics.
        """
        if x.ndim != 5:
            raise ValueError(f"expected frames of shape (B, T, 3, H, W), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        frames = x.flatten(0, 1)  # (B*T, 3, H, W)
        if lengths is not None:
            lengths = self._check_lengths(lengths, b, t)
        if lengths is None or bool((lengths == t).all()):
            return self._pooled(frames).view(b, t, -1)
        keep = valid_mask(lengths, t).flatten()  # (B*T,)
        pooled = self._pooled(frames[keep])  # (N_valid, F)
        feats = pooled.new_zeros(b * t, pooled.shape[-1])
        feats[keep] = pooled
        return feats.view(b, t, -1)

    def forward_head(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Temporal head: (B, T, F) features -> (B, T) logits.

        Runs in float32 even under autocast: it is a small part of the cost, and an LSTM's recurrence is where
        reduced precision hurts.
        """
        b, t = feats.shape[:2]
        with torch.autocast(device_type=feats.device.type, enabled=False):
            feats = feats.float()
            if self.lstm is None:  # the frame model
                return running_mean_logits(self.fc(self.head_drop(feats)).squeeze(-1))
            if lengths is not None and self.config.bidirectional:
                # Only a bidirectional LSTM needs packing: the backward direction must start at the last valid
                # step. Forward-only, padding after the valid steps cannot change them.
                lengths = self._check_lengths(lengths, b, t)
                packed = pack_padded_sequence(feats, lengths.cpu(), batch_first=True, enforce_sorted=False)
                out, _ = self.lstm(packed)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
            else:
                out, _ = self.lstm(feats)  # (B, T, H)
            return self.fc(self.head_drop(out)).squeeze(-1)  # (B, T)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (B, T, 3, H, W), optional valid lengths (B,) -> (B, T) logits (one per step)."""
        return self.forward_head(self.forward_features(x, lengths), lengths)

    @staticmethod
    def _check_lengths(lengths: torch.Tensor, b: int, t: int) -> torch.Tensor:
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (b,):
            raise ValueError(f"lengths must have shape ({b},), got {tuple(lengths.shape)}")
        if bool((lengths < 1).any()) or bool((lengths > t).any()):
            raise ValueError(f"lengths must be in [1, {t}], got {lengths.tolist()}")
        return lengths
