"""Tests of deepfake.model (the network) and deepfake.checkpoint (safe weights)."""

from __future__ import annotations

import warnings

import pytest
import torch

from deepfake.checkpoint import CheckpointError, build_meta, load_detector, save_detector
from deepfake.model import DeepfakeDetector, DetectorConfig, last_valid

TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=32, lstm_hidden=16)


@pytest.fixture(scope="module")
def net() -> DeepfakeDetector:
    torch.manual_seed(0)
    return DeepfakeDetector(**TINY)


def test_shapes_and_data_config(net):
    x = torch.randn(2, 3, 3, 32, 32)
    assert net.forward_features(x).shape == (2, 3, net.num_features)
    assert net(x).shape == (2, 3)
    assert net.forward_head(torch.randn(4, 5, net.num_features)).shape == (4, 5)
    # Normalisation comes from timm's pretrained config of the backbone, the size from the config.
    assert net.img_size == 32 and len(net.mean) == 3 and len(net.std) == 3
    assert DeepfakeDetector(backbone="test_efficientnet", pretrained=False).img_size == 160  # timm's own size
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("backbone", ["test_efficientnet", "test_resnet"])
def test_every_parameter_gets_a_gradient(backbone):
    torch.manual_seed(0)
    model = DeepfakeDetector(backbone=backbone, pretrained=False, img_size=32, lstm_hidden=8, lstm_layers=2,
                             lstm_dropout=0.1)
    model.train()
    out = model(torch.randn(2, 3, 3, 32, 32), torch.tensor([3, 2]))
    out.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"


def test_variable_lengths_match_unpadded(net):
    """A padded sequence gives the same logits at its valid steps as the sequence alone; padding is ignored."""
    net.eval()
    x = torch.randn(2, 5, 3, 32, 32)
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        padded = net(x, lengths)
        alone = net(x[1:, :3])
        garbage = x.clone()
        garbage[1, 3:] = 100.0  # whatever sits in the padding must not matter
        again = net(garbage, lengths)
    assert padded.shape == (2, 5)
    torch.testing.assert_close(padded[1, :3], alone[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded[:, :3], again[:, :3])
    assert torch.equal(last_valid(padded, lengths), torch.stack([padded[0, 4], padded[1, 2]]))
    with pytest.raises(ValueError, match="lengths"):
        net(x, torch.tensor([6, 1]))


def test_bidirectional_packs_padding():
    torch.manual_seed(0)
    model = DeepfakeDetector(**{**TINY, "bidirectional": True}).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        padded = model(x, torch.tensor([4, 2]))
        alone = model(x[1:, :2])
    torch.testing.assert_close(padded[1, :2], alone[0], rtol=1e-4, atol=1e-5)


def test_channels_last_gives_the_same_output(net):
    x = torch.randn(1, 2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        ref = net(x)
        net.set_channels_last(True)
        out = net(x)
        net.set_channels_last(False)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="not a timm model"):
        DetectorConfig(backbone="no_such_net")
    with pytest.raises(ValueError, match="drop_rate"):
        DetectorConfig(drop_rate=1.5)
    with pytest.raises(FileNotFoundError, match="pretrained_file"):
        DeepfakeDetector(backbone="test_efficientnet", pretrained=True, pretrained_file="/no/such/weights.pth")


def test_offline_pretrained_falls_back_with_a_warning(monkeypatch):
    """No network and no file: a clear warning and random weights, never a crash."""
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We have no connection or you passed local_files_only (offline test)")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.warns(UserWarning, match="RANDOM weights.*pretrained_file"):
        model = DeepfakeDetector(backbone="test_efficientnet", pretrained=True, img_size=32, lstm_hidden=8)
    assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2)


def test_offline_hub_really_fails_softly(monkeypatch):
    """The same through timm and huggingface_hub themselves, with the hub switched off."""
    import huggingface_hub
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    cached = any(isinstance(huggingface_hub.try_to_load_from_cache("timm/test_efficientnet.r160_in1k", name), str)
                 for name in ("model.safetensors", "pytorch_model.bin"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = DeepfakeDetector(backbone="test_efficientnet", pretrained=True, img_size=32, lstm_hidden=8)
    assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2)
    if not cached:
        assert any("RANDOM weights" in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_pretrained_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    import timm

    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = DeepfakeDetector(backbone="test_efficientnet", pretrained=True, pretrained_file=str(path), img_size=32)
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_save_and_load_detector(tmp_path, net):
    meta = build_meta(net, seq_len=4, margin=0.3, stride=5, val_auc=0.9)
    path = save_detector(tmp_path / "detector.pt", net, meta)
    assert not list(tmp_path.glob(".*tmp"))  # the temp file of the atomic write is gone
    raw = torch.load(path, weights_only=True)  # plain tensors + plain containers only
    assert raw["meta"]["img_size"] == 32 and raw["meta"]["model"]["pretrained"] is False
    loaded, meta2 = load_detector(path)
    assert meta2 == meta and not loaded.training
    x = torch.randn(1, 4, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_load_detector_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "deepfake-detector/1", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="safely"):
        load_detector(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_detector(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a detector"):
        load_detector(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_detector(tmp_path / "missing.pt")


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_050", "resnet18"])
def test_pooled_feature_size_matches_the_lstm(backbone):
    # MobileNetV3's pooled output (head_hidden_size) differs from its num_features: the LSTM must take the former.
    net = DeepfakeDetector(backbone=backbone, pretrained=False, lstm_hidden=8, img_size=32)
    out = net(torch.randn(1, 2, 3, 32, 32))
    assert out.shape == (1, 2)
