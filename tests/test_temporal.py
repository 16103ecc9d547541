"""Temporal fakes (`data_prep.temporal`, `deepfake.fakes`), synth's reenact clips, and the frame model of the LSTM
ablation. The learning tests (a real-only detector catches reenact clips; it scores a frame-shuffled sequence
differently from the ordered one) are slow."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data_prep.sbi import blend_region
from data_prep.temporal import (
    canonical_landmarks,
    morph_region,
    reenact_regions,
    reenact_warp,
    sample_reenact_params,
)
from deepfake.fakes import (
    FakeConfig,
    face_box_in_crop,
    fake_sequence,
    real_sequence,
    self_blend_sequence,
    static_control_sequence,
    temporal_fake_sequence,
)
from deepfake.model import DeepfakeDetector, running_mean_logits

SIZE, MARGIN, T = 96, 0.3, 8
TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=32, lstm_hidden=8)


@pytest.fixture(scope="module")
def real_clip() -> np.ndarray:
    """(T, S, S, 3): Grace Hopper's face drifting by a tenth of a pixel a frame (a real clip's small motion)."""
    from data_prep.synth import face_photos
    from data_prep.track import square_crop

    hopper = next(p for p in face_photos() if p.name == "grace_hopper")
    crop = square_crop(hopper.image, hopper.box, MARGIN, SIZE)
    shifts = [np.float32([[1, 0, 0.1 * t], [0, 1, 0.05 * t]]) for t in range(T)]
    return np.stack([cv2.warpAffine(crop, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT_101) for m in shifts])


def _ellipse_mask(ellipses, scale: float = 1.02) -> np.ndarray:
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    inside = np.zeros((SIZE, SIZE), bool)
    for cx, cy, rx, ry in ellipses:
        inside |= ((xs - cx) / (rx * scale)) ** 2 + ((ys - cy) / (ry * scale)) ** 2 < 1
    return inside


def _region(kind: str) -> np.ndarray:
    """(S, S) bool: where a temporal fake of `kind` may change a crop (canonical landmarks)."""
    box = face_box_in_crop(SIZE, MARGIN)
    if kind == "reenact":
        return _ellipse_mask(reenact_regions(canonical_landmarks(box)).values())
    if kind == "morph":
        return _ellipse_mask([morph_region(box)])
    x0, y0, x1, y1 = blend_region((SIZE, SIZE), box)
    region = np.zeros((SIZE, SIZE), bool)
    region[y0:y1, x0:x1] = True
    return region


def _frame_to_frame(clip: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute change between consecutive frames inside a region (grey levels)."""
    return float(np.abs(np.diff(clip.astype(np.float32), axis=0)).max(axis=3)[:, region].mean())


@pytest.mark.parametrize("kind", ["reenact", "flicker", "morph"])
def test_a_temporal_fake_changes_only_its_region_and_changes_over_time(real_clip, kind):
    fake = temporal_fake_sequence(real_clip, kind, np.random.default_rng(3), MARGIN)
    assert fake.shape == real_clip.shape and fake.dtype == np.uint8
    changed = (fake != real_clip).any(axis=3)  # (T, S, S)
    region = _region(kind)
    assert changed.any() and not changed[:, ~region].any(), f"{kind} changed {changed[:, ~region].sum()} pixels outside"
    # Over time: the frame-to-frame change inside the region is above the real clip's own (a morph is slow by
    # design: 12-20 % of the face's width over the sequence, a little per frame).
    factor = 1.1 if kind == "morph" else 1.5
    assert _frame_to_frame(fake, region) > factor * _frame_to_frame(real_clip, region)


def test_reenact_keeps_colour_and_has_no_blending_edge(real_clip):
    fake = temporal_fake_sequence(real_clip, "reenact", np.random.default_rng(5), MARGIN)
    region = _region("reenact")
    # No colour change: the region's mean colour stays within a grey level of the real one.
    assert np.abs(fake[:, region].reshape(-1, 3).mean(0) - real_clip[:, region].reshape(-1, 3).mean(0)).max() < 1.0
    # No edge: at the region's border (a 2-px ring inside it) pixels barely move.
    ring = region & ~_ellipse_mask(reenact_regions(canonical_landmarks(face_box_in_crop(SIZE, MARGIN))).values(), 0.85)
    assert np.abs(fake[:, ring].astype(int) - real_clip[:, ring].astype(int)).mean() < 2.0


@pytest.mark.parametrize("kind", ["sbi", "reenact", "flicker", "morph"])
def test_one_parameter_set_per_sequence_and_deterministic_under_a_seed(real_clip, kind):
    config = FakeConfig(mode="sbi", kinds={kind: 1.0})
    a = fake_sequence(real_clip, np.random.default_rng(11), MARGIN, config)
    assert np.array_equal(a, fake_sequence(real_clip, np.random.default_rng(11), MARGIN, config))
    assert not np.array_equal(a, fake_sequence(real_clip, np.random.default_rng(12), MARGIN, config))


def test_a_reenacted_frame_depends_only_on_the_sequences_parameters_and_its_index(real_clip):
    lm = canonical_landmarks(face_box_in_crop(SIZE, MARGIN))
    fake = temporal_fake_sequence(real_clip, "reenact", np.random.default_rng(7), MARGIN)
    params = sample_reenact_params(np.random.default_rng(7))  # the one draw the sequence made
    assert all(np.array_equal(fake[t], reenact_warp(real_clip[t], lm, params, t)) for t in range(T))
    # Given landmarks place the warp: shifted landmarks move the changed pixels with them.
    moved = temporal_fake_sequence(real_clip, "reenact", np.random.default_rng(7), MARGIN,
                                   landmarks=np.broadcast_to(lm + [12.0, 0.0], (T, 5, 2)))
    cols = lambda clip: np.flatnonzero((clip != real_clip).any(axis=(0, 1, 3)))  # noqa: E731
    assert cols(moved).mean() > cols(fake).mean() + 8


def test_fake_kinds_are_checked_and_the_default_is_self_blending(real_clip):
    assert FakeConfig().kinds == {"sbi": 1.0}
    for bad, match in (({"gan": 1.0}, "unknown kind"), ({"sbi": -1.0}, ">= 0"), ({}, "must map"),
                       ({"sbi": "x"}, "numbers")):
        with pytest.raises(ValueError, match=match):
            FakeConfig(mode="sbi", kinds=bad)
    # The default draws exactly what self-blending drew before the temporal kinds existed.
    assert np.array_equal(fake_sequence(real_clip, np.random.default_rng(1), MARGIN, FakeConfig()),
                          self_blend_sequence(real_clip, np.random.default_rng(1), MARGIN))
    # A mix draws every kind.
    mix = FakeConfig(mode="sbi", kinds={"sbi": 1, "reenact": 1, "flicker": 1, "morph": 1})
    rng = np.random.default_rng(0)
    still = real_clip[:2]
    outs = {fake_sequence(still, rng, MARGIN, mix).tobytes() for _ in range(12)}
    assert len(outs) == 12


def test_the_loader_serves_temporal_fakes(extracted_dataset):
    from deepfake.data import FaceSequenceDataModule

    dm = FaceSequenceDataModule(str(extracted_dataset), seq_len=4, img_size=64, batch_size=8, num_workers=0,
                                val_fraction=0.34, fakes={"mode": "sbi", "kinds": {"reenact": 1.0}}, epoch_size=16)
    dm.setup("fit")
    val = dm.eval_dataset("val")
    fakes = [i for i in range(len(val)) if val.self_blended_items[i]]
    assert fakes
    item = val[fakes[0]]
    track, start, _ = val.items[fakes[0]]
    real = val[val.items.index((track, start, False))]  # the same window of the real track
    assert item["label"] == 1.0 and torch.equal(item["frames"], val[fakes[0]]["frames"])  # fixed in evaluation
    diff = (item["frames"] != real["frames"]).any(dim=1)  # (T, H, W): only the mouth's and eyes' pixels changed
    assert 0 < diff.float().mean() < 0.3
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (8, 4, 3, 64, 64)


def test_the_static_control_warps_only_the_region_and_does_not_change_over_time(real_clip):
    region = _region("reenact")
    lm = canonical_landmarks(face_box_in_crop(SIZE, MARGIN))
    moved = []
    for seed in range(6):
        control = static_control_sequence(real_clip, np.random.default_rng(seed), MARGIN)
        assert control.shape == real_clip.shape and control.dtype == np.uint8
        changed = (control != real_clip).any(axis=3)
        assert changed.any() and not changed[:, ~region].any(), f"seed {seed}: changed pixels outside the region"
        # Constant over time: frame to frame, the region changes no more than the real clip's own motion does
        # (a reenact fake of the same seed changes it well above that: test above).
        assert _frame_to_frame(control, region) <= 1.05 * _frame_to_frame(real_clip, region) + 0.05, seed
        # Each frame is a reenacted frame: the reenact warp with the sequence's draw, read at one time.
        rng = np.random.default_rng(seed)
        params = sample_reenact_params(rng)
        frozen = float(rng.uniform(0, T - 1))
        assert all(np.array_equal(control[t], reenact_warp(real_clip[t], lm, params, frozen)) for t in range(T))
        moved.append(float(np.abs(control.astype(np.float32) - real_clip)[:, region].mean()))
    # The warp is of a reenacted frame's size (not a no-op), and its magnitude varies between sequences.
    assert min(moved) > 0.2 and max(moved) > 2 * min(moved), moved


def test_the_static_control_is_off_by_default_and_checked(real_clip):
    assert FakeConfig().static_control == 0.0
    for bad in (1.0, -0.1, "x", float("nan")):
        with pytest.raises(ValueError, match="static_control"):
            FakeConfig(static_control=bad)
    rng = np.random.default_rng(4)
    state = rng.bit_generator.state
    out = real_sequence(real_clip, rng, MARGIN, FakeConfig())
    assert out is real_clip and rng.bit_generator.state == state  # untouched, and nothing drawn
    on = FakeConfig(static_control=0.5)
    assert real_sequence(real_clip, None, MARGIN, on) is real_clip  # evaluation: no generator, no control
    served = [real_sequence(real_clip, rng, MARGIN, on) for _ in range(40)]
    share = np.mean([s is not real_clip for s in served])
    assert 0.25 < share < 0.75, share


def test_the_loader_serves_static_controls_as_real_in_training_only(extracted_dataset):
    from data_prep.index import load_tracks, read_crop, read_index
    from deepfake.data import FaceSequenceDataset

    df, root = read_index(extracted_dataset)
    reals = [t for t in load_tracks(df, root) if t.label == 0][:2]

    def serve(share: float, train: bool) -> list[dict]:
        torch.manual_seed(0)
        fakes = FakeConfig(mode="sbi", static_control=share, kinds={"reenact": 1.0})
        ds = FaceSequenceDataset(reals, seq_len=4, img_size=64, train=train, fakes=fakes)
        real_items = [i for i in range(len(ds)) if not ds.self_blended_items[i]]
        return [ds[i] for _ in range(6 if train else 1) for i in real_items]  # a fresh draw each time in training

    raw = {t: torch.from_numpy(np.stack([read_crop(p, 64) for p in reals[t].crops])).permute(0, 3, 1, 2)
           for t in range(len(reals))}
    # Default 0: every real window is the crops as read, byte for byte.
    for item in serve(0.0, True):
        assert item["label"] == 0.0 and any(torch.equal(item["frames"], raw[item["track"]][s:s + 4])
                                            for s in range(len(raw[item["track"]]) - 3))
    # On: some real training windows are warped, all still labelled real; evaluation windows are untouched.
    items = serve(0.9, True)
    assert all(item["label"] == 0.0 for item in items)
    warped = [not any(torch.equal(item["frames"], raw[item["track"]][s:s + 4])
                      for s in range(len(raw[item["track"]]) - 3)) for item in items]
    assert any(warped)
    for item in serve(0.9, False):
        assert any(torch.equal(item["frames"], raw[item["track"]][s:s + 4]) for s in range(len(raw[item["track"]]) - 3))


def test_synth_reenact_writes_what_it_says(tmp_path):
    from deepfake.cli import synth

    out = tmp_path / "reenact"
    assert synth.main([str(out), "--count", "2", "--resolution", "320x240", "--seconds", "1.5", "--fps", "10",
                       "--fake-kind", "reenact", "--no-progress"]) == 0
    with open(out / "labels.csv", newline="") as f:
        assert [(r["video"], r["label"], r["original"]) for r in csv.DictReader(f)] == [
            ("real/clip_0000.mp4", "real", "real/clip_0000.mp4"), ("fake/clip_0001.mp4", "fake", "real/clip_0000.mp4")]
    with open(out / "boxes.csv", newline="") as f:
        boxes = [[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in csv.DictReader(f)
                 if r["video"] == "fake/clip_0001.mp4"]

    def decode(path: Path) -> np.ndarray:
        cap, frames = cv2.VideoCapture(str(path)), []
        while (got := cap.read())[0]:
            frames.append(got[1].astype(np.float32))
        return np.stack(frames)

    real, fake = decode(out / "real/clip_0000.mp4"), decode(out / "fake/clip_0001.mp4")
    assert real.shape == fake.shape == (15, 240, 320, 3)
    face = np.zeros((15, 240, 320), bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        face[i, int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = True
    diff = np.abs(fake - real).max(axis=3)
    assert diff[~face].mean() < 2.5 and np.percentile(diff[~face], 99) < 12  # outside the face: the encoder's noise
    assert diff[face].max() > 40  # inside: the mouth and eyes moved
    # No colour change: the face's mean colour is the real one's.
    assert np.abs(fake[face].mean(0) - real[face].mean(0)).max() < 1.0
    # Over time: the manipulation (fake minus real) itself changes from frame to frame, well above the encoder's
    # frame-to-frame noise outside the face.
    change = np.abs(np.diff(fake - real, axis=0)).max(axis=3)
    print("residual change inside/outside the face:", change[face[1:]].mean(), change[~face[1:]].mean())
    assert change[face[1:]].mean() > 2 * change[~face[1:]].mean()


# ------------------------------------------------------------------------------------------------ frame model


def test_the_frame_model_scores_a_window_by_the_mean_of_its_frames():
    z = torch.randn(3, 6) * 3
    p = torch.sigmoid(running_mean_logits(z))
    assert torch.allclose(p, torch.sigmoid(z).cumsum(1) / torch.arange(1, 7), atol=1e-6)
    torch.manual_seed(0)
    net = DeepfakeDetector(**TINY, temporal="frame").eval()
    assert net.lstm is None
    x = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
        shuffled = net(x[:, torch.randperm(5)])
    assert logits.shape == (2, 5)
    # The last step is the window's score: the mean of frame scores, so the frames' order does not matter.
    assert torch.allclose(logits[:, -1], shuffled[:, -1], atol=1e-5)
    net.train()
    net(x).mean().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if not n.startswith("backbone.")), "no gradient"
    with pytest.raises(ValueError, match="temporal must be one of"):
        DeepfakeDetector(**TINY, temporal="gru")


def test_old_checkpoints_load_as_lstm_models_and_frame_models_round_trip(tmp_path):
    from deepfake.checkpoint import build_meta, load_detector, save_detector

    lstm = DeepfakeDetector(**TINY)
    meta = build_meta(lstm, seq_len=4, margin=0.3, stride=2)
    del meta["model"]["temporal"]  # a checkpoint written before the setting existed
    save_detector(tmp_path / "old.pt", lstm, meta)
    model, _ = load_detector(tmp_path / "old.pt")
    assert model.config.temporal == "lstm" and model.lstm is not None
    frame = DeepfakeDetector(**TINY, temporal="frame")
    save_detector(tmp_path / "frame.pt", frame, build_meta(frame, seq_len=4, margin=0.3, stride=2))
    model, meta = load_detector(tmp_path / "frame.pt")
    assert meta["model"]["temporal"] == "frame" and model.lstm is None
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), frame.eval()(x), atol=1e-6)


# ------------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_trained_on_real_faces_alone_it_catches_reenactment_and_uses_frame_order(tmp_path):
    """sbi_tiny_cpu (temporal fakes on) on the real clips of a synth set; scored on held-out reenact clips of another
    seed: well above chance; and a frame-shuffled reenact window is scored differently from the ordered one."""
    import json

    from data_prep.index import load_tracks, read_crop, read_index
    from deepfake.checkpoint import load_detector
    from deepfake.cli import evaluate, extract, synth, train

    root = Path(__file__).resolve().parents[1]
    args = ["--resolution", "320x240", "--seconds", "4", "--fps", "10", "--no-progress"]
    extract_args = ["--layout", "folder", "--stride", "2", "--size", "64", "--device", "cpu", "--no-progress"]
    assert synth.main([str(tmp_path / "train"), "--count", "80", "--seed", "5", *args]) == 0
    assert extract.main([str(tmp_path / "train"), str(tmp_path / "extracted"), *extract_args]) == 0
    assert train.main(["fit", "--config", str(root / "configs" / "sbi_tiny_cpu.yaml"), "--data.index",
                       str(tmp_path / "extracted"), "--run_dir", str(tmp_path / "runs"),
                       "--trainer.enable_progress_bar", "false"]) == 0
    weights = next((tmp_path / "runs").rglob("detector.pt"))
    assert synth.main([str(tmp_path / "reenact"), "--count", "40", "--seed", "1000", "--fake-kind", "reenact",
                       *args]) == 0
    assert extract.main([str(tmp_path / "reenact"), str(tmp_path / "reenact_x"), *extract_args]) == 0
    assert evaluate.main([str(tmp_path / "reenact_x"), "--weights", str(weights), "--out", str(tmp_path / "eval"),
                          "--device", "cpu", "--no-progress"]) == 0
    auc = json.loads((tmp_path / "eval" / "metrics.json").read_text())["auc"]
    assert auc >= 0.7, auc

    model, meta = load_detector(weights)
    df, index_root = read_index(tmp_path / "reenact_x")
    tracks = [t for t in load_tracks(df, index_root) if t.label == 1]
    mean = torch.tensor(meta["mean"]).view(1, 1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 1, 3, 1, 1)
    windows = [np.stack([read_crop(p, 64) for p in t.crops[:meta["seq_len"]]]) for t in tracks]
    x = torch.from_numpy(np.stack(windows)).permute(0, 1, 4, 2, 3).float() / 255
    order = torch.from_numpy(np.random.default_rng(0).permutation(meta["seq_len"]))
    with torch.no_grad():
        ordered = torch.sigmoid(model((x - mean) / std)[:, -1])
        shuffled = torch.sigmoid(model(((x - mean) / std)[:, order])[:, -1])
    assert (ordered - shuffled).abs().mean() > 0.02, (ordered - shuffled).abs().mean()
