"""The backbone family (EfficientNet-B0..B7, EfficientNetV2-S/M/L, ResNet-50) and EfficientNet's compound scaling.

Each backbone has a training config, `configs/backbones/TIMM_NAME.yaml`, whose crop size is the backbone's own
input resolution from timm's pretrained config (`input_size_for`): extraction (`deepfake-extract --size auto`),
training and prediction (the checkpoint's `img_size`) then all see faces at the size the ImageNet weights were
trained at.

    input_size_for("tf_efficientnet_b4")                      # 380, from timm's pretrained config
    resolve_crop_size("auto", "configs/backbones/tf_efficientnet_b4.yaml")   # 380
    resolve_crop_size("auto", "runs/.../checkpoints/detector.pt")            # the img_size it was trained at
    compound_scaling(phi=2.0)             # (1.44, 1.21, 1.3225): depth, width, resolution multipliers
    expected_variant(phi=2.0)             # ScaledVariant(phi=2.0, depth=1.44, width=1.21, resolution=296)

Which timm models, and why. EfficientNet-B0..B7 are timm's `tf_efficientnet_bN`: the weights ported from the
official TensorFlow release (default tag `ns_jft_in1k`, Noisy Student), the only B-variants in timm with ImageNet
weights for all eight, and their pretrained configs carry the paper's resolutions 224, 240, 260, 300, 380, 456,
528, 600. (timm's own `efficientnet_bN` differ: no weights for B6/B7, and the default weights of B2..B5 are
trained at 256, 288, 320, 448 px. `configs/b1_lstm.yaml` keeps `efficientnet_b1`, timm's faster B1 without
TensorFlow "same" padding, at the same 240 px.) EfficientNetV2-S/M/L are `tf_efficientnetv2_s/m/l` (ImageNet-21k
pre-trained, fine-tuned on ImageNet-1k; timm's `efficientnetv2_s/m/l` have no weights); their train resolutions
are 300, 384, 384 (timm's test sizes 384, 480, 480 are not used). ResNet-50 is timm's `resnet50` (a1_in1k, 224),
the backbone of DeeperForensics-1.0's ResNet-50 + LSTM baseline.

Compound scaling (Tan & Le, "EfficientNet", ICML 2019). A network of depth d, width w and input resolution r is
scaled by one coefficient phi: d = alpha^phi, w = beta^phi, r = gamma^phi, with alpha = 1.2, beta = 1.1,
gamma = 1.15 found by a grid search on B0 under alpha * beta^2 * gamma^2 ~ 2 (exactly 1.92), so FLOPs (which
grow with d * w^2 * r^2) about double per unit of phi. The released B1..B7 are NOT alpha^phi, beta^phi, gamma^phi
for phi = 1..7: the multipliers were rounded by hand (timm copies them: width 1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8,
2.0; depth 1.0, 1.1, 1.2, 1.4, 1.8, 2.2, 2.6, 3.1). Fitting one phi per variant (least squares on the logs of
the three multipliers, `fit_phi`) gives:

    variant  released (d, w, r)    fitted phi   formula at fitted phi (d, w, r)    deviation d / w / r
    B1       1.1, 1.0, 240         0.44         1.08, 1.04, 238                    +1.6% / -4.1% / +0.8%
    B2       1.2, 1.1, 260         1.02         1.20, 1.10, 258                    -0.4% / -0.2% / +0.6%
    B3       1.4, 1.2, 300         1.93         1.42, 1.20, 293                    -1.6% / -0.2% / +2.2%
    B4       1.8, 1.4, 380         3.45         1.87, 1.39, 363                    -4.0% / +0.8% / +4.8%
    B5       2.2, 1.6, 456         4.65         2.34, 1.56, 429                    -5.8% / +2.7% / +6.2%
    B6       2.6, 1.8, 528         5.66         2.81, 1.71, 494                    -7.3% / +5.0% / +6.9%
    B7       3.1, 2.0, 600         6.63         3.35, 1.88, 566                    -7.4% / +6.3% / +6.1%

so the family follows the formula within 7.5% at a fitted phi, with the larger variants shallower and wider and
at a higher resolution than the formula says; at phi = N itself the deviation reaches 19% (B3's depth). timm
then rounds: each stage's block count is ceil(B0's count * depth), and channels are `make_divisible(channels *
width, 8)`, so B1 has 23 blocks, not 16 * 1.1 = 17.6. FLOPs follow: the backbones' GMACs at their own
resolutions (FlopCounterMode) are 0.38, 0.69, 0.99, 1.83, 4.39, 10.26, 19.07, 37.74, which depth (timm's real
block counts) x width^2 x resolution^2 predicts within 13% (B3; B4..B7 within 3%), while 2^phi at the fitted phi
is 31% low for B1 and within 1% for B6/B7. tests/test_scaling.py checks all of this against timm.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ALPHA",
    "BETA",
    "GAMMA",
    "BASE_RESOLUTION",
    "CONFIG_DIR",
    "Backbone",
    "BACKBONES",
    "EFFICIENTNET_RELEASED",
    "ScaledVariant",
    "compound_scaling",
    "flops_multiplier",
    "expected_variant",
    "fit_phi",
    "timm_multipliers",
    "input_size_for",
    "backbone_config_path",
    "resolve_crop_size",
]

# Tan & Le 2019, section 3.3: found by a small grid search on B0 under alpha * beta^2 * gamma^2 ~ 2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
# B0's input resolution, the base that gamma^phi multiplies.
BASE_RESOLUTION = 224

# Where the per-backbone training configs live (repository root / configs / backbones).
# configs/backbones of the checkout (editable install), else the copy shipped in the wheel as deepfake/configs/.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "backbones"
if not CONFIG_DIR.is_dir():
    CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "backbones"


@dataclass(frozen=True)
class Backbone:
    """One first-class backbone choice.

    Args:
        name: the timm model name (also the config file's stem: `configs/backbones/NAME.yaml`).
        label: the name people use (`EfficientNet-B4`).
        family: `efficientnet`, `efficientnetv2` or `resnet`.
        phi: the nominal compound coefficient (the N of B-N) for EfficientNet-B variants, else None.
    """

    name: str
    label: str
    family: str
    phi: int | None = None

    @property
    def config(self) -> Path:
        """The training config of this backbone."""
        return CONFIG_DIR / f"{self.name}.yaml"


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        *(Backbone(f"tf_efficientnet_b{i}", f"EfficientNet-B{i}", "efficientnet", i) for i in range(8)),
        Backbone("tf_efficientnetv2_s", "EfficientNetV2-S", "efficientnetv2"),
        Backbone("tf_efficientnetv2_m", "EfficientNetV2-M", "efficientnetv2"),
        Backbone("tf_efficientnetv2_l", "EfficientNetV2-L", "efficientnetv2"),
        Backbone("resnet50", "ResNet-50", "resnet"),
    ]
}

# The released EfficientNet-B0..B7 settings, (width, depth, resolution, dropout), as published with the paper's
# TensorFlow code (efficientnet_builder.py `efficientnet_params`) and copied by timm (widths and depths in
# timm/models/efficientnet.py, resolutions in its pretrained configs; checked by tests/test_scaling.py).
EFFICIENTNET_RELEASED: dict[int, tuple[float, float, int, float]] = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 300, 0.3),
    4: (1.4, 1.8, 380, 0.4),
    5: (1.6, 2.2, 456, 0.4),
    6: (1.8, 2.6, 528, 0.5),
    7: (2.0, 3.1, 600, 0.5),
}


# ------------------------------------------------------------------------------------------- compound scaling


@dataclass(frozen=True)
class ScaledVariant:
    """Depth/width/resolution of a network scaled from B0 by the compound coefficient `phi`."""

    phi: float
    depth: float
    width: float
    resolution: int


def _check_coefficients(alpha: float, beta: float, gamma: float) -> None:
    if not (alpha >= 1 and beta >= 1 and gamma >= 1):
        raise ValueError(f"alpha, beta and gamma must be >= 1 (a network must not shrink), "
                         f"got {alpha}, {beta}, {gamma}")


def compound_scaling(phi: float, alpha: float = ALPHA, beta: float = BETA,
                     gamma: float = GAMMA) -> tuple[float, float, float]:
    """EfficientNet's compound scaling: the multipliers of a network scaled by `phi` (Tan & Le 2019, eq. 3).

    depth = alpha^phi, width = beta^phi, resolution = gamma^phi; the paper's alpha = 1.2, beta = 1.1,
    gamma = 1.15 satisfy alpha * beta^2 * gamma^2 ~ 2, so FLOPs grow about 2^phi (`flops_multiplier`).

    Args:
        phi: the compound coefficient (0 is the base network; may be fractional or negative to shrink).
        alpha: depth base.
        beta: width (channels) base.
        gamma: input resolution base.

    Returns:
        (depth multiplier, width multiplier, resolution multiplier).
    """
    _check_coefficients(alpha, beta, gamma)
    return alpha ** phi, beta ** phi, gamma ** phi


def flops_multiplier(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> float:
    """FLOPs growth of compound scaling: (alpha * beta^2 * gamma^2)^phi, about 2^phi for the paper's bases.

    FLOPs of a convolutional network grow linearly with depth and quadratically with width and resolution.

    Args:
        phi: the compound coefficient.
        alpha: depth base.
        beta: width base.
        gamma: resolution base.

    Returns:
        The factor by which FLOPs grow relative to the base network.
    """
    _check_coefficients(alpha, beta, gamma)
    return (alpha * beta ** 2 * gamma ** 2) ** phi


def expected_variant(phi: float, base_resolution: int = BASE_RESOLUTION, alpha: float = ALPHA, beta: float = BETA,
                     gamma: float = GAMMA) -> ScaledVariant:
    """What the formula says a B-variant scaled from B0 by `phi` should be.

    Args:
        phi: the compound coefficient.
        base_resolution: B0's input side (224).
        alpha: depth base.
        beta: width base.
        gamma: resolution base.

    Returns:
        Depth and width multipliers relative to B0 and the input side in pixels (rounded).
    """
    depth, width, res = compound_scaling(phi, alpha, beta, gamma)
    return ScaledVariant(phi=float(phi), depth=depth, width=width, resolution=int(round(base_resolution * res)))


def fit_phi(depth: float, width: float, resolution: float, base_resolution: int = BASE_RESOLUTION,
            alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> float:
    """The phi that best explains a released variant: least squares over the logs of its three multipliers.

    Minimises (log d - phi log alpha)^2 + (log w - phi log beta)^2 + (log(r / r0) - phi log gamma)^2.

    Args:
        depth: depth multiplier relative to B0.
        width: width multiplier relative to B0.
        resolution: input side in pixels.
        base_resolution: B0's input side.
        alpha: depth base.
        beta: width base.
        gamma: resolution base.

    Returns:
        The fitted compound coefficient.
    """
    _check_coefficients(alpha, beta, gamma)
    if min(depth, width, resolution) <= 0:
        raise ValueError(f"depth, width and resolution must be positive, got {depth}, {width}, {resolution}")
    logs = (math.log(alpha), math.log(beta), math.log(gamma))
    obs = (math.log(depth), math.log(width), math.log(resolution / base_resolution))
    denominator = sum(b * b for b in logs)
    if denominator == 0:
        raise ValueError("alpha, beta and gamma are all 1: phi is undefined")
    return sum(o * b for o, b in zip(obs, logs)) / denominator


def timm_multipliers(model_name: str) -> tuple[float, float]:
    """The (width, depth) multipliers an EfficientNet variant is built with, read from timm's source.

    timm's registered functions call `_gen_efficientnet(name, channel_multiplier=W, depth_multiplier=D, ...)`;
    this reads W and D from that call, so tests compare the formula with what timm really builds.

    Args:
        model_name: a timm EfficientNet name such as `tf_efficientnet_b4` or `efficientnet_b4` (no tag).

    Returns:
        (channel_multiplier, depth_multiplier).
    """
    from timm.models import efficientnet as timm_efficientnet

    fn = getattr(timm_efficientnet, model_name.split(".")[0], None)
    if fn is None or not callable(fn):
        raise ValueError(f"{model_name} is not a model of timm.models.efficientnet")
    source = inspect.getsource(fn)
    match = re.search(r"channel_multiplier\s*=\s*([0-9.]+)\s*,\s*depth_multiplier\s*=\s*([0-9.]+)", source)
    if match is None:
        raise ValueError(f"could not read channel/depth multipliers of {model_name} from timm's source")
    return float(match.group(1)), float(match.group(2))


# ------------------------------------------------------------------------------------------ input resolution


def input_size_for(backbone: str) -> int:
    """The input side a timm backbone's ImageNet weights were trained at: `pretrained_cfg['input_size'][-1]`.

    The same number `DeepfakeDetector` takes when its `img_size` is null, read without building the model.

    Args:
        backbone: a timm model name, optionally with a pretrained tag (`efficientnet_b1.ft_in1k`).

    Returns:
        The side in pixels (e.g. 240 for `tf_efficientnet_b1`, 380 for `tf_efficientnet_b4`).
    """
    import timm
    from timm.models import get_pretrained_cfg

    if not isinstance(backbone, str) or not timm.is_model(backbone):
        raise ValueError(f"backbone {backbone!r} is not a timm model; see timm.list_models() "
                         f"(e.g. tf_efficientnet_b4, tf_efficientnetv2_s, resnet50)")
    cfg = get_pretrained_cfg(backbone)
    if cfg is not None and cfg.input_size:
        return int(cfg.input_size[-1])
    # No registered pretrained config (a model without weights): ask the model itself, built without memory.
    import torch

    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False)
    return int(timm.data.resolve_model_data_config(model)["input_size"][-1])


def backbone_config_path(backbone: str) -> Path:
    """`configs/backbones/NAME.yaml` of a backbone of the family (`BACKBONES`)."""
    if backbone not in BACKBONES:
        raise ValueError(f"no config for backbone {backbone!r}; the family is {', '.join(BACKBONES)}")
    return BACKBONES[backbone].config


def _size_from_config(path: Path) -> int:
    """The crop size a LightningCLI training config trains at: data.img_size, model.net.img_size, or the
    backbone's own resolution (what `FaceSequenceDataModule` and `DeepfakeDetector` resolve at run time)."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"can't read training config {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a training config (expected a mapping with model: and data:)")
    data = config.get("data") or {}
    net = (config.get("model") or {}).get("net") or {}
    if isinstance(data, dict) and data.get("init_args"):  # class_path/init_args form
        data = data["init_args"]
    for where, value in (("data.img_size", data.get("img_size") if isinstance(data, dict) else None),
                         ("model.net.img_size", net.get("img_size") if isinstance(net, dict) else None)):
        if value is not None:
            return _check_size(value, f"{path}: {where}")
    backbone = net.get("backbone") if isinstance(net, dict) else None
    if backbone is None:
        # DetectorConfig's default backbone.
        from deepfake.model import DetectorConfig

        backbone = DetectorConfig.backbone
    return input_size_for(str(backbone))


def _size_from_checkpoint(path: Path) -> int:
    from deepfake.checkpoint import load_detector

    _, meta = load_detector(path)
    return _check_size(meta.get("img_size"), f"{path}: img_size")


def _check_size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be an integer crop side, got {value!r}")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"{what} must be an integer crop side in pixels or 'auto', got {value!r}") from None
    if not 16 <= size <= 2048:
        raise ValueError(f"{what} must be in [16, 2048] pixels, got {size}")
    return size


def resolve_crop_size(value: str | int, config_or_ckpt: str | os.PathLike | None = None) -> int:
    """The crop side for extraction: a number, or `auto` from a training config or a detector checkpoint.

    `deepfake-extract --size auto --size-from PATH` crops faces at the size a model trains (config) or was
    trained (checkpoint) at, so nothing is resized twice.

    Args:
        value: a side in pixels (int or digits), or "auto".
        config_or_ckpt: with "auto": a training config (`.yaml`/`.yml`, e.g. `configs/backbones/X.yaml` or a
            run's saved `config.yaml`) or a detector checkpoint (`detector.pt` or a `deepfake fit` `.ckpt`,
            whose meta records `img_size`).

    Returns:
        The crop side in pixels.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        if config_or_ckpt is None:
            raise ValueError("--size auto needs a training config or a detector checkpoint to read the size from "
                             "(--size-from PATH)")
        path = Path(config_or_ckpt).expanduser()
        if not path.is_file():
            raise ValueError(f"{path} does not exist; give a training config (.yaml) or a detector checkpoint "
                             f"(detector.pt, .ckpt)")
        if path.suffix.lower() in (".yaml", ".yml"):
            return _size_from_config(path)
        try:
            return _size_from_checkpoint(path)
        except (ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
            raise ValueError(" ".join(str(e).split())) from e
    return _check_size(value.strip() if isinstance(value, str) else value, "--size")
