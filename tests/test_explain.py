"""Explanations (`deepfake.explain`, `deepfake predict --explain`): Grad-CAM maps through the LSTM, their files, the
explained video; and, slow, that a trained detector's heat lies inside the known blended region of synth fakes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_predict import make_weights

from deepfake import explain
from deepfake.cli import predict as predict_cli
from deepfake.inference import Detector, PredictConfig, load_predictor


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights") / "detector.pt")


@pytest.fixture(scope="module")
def predictor(tiny_weights):
    # Explanations need the PyTorch model (predict --explain asks for it the same way).
    detector, extractor, _ = load_predictor(tiny_weights, PredictConfig(device="cpu", precision="fp32",
                                                                        runtime="torch"))
    return detector, extractor


@pytest.fixture(scope="module")
def fake_faces(predictor, synth_dataset):
    _, extractor = predictor
    return extractor.extract(str(synth_dataset / "fake" / "clip_0003.mp4"), jpeg=True)


def test_maps_have_the_crop_shape_are_finite_and_follow_the_score(predictor, fake_faces):
    detector, _ = predictor
    expl = explain.explain_faces(fake_faces, detector)
    assert expl.layer == "blocks.2" and expl.cells == 8  # the tiny model's last map is 2x2: auto takes stride 8
    assert len(expl.tracks) == len(fake_faces.tracks) >= 1
    scores = detector.score_tracks_in_detail([t.images() for t in fake_faces.tracks])
    for t, track, score in zip(expl.tracks, fake_faces.tracks, scores):
        crops = np.asarray(track.images())
        assert t.maps.shape == crops.shape[:3] and t.maps.dtype == np.float32  # (N, S, S): one map per crop
        assert np.isfinite(t.maps).all() and (t.maps >= 0).all() and t.maps.max() > 0
        # Each window's weights add up to 1 over the crops it owns when it owns all of its crops (the first).
        s, e, _ = t.windows[0]
        assert t.weights[s:e].sum() == pytest.approx(1.0, abs=1e-5)
        # The explanation explains the reported score: the same windows, steps and p(fake) (fp32 both).
        assert t.p_fake == pytest.approx(score.p_fake, abs=1e-5)
        np.testing.assert_allclose(t.steps, score.steps, atol=1e-5)
        assert [w[:2] for w in t.windows] == [w[:2] for w in score.windows]
        np.testing.assert_array_equal(t.frames, track.frames)
        assert t.crop_boxes.shape == (len(t.frames), 4)
        side = t.crop_boxes[:, 2] - t.crop_boxes[:, 0]
        np.testing.assert_allclose(side, t.crop_boxes[:, 3] - t.crop_boxes[:, 1])  # squares around the faces
        assert (t.crop_boxes[:, :2] <= t.face_boxes[:, :2]).all() and (t.crop_boxes[:, 2:] >= t.face_boxes[:, 2:]).all()


def reference_gradcam(model, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Grad-CAM the textbook way: the whole graph recorded, the map's gradient taken by a hook."""
    store = {}

    def keep(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = dict(model.backbone.named_modules())[layer].register_forward_hook(keep)
    try:
        model(x)[:, -1].sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    a, g = store["a"], store["a"].grad
    return torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)).detach()


@pytest.mark.parametrize("layer", ["blocks.2", "last"])
def test_gradcam_matches_the_textbook_computation_and_survives_inference_mode(predictor, fake_faces, layer):
    detector, _ = predictor
    crops = np.asarray(fake_faces.tracks[0].images())[:4]
    with torch.inference_mode():  # as predict scores: the explanation must still get its gradients
        cams, logits = explain.gradcam_windows(detector, [crops], layer)
    x = detector.prepare([crops]).float()
    ref = reference_gradcam(detector.model, x, "blocks.2" if layer == "blocks.2" else "bn2")
    torch.testing.assert_close(cams.reshape(ref.shape), ref, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(logits, detector.model(x), rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad for p in detector.model.parameters())  # the weights' flags are given back


def test_a_bf16_detector_is_explained_at_its_precision_and_differentiated_in_fp32(tiny_weights, fake_faces):
    bf16 = Detector.load(tiny_weights, device="cpu", precision="bf16")
    track = fake_faces.tracks[0]
    (score,) = bf16.score_tracks_in_detail([track.images()])
    expl = explain.explain_faces(fake_faces, bf16, layer="last")
    np.testing.assert_allclose(expl.tracks[0].steps, score.steps, atol=5e-3)  # predict's bf16 scores
    exact = explain.explain_faces(fake_faces, bf16, layer="last", precision="fp32")
    a, b = expl.tracks[0].cams.ravel(), exact.tracks[0].cams.ravel()
    assert np.isfinite(a).all() and a.dtype == np.float32
    assert np.corrcoef(a, b)[0, 1] > 0.95  # the same maps up to bf16's rounding of the feature map


def test_layer_choice():
    from deepfake.model import DeepfakeDetector

    tiny = DeepfakeDetector(backbone="test_efficientnet", pretrained=False, img_size=64, lstm_hidden=8)
    assert explain.resolve_layer(tiny) == ("blocks.2", 8)
    assert explain.resolve_layer(tiny, img_size=256) == ("last", 8)
    assert explain.resolve_layer(tiny, "last") == ("last", 2)
    assert explain.resolve_layer(tiny, "blocks.1") == ("blocks.1", 16)
    with pytest.raises(ValueError, match="not a module"):
        explain.resolve_layer(tiny, "nope")
    b1 = DeepfakeDetector(backbone="efficientnet_b1", pretrained=False, lstm_hidden=8)
    assert explain.resolve_layer(b1) == ("last", 8)  # 240 px: the map that is pooled, 8x8


def test_files_npz_and_png(predictor, fake_faces, tmp_path):
    detector, _ = predictor
    expl = explain.explain_faces(fake_faces, detector)
    written = explain.save_explanation(expl, tmp_path / "clip")
    assert sorted(p.name for p in written) == sorted([f"track{t.track}.png" for t in expl.tracks] + ["heatmaps.npz"])
    for t in expl.tracks:
        img = cv2.imread(str(tmp_path / "clip" / f"track{t.track}.png"))
        assert img is not None and img.shape[0] > explain.TILE_PX and img.shape[1] > 4 * explain.TILE_PX
    with np.load(tmp_path / "clip" / "heatmaps.npz") as z:
        assert str(z["layer"]) == "blocks.2" and int(z["cells"]) == 8 and not bool(z["calibrated"])
        assert z["tracks"].tolist() == [t.track for t in expl.tracks]
        for t in expl.tracks:
            k = f"track{t.track}"
            assert z[f"{k}_maps"].dtype == np.float32 and z[f"{k}_maps"].shape == t.maps.shape
            np.testing.assert_array_equal(z[f"{k}_maps"], t.maps)
            np.testing.assert_array_equal(z[f"{k}_frames"], t.frames)
            assert z[f"{k}_crop_boxes"].shape == z[f"{k}_face_boxes"].shape == (len(t.frames), 4)
            assert z[f"{k}_steps"].shape == z[f"{k}_weights"].shape == (len(t.frames),)
            assert z[f"{k}_windows"].shape == (len(t.windows), 2) and len(z[f"{k}_window_p"]) == len(t.windows)
            assert set(z[f"{k}_top_frames"].tolist()) <= set(t.frames.tolist())
    assert not list((tmp_path / "clip").glob(".*partial*"))  # written atomically


def decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_predict_explain_writes_maps_and_a_playable_video(synth_dataset, tiny_weights, tmp_path, capsys):
    from data_prep.video import probe

    fake, real = synth_dataset / "fake" / "clip_0003.mp4", synth_dataset / "real" / "clip_0000.mp4"
    out = tmp_path / "explain"
    status = predict_cli.main([str(fake), str(real), "--weights", str(tiny_weights), "--device", "cpu",
                               "--format", "json", "--explain", str(out), "--explain-video", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    results = json.loads(captured.out)
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert f"explanations in {out}" in captured.err
    for video, name in ((fake, "fake__clip_0003"), (real, "real__clip_0000")):
        folder = out / name
        assert (folder / "track0.png").is_file() and (folder / "heatmaps.npz").is_file()
        assert decoded_frames(folder / "explained.mp4") == probe(video).n_frames  # every frame of the source
        import av

        with av.open(str(folder / "explained.mp4")) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 320, 240)
            assert float(stream.average_rate) == pytest.approx(10.0)


def test_explained_video_draws_boxes_and_heat_where_the_face_is(predictor, fake_faces, tmp_path):
    from data_prep.video import iter_frames

    detector, _ = predictor
    expl = explain.explain_faces(fake_faces, detector)
    out = explain.write_explained_video(expl, fake_faces.video, tmp_path / "x.mp4")
    import av

    with av.open(str(out)) as container:
        drawn = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    source = [f for _, f in iter_frames(fake_faces.video)]
    t = expl.tracks[0]
    i = int(t.frames[len(t.frames) // 2])
    x1, y1, x2, y2 = t.face_boxes[len(t.frames) // 2].astype(int)
    diff = np.abs(drawn[i].astype(int) - source[i].astype(int)).sum(-1)
    inside = diff[max(y1, 0):y2, max(x1, 0):x2].mean()
    far = diff[:, : max(1, int(t.crop_boxes[:, 0].min()) - 8)].mean()  # left of every crop: untouched
    assert inside > 3 * far + 5


def test_explain_video_needs_explain_and_a_failed_explanation_is_a_warning(synth_dataset, tiny_weights, tmp_path,
                                                                           monkeypatch, capsys):
    clip = synth_dataset / "fake" / "clip_0003.mp4"
    assert predict_cli.main([str(clip), "--weights", str(tiny_weights), "--explain-video", "--no-progress"]) == 2
    assert "--explain-video needs --explain" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise RuntimeError("out of paint")

    monkeypatch.setattr(explain, "write_explanation", broken)
    status = predict_cli.main([str(clip), "--weights", str(tiny_weights), "--device", "cpu", "--format", "json",
                               "--explain", str(tmp_path / "x"), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1 and json.loads(captured.out)[0]["status"] == "ok"  # kept, but the failure shows (issue 31)
    assert "no explanation for" in captured.err and "out of paint" in captured.err and "(1 failed)" in captured.err


def test_a_model_without_a_spatial_map_is_refused():
    with pytest.raises(explain.ExplainError, match="DeepfakeDetector"):
        explain.resolve_layer(torch.nn.Linear(2, 2))


def test_plot_marks_windows_and_top_frames_and_says_calibrated(tmp_path):
    from deepfake.plots import plot_video

    face = {"track": 0, "p_fake": 0.8, "frames": [0, 2, 4, 6, 8], "steps": [0.6, 0.7, 0.9, 0.8, 0.85],
            "windows": [{"frames": [0, 6], "p_fake": 0.8}, {"frames": [2, 8], "p_fake": 0.85}],
            "top_frames": [4, 0]}
    result = {"video": "a.mp4", "status": "ok", "p_fake": 0.8, "verdict": "fake", "faces": [face], "error": None}
    plain = plot_video(result, None, tmp_path / "plain.png")
    marked = plot_video({**result, "calibrated": True}, None, tmp_path / "calibrated.png")
    old = plot_video({**result, "faces": [{k: v for k, v in face.items() if k not in ("windows", "top_frames")}]},
                     None, tmp_path / "old.png")  # results of before windows and top frames still plot
    images = [cv2.imread(str(p)) for p in (plain, marked, old)]
    assert all(img is not None for img in images)
    assert not np.array_equal(images[0], images[2])  # the marks are drawn
    assert not np.array_equal(images[0], images[1])  # the label says calibrated


# ------------------------------------------------------------------------------------------------- slow


def blend_masks(synth_dir: Path, video: str):
    """The exact blend opacity of a `deepfake synth` fake, frame by frame: its plan and blend parameters again."""
    from data_prep.sbi import self_blend
    from data_prep.synth_fakes import fake_params as _fake_params
    from data_prep.synth_plan import SynthConfig
    from data_prep.synth_plan import plan_clip as _plan_clip

    cfg = SynthConfig(**json.loads((synth_dir / "synth.json").read_text())["config"], progress=False)
    pair = int(Path(video).stem.split("_")[1]) - cfg.n_real
    plan = _plan_clip(cfg, pair, pair in cfg.multi_face_pairs())
    params = _fake_params(cfg, pair, len(plan.faces))
    blank = np.zeros((cfg.height, cfg.width, 3), np.uint8)

    def mask(i: int) -> np.ndarray:
        out = np.zeros((cfg.height, cfg.width), np.float32)
        for face, p in zip(plan.faces, params):
            _, m = self_blend(blank, face.boxes[i], p, landmarks=face.landmarks[i], frame_index=i, return_mask=True)
            out = np.maximum(out, m)
        return out

    return mask


def heat_ratio(expl, mask, margin: float) -> float:
    """Mean heat per pixel inside the blended region (opacity above half its peak in the frame) over the mean outside
    it (below a twentieth of the peak), pooled over a clip's crops."""
    from data_prep.track import square_crop

    heat_in = heat_out = area_in = area_out = 0.0
    for t in expl.tracks:
        for i, frame in enumerate(t.frames):
            m = square_crop(mask(int(frame)), t.face_boxes[i], margin, t.maps.shape[-1])
            peak = float(m.max())
            if peak < 0.05:  # nothing blended in this crop
                continue
            inside, outside = m > 0.5 * peak, m < 0.05 * peak
            heat_in, heat_out = heat_in + t.maps[i][inside].sum(), heat_out + t.maps[i][outside].sum()
            area_in, area_out = area_in + inside.sum(), area_out + outside.sum()
    return (heat_in / max(area_in, 1)) / max(heat_out / max(area_out, 1), 1e-30)


@pytest.mark.slow
def test_a_trained_detector_heats_the_blended_region(tmp_path):
    """Trained briefly on synth clips (tiny config, about 4 CPU minutes), the detector's maps on 12 held-out fakes are
    hotter inside the region that was blended than outside it (the median over the clips), and more so than an
    untrained detector's."""
    from deepfake.cli import extract, synth, train
    from deepfake.model import DeepfakeDetector

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"
    assert synth.main([str(tmp_path / "train"), "--count", "80", "--resolution", "320x240", "--seconds", "4",
                       "--fps", "10", "--seed", "11", "--no-progress"]) == 0
    assert extract.main([str(tmp_path / "train"), str(tmp_path / "extracted"), "--layout", "folder", "--stride", "2",
                         "--size", "64", "--device", "cpu", "--no-progress"]) == 0
    assert train.main(["fit", "--config", str(tiny), "--data.index", str(tmp_path / "extracted"), "--run_dir",
                       str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false", "--trainer.max_epochs",
                       "16", "--data.epoch_size", "384"]) == 0  # 384 steps: validation AUC reaches 1.0
    weights = tmp_path / "runs" / "tiny_cpu" / "version_0" / "checkpoints" / "detector.pt"
    heldout = tmp_path / "heldout"
    assert synth.main([str(heldout), "--count", "24", "--resolution", "320x240", "--seconds", "3", "--fps", "10",
                       "--seed", "1234", "--no-progress"]) == 0
    detector, extractor, _ = load_predictor(weights, PredictConfig(device="cpu", precision="fp32", runtime="torch"))
    torch.manual_seed(0)
    untrained = Detector(DeepfakeDetector(**detector.meta["model"]), detector.meta, device="cpu", precision="fp32")
    trained_ratios, untrained_ratios = [], []
    for video in sorted((heldout / "fake").glob("*.mp4")):
        faces = extractor.extract(str(video), jpeg=True)
        if not faces.tracks:
            continue
        mask = blend_masks(heldout, video.name)
        trained_ratios.append(heat_ratio(explain.explain_faces(faces, detector), mask, extractor.config.margin))
        untrained_ratios.append(heat_ratio(explain.explain_faces(faces, untrained), mask, extractor.config.margin))
    trained, untrained_ = np.array(trained_ratios), np.array(untrained_ratios)
    report = f"trained {np.round(trained, 2).tolist()}, untrained {np.round(untrained_, 2).tolist()}"
    assert len(trained) >= 10, report
    # Measured (2026-12-02): trained median 2.00 (7 of 12 clips above 1; on the others this briefly trained model
    # looks at the background, the hair or the collar, which the maps show), untrained 1.02. The demo's: README.
    assert np.median(trained) > 1.5, report
    assert np.median(trained) > np.median(untrained_) + 0.5, report


def test_artefacts_never_cost_the_prediction(tmp_path, monkeypatch):
    """write_artefacts: a plot or explanation that fails is a note; what works is written; errors get no plot."""
    from deepfake import artefacts, plots

    def broken(*_a, **_k):
        raise MemoryError("out of memory drawing")

    monkeypatch.setattr(plots, "plot_video", broken)
    result = {"video": "v.mp4", "status": "ok", "p_fake": 0.7, "faces": []}
    made = artefacts.write_artefacts(result, None, None, plot=tmp_path / "v.png", explain=tmp_path / "ex")
    assert made.plot is None and not (tmp_path / "v.png").exists()
    assert [n.split(":")[0] for n in made.notes] == ["no plot", "no explanation"]
    assert "MemoryError: out of memory drawing" in made.notes[0]
    error = {"video": "bad.mp4", "status": "error", "p_fake": None, "faces": []}
    assert artefacts.write_artefacts(error, None, None, plot=tmp_path / "b.png", explain=tmp_path / "b").notes == []
