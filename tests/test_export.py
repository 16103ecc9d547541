"""`deepfake export`: ONNX and torch.export files that score exactly as the PyTorch detector, and what they refuse."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake.checkpoint import build_meta, save_detector
from deepfake.cli import export as export_cli
from deepfake.cli import predict as predict_cli
from deepfake.export import export_detector
from deepfake.inference import Detector, PredictConfig, load_predictor
from deepfake.model import DeepfakeDetector
from deepfake.runtime import ExportError, check_program, load_exported
from deepfake.weights import WeightsError

# The tiny detector of the tests (configs/tiny_cpu.yaml's backbone), calibrated so that the calibration travels too.
TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=64, lstm_hidden=16)
SEQ_LEN = 4
CALIBRATION = {"temperature": 1.7, "bias": -0.2, "fitted_on": "test", "n_videos": 10}


def make_weights(path: Path, seed: int = 0, **kwargs) -> Path:
    torch.manual_seed(seed)
    net = DeepfakeDetector(**{**TINY, **kwargs})
    return save_detector(path, net, build_meta(net, seq_len=SEQ_LEN, margin=0.3, stride=3, calibration=CALIBRATION))


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    weights = make_weights(folder / "detector.pt")
    onnx = export_detector(weights, "onnx")
    program = export_detector(weights, "exported")
    assert onnx.max_error <= 1e-4 and program.max_error <= 1e-4
    return {"pt": weights, "onnx": onnx.path, "exported": program.path}


def crops(n: int, seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_exports_are_written_beside_the_weights_with_the_meta_inside(exports):
    assert exports["onnx"] == exports["pt"].with_suffix(".onnx")
    assert exports["exported"] == exports["pt"].with_suffix(".pt2")
    stored = torch.load(exports["pt"], weights_only=True)["meta"]
    for fmt in ("onnx", "exported"):
        _, meta = load_exported(exports[fmt], "cpu")
        assert {k: v for k, v in meta.items() if k != "export"} == stored  # every setting, calibration included
        assert meta["export"]["format"] == fmt and len(meta["export"]["source_sha256"]) == 64
    assert not list(exports["pt"].parent.glob(".*partial*"))  # written atomically


@pytest.mark.parametrize("fmt", ["onnx", "exported"])
def test_same_windows_give_the_same_scores(exports, fmt):
    """Parity: tracks of every kind (shorter than seq_len, exact, with an overlapping last window) score the same
    through the exported file as through PyTorch in float32, calibration applied, within 1e-4."""
    reference = Detector.load(exports["pt"], device="cpu", precision="fp32", batch_size=3)
    exported = Detector.load(exports[fmt], device="cpu", batch_size=3)
    assert exported.exported and not reference.exported and exported.precision == "fp32"
    assert exported.calibration == reference.calibration == (1.7, -0.2)
    tracks = [crops(n, seed) for seed, n in enumerate((1, 3, 4, 9, 13))]
    tracks.append(crops(5, 99, size=80))  # crops of another size are resized by the shared code
    want = reference.score_tracks_in_detail(tracks)
    got = exported.score_tracks_in_detail(tracks)
    for w, g in zip(want, got):
        assert abs(w.p_fake - g.p_fake) <= 1e-4
        np.testing.assert_allclose(g.steps, w.steps, atol=1e-4, rtol=0)
        assert [s[:2] for s in g.windows] == [s[:2] for s in w.windows]
        np.testing.assert_allclose(g.window_logits, w.window_logits, atol=1e-3, rtol=0)  # raw, before calibration


def test_predict_scores_a_video_the_same_with_each_format(exports, synth_dataset, capsys):
    clip = str(synth_dataset / "real" / "clip_0000.mp4")
    results = {}
    for fmt in ("pt", "onnx", "exported"):
        status = predict_cli.main([clip, "--weights", str(exports[fmt]), "--format", "json", "--device", "cpu",
                                   "--precision", "fp32", "--no-progress"])
        out, _ = capsys.readouterr()
        assert status == 0
        results[fmt] = json.loads(out)[0]
    assert results["pt"]["status"] == "ok"
    for fmt in ("onnx", "exported"):
        assert abs(results[fmt]["p_fake"] - results["pt"]["p_fake"]) <= 1e-4
        assert results[fmt]["faces"][0]["frames"] == results["pt"]["faces"][0]["frames"]


def test_predict_on_an_exported_model_imports_no_timm(exports, synth_dataset, tmp_path):
    """The exported path in a fresh process: no timm, torchvision, facenet-pytorch or our PyTorch model code."""
    clip, out = str(synth_dataset / "real" / "clip_0000.mp4"), str(tmp_path / "out.json")
    heavy = ("timm", "torchvision", "facenet_pytorch", "deepfake.model", "deepfake.checkpoint", "torch._dynamo")
    code = (f"import json, sys\nfrom deepfake.cli import main\n"
            f"status = main(['predict', {clip!r}, '--weights', {str(exports['onnx'])!r}, '-o', {out!r}, "
            f"'--device', 'cpu', '--no-progress'])\n"
            f"print(json.dumps([status, sorted(m for m in {heavy!r} if m in sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    status, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 0 and loaded == []
    assert json.loads(Path(out).read_text())[0]["status"] == "ok"


def test_exported_models_refuse_what_needs_pytorch(exports, synth_dataset, tmp_path, capsys):
    clip = str(synth_dataset / "real" / "clip_0000.mp4")
    status = predict_cli.main([clip, "--weights", str(exports["onnx"]), "--explain", str(tmp_path / "x"),
                               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "--explain needs the PyTorch weights" in err and "\n" not in err
    assert not (tmp_path / "x").exists()
    status = predict_cli.main([clip, "--weights", str(exports["onnx"]), "--precision", "bf16", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "exported model runs in float32" in err and "\n" not in err

    from deepfake.recalibration import recalibrate

    with pytest.raises(WeightsError, match="exported model: calibrate writes a new detector.pt"):
        recalibrate(exports["onnx"], synth_dataset, config=PredictConfig(device="cpu"))


def test_export_command_and_its_errors(exports, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert export_cli.main(["--weights", str(exports["pt"]), "--format", "onnx", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert out.is_file() and "logits within" in err and "calibrated" in err
    cases = [
        (["--weights", str(tmp_path / "none.pt"), "--format", "onnx"], 2, "does not exist"),
        (["--weights", str(exports["pt"]), "--format", "tflite"], 2, "invalid choice"),
        (["--weights", str(exports["pt"]), "--format", "onnx", "-o", str(tmp_path / "m.pt2")], 1, "must end in .onnx"),
        (["--weights", str(exports["onnx"]), "--format", "onnx"], 1, "is the weights file itself"),
        (["--weights", str(exports["exported"]), "--format", "onnx", "-o", str(tmp_path / "m.onnx")], 2,
         "not a readable PyTorch file"),
    ]
    for args, code, message in cases:
        assert export_cli.main(args) == code, args
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, err
    bi = make_weights(tmp_path / "bi.pt", bidirectional=True)
    assert export_cli.main(["--weights", str(bi), "--format", "exported"]) == 1
    assert "bidirectional" in capsys.readouterr().err
    assert not (tmp_path / "bi.pt2").exists()


def test_broken_and_unsafe_exported_files_are_refused_in_one_line(exports, tmp_path):
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_bytes(b"\x08\x07 not a protobuf of a model")
    foreign = tmp_path / "foreign.onnx"  # a valid ONNX model that `deepfake export` did not write
    import onnx

    model = onnx.load(str(exports["onnx"]))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    # A .pt2 whose weights claim to be pickled: torch.export.load would unpickle them (code could run).
    unsafe = tmp_path / "unsafe.pt2"
    with zipfile.ZipFile(exports["exported"]) as src, zipfile.ZipFile(unsafe, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(ExportError, match="can't be loaded safely"):
        check_program(unsafe)
    for path, message in ((not_onnx, "not a loadable ONNX model"), (foreign, "holds no detector settings"),
                          (unsafe, "can't be loaded safely")):
        with pytest.raises(WeightsError) as info:
            load_predictor(path, PredictConfig(device="cpu"))
        assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "exported"])
def test_b1_parity(fmt, tmp_path):
    """EfficientNet-B1 + LSTM(512) at 240 px, T = 8: the same windows give the same scores within 1e-4."""
    torch.manual_seed(0)
    net = DeepfakeDetector(backbone="efficientnet_b1", pretrained=False)
    weights = save_detector(tmp_path / "b1.pt", net, build_meta(net, seq_len=8, margin=0.3, stride=5))
    result = export_detector(weights, fmt)
    reference = Detector.load(weights, device="cpu", precision="fp32")
    exported = Detector.load(result.path, device="cpu")
    tracks = [crops(n, seed, size=240) for seed, n in enumerate((3, 8, 11))]
    for w, g in zip(reference.score_tracks_in_detail(tracks), exported.score_tracks_in_detail(tracks)):
        np.testing.assert_allclose(g.steps, w.steps, atol=1e-4, rtol=0)
        assert abs(w.p_fake - g.p_fake) <= 1e-4


@pytest.mark.slow  # a server worker process of its own (about 10 s); the fast serve and export tests cover each part
def test_serve_answers_with_an_exported_model_as_predict_does(exports, synth_dataset, tmp_path, capsys):
    """`deepfake serve --weights detector.onnx`: its workers load the exported model (load_predictor) and a job's
    result is predict's JSON object for the same file and weights."""
    from fastapi.testclient import TestClient

    from deepfake.serve.app import create_app
    from deepfake.serve.config import ServeConfig
    from deepfake.serve.jobs import JobPool
    from tests.test_serve import predict_json, wait_done

    clip = synth_dataset / "fake" / "clip_0003.mp4"
    pool = JobPool(exports["onnx"], PredictConfig(device="cpu"), workers=1, capacity=2, root=tmp_path / "jobs")
    pool.start(timeout=120)
    try:
        with TestClient(create_app(pool, ServeConfig())) as client, open(clip, "rb") as f:
            r = client.post("/api/v1/videos", files={"file": ("clip.mp4", f, "video/mp4")})
            assert r.status_code == 202, r.text
            job = wait_done(client, r.json()["id"])
            assert client.get("/health").json()["model_loaded"]
    finally:
        pool.close()
    assert job["state"] == "done", job
    expected = predict_json(clip, exports["onnx"], capsys)
    assert {**job["result"], "video": expected["video"]} == expected
