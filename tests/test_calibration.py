"""Calibration (`deepfake.calibration`, `deepfake calibrate`, `--no-calibration`) and the calibration metrics.

Over-confident models are made by hand: synthetic logits scaled up, or a tiny detector whose last layer is
multiplied; one short training run (2 epochs of 2 batches) checks that fit writes calibration into detector.pt.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import make_face_index

from deepfake.calibration import (
    MIN_VIDEOS,
    T_BOUNDS,
    VideoLogits,
    calibration_of,
    describe,
    fit_calibration,
    video_probabilities,
)
from deepfake.checkpoint import build_meta, load_detector, save_detector
from deepfake.metrics import binary_metrics, expected_calibration_error, reliability_bins
from deepfake.scoring import raw_video_p_fake, track_p_fake, video_p_fake, video_result, video_scores

TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=64, lstm_hidden=16)


def synthetic(n: int, scale: float, seed: int, shift: float = 0.0) -> VideoLogits:
    """`n` videos of 1-2 tracks of 1-4 windows; fakes' logits centred at +1, reals' at -1, times `scale`."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n):
        y = i % 2
        tracks = []
        for _ in range(rng.integers(1, 3)):
            base = rng.normal(1.0 if y else -1.0, 1.5)
            tracks.append(list((base + rng.normal(0, 0.5, rng.integers(1, 5))) * scale + shift))
        videos.append((y, tracks))
    return VideoLogits.from_videos(videos)


def scores(data: VideoLogits, record: dict | None = None) -> dict:
    cal = calibration_of({"calibration": record}) if record else None
    return binary_metrics(data.labels, video_probabilities(data, *(cal or (1.0, 0.0))))


# ------------------------------------------------------------------------------------------------- metrics


def test_ece_and_brier_by_hand():
    from sklearn.metrics import brier_score_loss

    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.1, 0.9, 0.95, 1.0, 0.94])
    m = binary_metrics(y, p)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    # 15 bins of width 1/15: {0.05} bin 0, {0.1} bin 1, {0.9} bin 13, {0.95, 1.0, 0.94} bin 14 (1.0 in the last)
    expected = (1 * 0.05 + 1 * 0.1 + 1 * 0.1 + 3 * abs(2 / 3 - (0.95 + 1.0 + 0.94) / 3)) / 6
    assert m["ece"] == pytest.approx(expected)
    bins = reliability_bins(y, p)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 6 and bins[14]["n"] == 3
    assert bins[14]["frac_fake"] == pytest.approx(2 / 3) and bins[5]["mean_p"] is None
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


# ------------------------------------------------------------------------------------------------- fitting


def test_video_probabilities_follow_the_scoring_rule():
    """The vectorised rule of the fit equals `scoring.video_scores`, duplicates counted once."""
    rng = np.random.default_rng(3)
    index = np.array([0, 1, 2, 3, 3, 4, 5, 6, 6])
    track = np.array([0, 0, 1, 2, 2, 3, 4, 5, 5])
    video = np.array([7, 7, 7, 2, 2, 9, 9, 4, 4])
    label = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0])
    logit = rng.normal(0, 3, len(index))
    data = VideoLogits.from_windows(index, track, video, label, logit)
    for t, b in ((1.0, 0.0), (2.5, -0.7)):
        _, y, p = video_scores(index, track, video, label, 1 / (1 + np.exp(-(logit / t + b))))
        assert data.labels.tolist() == y.tolist()
        assert video_probabilities(data, t, b) == pytest.approx(p, abs=1e-12)


def test_fit_lowers_held_out_log_loss_and_ece_of_an_over_confident_model():
    val, held_out = synthetic(300, 6.0, seed=0), synthetic(300, 6.0, seed=1)
    record = fit_calibration(val, "fit validation")
    assert 3 < record["temperature"] < 12 and record["n_videos"] == 300
    assert record["after"]["logloss"] < record["before"]["logloss"] - 0.1
    assert record["after"]["ece"] < record["before"]["ece"] / 2
    raw, cal = scores(held_out), scores(held_out, record)
    assert cal["logloss"] < raw["logloss"] - 0.1 and cal["ece"] < raw["ece"] / 2 and cal["brier"] < raw["brier"]
    # An under-confident model gets T < 1.
    assert fit_calibration(synthetic(300, 0.2, seed=2), "x")["temperature"] < 0.5


def test_bias_is_kept_only_when_it_earns_its_parameter():
    shifted = fit_calibration(synthetic(300, 3.0, seed=4, shift=4.0), "x")  # every video pushed towards fake
    assert shifted["bias"] < -0.5 and shifted["bias_tried"]["gain_nats"] > 1
    no_bias = fit_calibration(synthetic(300, 3.0, seed=4, shift=4.0), "x", use_bias=False)
    assert no_bias["bias"] == 0.0 and shifted["after"]["logloss"] < no_bias["after"]["logloss"]
    balanced = fit_calibration(VideoLogits.from_videos([(i % 2, [[(2 * (i % 2) - 1) * (1 + i % 5)]])
                                                        for i in range(40)]), "x")
    assert balanced["bias"] == 0.0 and balanced["bias_tried"]["gain_nats"] <= 1  # symmetric: nothing to gain


def test_scores_stay_ordered():
    """One window per track: every video's order is kept, so AUC is exactly unchanged."""
    rng = np.random.default_rng(5)
    data = VideoLogits.from_videos([(i % 2, [[float(rng.normal(2 * (i % 2) - 1, 2) * 8)]]) for i in range(60)])
    record = fit_calibration(data, "x")
    raw, cal = video_probabilities(data), video_probabilities(data, record["temperature"], record["bias"])
    assert np.array_equal(np.argsort(raw, kind="stable"), np.argsort(cal, kind="stable"))
    assert record["after"]["auc"] == record["before"]["auc"]
    several = fit_calibration(synthetic(300, 6.0, seed=0), "x")  # tracks of several windows: within a hair
    assert several["after"]["auc"] == pytest.approx(several["before"]["auc"], abs=0.01)


def test_tiny_or_one_class_sets_are_not_fitted_and_separable_ones_stay_finite():
    tiny = fit_calibration(synthetic(MIN_VIDEOS - 1, 6.0, seed=0), "fit validation")
    assert tiny["temperature"] is None and "fewer than the 10" in tiny["skipped"] and calibration_of(
        {"calibration": tiny}) is None
    one_class = VideoLogits.from_videos([(1, [[float(i)]]) for i in range(30)])
    assert fit_calibration(one_class, "x")["temperature"] is None
    assert "skipped" in describe(tiny) and describe(None).startswith("none")
    # Perfectly separated, over-confident: Platt's targets keep the temperature finite and off the bounds.
    separable = VideoLogits.from_videos([(i % 2, [[(2 * (i % 2) - 1) * (30.0 + i)]]) for i in range(20)])
    record = fit_calibration(separable, "x")
    assert T_BOUNDS[0] * 1.01 < record["temperature"] < T_BOUNDS[1] / 1.01 and "note" not in record
    p = video_probabilities(separable, record["temperature"], record["bias"])
    assert 0.85 < p[separable.labels == 1].min() and p[separable.labels == 1].max() < 0.9999


# ------------------------------------------------------------------------------------------------- the detector


def tiny_net(scale: float = 1.0, seed: int = 0):
    from deepfake.model import DeepfakeDetector

    torch.manual_seed(seed)
    net = DeepfakeDetector(**TINY)
    with torch.no_grad():  # a deliberately over-confident model: every logit times `scale`
        net.fc.weight.mul_(scale)
        net.fc.bias.mul_(scale)
    return net


def test_calibration_round_trips_through_the_checkpoint(tmp_path):
    net = tiny_net()
    record = {**fit_calibration(synthetic(60, 6.0, seed=0), "fit validation"), "extra": {"nested": [1, 2.5]}}
    path = save_detector(tmp_path / "d.pt", net, build_meta(net, seq_len=4, margin=0.3, stride=3,
                                                             calibration=record))
    _, meta = load_detector(path)
    assert meta["calibration"] == json.loads(json.dumps(record))
    assert calibration_of(meta) == (pytest.approx(record["temperature"]), pytest.approx(record["bias"]))


def test_old_checkpoint_scores_as_before_and_no_calibration_gives_the_raw_score(tmp_path):
    from deepfake.inference import Detector

    net = tiny_net(scale=30.0)
    old = save_detector(tmp_path / "old.pt", net, build_meta(net, seq_len=4, margin=0.3, stride=3))
    cal = {"temperature": 4.0, "bias": -0.5, "fitted_on": "test"}
    new = save_detector(tmp_path / "new.pt", net, build_meta(net, seq_len=4, margin=0.3, stride=3, calibration=cal))
    crops = np.random.default_rng(0).integers(0, 256, (2, 6, 64, 64, 3), dtype=np.uint8)
    tracks = [crops[0], crops[1][:3]]

    def score(path, calibrated=True):
        d = Detector.load(path, device="cpu", precision="fp32", calibrated=calibrated)
        return d, d.score_tracks_in_detail(tracks)

    d_old, old_scores = score(old)
    assert d_old.calibration is None
    d_raw, raw = score(new, calibrated=False)
    d_cal, calibrated = score(new)
    assert d_raw.calibration is None and d_cal.calibration == (4.0, -0.5)
    for o, r, c in zip(old_scores, raw, calibrated):
        np.testing.assert_allclose(o.steps, r.steps, rtol=1e-6)  # the old file scores exactly as the raw one
        logit = np.log(r.steps) - np.log1p(-r.steps)
        np.testing.assert_allclose(c.steps, 1 / (1 + np.exp(-(logit / 4.0 - 0.5))), rtol=1e-4, atol=1e-6)
        # Each window keeps its raw last-step logit, calibrated or not, the one its raw score is the sigmoid of.
        np.testing.assert_array_equal(c.window_logits, r.window_logits)
        np.testing.assert_array_equal(o.window_logits, r.window_logits)
        np.testing.assert_allclose(1 / (1 + np.exp(-r.window_logits)), [p for _, _, p in r.windows], rtol=1e-6)
    with torch.inference_mode():  # the model's own last-step logits of track 0's windows (0, 4) and (2, 6)
        want = [float(d_raw.model(d_raw.prepare([tracks[0][s:e]]))[0, -1]) for s, e in ((0, 4), (2, 6))]
    assert raw[0].window_logits.tolist() == pytest.approx(want, abs=1e-5) and len(raw[1].window_logits) == 1
    # The raw video score comes from a calibrated detector's window logits, as the uncalibrated one reports it.
    frames = [list(range(6)), list(range(3))]
    as_result = lambda s: video_result("v.mp4", [(i, frames[i], t) for i, t in enumerate(s)])  # noqa: E731
    assert raw_video_p_fake(calibrated) == pytest.approx(as_result(raw)["p_fake"], abs=1e-6)
    assert as_result(calibrated)["p_fake"] != pytest.approx(as_result(raw)["p_fake"], abs=1e-3) and (
        raw_video_p_fake([]) is None)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """An index of 10 videos (5 real, 5 fake), one track of 8 crops each."""
    return make_face_index(tmp_path_factory.mktemp("cal_faces"), n_pairs=5, n_frames=8)


@pytest.fixture(scope="module")
def confident_weights(tmp_path_factory) -> Path:
    """A random tiny detector, every logit times 40: confident, and right only by chance."""
    net = tiny_net(scale=40.0, seed=1)
    return save_detector(tmp_path_factory.mktemp("w") / "detector.pt", net,
                         build_meta(net, seq_len=4, margin=0.3, stride=2))


def test_calibrate_writes_a_detector_that_evaluate_and_predict_use(faces, confident_weights, synth_dataset,
                                                                   tmp_path, capsys):
    from deepfake.cli import calibrate, evaluate, predict

    new = tmp_path / "mine.pt"
    assert calibrate.main([str(faces / "index.csv"), "--weights", str(confident_weights), "--out", str(new),
                           "--device", "cpu", "--precision", "fp32", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "10 of 10 videos scored" in out and f"wrote {new}" in out and "raw scores:" in out
    _, meta = load_detector(new)
    record = meta["calibration"]
    assert record["fitted_on"] == f"calibrate {faces / 'index.csv'}" and record["n_videos"] == 10
    assert record["temperature"] > 5 and record["after"]["logloss"] < record["before"]["logloss"]
    assert record["after"]["ece"] < record["before"]["ece"]
    _, old_meta = load_detector(confident_weights)
    assert {k: v for k, v in meta.items() if k != "calibration"} == old_meta  # nothing else changed

    # evaluate applies it and says so; --no-calibration gives back the raw scores of the old file.
    def run_evaluate(weights: Path, name: str, *extra: str) -> dict:
        assert evaluate.main([str(faces / "index.csv"), "--weights", str(weights), "--out", str(tmp_path / name),
                              "--device", "cpu", "--precision", "fp32", "--no-progress", *extra]) == 0
        return json.loads((tmp_path / name / "metrics.json").read_text())

    cal, raw, old = run_evaluate(new, "cal"), run_evaluate(new, "raw", "--no-calibration"), run_evaluate(
        confident_weights, "old")
    assert cal["calibration"]["applied"] and cal["calibration"]["temperature"] == pytest.approx(record["temperature"])
    assert cal["logloss"] == pytest.approx(record["after"]["logloss"], abs=1e-4)
    assert cal["uncalibrated"]["logloss"] == pytest.approx(old["logloss"], abs=1e-6)
    assert not raw["calibration"]["applied"] and "--no-calibration" in raw["calibration"]["reason"]
    assert raw["logloss"] == pytest.approx(old["logloss"], abs=1e-9) and "uncalibrated" not in raw
    assert old["calibration"] == {"applied": False, "reason": "the checkpoint has no calibration"}
    assert (tmp_path / "cal" / "reliability.png").stat().st_size > 5_000
    assert "calibrated: temperature" in capsys.readouterr().out

    # predict: the new file's scores are calibrated; --no-calibration gives the old file's.
    video = str(synth_dataset / "fake" / "clip_0003.mp4")

    def run_predict(weights: Path, *extra: str) -> dict:
        assert predict.main([video, "--weights", str(weights), "--format", "json", "--device", "cpu",
                             "--precision", "fp32", "--no-progress", *extra]) == 0
        return json.loads(capsys.readouterr().out)[0]

    p_cal, p_raw = run_predict(new), run_predict(new, "--no-calibration")
    assert p_raw["p_fake"] == run_predict(confident_weights)["p_fake"]
    assert p_cal["p_fake"] != p_raw["p_fake"]
    # each window's raw score calibrated as sigmoid(logit / T + b), then the rule: the calibrated video score
    temperature, bias = record["temperature"], record["bias"]
    want = video_p_fake([track_p_fake([1 / (1 + np.exp(-(np.log(w["p_fake"] / (1 - w["p_fake"])) / temperature + bias)))
                                       for w in face["windows"]]) for face in p_raw["faces"]])
    assert p_cal["p_fake"] == pytest.approx(want, abs=1e-4)


def test_calibrate_fits_the_window_logits_of_evaluations_scorer(faces, confident_weights, tmp_path):
    """One scorer of labelled sets: calibrate fits on the raw window logits that evaluation's scorer keeps in each
    face's `TrackScore`, and the scoring rule over them gives the raw video scores evaluation reports."""
    from deepfake.inference import Detector, PredictConfig
    from deepfake.labelled import iter_index_scores, load_source
    from deepfake.recalibration import recalibrate

    detector = Detector.load(confident_weights, device="cpu", precision="fp32", calibrated=False)
    _, rows, notes = load_source(faces / "index.csv")
    scored = list(iter_index_scores(rows, notes[0], detector))
    assert [s.result["status"] for s in scored] == ["ok"] * 10
    assert all(len(t.window_logits) == len(t.windows) for s in scored for t in s.tracks)
    data = VideoLogits.from_videos([(s.video.label, [t.window_logits for t in s.tracks]) for s in scored])
    np.testing.assert_allclose(video_probabilities(data), [s.result["p_fake"] for s in scored], atol=1e-6)
    result = recalibrate(confident_weights, faces / "index.csv", tmp_path / "new.pt",
                         config=PredictConfig(device="cpu", precision="fp32"))
    assert result.n_videos == 10 and not result.no_face and not result.errors
    assert result.record == fit_calibration(data, f"calibrate {faces / 'index.csv'}")


def test_calibrate_refuses_a_set_too_small(faces, confident_weights, tmp_path, capsys):
    import pandas as pd

    from deepfake.cli import calibrate

    rows = pd.read_csv(faces / "index.csv")
    rows[rows["video"].isin(sorted(set(rows["video"]))[:6])].to_csv(faces / "small.csv", index=False)
    out = tmp_path / "never.pt"
    assert calibrate.main([str(faces / "small.csv"), "--weights", str(confident_weights), "--out", str(out),
                           "--device", "cpu", "--no-progress"]) == 1
    assert "nothing written" in capsys.readouterr().err and not out.exists()
    assert calibrate.main([str(tmp_path / "nothing"), "--weights", str(confident_weights)]) == 2


def test_fit_writes_calibration_into_the_detector(tmp_path, capsys):
    """`deepfake fit` fits the calibration on the best checkpoint's validation videos (10 here; a few seconds)."""
    from deepfake.cli import train

    index = make_face_index(tmp_path / "faces", n_pairs=7, n_frames=10, split="train", val_pairs=5)
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"
    assert train.main(["fit", "--config", str(config), "--data.index", str(index), "--run_dir", str(tmp_path / "r"),
                       "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "2",
                       "--trainer.limit_train_batches", "2"]) == 0
    ckpts = tmp_path / "r" / "tiny_cpu" / "version_0" / "checkpoints"
    best = next(ckpts.glob("best-*.ckpt"))
    windows = torch.load(best, map_location="cpu", weights_only=True)["validation_windows"]
    assert set(windows) == {"index", "track", "video", "label", "logit"}
    _, meta = load_detector(ckpts / "detector.pt")
    record = meta["calibration"]
    assert record["fitted_on"] == "fit validation" and record["n_videos"] == 10
    assert record["temperature"] is not None and math.isfinite(record["temperature"])
    assert record["after"]["logloss"] <= record["before"]["logloss"] + 1e-9
    assert "deepfake fit: calibration: temperature" in capsys.readouterr().out


def test_demo_report_line():
    from deepfake.demo_report import calibration_line

    held = {"logloss": 0.098, "ece": 0.031, "uncalibrated": {"logloss": 0.114, "ece": 0.062},
            "calibration": {"applied": True, "temperature": 1.523, "bias": 0.0, "n_videos": 60}}
    assert calibration_line(held) == ("  calibration (temperature 1.52 from 60 validation videos), held-out raw -> "
                                      "calibrated:  log loss 0.114 -> 0.098   ECE 0.062 -> 0.031")
    assert calibration_line({"calibration": {"applied": False, "reason": "x"}}) == "  calibration: none (x)"
