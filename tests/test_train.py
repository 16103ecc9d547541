"""Tests of `deepfake fit | validate | test` (deepfake.train, deepfake.lit) on CPU with the tiny config."""

from __future__ import annotations

import csv

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_data import index_from_synth, make_face_index

from deepfake.cli import synth as synth_cli
from deepfake.cli import train
from deepfake.checkpoint import load_detector
from deepfake.lit import DeepfakeLitModule
from deepfake.scoring import video_scores

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"
QUIET = ["--trainer.enable_progress_bar", "false"]


def fit(index: Path, run_dir: Path, *extra: str, command: str = "fit") -> int:
    return train.main([command, "--config", str(TINY), "--data.index", str(index), "--run_dir", str(run_dir),
                       *QUIET, *extra])


def run_folder(run_dir: Path, version: int = 0) -> Path:
    return run_dir / "tiny_cpu" / f"version_{version}"


def metrics(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "metrics.csv")


@pytest.fixture(scope="module")
def face_index(tmp_path_factory) -> Path:
    return make_face_index(tmp_path_factory.mktemp("faces"), n_pairs=4, n_frames=10, val_pairs=1)


@pytest.fixture(scope="module")
def first_run(face_index, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs")
    assert fit(face_index, run_dir, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2") == 0
    return run_dir


def test_fit_writes_checkpoint_config_and_detector(first_run, capsys):
    folder = run_folder(first_run)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model"]["net"]["backbone"] == "test_efficientnet" and config["data"]["seq_len"] == 8
    ckpts = folder / "checkpoints"
    best = list(ckpts.glob("best-*.ckpt"))
    assert len(best) == 1 and (ckpts / "last.ckpt").is_file() and (ckpts / "detector.pt").is_file()
    # detector.onnx beside it (the export extra is installed here): what predict scores with on a CPU.
    from deepfake.runtime import load_exported
    from deepfake.weights import sha256_of

    assert load_exported(ckpts / "detector.onnx", "cpu")[1]["export"]["source_sha256"] == sha256_of(
        ckpts / "detector.pt")
    assert (folder / "metrics.csv").is_file() and list(folder.glob("events.out.tfevents.*"))  # CSV + TensorBoard
    assert "balanced_logloss" in best[0].name  # the best by the balanced log loss
    split = list(csv.DictReader(open(folder / "split.csv")))  # the split this run used
    assert {r["split"] for r in split} == {"train", "val"} and all(r["group"] for r in split)
    m = metrics(folder)
    for key in ("train/loss_epoch", "train/chance", "val/loss", "val/logloss", "val/balanced_logloss", "val/auc",
                "val/acc", "val/ap"):
        assert m[key].notna().any(), key
    # Everything loads without unpickling code.
    ckpt = torch.load(best[0], map_location="cpu", weights_only=True)
    assert ckpt["detector_meta"]["seq_len"] == 8
    net, meta = load_detector(ckpts / "detector.pt")
    assert meta["img_size"] == 64 and meta["seq_len"] == 8 and meta["margin"] == 0.3 and meta["stride"] == 2
    assert meta["mean"] == pytest.approx(list(net.mean)) and meta["model"]["backbone"] == "test_efficientnet"
    # 2 validation videos: too few to calibrate on, and the meta says so (tests/test_calibration.py fits one).
    assert meta["calibration"]["temperature"] is None and "fewer than the 10" in meta["calibration"]["skipped"]
    from_ckpt, _ = load_detector(best[0])  # the Lightning checkpoint loads the same way, to the same weights
    x = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(from_ckpt(x), net(x))


def test_a_run_that_learns_nothing_says_so(face_index, tmp_path, capsys):
    """A training loss that ends at a constant guess's (here: a learning rate too small to move the weights) is
    reported as a stalled run, on stderr, after the weights' path; a loss well below it is not."""
    from deepfake.losses import STALLED_RATIO
    from deepfake.train import stalled_training

    assert fit(face_index, tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
               "--model.lr", "1e-12") == 0
    out, err = capsys.readouterr()
    assert "detector weights in" in out and "learned nothing" not in out
    assert "deepfake fit: warning: the last epoch's training loss" in err and "learned nothing" in err
    m = metrics(run_folder(tmp_path)).dropna(subset=["train/chance"])
    assert m["train/loss_epoch"].iloc[-1] >= STALLED_RATIO * m["train/chance"].iloc[-1]
    assert stalled_training({"train/loss_epoch": torch.tensor(2.7), "train/chance": torch.tensor(5.5)}) is None
    assert "0.96 x" in stalled_training({"train/loss_epoch": 5.3, "train/chance": 5.5})
    assert stalled_training({}) is None


def test_resume_from_ckpt_path(first_run, face_index):
    last = run_folder(first_run) / "checkpoints" / "last.ckpt"
    steps = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert fit(face_index, first_run, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
               "--ckpt_path", str(last)) == 0
    resumed = run_folder(first_run, 1)
    assert metrics(resumed)["epoch"].unique().tolist() == [1]  # only the epoch that was left
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * steps


def test_validate_and_test(first_run, face_index, tmp_path):
    best = next((run_folder(first_run) / "checkpoints").glob("best-*.ckpt"))
    # The run's own config.yaml works for the other subcommands.
    assert train.main(["validate", "--config", str(run_folder(first_run) / "config.yaml"), "--run_dir", str(tmp_path),
                       "--ckpt_path", str(best), *QUIET]) == 0
    assert metrics(run_folder(tmp_path))["val/logloss"].notna().any()
    # Test needs a test split: hold out a quarter of the sources.
    assert fit(face_index, tmp_path, "--ckpt_path", str(best), "--data.test_fraction", "0.25", command="test") == 0
    m = metrics(run_folder(tmp_path, 1))
    assert {"test/logloss", "test/auc", "test/acc", "test/ap", "test/balanced_logloss"} <= set(m.columns)


def test_print_config_and_user_errors(tmp_path, capsys):
    assert train.main(["fit", "--config", str(TINY), "--print_config"]) == 0
    assert "backbone: test_efficientnet" in capsys.readouterr().out
    assert fit(tmp_path / "no_such_index", tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("deepfake fit: error:") and "does not exist" in err[-1]
    assert fit(tmp_path, tmp_path, "--model.net.backbone", "no_such_net") == 2
    assert "not a timm model" in capsys.readouterr().err


def test_video_scores_rule():
    """Window -> track (mean) -> video (max), duplicates from a distributed sampler counted once."""
    index = np.array([0, 1, 2, 3, 3, 4])
    track = np.array([0, 0, 1, 2, 2, 3])
    video = np.array([0, 0, 0, 1, 1, 2])
    label = np.array([1, 1, 1, 0, 0, 0])
    prob = np.array([0.2, 0.4, 0.9, 0.1, 0.1, 0.3])
    _, y, p = video_scores(index, track, video, label, prob)
    assert y.tolist() == [1, 0, 0] and p == pytest.approx([0.9, 0.1, 0.3])


def test_lit_module_checkpoint_hparams_are_plain():
    from deepfake.model import DetectorConfig

    lit = DeepfakeLitModule(net=DetectorConfig(backbone="test_efficientnet", pretrained=False, img_size=32))
    assert isinstance(lit.hparams["net"], dict) and lit.hparams["net"]["img_size"] == 32
    again = DeepfakeLitModule(**{k: v for k, v in lit.hparams.items() if not k.startswith("_")})
    assert again.net.kwargs() == lit.net.kwargs()
    batch = {"frames": torch.full((1, 2, 3, 32, 32), 255, dtype=torch.uint8)}
    x = lit.on_after_batch_transfer(batch, 0)["frames"]
    expected = (1.0 - torch.tensor(lit.net.mean)) / torch.tensor(lit.net.std)
    torch.testing.assert_close(x[0, 0, :, 0, 0], expected)


@pytest.mark.slow  # 50 s on 2 cores: `make test` keeps test_fit_writes_checkpoint_config_and_detector
def test_learning_works(tmp_path):
    """The tiny config learns `deepfake synth`'s self-blended fakes: validation AUC well above chance.

    32 real clips and 32 fakes made from them (the same few faces in both classes, so the model has to find the
    blending, not the person), faces cropped at synth's ground-truth boxes, 40 % of the sources held out for
    validation; 16 epochs of 8 steps. Over seeds 1, 4 and 42 the final AUC was 0.98-1.00, log loss 0.22-0.29.
    """
    assert synth_cli.main([str(tmp_path / "synth"), "--count", "64", "--resolution", "320x240", "--seconds", "3",
                           "--fps", "10", "--seed", "7", "--no-progress"]) == 0
    index = index_from_synth(tmp_path / "synth", tmp_path / "extracted", stride=2, size=64)
    assert fit(index, tmp_path / "runs", "--trainer.max_epochs", "16", "--data.epoch_size", "128",
               "--data.val_fraction", "0.4") == 0
    m = metrics(run_folder(tmp_path / "runs")).dropna(subset=["val/auc"])
    assert m["val/auc"].iloc[-3:].min() >= 0.85, m[["epoch", "val/auc", "val/logloss"]].to_string()
    assert m["val/logloss"].iloc[-1] < 0.45 < m["val/logloss"].iloc[0], m[["epoch", "val/logloss"]].to_string()
    trained = metrics(run_folder(tmp_path / "runs")).dropna(subset=["train/chance"])  # not reported as stalled
    assert trained["train/loss_epoch"].iloc[-1] < 0.8 * trained["train/chance"].iloc[-1]


@pytest.mark.slow
def test_learning_on_extracted_synth_videos(tmp_path):
    """What `deepfake demo` does: synth videos, `deepfake-extract` (face detection), the tiny config as shipped."""
    from deepfake.cli import extract

    assert synth_cli.main([str(tmp_path / "synth"), "--count", "80", "--resolution", "320x240", "--seconds", "4",
                           "--fps", "10", "--seed", "5", "--no-progress"]) == 0
    assert extract.main([str(tmp_path / "synth"), str(tmp_path / "extracted"), "--layout", "folder", "--stride", "2",
                         "--size", "64", "--device", "cpu", "--no-progress"]) == 0
    assert fit(tmp_path / "extracted", tmp_path / "runs", "--data.val_fraction", "0.3") == 0
    m = metrics(run_folder(tmp_path / "runs")).dropna(subset=["val/auc"])
    assert m["val/auc"].iloc[-1] >= 0.85, m[["epoch", "val/auc", "val/logloss"]].to_string()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(face_index, tmp_path):
    """Two DDP processes (gloo on CPU): window scores are gathered before the video-level metrics."""
    assert fit(face_index, tmp_path, "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn",
               "--trainer.max_epochs", "1", "--data.num_workers", "0") == 0
    m = metrics(run_folder(tmp_path))
    assert m["val/auc"].notna().any() and m["val/logloss"].notna().any()
    assert (run_folder(tmp_path) / "checkpoints" / "detector.pt").is_file()
