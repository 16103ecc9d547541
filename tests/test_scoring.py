"""One scoring rule (`deepfake.scoring`) for validation during `fit`, `deepfake evaluate` and `deepfake predict`."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from deepfake import scoring


def _score(p: float, steps) -> scoring.TrackScore:
    steps = np.asarray(steps, np.float64)
    return scoring.TrackScore(p, steps, [(0, len(steps), p)], scoring.contributions_of(len(steps), [(0, len(steps))],
                                                                                       [steps]), np.zeros(1))


def test_video_result_follows_the_rule():
    tracks = [(0, [0, 2, 4], _score(0.2, [0.1, 0.2, 0.3])), (1, [0, 2], _score(0.7, [0.6, 0.7]))]
    result = scoring.video_result("a.mp4", tracks, threshold=0.5)
    assert result["status"] == "ok" and result["p_fake"] == 0.7 and result["verdict"] == "fake"
    assert [f["track"] for f in result["faces"]] == [0, 1] and result["faces"][0]["frames"] == [0, 2, 4]
    assert result["faces"][1]["windows"] == [{"frames": [0, 2], "p_fake": 0.7}]
    assert scoring.video_result("b.mp4", [])["status"] == "no_face"
    assert scoring.video_result("c.mp4", [(0, [0], _score(float("nan"), [np.nan]))])["status"] == "error"
    assert scoring.track_p_fake([0.2, 0.4]) == pytest.approx(0.3) and scoring.video_p_fake([0.1, 0.9]) == 0.9


def test_contributions_add_up_to_each_windows_score_and_name_the_top_frames():
    windows = scoring.track_windows(6, 4)  # (0, 4), (2, 6)
    steps = [np.array([0.5, 0.9, 0.8, 0.85]), np.array([0.6, 0.7, 0.72, 0.95])]
    c = scoring.contributions_of(6, windows, steps)
    assert c[:4] == pytest.approx([0.0, 0.4, -0.1, 0.05]) and c[4:] == pytest.approx([0.02, 0.23])
    assert c[:4].sum() == pytest.approx(steps[0][-1] - 0.5)
    score = scoring.TrackScore(0.9, scoring.steps_of(6, windows, steps), [(0, 4, 0.85), (2, 6, 0.95)], c, np.zeros(2))
    face = scoring.video_result("v.mp4", [(0, [0, 5, 10, 15, 20, 25], score)])["faces"][0]
    assert face["top_frames"] == [5, 25, 15]  # contributions 0.4, 0.23, 0.05


def test_track_score_follows_the_rule_and_keeps_each_windows_raw_last_step_logit():
    from scipy.special import expit

    windows = scoring.track_windows(6, 4)  # (0, 4), (2, 6)
    logits = [np.array([-1.0, 0.0, 1.0, 2.0], np.float32), np.array([0.5, 1.5, -0.5, 3.0], np.float32)]
    steps = [expit(z / 2.0 + 0.25) for z in logits]  # reported scores, calibrated (T 2, b 0.25)
    score = scoring.track_score(6, windows, steps, logits)
    assert score.window_logits.dtype == np.float64 and score.window_logits.tolist() == [2.0, 3.0]
    assert score.windows == [(0, 4, float(steps[0][-1])), (2, 6, float(steps[1][-1]))]
    assert score.p_fake == scoring.track_p_fake([float(steps[0][-1]), float(steps[1][-1])])
    np.testing.assert_array_equal(score.steps, scoring.steps_of(6, windows, steps))
    np.testing.assert_array_equal(score.contributions, scoring.contributions_of(6, windows, steps))
    empty = scoring.track_score(0, [], [], [])
    assert np.isnan(empty.p_fake) and empty.windows == [] and empty.window_logits.shape == (0,)


def test_steps_take_the_first_window_holding_a_crop():
    windows = scoring.track_windows(6, 4)  # (0, 4), (2, 6)
    steps = scoring.steps_of(6, windows, [np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.6, 0.7, 0.8])])
    assert steps.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.7, 0.8])


def test_validation_scores_videos_as_evaluate_does(extracted_dataset, tmp_path):
    """For one checkpoint, Lightning validation's per-video p(fake) equal `deepfake evaluate index.csv`'s."""
    import pytorch_lightning as pl
    import torch

    from deepfake.checkpoint import save_detector
    from deepfake.data import FaceSequenceDataModule
    from deepfake.evaluation import evaluate
    from deepfake.inference import PredictConfig
    from deepfake.lit import DeepfakeLitModule
    from deepfake.model import DetectorConfig

    torch.manual_seed(0)
    lit = DeepfakeLitModule(net=DetectorConfig(backbone="test_efficientnet", pretrained=False, img_size=64,
                                               lstm_hidden=16))
    dm = FaceSequenceDataModule(str(extracted_dataset), seq_len=4, img_size=64, batch_size=3, num_workers=0,
                                val_fraction=0.5)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(lit, datamodule=dm, verbose=False)
    validation = lit.video_scores["val"]
    assert len(validation) >= 2 and all(isinstance(v, str) for v in validation)

    weights = save_detector(tmp_path / "detector.pt", lit.net, lit.detector_meta())
    evaluate(extracted_dataset / "index.csv", tmp_path / "eval", weights,
             predict_config=PredictConfig(device="cpu", precision="fp32", batch_size=2, runtime="torch"),
             say=lambda line: None)
    with open(tmp_path / "eval" / "predictions.csv", newline="") as f:
        evaluated = {row["video"]: float(row["p_fake"]) for row in csv.DictReader(f)}
    assert set(validation) <= set(evaluated)
    for video, p in validation.items():
        assert evaluated[video] == pytest.approx(p, abs=2e-6), video
    assert len({round(p, 6) for p in validation.values()}) > 1  # the comparison is not between constants
