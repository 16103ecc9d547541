"""The backbone family: configs/backbones/*.yaml, their crop sizes, `--size auto`, and bench/backbones.py.

Nothing is downloaded (pretrained=False) and the big models are built on the meta device only.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import timm
import torch
import yaml
from timm.models import get_pretrained_cfg

from deepfake.scaling import BACKBONES, CONFIG_DIR, backbone_config_path, input_size_for, resolve_crop_size

ROOT = Path(__file__).resolve().parents[1]
# Keys a backbone config may set differently from configs/b1_lstm.yaml; everything else must be the same.
PER_BACKBONE = {"run_name", "model.net.backbone", "model.net.img_size", "model.net.drop_rate",
                "model.net.drop_path_rate", "data.batch_size", "trainer.accumulate_grad_batches"}


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _print_config(*configs: Path) -> dict:
    """`deepfake fit --config ... --print_config`: the configuration exactly as the training CLI resolves it."""
    from deepfake.cli import train

    args = ["fit"]
    for c in configs:
        args += ["--config", str(c)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = train.main([*args, "--print_config"])
    assert status == 0, out.getvalue()[-2000:]
    return yaml.safe_load(out.getvalue())


def test_one_config_per_backbone_and_nothing_else():
    files = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert files == set(BACKBONES) | {"progressive"}
    assert len(BACKBONES) == 12
    assert [b.label for b in BACKBONES.values()] == [
        *(f"EfficientNet-B{i}" for i in range(8)), "EfficientNetV2-S", "EfficientNetV2-M", "EfficientNetV2-L",
        "ResNet-50"]
    for name in BACKBONES:
        assert backbone_config_path(name) == CONFIG_DIR / f"{name}.yaml"
        cfg = get_pretrained_cfg(name)  # every chosen timm name has ImageNet weights to start from
        assert cfg is not None and (cfg.hf_hub_id or cfg.url), name
    with pytest.raises(ValueError, match="no config for backbone"):
        backbone_config_path("efficientnet_b4")


# One backbone per family in the default run (each config parse costs 1-3 s); `make test-all` parses every one.
DEFAULT_RUN = ("tf_efficientnet_b1", "tf_efficientnetv2_s", "resnet50")


@pytest.mark.parametrize("name", [n if n in DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow)
                                  for n in BACKBONES])
def test_config_parses_and_trains_at_the_backbones_own_resolution(name):
    resolved = _print_config(BACKBONES[name].config)
    net = resolved["model"]["net"]
    assert net["backbone"] == name
    assert net["img_size"] == get_pretrained_cfg(name).input_size[-1] == input_size_for(name)
    assert resolved["data"]["img_size"] is None  # the datamodule takes the model's size
    assert net["lstm_hidden"] == 512 and net["lstm_layers"] == 1 and net["bidirectional"] is False
    # The detector built from these settings agrees (meta device: no memory, no compute).
    from deepfake.model import DeepfakeDetector

    with torch.device("meta"):
        model = DeepfakeDetector(**{**net, "pretrained": False})
        feats = model.forward_features(torch.empty(1, 2, 3, net["img_size"], net["img_size"]))
        own = DeepfakeDetector(**{**net, "pretrained": False, "img_size": None})
    assert model.img_size == own.img_size == net["img_size"]
    assert feats.shape == (1, 2, model.num_features) and model.lstm.input_size == model.num_features


def test_configs_keep_the_structure_of_b1_lstm():
    """Same keys and values as configs/b1_lstm.yaml except the per-backbone ones, and the same sequences per
    optimiser step (batch_size x accumulate_grad_batches), so runs compare backbones, not recipes."""
    base = yaml.safe_load((ROOT / "configs" / "b1_lstm.yaml").read_text())
    flat_base = _flat(base)
    per_step = flat_base["data.batch_size"] * flat_base.get("trainer.accumulate_grad_batches", 1)
    for name, backbone in BACKBONES.items():
        flat = _flat(yaml.safe_load(backbone.config.read_text()))
        assert set(flat) - PER_BACKBONE == set(flat_base) - PER_BACKBONE, name
        differs = {k: (flat_base[k], flat[k]) for k in set(flat) - PER_BACKBONE if flat[k] != flat_base[k]}
        assert not differs, (name, differs)
        assert flat["run_name"] == name
        assert flat["data.batch_size"] * flat.get("trainer.accumulate_grad_batches", 1) == per_step, name


def test_progressive_config_composes_with_a_backbone_config():
    resolved = _print_config(BACKBONES["tf_efficientnetv2_s"].config, CONFIG_DIR / "progressive.yaml")
    (callback,) = resolved["trainer"]["callbacks"]
    assert callback["class_path"] == "deepfake.progressive.ProgressiveLearning"
    assert callback["init_args"]["stages"] == 4
    assert resolved["model"]["net"]["img_size"] == 300  # the evaluation size stays the backbone's


def test_input_size_for_agrees_with_the_detector():
    from deepfake.model import DeepfakeDetector

    for name in ["efficientnet_b1", "efficientnet_b1.ft_in1k", "tf_efficientnetv2_m", "resnet50"]:
        with torch.device("meta"):
            model = DeepfakeDetector(backbone=name, pretrained=False)
        assert input_size_for(name) == model.img_size, name
    assert input_size_for("efficientnet_b1") == 240 and input_size_for("efficientnet_b1.ft_in1k") == 224
    assert input_size_for("efficientnet_b4") == 320  # timm's own B4 weights: not the paper's 380
    with pytest.raises(ValueError, match="not a timm model"):
        input_size_for("efficientnet_b9")


def test_resolve_crop_size(tmp_path):
    from deepfake.checkpoint import save_detector
    from deepfake.model import DeepfakeDetector

    assert resolve_crop_size(240) == 240 and resolve_crop_size(" 300 ") == 300
    assert resolve_crop_size("auto", BACKBONES["tf_efficientnet_b4"].config) == 380
    assert resolve_crop_size("AUTO", ROOT / "configs" / "b1_lstm.yaml") == 240
    assert resolve_crop_size("auto", ROOT / "configs" / "tiny_cpu.yaml") == 64
    # A config without img_size: the backbone's own; data.img_size, when given, is what training feeds.
    (tmp_path / "own.yaml").write_text("model:\n  net:\n    backbone: tf_efficientnet_b5\n")
    assert resolve_crop_size("auto", tmp_path / "own.yaml") == 456
    (tmp_path / "data.yml").write_text("model:\n  net:\n    backbone: resnet50\ndata:\n  img_size: 192\n")
    assert resolve_crop_size("auto", tmp_path / "data.yml") == 192
    # A detector checkpoint records the size it was trained at.
    net = DeepfakeDetector(backbone="test_efficientnet", pretrained=False, img_size=96, lstm_hidden=8)
    ckpt = save_detector(tmp_path / "detector.pt", net, {**{"model": net.kwargs()}, **net.data_config,
                                                          "seq_len": 4, "margin": 0.3, "stride": 5})
    assert resolve_crop_size("auto", ckpt) == 96
    # User errors: one line a user can act on.
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for value, path, message in [("auto", None, "needs a training config or a detector checkpoint"),
                                 ("auto", tmp_path / "missing.yaml", "does not exist"),
                                 ("auto", tmp_path / "junk.pt", r"junk\.pt (can.t be loaded|is not a readable)"),
                                 ("auto", tmp_path / "list.yaml", "not a training config"),
                                 ("big", None, "integer crop side"), (8, None, r"\[16, 2048\]"),
                                 (True, None, "integer crop side")]:
        with pytest.raises(ValueError, match=message) as info:
            resolve_crop_size(value, path)
        assert "\n" not in str(info.value)


def test_bench_runs_with_tiny_settings(tmp_path, capsys, bench_script):
    bench = bench_script("backbones")
    out = tmp_path / "bench.json"
    status = bench.main(["--models", "tf_efficientnet_b0", "--steps", "1", "--warmup", "0", "--repeat", "1",
                         "--batch-size", "1", "--seq-len", "2", "--threads", "1", "--json", str(out)])
    assert status == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if "`tf_efficientnet_b0`" in line)
    assert "| EfficientNet-B0 |" in row and "| 224 |" in row and "5.29 / 0.40" in row and "7,640.8" in row
    (result,) = json.loads(out.read_text())["results"]
    assert result["infer_fps"] > 0 and result["train_fps"] > 0 and result["batch"] == 1 and result["seq_len"] == 2
    assert result["gmacs"] == pytest.approx(0.385, abs=0.01)  # timm publishes 0.40 (its counter, with classifier)
    assert result["backbone_params_m"] == pytest.approx(4.01, abs=0.01)
    assert bench.TIMM_PUBLISHED.keys() >= set(BACKBONES)
    with pytest.raises(SystemExit):
        bench.main(["--batch-size", "0"])
    assert timm.is_model("tf_efficientnet_b0")
