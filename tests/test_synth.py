"""`deepfake synth`: readable videos of the requested size, consistent labels and boxes, honest fakes."""

from __future__ import annotations

import csv
import hashlib
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import synth
from data_prep.sbi import REGION_SCALE
from deepfake.cli import synth as synth_cli

# The conftest fixture's settings: 6 clips, 320x240, 3 s at 10 fps, seed 0.
FIXTURE_ARGS = ["--resolution", "320x240", "--seconds", "3", "--fps", "10", "--seed", "0", "--no-progress"]
N_FRAMES, WIDTH, HEIGHT = 30, 320, 240


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_boxes(root: Path) -> dict[tuple[str, int], list[list[float]]]:
    boxes: dict[tuple[str, int], list[list[float]]] = {}
    for row in read_csv(root / "boxes.csv"):
        boxes.setdefault((row["video"], int(row["frame"])), []).append(
            [float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    return boxes


def decode(path: Path) -> np.ndarray:
    """All frames of a video as (N, H, W, 3) RGB uint8, through OpenCV (what users and the extractor read)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"OpenCV cannot open {path}"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="module")
def mtcnn():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


def assert_faces_found(detector, frame: np.ndarray, gt_boxes: list[list[float]], where: str) -> None:
    from PIL import Image

    detections, _ = detector.detect(Image.fromarray(frame))
    detections = [] if detections is None else detections.tolist()
    for gt in gt_boxes:
        best = max((iou(gt, d) for d in detections), default=0.0)
        assert best >= 0.5, f"{where}: no MTCNN face overlaps the ground-truth box {gt} (best IoU {best:.2f})"


# ----------------------------------------------------------------------------------- the shared fixture dataset


def test_videos_readable_with_requested_frames_and_size(synth_dataset):
    for row in read_csv(synth_dataset / "labels.csv"):
        path = synth_dataset / row["video"]
        cap = cv2.VideoCapture(str(path))
        assert cap.isOpened(), path
        assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == WIDTH and int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == HEIGHT
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10, abs=0.01)
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N_FRAMES
        cap.release()
        assert decode(path).shape == (N_FRAMES, HEIGHT, WIDTH, 3)


def test_labels_match_files(synth_dataset):
    rows = read_csv(synth_dataset / "labels.csv")
    assert list(rows[0]) == ["video", "label", "original"]
    on_disk = {p.relative_to(synth_dataset).as_posix() for p in synth_dataset.glob("*/*") if p.is_file()}
    assert on_disk == {r["video"] for r in rows}, "labels.csv and the files differ (or a temp file was left)"
    by_video = {r["video"]: r for r in rows}
    assert sorted(r["label"] for r in rows) == ["fake"] * 3 + ["real"] * 3
    for r in rows:
        assert r["video"].split("/")[0] == r["label"], r
        if r["label"] == "real":
            assert r["original"] == r["video"]
        else:
            assert by_video[r["original"]]["label"] == "real", r
    fakes = [r for r in rows if r["label"] == "fake"]
    assert len({r["original"] for r in fakes}) == len(fakes), "each fake must come from its own real clip"
    assert len({Path(r["video"]).name for r in rows}) == len(rows), "clip file names must be unique"


def test_boxes_follow_faces_smoothly(synth_dataset):
    rows = read_csv(synth_dataset / "boxes.csv")
    assert list(rows[0]) == ["video", "frame", "x1", "y1", "x2", "y2"]
    boxes = read_boxes(synth_dataset)
    labels = read_csv(synth_dataset / "labels.csv")
    for r in labels:
        track = np.array([boxes[(r["video"], i)] for i in range(N_FRAMES)])  # (N, faces, 4)
        assert track.shape == (N_FRAMES, 1, 4), r["video"]
        track = track[:, 0]
        assert (track[:, 0] >= 0).all() and (track[:, 2] <= WIDTH).all()
        assert (track[:, 1] >= 0).all() and (track[:, 3] <= HEIGHT).all()
        heights = track[:, 3] - track[:, 1]
        assert heights.min() >= 0.24 * HEIGHT and heights.max() <= 0.46 * HEIGHT, heights
        step = np.abs(np.diff(track, axis=0)).max()
        assert step < 0.1 * HEIGHT, f"{r['video']}: the face jumps {step:.1f} px between frames"
        assert np.ptp(track, axis=0).max() > 2, f"{r['video']}: the face does not move"
        if r["label"] == "fake":
            original = np.array([boxes[(r["original"], i)][0] for i in range(N_FRAMES)])
            np.testing.assert_array_equal(track, original)


def test_fakes_differ_from_originals_only_around_the_face(synth_dataset):
    boxes = read_boxes(synth_dataset)
    for r in read_csv(synth_dataset / "labels.csv"):
        if r["label"] != "fake":
            continue
        fake = decode(synth_dataset / r["video"]).astype(np.int16)
        real = decode(synth_dataset / r["original"]).astype(np.int16)
        diff = np.abs(fake - real).mean(-1)  # (N, H, W)
        around = np.zeros(diff.shape, bool)  # the GT box enlarged by sbi.REGION_SCALE: all SBI may change
        tight = np.zeros(diff.shape, bool)
        for i in range(N_FRAMES):
            x1, y1, x2, y2 = boxes[(r["video"], i)][0]
            cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, REGION_SCALE * (x2 - x1) / 2, REGION_SCALE * (y2 - y1) / 2
            around[i, max(0, int(cy - hh)):int(np.ceil(cy + hh)), max(0, int(cx - hw)):int(np.ceil(cx + hw))] = True
            tight[i, int(y1):int(y2), int(x1):int(x2)] = True
        inside, outside, face = diff[around].mean(), diff[~around].mean(), diff[tight].mean()
        # Measured at 320x240, crf 18 over seeds 0-7 (31 fakes): outside 0.3-1.5 (H.264 noise: the encoder's
        # choices differ between the two videos), around the face 2.4-7.3 (3.7-15x outside), on the face 6.3-24.
        assert outside < 2.0, f"{r['video']}: mean |fake - real| outside the face region is {outside:.2f}"
        assert inside > 2.0 and inside > 3 * outside, (
            f"{r['video']}: around the face {inside:.2f}, outside {outside:.2f}")
        assert face > 5.0, f"{r['video']}: mean |fake - real| on the face box is only {face:.2f}"


def test_mtcnn_finds_the_ground_truth_faces(synth_dataset, mtcnn):
    boxes = read_boxes(synth_dataset)
    for r in read_csv(synth_dataset / "labels.csv"):
        frames = decode(synth_dataset / r["video"])
        for i in (0, N_FRAMES // 2, N_FRAMES - 1):
            assert_faces_found(mtcnn, frames[i], boxes[(r["video"], i)], f"{r['video']} frame {i}")


def test_deterministic_and_independent_of_count(synth_dataset, tmp_path):
    # Same seed and video settings, fewer clips: the first pair must be byte-identical to the fixture's.
    assert synth_cli.main([str(tmp_path / "a"), "--count", "2", *FIXTURE_ARGS]) == 0
    assert sha256(tmp_path / "a/real/clip_0000.mp4") == sha256(synth_dataset / "real/clip_0000.mp4")
    assert sha256(tmp_path / "a/fake/clip_0001.mp4") == sha256(synth_dataset / "fake/clip_0003.mp4")
    fixture_boxes = read_boxes(synth_dataset)
    for (video, frame), value in read_boxes(tmp_path / "a").items():
        other = {"real/clip_0000.mp4": "real/clip_0000.mp4", "fake/clip_0001.mp4": "fake/clip_0003.mp4"}[video]
        assert fixture_boxes[(other, frame)] == value
    # Another seed gives other clips.
    args = [a if a != "0" else "1" for a in FIXTURE_ARGS]
    assert synth_cli.main([str(tmp_path / "b"), "--count", "2", *args]) == 0
    assert sha256(tmp_path / "b/real/clip_0000.mp4") != sha256(synth_dataset / "real/clip_0000.mp4")


# ----------------------------------------------------------------------------------------- other settings


@pytest.mark.parametrize("resolution", ["320x240", "240x320"])
def test_two_face_clips_landscape_and_portrait(tmp_path, mtcnn, resolution):
    width, height = synth.parse_resolution(resolution)
    out = tmp_path / "two"
    assert synth_cli.main([str(out), "--count", "2", "--resolution", resolution, "--seconds", "1", "--fps", "5",
                       "--seed", "3", "--multi-face", "1", "--no-progress"]) == 0
    boxes = read_boxes(out)
    for r in read_csv(out / "labels.csv"):
        frames = decode(out / r["video"])
        assert frames.shape == (5, height, width, 3)
        for i in range(5):
            a, b = boxes[(r["video"], i)]
            assert iou(a, b) == 0.0, "the two faces overlap"
        for i in (0, 4):
            assert_faces_found(mtcnn, frames[i], boxes[(r["video"], i)], f"{resolution} {r['video']} frame {i}")


def test_odd_count_and_resume(tmp_path):
    out = tmp_path / "set"
    args = [str(out), "--count", "3", "--resolution", "192x128", "--seconds", "0.5", "--fps", "8", "--no-progress"]
    assert synth_cli.main(args) == 0
    labels = read_csv(out / "labels.csv")
    assert [r["label"] for r in labels] == ["real", "real", "fake"]  # count // 2 fakes
    assert decode(out / "real/clip_0001.mp4").shape == (4, 128, 192, 3)
    before = {r["video"]: sha256(out / r["video"]) for r in labels}
    # A killed run leaves a temp file and misses a clip; the same command finishes the set identically.
    (out / "fake/clip_0002.mp4").unlink()
    (out / "fake/.clip_0002.mp4.partial").write_bytes(b"truncated")
    assert synth_cli.main(args) == 0
    assert {r["video"]: sha256(out / r["video"]) for r in labels} == before
    assert not list(out.glob("*/.*.partial"))
    # Other settings replace the earlier output, leaving no stale clip behind.
    assert synth_cli.main([*args[:2], "2", *args[3:], "--seed", "5"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.mp4")) == [
        "fake/clip_0001.mp4", "real/clip_0000.mp4"]
    assert sha256(out / "real/clip_0000.mp4") != before["real/clip_0000.mp4"]


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad", [
    ["--count", "1"],
    ["--count", "two"],
    ["--resolution", "100x100"],
    ["--resolution", "321x240"],
    ["--resolution", "8000x4000"],
    ["--resolution", "huge"],
    ["--seconds", "0"],
    ["--seconds", "0.01", "--fps", "10"],
    ["--fps", "-5"],
    ["--multi-face", "1.5"],
    ["--seed", "-1"],
    ["--bogus"],
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, bad):
    status = synth_cli.main([str(tmp_path / "out"), *bad, "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("deepfake synth: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists(), "nothing may be written for bad arguments"


def test_missing_out_dir_and_foreign_folder(tmp_path, capsys):
    assert synth_cli.main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "notes.txt").write_text("mine")
    assert synth_cli.main([str(tmp_path), "--count", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_config_validation_messages():
    with pytest.raises(ValueError, match="even"):
        synth.SynthConfig(width=641, height=480)
    with pytest.raises(ValueError, match="at least 2"):
        synth.SynthConfig(count=1)
    assert synth.parse_resolution("1080p") == (1920, 1080)
    assert synth.parse_resolution("720x1280") == (720, 1280)
    cfg = synth.SynthConfig(seconds=2, fps=29.97)
    assert cfg.n_frames == 60 and cfg.rate == Fraction(30000, 1001)


def test_cli_dispatches_synth(capsys):
    from deepfake.cli import main as cli_main

    assert cli_main(["synth", "--help"]) == 0
    assert "--multi-face" in capsys.readouterr().out
