"""The generalization suite (bench/generalize.py), its disjoint photo sets, the test fake kinds it adds to `deepfake
synth`, and the training-fake levers it measures (mask shapes, one compression history)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.sbi import part_geometry, sample_blend_params, swap_face
from data_prep.synth import SynthConfig, make_dataset
from data_prep.synth_photos import PHOTO_SETS, face_photos
from data_prep.track import square_crop
from deepfake.fakes import MASK_SHAPES, FakeConfig, fake_sequence, recompressed

ROOT = Path(__file__).resolve().parents[1]


def test_train_and_test_people_are_disjoint():
    train, test = face_photos("suite-train"), face_photos("suite-test")
    assert {p.person for p in train} == {"astronaut"}
    assert {p.person for p in test} == {"grace_hopper", "cameraman"}
    # No pixel array is shared either (a variant of a test photo in training would leak the person).
    assert not {p.name.split("_mirror")[0].split("_relit")[0] for p in train} & {p.name.split("_mirror")[0]
                                                                                 for p in test}
    assert "demo" in PHOTO_SETS and {p.person for p in face_photos()} == {"astronaut", "grace_hopper"}
    # The demo's column on an unseen person: someone neither the demo nor the suite's training shows.
    unseen = face_photos("unseen")
    assert {p.person for p in unseen} == {"cameraman"} and len(unseen) == 2
    assert not {p.person for p in unseen} & ({p.person for p in face_photos()} | {p.person for p in train})
    with pytest.raises(ValueError, match="--multi-face needs two people"):
        SynthConfig(people="unseen", multi_face=0.5)
    with pytest.raises(ValueError, match="people must be one of"):
        SynthConfig(people="everyone")


def test_a_folder_of_photos_gives_people_of_its_own(tmp_path, capsys):
    """`--people DIR`: every clear face in a folder's photos is a person (with its mirror image); sets join with +."""
    import shutil

    from matplotlib import cbook
    from PIL import Image

    from deepfake.cli import synth as synth_cli

    photos = tmp_path / "photos"
    photos.mkdir()
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        shutil.copyfileobj(f, open(photos / "hopper.jpg", "wb"))
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(photos / "wall.png")  # no face: adds nobody
    (photos / "notes.txt").write_text("not a photo")
    found = face_photos(str(photos))
    assert [p.person for p in found] == ["hopper_0", "hopper_0"] and found[1].name == "hopper_0_mirror"
    hopper = next(p for p in face_photos("suite-test") if p.name == "grace_hopper")
    # the face stored for the packaged photo (MTCNN too, at facenet-pytorch's defaults): within 5 % of its width
    width = hopper.box[2] - hopper.box[0]
    np.testing.assert_allclose(found[0].box, hopper.box, atol=0.05 * width)
    np.testing.assert_allclose(found[0].landmarks, hopper.landmarks, atol=0.05 * width)
    joined = face_photos(f"suite-train+{photos}")
    assert {p.person for p in joined} == {"astronaut", "hopper_0"} and len(joined) == 6
    # synth makes clips of them, and a swap needs two people: the astronaut lends the other face
    assert synth_cli.main([str(tmp_path / "clips"), "--people", f"suite-train+{photos}", "--count", "4",
                           "--fake-kind", "swap", "--seconds", "0.4", "--fps", "5", "--resolution", "320x180",
                           "--no-progress"]) == 0
    assert len(list((tmp_path / "clips" / "fake").glob("*.mp4"))) == 2
    # Bad folders: one line each.
    (tmp_path / "empty").mkdir()
    for bad, message in ((tmp_path / "nowhere", "or a folder of face photos"), (tmp_path / "empty", "holds no image")):
        with pytest.raises(ValueError, match=message):
            SynthConfig(people=str(bad))
    only_wall = tmp_path / "wall"
    only_wall.mkdir()
    shutil.copy(photos / "wall.png", only_wall)
    with pytest.raises(ValueError, match="no face of at least 64 px"):
        face_photos(str(only_wall))
    capsys.readouterr()
    assert synth_cli.main([str(tmp_path / "x"), "--people", str(tmp_path / "nowhere")]) == 2
    assert "or a folder of face photos" in capsys.readouterr().err


def test_part_swap_changes_only_the_part():
    photos = face_photos("suite-test")
    grace, camera = photos[0], photos[1]
    params = sample_blend_params(np.random.default_rng(0), drift=False)
    whole = swap_face(grace.image, grace.box, grace.landmarks, camera.image, camera.landmarks, params)
    changed_whole = np.abs(whole.astype(int) - grace.image).sum(-1) > 0
    for part in ("eyes", "mouth"):
        fake = swap_face(grace.image, grace.box, grace.landmarks, camera.image, camera.landmarks, params, region=part)
        changed = np.abs(fake.astype(int) - grace.image).sum(-1) > 0
        assert 0 < changed.sum() < 0.6 * changed_whole.sum()
        cx, cy, a, b, _ = part_geometry(grace.landmarks, part)
        ys, xs = np.nonzero(changed)
        # The part's pixels sit around its own landmarks: eyes above the nose, the mouth below it.
        nose_y = grace.landmarks[2, 1]
        assert (ys.mean() < nose_y) if part == "eyes" else (ys.mean() > nose_y)
        assert abs(xs.mean() - cx) < a and abs(ys.mean() - cy) < 2 * b
    with pytest.raises(ValueError, match="region must be"):
        swap_face(grace.image, grace.box, grace.landmarks, camera.image, camera.landmarks, params, region="nose")


def test_every_mask_shape_and_recompression():
    photo = face_photos()[0]
    frames = np.stack([square_crop(photo.image, photo.box, 0.3, 64)] * 4)
    for shape in MASK_SHAPES:
        fake = fake_sequence(frames, np.random.default_rng(1), 0.3, FakeConfig(mode="sbi", masks={shape: 1.0}))
        assert fake.shape == frames.shape and not np.array_equal(fake, frames)
    config = FakeConfig(mode="sbi", masks={"small": 1, "large": 1}, recompress=90)
    a, b = (fake_sequence(frames, np.random.default_rng(2), 0.3, config) for _ in range(2))
    assert np.array_equal(a, b)  # deterministic given the generator
    assert np.array_equal(recompressed(recompressed(a, 90), 90).shape, a.shape)
    assert not np.array_equal(recompressed(frames, 50), frames)
    with pytest.raises(ValueError, match="data.fakes.masks: unknown"):
        FakeConfig(masks={"oval": 1.0})
    with pytest.raises(ValueError, match="data.fakes.recompress"):
        FakeConfig(recompress=101)


def test_suite_runs_end_to_end_on_a_tiny_set(tmp_path, bench_script, capsys):
    bench = bench_script("generalize")
    out = tmp_path / "suite"
    status = bench.main(["--out", str(out), "--train-reals", "4", "--per-class", "3", "--kinds", "swap", "part",
                         "--no-heavy", "--seeds", "0", "--models", "lstm", "--steps", "2", "--seconds", "1.0",
                         "--bootstrap", "20", "--threads", "1", "--set", "data.epoch_size=32",
                         "--set", "data.fakes.kinds={sbi: 0.7, reenact: 0.3}",
                         "--set", "data.fakes.val_kinds={flicker: 0.5, morph: 0.5}"])
    assert status == 0
    report = json.loads((out / "baseline" / "generalize.json").read_text())
    summary = report["summary"]["lstm"]
    assert set(summary) == {"swap", "part"}
    for kind in summary.values():
        assert kind["n_real"] == 3 and kind["n_fake"] >= 2
        assert 0.0 <= kind["mean"] <= 1.0 and kind["ci95"][0] <= kind["ci95"][1]
        assert set(kind["by_person"]) == {"grace_hopper", "cameraman"}  # each test person's own AUC
    # who a test video shows: a fake shows the person of its real clip (the same pair)
    videos = ["real/crf18/clip_0000.mp4", "real/crf18/clip_0001.mp4", "fake/swap_crf18/clip_0003.mp4",
              "fake/swap_crf18/clip_0004.mp4"]
    who = bench.people_of(videos, 3, 1.0)
    assert who[0] == who[2] and who[1] == who[3] and who[0] != who[1]
    from deepfake.checkpoint import load_detector

    weights = next((out / "runs" / "baseline").rglob("detector.pt"))
    _, meta = load_detector(weights)
    assert meta["validation"]["kinds_unseen_in_training"] == ["flicker", "morph"]
    from deepfake.inference import PredictConfig, iter_predictions, load_predictor

    clip = next((out / "data" / "test_clips").rglob("*.mp4"))  # predict's JSON says what validation was fitted on
    detector, extractor, _ = load_predictor(weights, PredictConfig(device="cpu", runtime="torch"))
    with extractor:
        result = next(iter(iter_predictions([clip], detector, extractor))).result
    assert result["validation"] == meta["validation"]
    header = next((out / "runs" / "baseline").rglob("metrics.csv")).read_text().splitlines()[0]
    # Validation metrics per fake kind (one validation video here: one of the two kinds).
    assert "val/auc_flicker" in header or "val/auc_morph" in header
    table = (out / "baseline" / "generalize.md").read_text()
    assert "| swap | 0.95 |" in table and "| part | 0.90 |" in table
    assert "| kind, by person (mean AUC over seeds) | lstm: cameraman | lstm: grace_hopper |" in table
    # How each seed's training ended (2 steps: at a constant guess's loss, so reported as stalled).
    end = report["training"]["lstm"]["0"]
    assert end["stalled"] and end["ratio"] == pytest.approx(end["loss"] / end["chance"])
    assert "- lstm: seed 0 " in table and "(stalled)" in table
    # Finished variants side by side (here one), and a variant not run yet named in one line.
    assert bench.main(["--out", str(out), "--compare", "baseline"]) == 0
    compared = (out / "compare.md").read_text()
    assert "| kind | target | baseline lstm |" in compared and "| mean of kinds |" in compared
    with pytest.raises(SystemExit, match="run the variant first"):
        bench.main(["--out", str(out), "--compare", "baseline", "other"])
    # The test sets share their real clips and hold only the suite's test people's clips.
    labels = (out / "data" / "test_clips" / "labels.csv").read_text().splitlines()
    assert sum(",real," in line for line in labels) == 3 and sum(",fake," in line for line in labels) == 6


@pytest.mark.slow
def test_test_kinds_change_only_the_face(tmp_path):
    import av

    for kind in ("paste", "lowres", "part"):
        out = make_dataset(tmp_path / kind, SynthConfig(count=2, width=320, height=240, seconds=0.4, fps=10,
                                                        fake_kind=kind, people="suite-test", progress=False))
        frames = []
        for clip in ("real/clip_0000.mp4", "fake/clip_0001.mp4"):
            with av.open(str(out / clip)) as container:
                frames.append(next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int))
        diff = np.abs(frames[0] - frames[1]).sum(-1)
        assert diff.max() > 30, kind
        assert (diff > 30).mean() < 0.1, kind


def test_a_recipe_the_index_cannot_feed_stops_before_training_in_one_line(extracted_dataset, tmp_path):
    import pandas as pd

    from data_prep.index import IndexFileError
    from deepfake.data import FaceSequenceDataModule

    index = pd.read_csv(extracted_dataset / "index.csv", dtype=str, keep_default_na=False)
    cases = {
        # Only fakes: real-only training has nothing to make its fakes from.
        "fakes_only": (index[index["label"] == "1"], {"mode": "sbi"}, "no real face track in the training split"),
        # No landmark columns (an index from before they were kept): landmark-following masks can't be drawn.
        "no_landmarks": (index.drop(columns=[c for c in index.columns if c.startswith(("eye", "nose", "mouth"))]),
                         {"mode": "sbi", "masks": {"box": 0.5, "landmarks": 0.5}}, "no landmarks in the index"),
    }
    for name, (rows, fakes, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        rows.to_csv(folder / "index.csv", index=False)
        (folder / "crops").symlink_to(extracted_dataset / "crops")
        dm = FaceSequenceDataModule(str(folder), seq_len=4, img_size=64, batch_size=4, num_workers=0,
                                    val_fraction=0.34, fakes=fakes)
        with pytest.raises(IndexFileError, match=message) as err:
            dm.setup("fit")
        assert "\n" not in str(err.value)
    # The box mask alone needs no landmarks: the same index trains.
    FaceSequenceDataModule(str(tmp_path / "no_landmarks"), seq_len=4, img_size=64, batch_size=4, num_workers=0,
                           val_fraction=0.34, fakes={"mode": "sbi"}).setup("fit")


def test_more_training_people_get_their_own_data_and_a_checked_download(bench_script, monkeypatch, tmp_path):
    """--train-photos: the training data's folder is named by the photos' hash (the astronaut-only data stays
    `train`); bench/photos.py takes only the published file."""
    import argparse
    import tarfile

    bench = bench_script("generalize")
    assert bench.train_people(argparse.Namespace(train_photos=None)) == ("suite-train", "train")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"one")
    people, folder = bench.train_people(argparse.Namespace(train_photos=str(photos)))
    assert people == f"suite-train+{photos.resolve()}" and folder.startswith("train-") and len(folder) == 18
    (photos / "a.png").write_bytes(b"two")
    assert bench.train_people(argparse.Namespace(train_photos=str(photos)))[1] != folder  # other photos, other data
    # --test-photos: test people of their own, in data of their own; a photo on both sides is refused.
    tests = tmp_path / "test_photos"
    tests.mkdir()
    (tests / "b.png").write_bytes(b"three")
    both = argparse.Namespace(train_photos=str(photos), test_photos=str(tests))
    tested, test = bench.test_people(both)
    assert tested == f"suite-test+{tests.resolve()}" and test.startswith("test-") and len(test) == 17
    assert bench.test_people(argparse.Namespace(train_photos=None, test_photos=None)) == ("suite-test", "test")
    (tests / "c.png").write_bytes(b"two")  # the training folder's a.png under another name
    with pytest.raises(ValueError, match="share c.png: a test person must be one the training never saw"):
        bench.test_people(both)

    fetcher = bench_script("photos")
    forged = tmp_path / "face_recognition-1.3.0.tar.gz"
    with tarfile.open(forged, "w:gz") as tar:
        tar.add(photos / "a.png", arcname=next(iter(fetcher.FACE_RECOGNITION.members)))
    with pytest.raises(RuntimeError, match="not one of the source distributions as published"):
        fetcher.fetch(tmp_path / "out", "sharp", [forged])
    with pytest.raises(RuntimeError, match="no such file"):
        fetcher.fetch(tmp_path / "out", "sharp", [tmp_path / "missing.tar.gz"])
    assert not (tmp_path / "out").exists()
    # A file whose hash a set names gives its photos under their new names, and only those.
    from data_prep.files import sha256_of

    member, name = next(iter(fetcher.FACE_RECOGNITION.members.items()))
    monkeypatch.setitem(fetcher.SETS, "mine", (fetcher.Source("https://example.invalid/x.tar.gz", sha256_of(forged),
                                                              {member: name}),))
    assert fetcher.fetch(tmp_path / "out", "mine", [forged]) == [tmp_path / "out" / name]
    assert (tmp_path / "out" / name).read_bytes() == b"two"
    assert [f.name for f in (tmp_path / "out").iterdir() if f.is_file()] == [name]
