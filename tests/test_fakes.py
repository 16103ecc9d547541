"""Fakes made on the fly from real faces (`deepfake.fakes`, `data.fakes`) and synth's face swaps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_prep.sbi import blend_region, sample_blend_params, swap_face
from data_prep.synth import face_photos
from deepfake.fakes import FakeConfig, face_box_in_crop, self_blend_sequence


def _crops(hopper, n: int = 6, size: int = 64) -> np.ndarray:

    from data_prep.track import square_crop

    box = np.array([174.40, 119.56, 355.65, 340.46])  # Grace Hopper's face (synth's stored MTCNN box)
    crop = square_crop(hopper, box, 0.3, size)
    return np.stack([np.roll(crop, i, axis=1) for i in range(n)])  # a face moving one pixel a frame


def test_a_blended_sequence_changes_only_the_face_and_stays_one_fake(hopper):
    crops = _crops(hopper)
    fake = self_blend_sequence(crops, np.random.default_rng(0), margin=0.3, drift=False)
    assert fake.shape == crops.shape and fake.dtype == np.uint8
    x0, y0, x1, y1 = blend_region(crops.shape[1:], face_box_in_crop(64, 0.3))
    changed = np.abs(fake.astype(int) - crops.astype(int)).max(axis=(0, 3)) > 0
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    assert changed.any() and not outside.any()
    # One set of parameters for the whole sequence: the same frame blended at two places in it is blended alike.
    still = np.stack([crops[0]] * 4)
    out = self_blend_sequence(still, np.random.default_rng(3), margin=0.3, drift=False)
    assert all(np.array_equal(out[0], f) for f in out[1:])
    # Deterministic under a seed.
    assert np.array_equal(fake, self_blend_sequence(crops, np.random.default_rng(0), margin=0.3, drift=False))


def test_fake_config_is_checked():
    with pytest.raises(ValueError, match="mode must be one of"):
        FakeConfig(mode="gan")
    with pytest.raises(ValueError, match="sbi_share"):
        FakeConfig(mode="both", sbi_share=1.0)


def test_sbi_mode_gives_balanced_batches_from_real_faces_only(extracted_dataset):
    from deepfake.data import FaceSequenceDataModule

    dm = FaceSequenceDataModule(str(extracted_dataset), seq_len=4, img_size=64, batch_size=8, num_workers=0,
                                val_fraction=0.34, fakes={"mode": "sbi"}, epoch_size=64)
    dm.setup("fit")
    assert all(t.label == 0 for split in dm.tracks.values() for t in split)  # the index's fakes are not used
    labels = np.concatenate([b["label"].numpy() for b in dm.train_dataloader()])
    assert len(labels) == 64 and 0.3 < labels.mean() < 0.7  # half of the draws are self-blended fakes
    val = dm.eval_dataset("val")
    assert any(v.endswith("#sbi") for v in val.videos) and set(val.labels) == {0, 1}
    first = [val[i]["frames"] for i in range(len(val))]
    assert all(np.array_equal(a, val[i]["frames"]) for i, a in enumerate(first))  # fixed fakes for validation


def test_a_face_swap_puts_another_persons_face_in_place(hopper):
    photos = face_photos()
    astronaut = next(p for p in photos if p.person == "astronaut")
    grace = next(p for p in photos if p.person == "grace_hopper")
    params = sample_blend_params(np.random.default_rng(1), drift=False)
    fake, mask = swap_face(astronaut.image, astronaut.box, astronaut.landmarks, grace.image, grace.landmarks, params,
                           return_mask=True)
    x0, y0, x1, y1 = blend_region(astronaut.image.shape, astronaut.box)
    diff = np.abs(fake.astype(int) - astronaut.image.astype(int)).max(axis=2)
    outside = diff.copy()
    outside[y0:y1, x0:x1] = 0
    assert not outside.any()
    inner = mask > 0.9
    assert inner.sum() > 500 and diff[inner].mean() > 15  # the inner face is another face, not a recolouring


def test_a_face_swap_takes_the_faces_colours_a_grey_face_a_grey_donor():
    """The colour transfer is in L*a*b*: Grace Hopper's colour face swapped onto the grey cameraman comes out grey,
    as a face-swap tool would render it (per RGB channel it stayed colourful: a fake no tool makes)."""
    grace, camera = face_photos("suite-test")[:2]
    assert (grace.person, camera.person) == ("grace_hopper", "cameraman")
    params = sample_blend_params(np.random.default_rng(0), drift=False)
    fake, mask = swap_face(camera.image, camera.box, camera.landmarks, grace.image, grace.landmarks, params,
                           return_mask=True)
    inner = mask > 0.5 * mask.max()
    pixels = fake[inner].astype(int)
    assert inner.sum() > 500 and np.abs(pixels - camera.image[inner]).mean() > 10  # another face ...
    assert np.abs(pixels[:, 0] - pixels[:, 1]).max() <= 2 and np.abs(pixels[:, 1] - pixels[:, 2]).max() <= 2  # grey
    donor_lab = cv2.cvtColor(grace.image, cv2.COLOR_RGB2LAB)  # ... whose own chroma was far from grey
    assert np.abs(donor_lab[..., 1:].astype(int) - 128).mean() > 5


def test_synth_writes_face_swaps(tmp_path):
    from data_prep.files import read_csv_dicts
    from deepfake.cli import synth

    out = tmp_path / "swaps"
    assert synth.main([str(out), "--count", "2", "--resolution", "320x240", "--seconds", "1", "--fps", "5",
                       "--fake-kind", "swap", "--no-progress"]) == 0
    assert [(r["video"], r["label"]) for r in read_csv_dicts(out / "labels.csv")] == [
        ("real/clip_0000.mp4", "real"), ("fake/clip_0001.mp4", "fake")]
    assert synth.main([str(tmp_path / "x"), "--fake-kind", "gan"]) == 2


@pytest.mark.slow
def test_trained_on_real_faces_alone_it_catches_face_swaps_it_never_saw(tmp_path):
    """sbi_tiny_cpu on the real clips of a synth set only (its fakes are never read); scored on held-out face
    swaps of another seed: well above chance."""
    import json
    from pathlib import Path

    from deepfake.cli import evaluate, extract, synth, train

    root = Path(__file__).resolve().parents[1]
    args = ["--resolution", "320x240", "--seconds", "4", "--fps", "10", "--no-progress"]
    assert synth.main([str(tmp_path / "train"), "--count", "80", "--seed", "5", *args]) == 0
    assert extract.main([str(tmp_path / "train"), str(tmp_path / "extracted"), "--layout", "folder", "--stride", "2",
                         "--size", "64", "--device", "cpu", "--no-progress"]) == 0
    assert train.main(["fit", "--config", str(root / "configs" / "sbi_tiny_cpu.yaml"), "--data.index",
                       str(tmp_path / "extracted"), "--run_dir", str(tmp_path / "runs"),
                       "--trainer.enable_progress_bar", "false"]) == 0
    weights = next((tmp_path / "runs").rglob("detector.pt"))
    assert synth.main([str(tmp_path / "swaps"), "--count", "40", "--seed", "1000", "--fake-kind", "swap", *args]) == 0
    assert evaluate.main([str(tmp_path / "swaps"), "--weights", str(weights), "--out", str(tmp_path / "eval"),
                          "--device", "cpu", "--no-progress"]) == 0
    auc = json.loads((tmp_path / "eval" / "metrics.json").read_text())["auc"]
    assert auc >= 0.8, auc


@pytest.mark.parametrize("name", ["sbi_tiny_cpu.yaml", "sbi_b1_lstm.yaml"])
def test_real_only_configs_parse(name, capsys):
    from pathlib import Path

    import yaml

    from deepfake.cli import train

    path = Path(__file__).resolve().parents[1] / "configs" / name
    assert train.main(["fit", "--config", str(path), "--print_config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["fakes"]["mode"] == "sbi" and config["trainer"]["max_steps"] > 0


def test_a_swap_made_on_the_fly_puts_the_donors_face_inside_the_face_alone(hopper):
    from data_prep.track import square_crop
    from deepfake.fakes import Donor, canonical_face_landmarks, fake_sequence

    crops = _crops(hopper)
    astronaut = next(p for p in face_photos() if p.person == "astronaut")
    donor = Donor(square_crop(astronaut.image, astronaut.box, 0.3, 64), canonical_face_landmarks(64, 0.3))
    config = FakeConfig(mode="sbi", kinds={"swap": 1.0})
    fake = fake_sequence(crops, np.random.default_rng(0), 0.3, config, donor=lambda _: donor)
    assert fake.shape == crops.shape and fake.dtype == np.uint8
    x0, y0, x1, y1 = blend_region(crops.shape[1:], face_box_in_crop(64, 0.3))
    diff = np.abs(fake.astype(int) - crops.astype(int)).max(axis=3)
    outside = diff.copy()
    outside[:, y0:y1, x0:x1] = 0
    assert not outside.any() and diff[:, y0:y1, x0:x1].mean() > 3
    # Deterministic given the generator; a swap without a donor is refused, naming what it needs.
    assert np.array_equal(fake, fake_sequence(crops, np.random.default_rng(0), 0.3, config, donor=lambda _: donor))
    with pytest.raises(ValueError, match="needs a donor face"):
        fake_sequence(crops, np.random.default_rng(0), 0.3, config)


def test_validation_on_held_out_swaps_takes_donors_from_other_videos(extracted_dataset, tmp_path):
    from data_prep.index import IndexFileError
    from deepfake.data import FaceSequenceDataModule
    from deepfake.fakes import check_fake_sources, donor_pool, pick_donor

    fakes = {"mode": "sbi", "kinds": {"sbi": 1.0}, "val_kinds": {"swap": 1.0}}
    dm = FaceSequenceDataModule(str(extracted_dataset), seq_len=4, img_size=64, batch_size=8, num_workers=0,
                                val_fraction=0.5, split_seed=1, epoch_size=16, fakes=fakes)  # 2 of 3 reals in val
    dm.setup("fit")
    assert len({t.video for t in dm.tracks["val"]}) == 2
    assert dm.validation_meta()["kinds_unseen_in_training"] == ["swap"]
    val = dm.eval_dataset("val")
    assert {t.video for t in val.donors} == {t.video for t in dm.tracks["val"]}  # donors from validation's people
    items = [i for i, (_, _, fake) in enumerate(val.items) if fake]
    assert items and all(val[i]["label"] == 1.0 for i in items)
    for track in val.tracks:  # the donor is always another video's face
        for seed in range(3):
            donor = pick_donor(track, val.donors, np.random.default_rng(seed), 64, 0.3)
            assert donor.image.shape == (64, 64, 3) and donor.landmarks.shape == (5, 2)
    # A validation split of one real video borrows the training split's faces.
    small = FaceSequenceDataModule(str(extracted_dataset), seq_len=4, img_size=64, batch_size=8, num_workers=0,
                                   val_fraction=0.5, split_seed=0, epoch_size=16, fakes=fakes)
    small.setup("fit")
    assert len({t.video for t in small.tracks["val"]}) == 1
    borrowed = small.eval_dataset("val")
    assert {t.video for t in borrowed.donors} == {t.video for t in small.tracks["val"] + small.tracks["train"]}
    assert all(borrowed[i]["label"] == 1.0 for i, (_, _, fake) in enumerate(borrowed.items) if fake)
    assert donor_pool(small.tracks["val"]) == small.tracks["val"]
    # One real video in all: refused before training, in one line naming the setting.
    one = small.tracks["val"]
    with pytest.raises(IndexFileError, match="data.fakes.kinds makes swaps.*training split holds 1"):
        check_fake_sources(FakeConfig(mode="sbi", kinds={"swap": 1.0}), one, "index.csv")
    with pytest.raises(IndexFileError, match="data.fakes.val_kinds makes swaps.*with the training split holds 1"):
        check_fake_sources(FakeConfig(mode="sbi", val_kinds={"swap": 1.0}), one, "index.csv", val_tracks=one)


def test_colour_free_and_hard_edged_self_blends(hopper):
    from deepfake.fakes import fake_sequence

    crops = _crops(hopper, n=4, size=128)

    def colour_shift(config, seed):
        fake = fake_sequence(crops, np.random.default_rng(seed), 0.3, config).astype(float)
        changed = np.abs(fake - crops).max(axis=3) > 0
        shift = np.abs((fake - crops)[changed].mean(axis=0)).max()  # mean per-channel change where it changed
        return shift, changed.mean()

    for seed in range(4):
        coloured, _ = colour_shift(FakeConfig(mode="sbi"), seed)
        plain, share = colour_shift(FakeConfig(mode="sbi", colour_free=1.0), seed)
        assert share > 0.05 and plain < 1.5 < coloured  # resampled, not recoloured; the default always recolours
    edges = FakeConfig(mode="sbi", hard_edges=1.0)
    assert not np.array_equal(fake_sequence(crops, np.random.default_rng(0), 0.3, edges), crops)
    for bad in ({"colour_free": 1.5}, {"hard_edges": -0.1}, {"colour_free": "half"}):
        with pytest.raises(ValueError, match="must be a share in"):
            FakeConfig(mode="sbi", **bad)


@pytest.mark.slow  # ~25 s on 2 cores (B1's ONNX copy alone 6 s): make test keeps test_real_only_configs_parse
def test_the_gpu_real_only_recipe_trains_a_few_steps_on_cpu(extracted_dataset, tmp_path):
    """configs/sbi_b1_lstm.yaml as shipped (EfficientNet-B1, LSTM(512), its fakes and validation), shrunk only in
    what a CPU smoke run can afford: no ImageNet download, 64-px inputs, T = 2, 2 steps of 2 sequences."""
    from pathlib import Path

    from deepfake.checkpoint import load_detector
    from deepfake.cli import train

    config = Path(__file__).resolve().parents[1] / "configs" / "sbi_b1_lstm.yaml"
    status = train.main(["fit", "--config", str(config), "--data.index", str(extracted_dataset),
                         "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "2",
                         "--trainer.enable_progress_bar", "false", "--model.net.pretrained", "false",
                         "--model.net.img_size", "64", "--data.seq_len", "2", "--data.batch_size", "2",
                         "--data.epoch_size", "4", "--data.num_workers", "0", "--data.persistent_workers", "false",
                         "--data.val_fraction", "0.5", "--data.split_seed", "1", "--run_dir", str(tmp_path)])
    assert status == 0
    model, meta = load_detector(next(tmp_path.rglob("detector.pt")))
    assert meta["model"]["backbone"] == "efficientnet_b1" and meta["model"]["lstm_hidden"] == 512
    assert meta["validation"]["fake_kinds"]
