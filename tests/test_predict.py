"""`deepfake predict`: every bad input of the README's robustness list gets its own status while the others still score;
the JSON schema, CSV columns and table; exit codes; plots; the score rule; where weights come from."""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake import inference, results, scoring
from deepfake.cli import predict as predict_cli
from deepfake.weights import WeightsError, resolve_weights

# A random-init detector small enough for CPU tests: timm's test_efficientnet at 64 px, LSTM(16), T = 4.
TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=64, lstm_hidden=16)
SEQ_LEN, STRIDE = 4, 3
RESULT_KEYS = {"video", "status", "p_fake", "verdict", "faces", "error", "extraction", "validation"}
FACE_KEYS = {"track", "p_fake", "frames", "steps", "windows", "top_frames", "boxes", "landmarks"}


def make_weights(path: Path) -> Path:
    from deepfake.checkpoint import build_meta, save_detector
    from deepfake.model import DeepfakeDetector

    torch.manual_seed(0)
    net = DeepfakeDetector(**TINY)
    return save_detector(path, net, build_meta(net, seq_len=SEQ_LEN, margin=0.3, stride=STRIDE))


def read_frames(path: Path, n: int) -> list[np.ndarray]:
    from data_prep.video import iter_frames

    return [f for i, f in iter_frames(path) if i < n]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, gray: bool = False) -> Path:
    """H.264 MP4 (the project's writer); `gray` stores a single-channel (gray pixel format) video."""
    from data_prep.video_writer import write_video as write_h264
    from tests.videos import write_exotic

    return write_exotic(path, frames, fps, pix_fmt="gray") if gray else write_h264(path, frames, fps)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights") / "detector.pt")


@pytest.fixture(scope="module")
def inputs(synth_dataset, tmp_path_factory) -> dict[str, Path]:
    """One file per case of the README's robustness list, made from the synth clips (320x240, 10 fps)."""
    d = tmp_path_factory.mktemp("predict_inputs")
    real = synth_dataset / "real" / "clip_0000.mp4"
    face = read_frames(real, 12)
    other = read_frames(synth_dataset / "real" / "clip_0001.mp4", 12)
    yy, xx = np.mgrid[0:240, 0:320]
    flat = [np.dstack([(xx + 8 * i) % 256, (yy // 2 + 30 + 0 * xx), np.full_like(xx, 90)]).astype(np.uint8)
            for i in range(12)]
    cases = {
        "real": shutil.copy(real, d / "real.mp4"),
        "fake": shutil.copy(synth_dataset / "fake" / "clip_0003.mp4", d / "fake.mp4"),
        "one_frame": write_video(d / "one_frame.mp4", face[:1]),
        "no_face": write_video(d / "no_face.mp4", flat),
        "two_faces": write_video(d / "two_faces.mp4", [np.hstack([a, b]) for a, b in zip(face, other)]),
        "portrait": write_video(d / "portrait.mp4", [np.pad(f, ((120, 120), (0, 0), (0, 0))) for f in face]),
        "grayscale": write_video(d / "grayscale.mp4", face, gray=True),
        "missing": d / "missing.mp4",
        "zero_byte": d / "zero_byte.mp4",
        "truncated": d / "truncated.mp4",
        "not_video": d / "not_video.mp4",
    }
    cases["zero_byte"].write_bytes(b"")
    data = real.read_bytes()
    cases["truncated"].write_bytes(data[: len(data) // 2])
    cases["not_video"].write_text("this is a text file with a video's name\n")
    return {k: Path(v) for k, v in cases.items()}


EXPECTED = {"real": "ok", "fake": "ok", "one_frame": "ok", "no_face": "no_face", "two_faces": "ok",
            "portrait": "ok", "grayscale": "ok", "missing": "error", "zero_byte": "error", "truncated": "error",
            "not_video": "error"}


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = predict_cli.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def batch(inputs, tiny_weights, tmp_path_factory) -> dict:
    """One `deepfake predict` over every case at once, JSON out, with plots."""
    out = tmp_path_factory.mktemp("predict_batch")
    args = [str(p) for p in inputs.values()] + ["--weights", str(tiny_weights), "--format", "json", "--output",
                                                str(out / "results.json"), "--plot", str(out / "plots"),
                                                "--device", "cpu", "--no-progress"]
    rc = predict_cli.main(args)
    results = json.loads((out / "results.json").read_text())
    return {"rc": rc, "results": results, "by_name": {Path(r["video"]).stem: r for r in results},
            "plots": out / "plots"}


def test_every_bad_input_gets_its_status_and_the_rest_score(batch, inputs):
    assert batch["rc"] == 1  # some files errored
    by_name = batch["by_name"]
    assert [Path(r["video"]).stem for r in batch["results"]] == list(inputs)  # input order, one result each
    for name, status in EXPECTED.items():
        r = by_name[name]
        assert r["status"] == status, (name, r["status"], r["error"])
        if status == "ok":
            assert 0.0 <= r["p_fake"] <= 1.0 and r["verdict"] in ("fake", "real") and r["error"] is None
            assert r["faces"], name
        elif status == "no_face":
            assert r["p_fake"] is None and r["verdict"] == "no face" and r["faces"] == [] and r["error"] is None
        else:
            assert r["p_fake"] is None and r["verdict"] == "error" and r["faces"] == []
            assert r["error"] and "\n" not in r["error"] and "Traceback" not in r["error"]
    assert "no such file" in by_name["missing"]["error"]
    assert "empty" in by_name["zero_byte"]["error"]
    assert len(by_name["two_faces"]["faces"]) == 2
    assert len(by_name["one_frame"]["faces"]) == 1 and by_name["one_frame"]["faces"][0]["frames"] == [0]


def test_a_video_damaged_inside_is_scored_on_its_sound_frames_with_a_warning(synth_dataset, tiny_weights, tmp_path,
                                                                             capsys, damaged_h264):
    frames = read_frames(synth_dataset / "real" / "clip_0000.mp4", 30)
    frames += frames[::-1]  # 6 s, the face moving there and back
    path = damaged_h264(tmp_path / "damaged.mp4", frames, [25])  # frame 25's data destroyed (keyframes: 20, 30)
    rc, out, err = run([str(path), "--weights", str(tiny_weights), "--format", "json", "--device", "cpu",
                        "--no-progress"], capsys)
    (result,) = json.loads(out)
    assert rc == 0 and result["status"] == "ok" and result["error"] is None and 0 <= result["p_fake"] <= 1
    scored = {f for face in result["faces"] for f in face["frames"]}
    # Lost: 25 to 29, and whatever the decoder held back when the damage came (frame threads: a few frames).
    assert not scored & set(range(25, 30)) and scored & set(range(0, 20)) and scored & set(range(30, 60))
    assert "warning: " in err and "frames could not be decoded (damaged data in the file)" in err


def test_json_schema_and_score_rule(batch):
    for r in batch["results"]:
        # A scored video also says which runtime scored it (`deepfake.fastpath`: ONNX Runtime by default on a CPU).
        assert set(r) == RESULT_KEYS | ({"runtime"} if r["status"] == "ok" else set())
        assert r.get("runtime", "onnx") in ("onnx", "torch")
        for face in r["faces"]:
            assert set(face) == FACE_KEYS
            frames, steps = face["frames"], face["steps"]
            assert len(frames) == len(steps) > 0
            assert frames == sorted(set(frames)) and all(f % STRIDE == 0 for f in frames)
            assert all(0.0 <= s <= 1.0 for s in steps) and 0.0 <= face["p_fake"] <= 1.0
            # Per crop: the face box and MTCNN's five landmarks inside it, in video pixels.
            boxes, points = np.asarray(face["boxes"]), np.asarray(face["landmarks"])
            assert boxes.shape == (len(frames), 4) and points.shape == (len(frames), 5, 2)
            assert ((points[..., 0] > boxes[:, None, 0]) & (points[..., 0] < boxes[:, None, 2])).all()
            assert ((points[..., 1] > boxes[:, None, 1]) & (points[..., 1] < boxes[:, None, 3])).all()
        if r["status"] == "ok":
            # The video is as fake as its most fake face; the verdict follows the threshold.
            assert r["p_fake"] == max(f["p_fake"] for f in r["faces"])
            assert r["verdict"] == ("fake" if r["p_fake"] >= 0.5 else "real")


def test_plots_are_valid_pngs(batch):
    from PIL import Image

    plots = sorted(batch["plots"].glob("*.png"))
    drawn = {n for n, r in batch["by_name"].items() if r["status"] != "error"}
    assert {p.stem for p in plots} == drawn
    for p in plots:
        with Image.open(p) as img:
            img.verify()
        with Image.open(p) as img:
            assert img.format == "PNG" and img.width >= 500 and img.height >= 300
        assert p.stat().st_size > 10_000
    assert not list(batch["plots"].glob(".*"))  # no temporary files left


def test_csv_columns_and_exit_status(inputs, tiny_weights, tmp_path, capsys):
    out = tmp_path / "r.csv"
    rc, _, err = run([str(inputs["one_frame"]), str(inputs["not_video"]), str(tmp_path / "nothing" / "*.mp4"),
                      "--weights", str(tiny_weights), "--output", str(out), "--device", "cpu", "--no-progress"], capsys)
    assert rc == 1 and "Traceback" not in err
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == results.CSV_COLUMNS  # format taken from the .csv extension
    assert [r["status"] for r in rows] == ["ok", "error", "error"]
    assert 0 <= float(rows[0]["p_fake"]) <= 1 and rows[0]["faces"] == "1" and rows[0]["error"] == ""
    assert rows[1]["p_fake"] == "" and "not a video" in rows[1]["error"]
    assert rows[2]["error"] == "no video file matches this pattern"


def test_table_and_exit_zero(inputs, tiny_weights, tmp_path, monkeypatch, capsys):
    # A relative path with a colon (what `deepfake distort` folders look like) must not read as a URL to FFmpeg.
    (tmp_path / "GB:3").mkdir()
    shutil.copy(inputs["one_frame"], tmp_path / "GB:3" / "one_frame.mp4")
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(["GB:3/one_frame.mp4", str(inputs["no_face"]), "--weights", str(tiny_weights),
                      "--device", "cpu", "--no-progress"], capsys)
    assert rc == 0  # no face is a result, not an error
    lines = out.splitlines()
    assert lines[0].split() == ["video", "verdict", "p(fake)", "faces", "seconds"]
    assert lines[1].startswith("GB:3/one_frame.mp4 ") and lines[1].split()[1] in ("fake", "real")
    assert "no_face.mp4" in lines[2] and "no face" in lines[2] and lines[2].split()[3] == "-"


def test_progress_within_each_video(inputs, tiny_weights):
    detector, extractor, _ = inference.load_predictor(tiny_weights, inference.PredictConfig(device="cpu"))
    calls: list[tuple[str, int, int]] = []
    names = ["clip A", "clip B"]
    preds = list(inference.iter_predictions([inputs["real"], inputs["fake"]], detector, extractor, names=names,
                                          progress=lambda *call: calls.append(call)))
    assert [p.result["status"] for p in preds] == ["ok", "ok"]
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and {c[0] for c in calls} == set(names)
    for name in names:
        mine = [(done, total) for n, done, total in calls if n == name]
        assert [d for d, _ in mine] == sorted(d for d, _ in mine) and len(mine) >= 2
        assert mine[-1][0] == mine[-1][1] == 30 and all(0 < d <= t for d, t in mine)  # synth clips: 30 frames


def test_python_api(inputs, tiny_weights):
    detector, extractor, _ = inference.load_predictor(tiny_weights, inference.PredictConfig(device="cpu"))
    assert extractor.config.size == 64 and extractor.config.stride == STRIDE and extractor.config.margin == 0.3
    r = inference.predict_video(inputs["one_frame"], detector, extractor)
    assert r["status"] == "ok" and set(r) == RESULT_KEYS | {"runtime"}
    results = inference.predict_paths([inputs["one_frame"], inputs["missing"]], detector, extractor)
    assert [x["status"] for x in results] == ["ok", "error"]
    assert results[0]["p_fake"] == r["p_fake"]  # same input, same score


def test_batch_size_defaults_to_one_window_on_a_cpu_and_never_changes_a_score(tiny_weights):
    from deepfake.checkpoint import load_detector
    from deepfake.detector import default_batch_size

    assert default_batch_size("cpu") == 1 and default_batch_size("cuda") == 8
    model, meta = load_detector(tiny_weights)
    auto = inference.Detector(model, meta, device="cpu", precision="fp32")
    eight = inference.Detector(model, meta, device="cpu", batch_size=8, precision="fp32")
    assert auto.batch_size == 1 and eight.batch_size == 8
    assert inference.PredictConfig().batch_size is None
    with pytest.raises(ValueError, match="--batch-size"):
        inference.PredictConfig(batch_size=0)
    rng = np.random.default_rng(1)
    tracks = [rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8) for n in (10, 3, 9)]
    for a, b in zip(auto.score_tracks(tracks), eight.score_tracks(tracks)):
        assert a[0] == pytest.approx(b[0], abs=1e-5)
        np.testing.assert_allclose(a[1], b[1], atol=1e-5)


def test_track_and_video_scores_follow_the_documented_rule(tiny_weights):
    from deepfake.checkpoint import load_detector

    model, meta = load_detector(tiny_weights)
    detector = inference.Detector(model, meta, device="cpu", batch_size=2, precision="fp32")
    rng = np.random.default_rng(0)
    tracks = [rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8) for n in (10, 3, 4)]
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)

    def window_probs(crops: np.ndarray) -> np.ndarray:
        x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - mean) / std
        with torch.no_grad():
            return torch.sigmoid(model(x[None]))[0].numpy()

    assert scoring.track_windows(10, 4) == [(0, 4), (4, 8), (6, 10)]
    assert scoring.track_windows(3, 4) == [(0, 3)] and scoring.track_windows(8, 4) == [(0, 4), (4, 8)]
    for crops, (p, steps) in zip(tracks, detector.score_tracks(tracks)):
        windows = scoring.track_windows(len(crops), SEQ_LEN)
        probs = [window_probs(crops[s:e]) for s, e in windows]
        assert p == pytest.approx(np.mean([w[-1] for w in probs]), abs=1e-5)
        expected = np.full(len(crops), np.nan)  # each crop scored in the first window that holds it
        for (s, e), w in zip(windows, probs):
            for k in range(s, e):
                if np.isnan(expected[k]):
                    expected[k] = w[k - s]
        np.testing.assert_allclose(steps, expected, atol=1e-5)


def test_crops_are_scored_as_the_jpegs_training_reads(inputs, tiny_weights):
    """predict holds crops as the JPEG bytes deepfake-extract writes and decodes them window by window."""
    from data_prep.faces import JpegCrops, decode_jpeg
    from data_prep.faces import encode_jpeg as _encode_jpeg

    detector, extractor, _ = inference.load_predictor(tiny_weights, inference.PredictConfig(device="cpu",
                                                                                        precision="fp32"))
    path = inputs["two_faces"]
    raw, held = extractor.extract(path), extractor.extract(path, jpeg=True)
    assert len(held.tracks) == len(raw.tracks) == 2 and min(len(t) for t in raw.tracks) >= SEQ_LEN
    for a, b in zip(raw.tracks, held.tracks):
        assert b.crops.shape == (0, 64, 64, 3) and len(b.jpegs) == len(a)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.boxes, b.boxes)
        # The same bytes as the training index's crops (same encoder and quality), decoded as the loader does.
        assert [bytes(j) for j in b.jpegs] == [_encode_jpeg(c, extractor.config.quality) for c in a.crops]
        images = b.images()
        assert isinstance(images, JpegCrops) and len(images) == len(a) and images[1:1].shape == (0, 64, 64, 3)
        assert np.array_equal(images[0], decode_jpeg(b.jpegs[0])) and images[:].shape == a.crops.shape
        assert np.array_equal(np.asarray(images), images[:]) and images.crop_shape == (64, 64, 3)
        assert np.abs(images[:].astype(int) - a.crops).mean() < 8  # JPEG at quality 90: close, not equal
        assert a.images() is a.crops
    # Lazy crops score exactly as the decoded array does; the video's result is that score.
    rng = np.random.default_rng(0)  # tracks of several windows, the last overlapping the one before
    longer = [JpegCrops([_encode_jpeg(c, 90) for c in rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)],
                        (64, 64, 3)) for n in (10, 3)]
    lazy = [t.images() for t in held.tracks] + longer
    decoded = [t[:] for t in lazy]
    for (p1, s1), (p2, s2) in zip(detector.score_tracks(lazy), detector.score_tracks(decoded)):
        assert p1 == p2 and np.array_equal(s1, s2)
    result = inference.predict_video(path, detector, extractor)
    assert result["p_fake"] == pytest.approx(max(p for p, _ in detector.score_tracks(decoded[:2])), abs=1e-6)
    with pytest.raises(ValueError, match="JPEG"):
        decode_jpeg(b"not a jpeg")


def test_collect_videos(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    for name in ("a/x.mp4", "a/b/y.MOV", "a/notes.txt", "a/.hidden.mp4", "z.avi"):
        (tmp_path / name).write_bytes(b"0")
    entries = inference.collect_videos([str(tmp_path / "a"), str(tmp_path / "*.avi"), str(tmp_path / "a" / "x.mp4"),
                                      str(tmp_path / "gone.mp4"), str(tmp_path / "empty"),
                                      str(tmp_path / "nope*.mp4")])
    names = [(Path(p).relative_to(tmp_path).as_posix() if reason is None else Path(p).name, reason)
             for p, reason in entries]
    # A folder's own files come before its subfolders'; a file found twice is listed once.
    assert names == [("a/x.mp4", None), ("a/b/y.MOV", None), ("z.avi", None), ("gone.mp4", None),
                     ("empty", "folder holds no video files"), ("nope*.mp4", "no video file matches this pattern")]


def test_user_errors_are_one_line_without_traceback(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DEEPFAKE_WEIGHTS", raising=False)
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    video = str(inputs["one_frame"])
    rc, _, err = run([video, "--weights", str(tmp_path / "nope.pt")], capsys)
    assert rc == 2 and "no such file" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run([video], capsys)  # nothing anywhere: say how to get weights
    assert rc == 2 and "deepfake demo" in err and "deepfake fit" in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    rc, _, err = run([video, "--weights", str(junk)], capsys)
    assert rc == 2 and "junk.pt" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run([video, "--weights", str(junk), "--threshold", "1.5"], capsys)
    assert rc == 2 and "--threshold" in err
    rc, _, err = run([video, "--format", "xml"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU is present")
def test_cuda_without_gpu_is_a_usage_error(inputs, tiny_weights, capsys):
    rc, _, err = run([str(inputs["one_frame"]), "--weights", str(tiny_weights), "--device", "cuda"], capsys)
    assert rc == 2 and "CUDA" in err and len(err.strip().splitlines()) == 1


def test_default_weights_places(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPFAKE_WEIGHTS", raising=False)
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="deepfake demo"):
        resolve_weights(None)
    from deepfake.weights import install

    cached = install(tiny_weights)  # what a user (or `deepfake demo`) does to make weights the default
    assert cached == tmp_path / "cache" / "detector.pt" and resolve_weights(None) == cached
    monkeypatch.setenv("DEEPFAKE_WEIGHTS", str(tiny_weights))
    assert resolve_weights(None) == tiny_weights  # the variable wins over the cache
    monkeypatch.setenv("DEEPFAKE_WEIGHTS", str(tmp_path / "typo.pt"))
    with pytest.raises(WeightsError, match="DEEPFAKE_WEIGHTS"):
        resolve_weights(None)
    digest = hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert resolve_weights(tiny_weights, sha256=digest[:12]) == tiny_weights
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        resolve_weights(tiny_weights, sha256="0" * 64)


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server over a folder (the only 'internet' a test may use)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_weights_from_url_are_downloaded_once_and_hash_checked(tiny_weights, http_server, tmp_path, monkeypatch,
                                                               capsys):
    root, base = http_server
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    digest = hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    good = f"detector-{digest[:10]}.pt"
    shutil.copy(tiny_weights, root / good)
    local = resolve_weights(f"{base}/{good}", progress=False)
    assert local == tmp_path / "cache" / "downloads" / good and local.read_bytes() == tiny_weights.read_bytes()
    (root / good).unlink()  # a second call uses the cached copy
    assert resolve_weights(f"{base}/{good}", progress=False) == local

    bad = "detector-0123456789.pt"  # the name promises a hash the bytes don't have
    shutil.copy(tiny_weights, root / bad)
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        resolve_weights(f"{base}/{bad}", progress=False)
    assert not (tmp_path / "cache" / "downloads" / bad).exists()
    assert sorted(p.name for p in (tmp_path / "cache" / "downloads").iterdir()) == [good]  # no temporary file left
    (root / "plain.pt").write_bytes(b"x")
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):  # --sha256 checks a URL without a hash in its name
        resolve_weights(f"{base}/plain.pt", sha256="ab" * 32, progress=False)
    with pytest.raises(WeightsError, match="HTTP 404"):
        resolve_weights(f"{base}/absent.pt", progress=False)

    # Offline (nothing listens on the port): one clear line through the CLI.
    dead = f"http://127.0.0.1:{_free_port()}/detector.pt"
    rc, _, err = run(["x.mp4", "--weights", dead], capsys)
    assert rc == 2 and "offline?" in err and len(err.strip().splitlines()) == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_write_results_formats_round_trip():
    made = [{"video": "a.mp4", "status": "ok", "p_fake": 0.75, "verdict": "fake",
             "faces": [{"track": 0, "p_fake": 0.75, "frames": [0, 5], "steps": [0.7, 0.8]}], "error": None},
            {"video": "b.mp4", "status": "no_face", "p_fake": None, "verdict": "no face", "faces": [],
             "error": None},
            scoring.error_result("c.mp4", "empty file (0 bytes)\nsecond line")]
    assert json.loads(results.write_results(made, "json")) == made
    rows = list(csv.DictReader(io.StringIO(results.write_results(made, "csv", [1.0, 2.0, 0.0]))))
    assert [r["verdict"] for r in rows] == ["fake", "no face", "error"]
    assert rows[0]["crops"] == "2" and rows[1]["faces"] == "0" and rows[2]["faces"] == ""
    assert rows[2]["error"] == "empty file (0 bytes) second line"  # one line
    table = results.write_results(made, "table", [1.0, 2.0, 0.0])
    assert table.splitlines()[0].split() == ["video", "verdict", "p(fake)", "faces", "seconds", "reason"]
