"""The train -> predict contract (docs/contract.md): the extraction recipe travels with a detector, predict feeds the
model exactly what training's loader fed it, overrides and old detectors warn in one line, a recipe that can't be
honoured is refused in one line, results say what was used, and a user's groups.csv decides the splits."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data_prep.faces import OUTPUT_SETTINGS
from data_prep.index import IndexFileError, apply_groups, load_tracks, read_groups, read_index
from data_prep.track import resize_crop
from deepfake.contract import ExtractionWarning, RecipeError, extract_config_for, recipe_of

TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=64, lstm_hidden=16)
SEQ_LEN, STRIDE = 4, 2
# Unlike the extraction defaults, so that a predict that ignored the recipe would see other crops.
EXTRACT = ["--stride", str(STRIDE), "--quality", "75", "--margin", "0.4", "--detect-size", "320", "--detect-every", "2"]


def face_video(path: Path, face: np.ndarray, n: int = 10) -> Path:
    """A still face photo, drifting a little, as an MPEG-4 clip (OpenCV's writer)."""
    h, w = face.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for i in range(n):
        m = np.float32([[1, 0, i], [0, 1, i // 2]])
        writer.write(cv2.warpAffine(face, m, (w, h), borderMode=cv2.BORDER_REFLECT)[..., ::-1])
    writer.release()
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, hopper, one_torch_thread) -> Path:
    """real/ and fake/ clips of Grace Hopper's face (the labels only give evaluate two classes)."""
    root = tmp_path_factory.mktemp("contract")
    face = cv2.resize(hopper, (192, 225), interpolation=cv2.INTER_AREA)
    for label, shift in (("real", 0), ("fake", 8)):
        (root / label).mkdir()
        face_video(root / label / f"{label}.mp4", np.roll(face, shift, axis=1))
    return root


def extract(dataset: Path, out: Path, size: int) -> Path:
    from deepfake.cli import extract as extract_cli

    assert extract_cli.main([str(dataset), str(out), "--layout", "folder", "--size", str(size), *EXTRACT,
                             "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
    return out


def trained_detector(index_dir: Path, path: Path):
    """A tiny random detector saved as `deepfake fit` saves one: with the recipe of the index it trains on."""
    from deepfake.checkpoint import save_detector
    from deepfake.data import FaceSequenceDataModule
    from deepfake.lit import DeepfakeLitModule

    torch.manual_seed(0)
    lit = DeepfakeLitModule(net=TINY).eval()
    dm = FaceSequenceDataModule(str(index_dir), seq_len=SEQ_LEN, img_size=64, num_workers=0, val_fraction=0.0)
    dm.setup("fit")
    lit.data_meta = dm.extraction_meta()
    save_detector(path, lit.net, lit.detector_meta())
    return lit, path


# ------------------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("size", [48, 96], ids=["crops-upscaled-48-to-64", "crops-downscaled-96-to-64"])
def test_extract_and_loader_feed_the_model_what_predict_does(dataset, tmp_path, size):
    from deepfake.cli import predict as predict_cli
    from deepfake.data import FaceSequenceDataset
    from deepfake.inference import PredictConfig, load_predictor

    index_dir = extract(dataset, tmp_path / "extracted", size)
    lit, weights = trained_detector(index_dir, tmp_path / "detector.pt")
    recorded = json.loads((index_dir / "extract_config.json").read_text())
    meta = torch.load(weights, weights_only=True)["meta"]
    assert {k: meta["extraction"][k] for k in OUTPUT_SETTINGS} == recorded  # the whole recipe travels

    # Training's side: the index's crops through the loader's windows and the module's normalisation.
    df, root = read_index(index_dir)
    tracks = [t for t in load_tracks(df, root) if t.video == "real/real.mp4"]
    data = FaceSequenceDataset(tracks, SEQ_LEN, 64, train=False, eval_windows="all")
    train_u8 = torch.stack([data[i]["frames"] for i in range(len(data))])  # (W, T, 3, 64, 64)
    with torch.no_grad():
        train_x = lit.on_after_batch_transfer({"frames": train_u8}, 0)["frames"]
        train_p = float(torch.sigmoid(lit(train_x)[:, -1].double()).mean())

    # predict's side: the same video through the predictor built from the detector file alone.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtractionWarning)  # nothing to warn about: no override, a new detector
        detector, extractor, _ = load_predictor(weights, PredictConfig(device="cpu", precision="fp32"))
    faces = extractor.extract(dataset / "real" / "real.mp4", jpeg=True)
    crops = faces.tracks[0].images()
    assert crops[0].shape == (size, size, 3)  # extracted at the training crops' size, then resized by the one rule
    windows = [np.asarray(crops[s:s + SEQ_LEN]) for s in (0, len(crops) - SEQ_LEN)]
    resized = np.stack([[resize_crop(c, 64) for c in w] for w in windows])  # what Detector.prepare does
    predict_u8 = torch.from_numpy(resized).permute(0, 1, 4, 2, 3)
    assert torch.equal(predict_u8, train_u8)
    torch.testing.assert_close(torch.as_tensor(detector.prepare(windows)), train_x, atol=1e-5, rtol=0)  # any runtime

    out = tmp_path / "out.json"
    assert predict_cli.main([str(dataset / "real" / "real.mp4"), "--weights", str(weights), "--output", str(out),
                             "--device", "cpu", "--precision", "fp32", "--no-progress"]) == 0
    result = json.loads(out.read_text())[0]
    assert result["p_fake"] == pytest.approx(train_p, abs=1e-5)
    assert {k: result["extraction"][k] for k in recorded} == recorded
    assert result["extraction"]["img_size"] == 64 and result["extraction"]["seq_len"] == SEQ_LEN

    if size == 48:  # evaluate on the index says the same in metrics.json, without a warning
        from deepfake.evaluation import evaluate

        notes = []
        report = evaluate(index_dir, tmp_path / "eval", weights, predict_config=PredictConfig(device="cpu"),
                          say=lambda m: None, warn=notes.append)
        assert {k: report["extraction"][k] for k in recorded} == recorded
        assert not [n for n in notes if n.startswith("warning")]


def test_the_resize_rule_is_area_down_bilinear_up():
    img = np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)
    assert np.array_equal(resize_crop(img, 64), cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(resize_crop(img, 32), cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA))
    assert resize_crop(img, 48) is img


# ------------------------------------------------------------------------------------------- old and overridden


DELETE = object()


def tiny_meta(**changes):
    """A tiny detector and its meta as `build_meta` writes it, then edited: {"key" or "extraction.key": value or
    DELETE}."""
    from deepfake.checkpoint import build_meta
    from deepfake.model import DeepfakeDetector

    torch.manual_seed(0)
    net = DeepfakeDetector(**TINY)
    meta = build_meta(net, seq_len=SEQ_LEN, margin=0.3, stride=3)
    for key, value in changes.items():
        holder, name = (meta["extraction"], key.split(".", 1)[1]) if key.startswith("extraction.") else (meta, key)
        if value is DELETE:
            del holder[name]
        else:
            holder[name] = value
    return net, meta


def write_raw(path: Path, net, meta) -> Path:
    """A detector file as a hand edit leaves it (`save_detector` would refuse a bad recipe)."""
    from deepfake.checkpoint import FORMAT

    torch.save({"format": FORMAT, "state_dict": net.state_dict(), "meta": meta}, path)
    return path


def test_an_old_detector_gets_the_defaults_it_was_trained_with_and_says_so(tmp_path):
    from deepfake.inference import PredictConfig, load_predictor

    net, meta = tiny_meta(extraction=DELETE)
    assert "extraction" not in meta
    weights = write_raw(tmp_path / "old.pt", net, meta)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, extractor, _ = load_predictor(weights, PredictConfig(device="cpu"))
    notes = [str(w.message) for w in caught if w.category is ExtractionWarning]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "records no" in notes[0] and "quality 90" in notes[0] and "detect_size 640" in notes[0]
    config = extractor.config
    assert (config.stride, config.margin, config.size, config.quality) == (3, 0.3, 64, 90)  # recorded, img_size


def test_an_override_that_changes_the_input_warns_once_naming_both_values(tmp_path):
    from deepfake.checkpoint import save_detector
    from deepfake.inference import PredictConfig, load_predictor

    net, meta = tiny_meta()
    weights = save_detector(tmp_path / "d.pt", net, meta)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, extractor, _ = load_predictor(weights, PredictConfig(device="cpu", stride=5))
        load_predictor(weights, PredictConfig(device="cpu", stride=3))  # the recorded stride: nothing to say
    notes = [str(w.message) for w in caught if w.category is ExtractionWarning]
    assert notes == [notes[0]] and "stride 5" in notes[0] and "stride 3" in notes[0]
    assert extractor.config.stride == 5


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change, field", [
    ({"extraction.quality": DELETE}, "extraction.quality"),
    ({"img_size": 4096}, "img_size"),
    ({"extraction.size": 8}, "size"),
    ({"extraction.quality": "90"}, "extraction.quality"),
    ({"extraction.resize": "lanczos"}, "extraction.resize"),
    ({"extraction": [1, 2]}, "extraction"),
])
def test_a_recipe_the_extractor_cannot_honour_is_refused_in_one_line(change, field):
    _, meta = tiny_meta(**change)
    with pytest.raises(RecipeError) as err:
        extract_config_for(meta, "d.pt")
    message = str(err.value)
    assert field in message and "\n" not in message and message.startswith("d.pt")


def test_predict_refuses_a_hand_edited_detector_before_writing_anything(tmp_path, capsys):
    from deepfake.checkpoint import CheckpointError, load_detector
    from deepfake.cli import predict as predict_cli

    net, meta = tiny_meta(**{"extraction.detect_size": DELETE})
    weights = write_raw(tmp_path / "edited.pt", net, meta)
    with pytest.raises(CheckpointError, match="extraction.detect_size"):
        load_detector(weights)
    out = tmp_path / "results" / "out.json"
    out.parent.mkdir()
    status = predict_cli.main([str(tmp_path / "any.mp4"), "--weights", str(weights), "--output", str(out),
                               "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "extraction.detect_size" in err
    assert list(out.parent.iterdir()) == []  # no output, no journal


def test_recipe_of_a_new_detector_is_what_build_meta_recorded():
    _, meta = tiny_meta()
    recipe, defaulted = recipe_of(meta)
    assert defaulted == [] and (recipe["stride"], recipe["size"], recipe["resize"]) == (3, 64, "area-down-linear-up")


# ------------------------------------------------------------------------------------------------------- groups


def small_index(root: Path, videos: dict[str, tuple[int, str]]) -> Path:
    """An index.csv of one 3-crop track per video ({video: (label, original)}), crops 16 px."""
    rows = ["video,label,split,original,track,frame,crop"]
    img = np.full((16, 16, 3), 128, np.uint8)
    for video, (label, original) in videos.items():
        for f in range(3):
            crop = f"crops/{video.replace('/', '_')}_{f}.jpg"
            (root / "crops").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / crop), img)
            rows.append(f"{video},{label},,{original},0,{f},{crop}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root / "index.csv"


def test_groups_csv_keeps_each_person_on_one_side_of_the_split(tmp_path):
    from deepfake.data import FaceSequenceDataModule

    # Eight source videos of two people; the index knows only source videos, so its default split mixes them.
    videos = {f"real/{p}{i}.mp4": (0, f"real/{p}{i}.mp4") for p in "ab" for i in range(4)}
    videos["fake/a0_swap.mp4"] = (1, "real/a0.mp4")  # not listed: takes its original's person
    index = small_index(tmp_path, videos)
    groups = tmp_path / "groups.csv"
    groups.write_text("video,group\n" + "".join(f"real/{p}{i}.mp4,person_{p}\n" for p in "ab" for i in range(4)))
    assert read_groups(groups)["real/b3.mp4"] == "person_b"

    dm = FaceSequenceDataModule(str(index), seq_len=2, img_size=16, num_workers=0, val_fraction=0.5,
                                groups=str(groups))
    dm.setup("fit")
    side = {t.video: split for split, tracks in dm.tracks.items() for t in tracks}
    for person in "ab":
        assert len({side[v] for v in side if v.startswith(f"real/{person}")}) == 1
    assert side["fake/a0_swap.mp4"] == side["real/a0.mp4"]
    assert set(side.values()) == {"train", "val"}

    df, root = read_index(index)
    tracks = load_tracks(df, root)
    assert apply_groups(tracks, {"real/a0.mp4": "x"}) == sorted(v for v in videos if v not in
                                                                  ("real/a0.mp4", "fake/a0_swap.mp4"))


def test_a_bad_groups_csv_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "groups.csv"
    bad.write_text("video,group\nreal/a.mp4,p1\nreal/a.mp4,p2\n")
    with pytest.raises(IndexFileError, match="two groups"):
        read_groups(bad)
    bad.write_text("video,person\nreal/a.mp4,p1\n")
    with pytest.raises(IndexFileError, match="group"):
        read_groups(bad)
