"""MTCNN landmarks in the index, and labels per face track: a two-person DFDC-style fake where only one face was
swapped. Extraction crops the fake with its original's boxes and measures each crop's `face_change`; training
(`data.untouched_tracks`) then drops the untouched track, labels it real, or keeps it fake."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep.index import INDEX_COLUMNS, LANDMARK_COLUMNS, load_tracks, read_index
from data_prep.sbi import sample_blend_params, swap_face
from data_prep.untouched import UNTOUCHED_BELOW, face_change, is_untouched
from deepfake.data import label_untouched

N_FRAMES = 16
W, H = 640, 320


def _encode(path: Path, frames: list[np.ndarray]) -> None:
    from data_prep.video_writer import write_video

    write_video(path, frames, 10, crf=18)


def _scene(hopper: np.ndarray) -> list[np.ndarray]:
    """Two people side by side (the astronaut left, Grace Hopper right), drifting a pixel a frame."""
    from skimage import data

    astro = cv2.resize(data.astronaut()[0:300, 100:350], (250, 300), interpolation=cv2.INTER_AREA)
    grace = cv2.resize(hopper[40:400, 80:440], (300, 300), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(N_FRAMES):
        frame = np.full((H, W, 3), 90, np.uint8)
        frame[10:310, 30 + i:280 + i] = astro
        frame[10:310, 320 - i:620 - i] = grace
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def two_people(hopper, tmp_path_factory) -> Path:
    """A DFDC part: a real two-person clip and a fake of it in which only Grace Hopper's face is swapped."""
    from data_prep.mtcnn import MTCNNCascade

    real = _scene(hopper)
    cascade = MTCNNCascade()
    donor = np.ascontiguousarray(real[0][10:310, 30:280])  # the astronaut's face is the donor
    donor_points = cascade.detect(donor)[0].landmarks[0]
    params = sample_blend_params(np.random.default_rng(3), drift=False)
    fake = []
    for i, frame in enumerate(real):
        boxes, _, points = cascade.detect(frame)[0]
        right = int(np.argmax(boxes[:, 0]))  # Grace Hopper's face
        fake.append(swap_face(frame, boxes[right], points[right], donor, donor_points, params, frame_index=i))
    part = tmp_path_factory.mktemp("two_people") / "dfdc_train_part_0"
    part.mkdir()
    _encode(part / "real.mp4", real)
    _encode(part / "fake.mp4", fake)
    (part / "metadata.json").write_text(json.dumps({
        "real.mp4": {"label": "REAL", "split": "train"},
        "fake.mp4": {"label": "FAKE", "split": "train", "original": "real.mp4"}}))
    return part.parent


@pytest.fixture(scope="module")
def extracted(two_people, tmp_path_factory) -> Path:
    from deepfake.cli import extract

    out = tmp_path_factory.mktemp("two_people_out")
    assert extract.main([str(two_people), str(out), "--stride", "2", "--size", "96", "--device", "cpu",
                         "--workers", "0", "--no-progress"]) == 0
    return out


def test_the_index_keeps_mtcnn_landmarks_in_video_pixels(extracted):
    df, root = read_index(extracted)
    assert list(df.columns) == INDEX_COLUMNS
    tracks = load_tracks(df, root)
    assert len(tracks) == 4  # two people in the real clip and in the fake
    for t in tracks:
        assert t.landmarks is not None and t.landmarks.shape == (len(t.frames), 5, 2)
        x, y = t.landmarks[..., 0], t.landmarks[..., 1]
        b = t.boxes
        assert ((x > b[:, :1]) & (x < b[:, 2:3]) & (y > b[:, 1:2]) & (y < b[:, 3:4])).all()
        crop = t.crop_landmarks(96, 0.3)
        # In the crop: the face box is the middle 1/1.6 of the crop; eyes above the nose above the mouth.
        assert ((crop > 96 * 0.3 / 1.6) & (crop < 96 * 1.3 / 1.6)).all()
        assert (crop[:, :2, 1].max(axis=1) < crop[:, 2, 1]).all() and (crop[:, 2, 1] < crop[:, 3:, 1].min(axis=1)).all()
        # Scaled with the crop: a crop resized to 192 px has its landmarks twice as far from the corner.
        assert np.allclose(t.crop_landmarks(192, 0.3), 2 * crop, atol=1e-3)


def test_a_fake_measures_which_face_it_changed(extracted):
    df, root = read_index(extracted)
    fake = {t.track: t for t in load_tracks(df, root) if t.label == 1}
    real = [t for t in load_tracks(df, root) if t.label == 0]
    assert all(t.face_change is None for t in real)  # measured only for fakes cropped with their original's boxes
    changes = {k: float(np.median(t.face_change)) for k, t in fake.items()}
    swapped = max(fake, key=lambda k: fake[k].boxes[0, 0])  # the right-hand face
    untouched = 1 - swapped
    # The swapped face changed by many grey levels beyond its surroundings; the other only by re-encoding.
    print("median face_change per track", changes)
    assert changes[untouched] < UNTOUCHED_BELOW / 2 and changes[swapped] > 4 * UNTOUCHED_BELOW, changes
    assert is_untouched(fake[untouched].face_change) and not is_untouched(fake[swapped].face_change)


@pytest.mark.parametrize("rule", ["drop", "real", "fake"])
def test_untouched_tracks_rule(extracted, rule, caplog):
    df, root = read_index(extracted)
    tracks = load_tracks(df, root)
    with caplog.at_level(logging.INFO, logger="deepfake"):
        kept = label_untouched(tracks, rule)
    fake_tracks = [(t.video.split("/")[-1], t.label) for t in kept if t.video.endswith("fake.mp4")]
    if rule == "drop":
        assert len(kept) == 3 and fake_tracks == [("fake.mp4", 1)]
    elif rule == "real":
        assert len(kept) == 4 and sorted(label for _, label in fake_tracks) == [0, 1]
    else:
        assert len(kept) == 4 and sorted(label for _, label in fake_tracks) == [1, 1]
    assert (rule == "fake") or "1 of 2 fake face track(s) are unchanged" in caplog.text


def test_the_datamodule_applies_the_rule(extracted):
    from deepfake.data import FaceSequenceDataModule

    dm = FaceSequenceDataModule(str(extracted), seq_len=4, img_size=32, batch_size=2, num_workers=0,
                                val_fraction=0.0, untouched_tracks="drop")
    dm.setup("fit")
    assert sorted(t.label for t in dm.tracks["train"]) == [0, 0, 1]
    with pytest.raises(ValueError, match="untouched_tracks must be"):
        FaceSequenceDataModule(str(extracted), untouched_tracks="maybe")


def test_an_index_from_before_landmarks_still_loads(extracted, tmp_path, caplog):
    df, root = read_index(extracted)
    old = df.drop(columns=[*LANDMARK_COLUMNS, "face_change"])
    old["crop"] = [str(root / c) for c in old["crop"]]
    old.to_csv(tmp_path / "index.csv", index=False)
    df2, root2 = read_index(tmp_path / "index.csv")
    tracks = load_tracks(df2, root2)
    assert all(t.landmarks is None and t.crop_landmarks(96, 0.3) is None and t.face_change is None for t in tracks)
    with caplog.at_level(logging.INFO, logger="deepfake"):
        assert len(label_untouched(tracks, "drop")) == 4
    assert "every track of a fake stays labelled fake" in caplog.text


def test_face_change_is_zero_for_the_same_crop_and_large_inside_the_face():
    rng = np.random.default_rng(0)
    crop = rng.integers(60, 190, (96, 96, 3), np.uint8)
    assert face_change(crop, crop, 0.3) == 0.0
    changed = crop.copy()
    changed[36:60, 36:60] += 40  # a brighter middle of the face
    assert face_change(changed, crop, 0.3) > 5
    noisy = np.clip(crop + rng.normal(0, 4, crop.shape), 0, 255).astype(np.uint8)  # fine-grained noise everywhere
    assert face_change(noisy, crop, 0.3) < 0.5
    border = crop.copy()
    border[:10] += 40  # only the margin
    assert face_change(border, crop, 0.3) == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        face_change(crop, crop[:48], 0.3)


def test_synth_two_person_fakes_with_one_face_changed_are_found(tmp_path):
    """`deepfake synth --multi-face 1 --fake-faces one` then `deepfake-extract`: the fake is cropped with its
    original's boxes, and its unchanged face (the right-hand one) is the track `data.untouched_tracks` handles."""
    from deepfake.cli import extract, synth

    src, out = tmp_path / "synth", tmp_path / "out"
    assert synth.main([str(src), "--count", "2", "--resolution", "320x240", "--seconds", "2", "--fps", "10",
                       "--multi-face", "1", "--fake-faces", "one", "--no-progress"]) == 0
    assert json.loads((src / "synth.json").read_text())["config"]["fake_faces"] == "one"
    assert extract.main([str(src), str(out), "--stride", "2", "--size", "64", "--device", "cpu", "--workers", "0",
                         "--no-progress"]) == 0
    df, root = read_index(out)
    fake = sorted((t for t in load_tracks(df, root) if t.label == 1), key=lambda t: t.boxes[0, 0])
    assert len(fake) == 2 and all(t.face_change is not None for t in fake)
    print("median face_change (changed, unchanged)", [float(np.median(t.face_change)) for t in fake])
    assert not is_untouched(fake[0].face_change) and is_untouched(fake[1].face_change), \
        [float(np.median(t.face_change)) for t in fake]
    assert [t.label for t in label_untouched(load_tracks(df, root), "real") if t.video == fake[0].video] in (
        [1, 0], [0, 1])
