"""The fast path by default (`deepfake.fastpath`): a detector.pt scores on ONNX Runtime from a copy exported once into
the cache, a later process never imports torch (MTCNN on ONNX Runtime too), and what needs PyTorch gets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake.checkpoint import build_meta, save_detector
from deepfake.cli import predict as predict_cli
from deepfake.export import export_detector
from deepfake.fastpath import export_cache, load_model
from deepfake.model import DeepfakeDetector
from deepfake.weights import sha256_of

TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=64, lstm_hidden=16)


def make_weights(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = DeepfakeDetector(**TINY)
    return save_detector(path, net, build_meta(net, seq_len=4, margin=0.3, stride=3,
                                               calibration={"temperature": 1.5, "bias": 0.1}))


def predict(clip: Path, weights: Path, capsys, *extra: str) -> tuple[dict, str]:
    status = predict_cli.main([str(clip), "--weights", str(weights), "--format", "json", "--device", "cpu",
                               "--no-progress", *extra])
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)[0], err


def test_a_detector_pt_is_exported_once_and_then_scores_without_torch(synth_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    clip = synth_dataset / "real" / "clip_0000.mp4"
    weights = make_weights(tmp_path / "detector.pt")
    first, err = predict(clip, weights, capsys)
    cached = export_cache() / f"{sha256_of(weights)}.onnx"
    lines = [line for line in err.splitlines() if "exported detector.pt to ONNX once" in line]
    assert len(lines) == 1 and str(cached) in lines[0] and cached.is_file()
    assert first["status"] == "ok" and first["runtime"] == "onnx"
    torch_result, err = predict(clip, weights, capsys, "--runtime", "torch")
    assert torch_result["runtime"] == "torch" and "ONNX" not in err
    assert abs(first["p_fake"] - torch_result["p_fake"]) <= 1e-4
    assert first["faces"][0]["frames"] == torch_result["faces"][0]["frames"]
    np.testing.assert_allclose(first["faces"][0]["boxes"], torch_result["faces"][0]["boxes"], atol=1e-3)

    # A fresh process: the cache is found by the weights' hash before anything imports torch.
    out = tmp_path / "out.json"
    heavy = ("torch", "torchvision", "timm", "facenet_pytorch", "deepfake.model", "deepfake.checkpoint")
    code = (f"import json, sys\nfrom deepfake.cli import main\n"
            f"status = main(['predict', {str(clip)!r}, '--weights', {str(weights)!r}, '-o', {str(out)!r}, "
            f"'--no-progress'])\n"
            f"print(json.dumps([status, sorted(m for m in {heavy!r} if m in sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DEEPFAKE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    status, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 0 and loaded == [] and "ONNX once" not in done.stderr
    again = json.loads(out.read_text())[0]
    assert again["runtime"] == "onnx" and again["p_fake"] == first["p_fake"]


@pytest.mark.slow
def test_what_needs_pytorch_gets_it_and_onnx_beside_the_weights_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    weights = make_weights(tmp_path / "detector.pt")
    assert load_model(weights, "auto", "cpu", needs_torch="--explain").runtime == "torch"
    assert load_model(weights, "auto", "cpu", precision="bf16").runtime == "torch"
    explicit = load_model(weights, "onnx", "cpu", needs_torch="--explain")
    assert explicit.runtime == "torch" and explicit.note.startswith("--explain needs PyTorch")
    assert not export_cache().exists()  # nothing exported for those
    beside = export_detector(weights, "onnx").path  # what `deepfake fit` leaves
    loaded = load_model(weights, "auto", "cpu")
    assert loaded.runtime == "onnx" and loaded.path == beside and loaded.note is None
    assert not export_cache().exists()
    other = make_weights(tmp_path / "other" / "detector.pt", seed=1)
    export_detector(weights, "onnx", other.with_suffix(".onnx"))  # beside, but of other weights: not used
    assert load_model(other, "auto", "cpu").path == export_cache() / f"{sha256_of(other)}.onnx"
    with pytest.raises(ValueError, match="--runtime torch: .* is an ONNX file"):
        load_model(beside, "torch", "cpu")


@pytest.mark.slow
def test_a_cached_export_that_fails_its_check_is_deleted_and_pytorch_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    weights = make_weights(tmp_path / "detector.pt")
    impostor = make_weights(tmp_path / "impostor.pt", seed=7)
    cached = export_cache() / f"{sha256_of(weights)}.onnx"
    export_detector(impostor, "onnx", cached)  # another network's export under these weights' name, no record
    loaded = load_model(weights, "auto", "cpu")
    assert loaded.runtime == "torch" and not cached.exists()
    assert "failed its check against PyTorch" in loaded.note and "deleted" in loaded.note and "\n" not in loaded.note
    assert load_model(weights, "auto", "cpu").runtime == "onnx"  # exported afresh next time, then recorded
    cached.with_suffix(".json").unlink()  # no record of a check: checked again, passes, recorded
    assert load_model(weights, "auto", "cpu").runtime == "onnx" and cached.with_suffix(".json").is_file()
    cached.write_bytes(cached.read_bytes()[:-100])  # damaged after its check: checked again, fails, deleted
    loaded = load_model(weights, "auto", "cpu")
    assert loaded.runtime == "torch" and not cached.exists() and "deleted" in loaded.note


def test_a_cache_that_cannot_be_written_falls_back_to_pytorch(tmp_path, monkeypatch, synth_dataset, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "a_file" / "cache"))
    weights = make_weights(tmp_path / "detector.pt")
    loaded = load_model(weights, "auto", "cpu")
    assert loaded.runtime == "torch" and "can't write the ONNX cache" in loaded.note
    result, err = predict(synth_dataset / "real" / "clip_0000.mp4", weights, capsys)
    assert result["runtime"] == "torch" and err.count("can't write the ONNX cache") == 1


def test_mtcnn_on_onnx_runtime_finds_the_same_boxes(hopper, tmp_path, monkeypatch):
    """The networks within 1e-5 of PyTorch's; the same cascade over them gives the same faces, boxes within 1e-3 px."""
    import cv2

    from data_prep.mtcnn import MTCNNCascade, normalise

    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    onnx, torch_ = MTCNNCascade(min_face_size=20, runtime="onnx"), MTCNNCascade(min_face_size=20)
    crops = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    for a, b in zip(onnx.nets.onet(crops), torch_.nets.onet(crops)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    two = np.hstack([hopper, cv2.flip(hopper, 1)])[::2, ::2].copy()
    frames = np.stack([two, np.roll(two, 37, axis=1)])
    for got, want in zip(onnx.detect(frames), torch_.detect(frames)):
        assert len(got.boxes) == len(want.boxes) == 2
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3, rtol=0)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5, rtol=0)
    boxes = [d.boxes for d in torch_.detect(frames)]
    for got, want in zip(onnx.refine(frames, boxes), torch_.refine(frames, boxes)):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3, rtol=0)
    assert normalise(crops).dtype == np.float32
