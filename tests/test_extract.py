"""Face extraction (data_prep.pipeline, data_prep.extractor, data_prep.dataset): tracking and interpolation units,
the in-memory FaceExtractor on real face photos, and `deepfake-extract` end to end: bad inputs, resume, shards +
merge, DFDC box reuse, recall on `deepfake synth` clips.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from data_prep.dataset import shard_of
from data_prep.detection import DetectRequest
from data_prep.extractor import FaceExtractor
from data_prep.faces import ExtractConfig, VideoFaces
from data_prep.index import INDEX_COLUMNS
from data_prep.pipeline import _detect_chunk
from data_prep.track import Tracker, crop_box, greedy_match, iou_matrix, square_crop
from data_prep.video import VideoError, iter_frames
from data_prep.video_writer import write_video
from deepfake.cli import extract
from tests.videos import write_exotic

# Face boxes (x1, y1, x2, y2) in the photos as shipped, measured with MTCNN at full resolution.
ASTRONAUT_FACE = np.array([181, 62, 268, 172], np.float32)  # skimage.data.astronaut(), 512 x 512
HOPPER_FACE = np.array([174, 120, 356, 340], np.float32)  # matplotlib's grace_hopper.jpg, 512 wide x 600 high
CPU = dict(device="cpu", stride=2, size=48)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ test videos
def _encode(path: Path, frames: list[np.ndarray], pix_fmt: str = "yuv420p", fps: int = 10) -> Path:
    if pix_fmt == "yuv420p":
        return write_video(path, frames, fps, crf=20, preset="ultrafast")
    return write_exotic(path, frames, fps, pix_fmt=pix_fmt, stream_options={"preset": "ultrafast", "crf": "20"})


def face_video(path: Path, canvas: tuple[int, int], photos: list[tuple[np.ndarray, np.ndarray, int, int, int]],
               n_frames: int, dx: int = 2, pix_fmt: str = "yuv420p") -> tuple[Path, dict[int, list[np.ndarray]]]:
    """A video of face photos pasted on a gradient, drifting right by `dx` px a frame.

    Args:
        canvas: (height, width).
        photos: (image, its face box, height to scale it to, x, y) per face.

    Returns:
        The path and the ground-truth face boxes per frame.
    """
    h, w = canvas
    background = np.dstack([np.tile(np.linspace(40, 200, w, dtype=np.uint8), (h, 1)),
                            np.tile(np.linspace(200, 60, h, dtype=np.uint8)[:, None], (1, w)),
                            np.full((h, w), 120, np.uint8)])
    scaled = []
    for image, box, height, x, y in photos:
        s = height / image.shape[0]
        scaled.append((cv2.resize(image, (round(image.shape[1] * s), height), interpolation=cv2.INTER_AREA),
                       box * s, x, y))
    frames, boxes = [], {}
    for i in range(n_frames):
        frame = background.copy()
        boxes[i] = []
        for image, box, x, y in scaled:
            x = x + dx * i
            ph, pw = image.shape[:2]
            frame[y:y + ph, x:x + pw] = image[: h - y, : w - x]
            boxes[i].append(box + np.array([x, y, x, y], np.float32))
        frames.append(frame)
    return _encode(path, frames, pix_fmt), boxes


@pytest.fixture(scope="module")
def videos(tmp_path_factory, hopper) -> dict[str, tuple[Path, dict]]:
    """Real face photos as short videos in the shapes users bring, plus files that are not usable videos."""
    root = tmp_path_factory.mktemp("videos")
    astro = skdata.astronaut()
    out = {
        "astro": face_video(root / "astro.mp4", (240, 320), [(astro, ASTRONAUT_FACE, 240, 40, 0)], 12),
        "two": face_video(root / "two.mp4", (240, 480), [(astro, ASTRONAUT_FACE, 240, 0, 0),
                                                         (hopper, HOPPER_FACE, 240, 250, 0)], 10, dx=1),
        "portrait": face_video(root / "portrait.mp4", (320, 240), [(astro, ASTRONAUT_FACE, 220, 0, 50)], 8),
        "gray": face_video(root / "gray.mp4", (240, 320), [(astro, ASTRONAUT_FACE, 240, 40, 0)], 8, pix_fmt="gray"),
        "4k": face_video(root / "4k.mp4", (2160, 3840), [(astro, ASTRONAUT_FACE, 2160, 800, 0)], 2, dx=0),
        "one": face_video(root / "one.mp4", (240, 320), [(astro, ASTRONAUT_FACE, 240, 40, 0)], 1),
    }
    coffee = cv2.resize(skdata.coffee(), (320, 240), interpolation=cv2.INTER_AREA)
    out["noface"] = (_encode(root / "noface.mp4", [coffee] * 6), {})
    (root / "empty.mp4").write_bytes(b"")
    (root / "notvideo.mp4").write_text("definitely not a video\n" * 100)
    whole = out["astro"][0].read_bytes()
    (root / "cut.mp4").write_bytes(whole[: len(whole) * 2 // 3])
    for name in ("empty", "notvideo", "cut"):
        out[name] = (root / f"{name}.mp4", {})
    out["missing"] = (root / "missing.mp4", {})
    return out


def best_iou(box: np.ndarray, truth: list[np.ndarray]) -> float:
    return float(iou_matrix(box[None], np.array(truth)).max()) if truth else 0.0


# ------------------------------------------------------------------------------------------------ units
def test_iou_and_greedy_match():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[21, 21, 31, 31], [0, 0, 10, 5], [100, 100, 110, 110]], np.float32)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3) and iou[0, 1] == pytest.approx(0.5) and iou[0, 2] == 0
    assert sorted(greedy_match(a, b, 0.3)) == [(0, 1), (1, 0)]
    assert greedy_match(a, b, 0.9) == [] and greedy_match(a[:0], b, 0.1) == []


def test_tracker_links_moving_faces_and_splits_after_a_gap():
    tracker = Tracker(min_iou=0.3, max_gap=1)
    left, right = np.array([0, 0, 20, 20], np.float32), np.array([100, 0, 120, 20], np.float32)
    step = np.array([8, 0, 8, 0], np.float32)  # 40% of the box per frame: IoU with the last box alone is 0.43
    ids = [tracker.update(f, np.stack([left + step * f, right - step * f]), np.ones(2)) for f in range(4)]
    assert ids == [[0, 1]] * 4
    tracker.update(4, np.zeros((0, 4)), np.zeros(0))
    tracker.update(5, np.zeros((0, 4)), np.zeros(0))
    assert tracker.update(6, np.stack([left + step * 6]), np.ones(1)) == [2]  # gone 2 > max_gap frames: new track
    assert [t.frames for t in tracker.tracks] == [[0, 1, 2, 3], [0, 1, 2, 3], [6]]


def test_square_crop_geometry_and_padding():
    frame = np.full((100, 200, 3), 200, np.uint8)
    assert crop_box(np.array([50, 40, 70, 70]), 0.3) == (36, 31, 48)  # side = 30 * 1.6, centred on (60, 55)
    crop = square_crop(frame, np.array([50, 40, 70, 70]), 0.3, 32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8 and (crop == 200).all()
    corner = square_crop(frame, np.array([-10, -10, 10, 10]), 0.5, 40)  # beyond the top-left corner
    assert corner.shape == (40, 40, 3)
    assert (corner[:15, :15] == 0).all() and (corner[-10:, -10:] == 200).all()
    assert (square_crop(frame, np.array([500, 500, 520, 520]), 0.3, 16) == 0).all()


_SHARES = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)


def _points(boxes: np.ndarray) -> np.ndarray:
    """Stand-in landmarks of boxes: fixed shares of each box (so they move with it)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return boxes[:, None, :2] + _SHARES[None] * (boxes[:, None, 2:] - boxes[:, None, :2])


def _scripted(frames_boxes: list[list[list[float]]], config: ExtractConfig,
              refit=lambda box: (box, 0.99)) -> tuple[list, list[int], list[int]]:
    """Drive _detect_chunk with a fake detector that 'finds' the given boxes and a fake O-Net (`refit`: box ->
    (re-fitted box, probability)); returns the results, the frames detected and the frames refined."""
    small = np.arange(len(frames_boxes), dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)
    job, asked, refined = _detect_chunk(small, config), [], []
    try:
        request = next(job)
        while True:
            assert isinstance(request, DetectRequest)
            indices = [int(f[0, 0, 0]) for f in request.frames]
            if request.boxes is None:
                asked += indices
                request = job.send([(np.array(frames_boxes[i], np.float32).reshape(-1, 4),
                                     np.full(len(frames_boxes[i]), 0.99, np.float32), _points(frames_boxes[i]))
                                    for i in indices])
            else:
                refined += indices
                fits = [[refit(b) for b in boxes] for boxes in request.boxes]
                request = job.send([(np.array([b for b, _ in f], np.float32).reshape(-1, 4),
                                     np.array([p for _, p in f], np.float32), _points([b for b, _ in f]))
                                    for f in fits])
    except StopIteration as stop:
        return stop.value, asked, refined


def test_detect_every_k_interpolates_between_matching_detections():
    config = ExtractConfig(detect_every=3, refine_between=False)
    boxes = [[[10 + 3 * i, 10, 50 + 3 * i, 50]] for i in range(7)]  # one face moving steadily
    dets, asked, refined = _scripted(boxes, config)
    assert asked == [0, 3, 6] and refined == []
    for i, (b, s, detected, points) in enumerate(dets):
        assert np.allclose(b, boxes[i], atol=1e-4) and s[0] == pytest.approx(0.99)
        assert bool(detected[0]) == (i in (0, 3, 6))
        assert np.allclose(points, _points(boxes[i]), atol=1e-4)  # landmarks interpolated with their box


def test_interpolated_boxes_are_refit_by_onet():
    boxes = [[[10 + 3 * i, 10, 50 + 3 * i, 50]] for i in range(7)]
    dets, asked, refined = _scripted(boxes, ExtractConfig(detect_every=3), refit=lambda b: (b + 1, 0.98))
    assert asked == [0, 3, 6] and refined == [1, 2, 4, 5]  # one refinement request for the chunk
    for i, (b, s, detected, _) in enumerate(dets):
        moved = 1 if i in refined else 0  # what the fake O-Net returned, not the interpolation
        assert np.allclose(b, np.array(boxes[i]) + moved, atol=1e-4) and bool(detected[0])
        assert s[0] == pytest.approx(0.98 if moved else 0.99)


def test_frames_where_onet_loses_the_face_are_detected_in_full():
    boxes = [[[10 + 3 * i, 10, 50 + 3 * i, 50]] for i in range(7)]
    lost = {4}  # the face turns away at frame 4: O-Net's probability there falls under min_score

    def refit(box):
        return box, (0.3 if box[0] > 10 + 3 * 3.5 and box[0] < 10 + 3 * 4.5 else 0.99)

    dets, asked, refined = _scripted(boxes, ExtractConfig(detect_every=3), refit=refit)
    assert refined == [1, 2, 4, 5] and sorted(asked) == sorted([0, 3, 6, *lost])
    assert np.allclose(dets[4][0], boxes[4]) and dets[4][1][0] == pytest.approx(0.99)  # the full detection's box


def test_detect_every_k_detects_in_between_when_faces_change():
    config = ExtractConfig(detect_every=3)
    boxes = [[[10, 10, 50, 50]]] * 3 + [[[10, 10, 50, 50], [100, 10, 140, 50]]] * 4  # a second face arrives
    dets, asked, refined = _scripted(boxes, config)
    assert sorted(asked) == [0, 1, 2, 3, 6]  # frames 1-2 re-detected (counts differ 1 -> 2), 4-5 interpolated
    assert refined == [4, 5]
    assert [len(d[0]) for d in dets] == [1, 1, 1, 2, 2, 2, 2]
    low = [[[10, 10, 50, 50]]] * 2
    config = ExtractConfig(detect_every=1, min_score=0.995)  # scores of 0.99 are under min_score: dropped
    assert [len(d[0]) for d in _scripted(low, config)[0]] == [0, 0]


def test_config_validation_messages():
    with pytest.raises(ValueError, match="stride must be an integer >= 1"):
        ExtractConfig(stride=0)
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda"):
        ExtractConfig(device="tpu")
    with pytest.raises(ValueError, match="margin"):
        ExtractConfig(margin=-1)
    with pytest.raises(ValueError, match="size must be an integer"):
        ExtractConfig(size="auto")


def test_shards_are_deterministic_and_keep_fakes_with_their_original():
    ids = [f"real/{i}.mp4" for i in range(200)]
    shards = [shard_of(v, 4) for v in ids]
    assert shards == [shard_of(v, 4) for v in ids] and set(shards) == {0, 1, 2, 3}
    assert extract.main(["a", "b", "--shard", "4/4"]) == 2  # one line, not a usage dump


# ------------------------------------------------------------------------------------------------ FaceExtractor
@pytest.fixture(scope="module")
def extractor() -> FaceExtractor:
    return FaceExtractor(ExtractConfig(**CPU))


def _check_faces(faces: VideoFaces, truth: dict[int, list[np.ndarray]], n_tracks: int, size: int = 48) -> None:
    assert len(faces.tracks) == n_tracks
    for track in faces.tracks:
        n = len(track.frames)
        assert track.boxes.shape == (n, 4) and track.scores.shape == (n,) and track.crops.shape == (n, size, size, 3)
        assert track.crops.dtype == np.uint8 and track.boxes.dtype == np.float32
        assert (np.diff(track.frames) > 0).all() and (track.frames % 2 == 0).all()
        for frame, box in zip(track.frames, track.boxes):
            assert best_iou(box, truth[int(frame)]) >= 0.5, (faces.video, frame, box)


def test_extract_one_face(extractor, videos):
    path, truth = videos["astro"]
    faces = extractor.extract(path)
    assert (faces.n_frames, faces.width, faces.height, faces.fps) == (12, 320, 240, 10.0)
    _check_faces(faces, truth, 1)
    assert list(faces.tracks[0].frames) == [0, 2, 4, 6, 8, 10]
    assert faces.tracks[0].scores.min() > 0.95
    face = faces.tracks[0].crops[0]
    assert face.std() > 20  # a face, not a flat pad


def test_two_people_give_two_tracks(extractor, videos):
    path, truth = videos["two"]
    faces = extractor.extract(path)
    _check_faces(faces, truth, 2)
    left, right = (float(t.boxes[:, 0].mean()) for t in faces.tracks)
    assert left < 240 < right  # track 0 is the astronaut on the left, track 1 Grace Hopper on the right
    assert all(len(t.frames) == 5 for t in faces.tracks)


@pytest.mark.parametrize("name,n_tracks,shape", [("portrait", 1, (240, 320)), ("gray", 1, (320, 240)),
                                                 ("4k", 1, (3840, 2160)), ("one", 1, (320, 240)),
                                                 ("noface", 0, (320, 240))])
def test_unusual_videos(extractor, videos, name, n_tracks, shape):
    path, truth = videos[name]
    faces = extractor.extract(path)
    assert (faces.width, faces.height) == shape
    _check_faces(faces, truth, n_tracks)


def test_extract_raises_video_error(extractor, videos):
    with pytest.raises(VideoError, match="missing"):
        extractor.extract(videos["missing"][0])


def test_extract_many_keeps_input_order_and_goes_on_after_errors(extractor, videos):
    names = ["astro", "missing", "notvideo", "noface", "two"]
    results = list(extractor.extract_many([videos[n][0] for n in names]))
    assert [p for p, _ in results] == [str(videos[n][0]) for n in names]
    kinds = [type(r).__name__ if isinstance(r, VideoError) else len(r.tracks) for _, r in results]
    assert kinds == [1, "VideoError", "VideoError", 0, 2]


@pytest.mark.parametrize("detect_in_main", [False, True], ids=["detect-in-workers", "detect-in-main"])
def test_extract_many_with_worker_processes_matches_in_process(extractor, videos, detect_in_main):
    """Both pool modes (CPU: workers detect; GPU: the main process detects for the workers) give the same faces."""
    names = ["two", "cut", "astro"]
    inline = dict(extractor.extract_many([videos[n][0] for n in names]))
    pooled = FaceExtractor(ExtractConfig(**CPU), workers=1, detect_in_main=detect_in_main)
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    results = list(pooled.extract_many([videos[n][0] for n in names],
                                       progress=lambda path, done, total: seen[path].append((done, total))))
    results += list(pooled.extract_many([videos["astro"][0]]))  # the pool is kept for the next call
    pooled.close()
    for path, result in results:
        if isinstance(inline[path], VideoError):
            assert isinstance(result, VideoError) and str(result) == str(inline[path])
            continue
        assert len(result.tracks) == len(inline[path].tracks)
        if seen[path]:  # a video's progress, as it went (from the worker process)
            done = [d for d, _ in seen[path]]
            assert done == sorted(done) and seen[path][-1][0] == seen[path][-1][1] == inline[path].n_frames
        for a, b in zip(result.tracks, inline[path].tracks):
            assert np.array_equal(a.frames, b.frames) and np.allclose(a.boxes, b.boxes)
            assert np.array_equal(a.crops, b.crops)


def test_a_refit_sent_to_another_process_goes_as_onet_inputs(extractor, videos):
    """In GPU mode a worker sends O-Net's inputs for a re-fit, not its frames; the answer is the same."""
    import pickle

    frames = np.stack([f for _, f in iter_frames(videos["two"][0], 2)])
    small = np.stack([cv2.resize(f, (480, 240)) for f in frames])
    detector = extractor.detector
    boxes = [d.boxes for d in detector.detect(small)]
    request = DetectRequest(small, boxes)
    sent = request.for_sending()
    assert sent.prepared and not request.prepared and len(sent) == len(request) == len(small)
    assert sent.for_sending() is sent and DetectRequest(small).for_sending().crops is None  # detections go as they are
    assert len(pickle.dumps(sent)) < 0.05 * len(pickle.dumps(request))
    for (b1, p1, _), (b2, p2, _) in zip(detector.run(request), detector.run(sent)):
        assert np.array_equal(b1, b2) and np.array_equal(p1, p2)


# ------------------------------------------------------------------------------------------------ deepfake-extract
def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_cli(src: Path, out: Path, *more: str) -> int:
    return extract.main([str(src), str(out), "--stride", "2", "--size", "48", "--device", "cpu", "--workers", "0",
                         "--no-progress", *more])


def test_cli_goes_on_past_damaged_data_and_says_so(tmp_path, capsys, damaged_h264):
    """A video with damaged data inside: its sound frames are extracted, the loss is in its status and a warning."""
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    sound, _ = face_video(tmp_path / "sound.mp4", (240, 320), [(skdata.astronaut(), ASTRONAUT_FACE, 240, 40, 0)], 40,
                          dx=1)
    damaged_h264(src / "real" / "damaged.mp4", [f for _, f in iter_frames(sound)], [15])
    assert run_cli(src, tmp_path / "out", "--layout", "folder") == 0
    err = capsys.readouterr().err
    assert "warning: real/damaged.mp4: " in err and "frames could not be decoded (damaged data in the file)" in err
    (meta,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "parts").rglob("*.json")]
    assert meta["status"] == "ok" and meta["n_frames"] == 40 and 1 <= meta["damaged_frames"] <= 10
    frames = {int(r["frame"]) for r in read_csv(tmp_path / "out" / "index.csv")}
    assert not frames & {16, 18} and {0, 2, 4, 6, 8} <= frames and {20, 30, 38} <= frames  # 15-19 depend on 15


@pytest.fixture(scope="module")
def messy(videos, tmp_path_factory) -> Path:
    """A folder dataset holding every kind of input a user may bring, good and bad."""
    src = tmp_path_factory.mktemp("messy")
    (src / "real").mkdir()
    for name, (path, _) in videos.items():
        if path.exists():
            (src / "real" / f"{name}.mp4").write_bytes(path.read_bytes())
    (src / "labels.csv").write_text("video,label\n" + "".join(f"real/{n}.mp4,real\n" for n in sorted(videos)))
    return src


@pytest.fixture(scope="module")
def messy_run(messy, tmp_path_factory, capsys_module=None) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("messy_out")
    return out, run_cli(messy, out)


def test_cli_records_bad_inputs_and_extracts_the_rest(messy_run, videos, capsys):
    out, status = messy_run
    assert status == 0
    failures = {r["video"]: r["reason"] for r in read_csv(out / "failures.csv")}
    assert set(failures) == {"real/missing.mp4", "real/empty.mp4", "real/cut.mp4", "real/notvideo.mp4",
                             "real/noface.mp4"}
    assert "missing" in failures["real/missing.mp4"] and "empty file" in failures["real/empty.mp4"]
    assert "truncated" in failures["real/cut.mp4"] and "not a video" in failures["real/notvideo.mp4"]
    assert "no face" in failures["real/noface.mp4"]
    assert all("\n" not in reason for reason in failures.values())

    rows = read_csv(out / "index.csv")
    assert list(rows[0]) == INDEX_COLUMNS
    per_video = defaultdict(set)
    for row in rows:
        per_video[row["video"]].add(int(row["track"]))
        assert row["label"] == "0" and row["split"] == "" and row["original"] == row["video"]
        crop = out / row["crop"]
        assert row["crop"] == f"crops/{row['video'][:-4]}/t{row['track']}_f{int(row['frame']):06d}.jpg"
        image = cv2.imread(str(crop))
        assert image is not None and image.shape == (48, 48, 3)
        name = row["video"][5:-4]
        box = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")], np.float32)
        assert best_iou(box, videos[name][1][int(row["frame"])]) >= 0.5
        assert 0.9 <= float(row["score"]) <= 1.0
    assert per_video == {"real/astro.mp4": {0}, "real/two.mp4": {0, 1}, "real/portrait.mp4": {0},
                         "real/gray.mp4": {0}, "real/4k.mp4": {0}, "real/one.mp4": {0}}
    assert sum(r["video"] == "real/one.mp4" for r in rows) == 1
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temporary files behind


def test_cli_resumes_without_redoing_finished_videos(messy, messy_run, capsys):
    out, _ = messy_run
    before = (out / "index.csv").read_text()
    capsys.readouterr()
    # A run killed after writing astro's crops but before marking it done: its status file is missing.
    (out / "parts" / "real" / "astro.mp4.json").unlink()
    (out / "crops" / "real" / "astro" / "stale.jpg").write_bytes(b"partial")
    assert run_cli(messy, out) == 0
    text = capsys.readouterr().out
    # astro again, plus the 4 unreadable files (errors are retried; "no face" is a result, not retried)
    assert "11 videos, 7 face tracks, 5 failures" in text
    assert "extracted 5 now (6 already done)" in text
    assert (out / "index.csv").read_text() == before
    assert not (out / "crops" / "real" / "astro" / "stale.jpg").exists()
    assert run_cli(messy, out, "--size", "64") == 2  # other settings into the same folder: refused


@pytest.fixture(scope="module")
def dfdc(videos, tmp_path_factory) -> Path:
    """A DFDC-style part: a real clip, a fake of it (same frames, other colours), a fake of another length."""
    src = tmp_path_factory.mktemp("dfdc") / "dfdc_train_part_0"
    src.mkdir()
    real, truth = videos["astro"]
    (src / "real.mp4").write_bytes(real.read_bytes())
    frames = [cv2.convertScaleAbs(f, alpha=0.8, beta=20) for _, f in iter_frames(real, 1)]  # other look
    _encode(src / "fake.mp4", frames)
    _encode(src / "short.mp4", frames[:8])
    (src / "metadata.json").write_text(json.dumps({
        "real.mp4": {"label": "REAL", "split": "train"},
        "fake.mp4": {"label": "FAKE", "split": "train", "original": "real.mp4"},
        "short.mp4": {"label": "FAKE", "split": "train", "original": "real.mp4"}}))
    return src.parent


def test_dfdc_fakes_reuse_their_originals_boxes(dfdc, tmp_path):
    """The fake waits for its original (worker pool), then is cropped with its boxes: no detection of its own."""
    out = tmp_path / "out"
    assert run_cli(dfdc, out, "--workers", "1") == 0
    meta = {v: json.loads((out / "parts" / "dfdc_train_part_0" / f"{v}.mp4.json").read_text())
            for v in ("real", "fake", "short")}
    assert meta["fake"]["boxes_from"] == "dfdc_train_part_0/real.mp4"
    assert meta["short"]["boxes_from"] is None  # other frame count: detected on its own
    rows = read_csv(out / "index.csv")
    boxes = defaultdict(list)
    for row in rows:
        boxes[row["video"].split("/")[1]].append([row["frame"], row["x1"], row["y1"], row["x2"], row["y2"]])
    assert boxes["fake.mp4"] == boxes["real.mp4"] and len(boxes["short.mp4"]) == 4
    fake_rows = [r for r in rows if r["video"].endswith("/fake.mp4")]
    assert {(r["label"], r["split"], r["original"]) for r in fake_rows} == {
        ("1", "train", "dfdc_train_part_0/real.mp4")}


def test_no_reuse_original_boxes_detects_every_fake(dfdc, tmp_path):
    out = tmp_path / "out"
    assert run_cli(dfdc, out, "--no-reuse-original-boxes") == 0
    assert json.loads((out / "parts" / "dfdc_train_part_0" / "fake.mp4.json").read_text())["boxes_from"] is None


def test_shards_then_merge_equal_one_run(dfdc, messy, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    for name in ("astro", "one", "empty"):
        (src / "real" / f"{name}.mp4").write_bytes((messy / "real" / f"{name}.mp4").read_bytes())
    whole = tmp_path / "whole"
    assert run_cli(src, whole, "--layout", "folder") == 0
    sharded = tmp_path / "sharded"
    assert run_cli(src, sharded, "--shard", "0/2") == 0
    assert (sharded / "index.shard-0-of-2.csv").is_file() and not (sharded / "index.csv").exists()
    assert run_cli(src, sharded, "--shard", "1/2") == 0  # the last shard merges
    assert "merged into" in capsys.readouterr().out

    def rows(path: Path) -> list:
        return sorted(tuple(r.values()) for r in read_csv(path))

    assert rows(sharded / "index.csv") == rows(whole / "index.csv")
    assert rows(sharded / "failures.csv") == rows(whole / "failures.csv")
    (sharded / "index.csv").unlink()
    assert extract.main([str(sharded), "--merge"]) == 0
    assert rows(sharded / "index.csv") == rows(whole / "index.csv")
    (sharded / "index.shard-1-of-2.csv").unlink()
    assert extract.main([str(sharded), "--merge"]) == 2  # a shard missing: says which, merges nothing


def test_synth_dataset_recall_against_ground_truth(extracted_dataset, synth_dataset):
    """Every ground-truth face of the `deepfake synth` clips is found (IoU >= 0.5), and no crop is a non-face."""
    truth = defaultdict(list)
    for row in read_csv(synth_dataset / "boxes.csv"):
        truth[(row["video"], int(row["frame"]))].append(np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")]))
    rows = read_csv(extracted_dataset / "index.csv")
    crops = defaultdict(list)
    for row in rows:
        crops[(row["video"], int(row["frame"]))].append(np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")]))
    sampled = [key for key in truth if key[1] % 2 == 0]
    found = sum(best_iou(g, crops[key]) >= 0.5 for key in sampled for g in truth[key])
    total = sum(len(truth[key]) for key in sampled)
    false = sum(best_iou(c, truth[key]) < 0.5 for key, boxes in crops.items() for c in boxes)
    assert found / total >= 0.98, f"recall {found}/{total}"
    assert false / max(1, len(rows)) < 0.01, f"{false} of {len(rows)} crops match no face"
    labels = {r["video"]: r for r in read_csv(synth_dataset / "labels.csv")}
    assert {r["video"] for r in rows} == set(labels)
    for row in rows:
        assert row["label"] == ("1" if labels[row["video"]]["label"] == "fake" else "0")
        assert row["original"] == labels[row["video"]]["original"]
    assert read_csv(extracted_dataset / "failures.csv") == []


def test_size_auto_follows_the_training_config(dfdc, tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    status = extract.main([str(dfdc), str(out), "--size", "auto", "--size-from",
                           str(root / "configs" / "tiny_cpu.yaml"), "--stride", "2", "--device", "cpu",
                           "--workers", "0", "--limit", "1", "--no-progress"])
    assert status == 0
    assert json.loads((out / "extract_config.json").read_text())["size"] == 64
    assert extract.main([str(dfdc), str(tmp_path / "o2"), "--size", "auto", "--no-progress"]) == 2
    assert "auto" in capsys.readouterr().err
