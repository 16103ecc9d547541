"""Hostile inputs: link loops, byte-order marks, mistyped folders, checkpoints that try to run code, killed batches."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from data_prep.files import iter_videos, read_csv_dicts
from data_prep.layouts import find_videos
from deepfake.checkpoint import CheckpointError, load_detector
from deepfake.cli import predict as predict_cli
from deepfake.cli import submit
from deepfake.inference import collect_videos


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_link_loops_are_walked_once(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.mp4").write_bytes(b"x")
    (tmp_path / "real" / "loop").symlink_to(tmp_path)          # back to the top
    (tmp_path / "real" / "self").symlink_to(tmp_path / "real")  # back to its own folder
    (tmp_path / "real" / "same.mp4").symlink_to(tmp_path / "real" / "a.mp4")
    found = list(iter_videos(tmp_path))
    assert [p.name for p in found] == ["a.mp4"]
    assert [p for p, reason in collect_videos([str(tmp_path), str(tmp_path / "real")])] == [str(found[0])]
    assert [r.video for r in find_videos(tmp_path, "folder").records] == ["real/a.mp4"]


def test_a_byte_order_mark_is_ignored_by_every_csv_reader(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("\ufeffvideo,label\nclip.mp4,fake\n", encoding="utf-8")
    assert read_csv_dicts(tmp_path / "labels.csv", need=["video", "label"]) == [{"video": "clip.mp4",
                                                                                  "label": "fake"}]
    assert [(r.video, r.label) for r in find_videos(tmp_path, "folder").records] == [("clip.mp4", 1)]


def test_submit_on_a_missing_folder_is_an_error(tmp_path, capsys):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("filename,label\na.mp4,0.5\n")
    out = tmp_path / "submission.csv"
    assert submit.main([str(tmp_path / "test_videoz"), "--sample-submission", str(sample), "--out", str(out),
                        "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()


def test_a_checkpoint_that_would_run_code_is_refused_by_name(tmp_path, capsys):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _RunsCode()}, evil)
    with pytest.raises(CheckpointError) as err:
        load_detector(evil)
    message = str(err.value)
    assert "system" in message and "weights_only=False" not in message and len(message) < 200
    from deepfake.cli import train

    status = train.main(["validate", "--config", str(Path(__file__).parents[1] / "configs/tiny_cpu.yaml"),
                         "--data.index", str(tmp_path), "--ckpt_path", str(evil)])
    err_text = capsys.readouterr().err
    assert status == 2 and "loaded safely" in err_text and "Traceback" not in err_text


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_a_killed_predict_resumes_where_it_stopped(synth_dataset, tmp_path, monkeypatch, fmt):
    from tests.test_predict import make_weights

    weights = make_weights(tmp_path / "detector.pt")
    videos = tmp_path / "videos"
    shutil.copytree(synth_dataset / "real", videos)
    names = sorted(str(p) for p in iter_videos(videos))
    out = tmp_path / f"results.{fmt}"
    args = [str(videos), "--weights", str(weights), "--output", str(out), "--device", "cpu", "--no-progress"]

    import deepfake.inference as inference
    import deepfake.results as results

    real_append = results.ResultLog.append
    calls = []

    def append_then_die(self, result, seconds=None):
        real_append(self, result, seconds)
        calls.append(result["video"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the second video reached the disk

    monkeypatch.setattr(results.ResultLog, "append", append_then_die)
    assert predict_cli.main(args) == 130
    monkeypatch.setattr(results.ResultLog, "append", real_append)
    journal = out if fmt != "json" else out.with_name(f".{out.name}.partial.jsonl")
    assert journal.is_file() and calls == names[:2]
    with open(journal, "a") as f:
        f.write('{"video": "half a line')  # the kill cut a line short

    scored = []
    real_iter = inference.iter_predictions

    def counting(paths, *a, **k):
        scored.extend(os.fspath(p) for p in paths)
        return real_iter(paths, *a, **k)

    monkeypatch.setattr(inference, "iter_predictions", counting)
    assert predict_cli.main([*args, "--resume"]) == 0
    assert sorted(os.path.relpath(p) for p in scored) == sorted(os.path.relpath(p) for p in names[2:])
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    elif fmt == "json":
        rows = json.loads(out.read_text())
        assert not journal.exists()
    else:
        import csv

        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
    assert sorted(r["video"] for r in rows) == names


# ------------------------------------------------------------------------------------------ deepfake-extract

EXTRACT_ARGS = ["--layout", "folder", "--stride", "2", "--size", "64", "--device", "cpu", "--workers", "0",
                "--no-progress"]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` that a run leaves as its result (crops, index, failures), by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (p.parts[len(folder.parts)] == "crops" or p.name in ("index.csv", "failures.csv"))}


def test_a_killed_extraction_resumes_to_the_same_bytes(synth_dataset, extracted_dataset, tmp_path):
    """SIGKILL after the first video, resume: every crop and index row equals an uninterrupted run's, the fakes'
    crops too (they reuse their originals' boxes, from memory in one run and from disk after the kill)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    code = "import sys; from deepfake.cli.extract import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(synth_dataset), str(out), *EXTRACT_ARGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if list((out / "parts").rglob("*.json")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait(60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "index.csv").exists()
    from deepfake.cli import extract

    assert extract.main([str(synth_dataset), str(out), *EXTRACT_ARGS]) == 0
    resumed, clean = _tree(out), _tree(extracted_dataset)
    assert sorted(resumed) == sorted(clean)
    assert [name for name in clean if resumed[name] != clean[name]] == []


def test_videos_that_would_share_a_crop_folder_are_not_mixed(synth_dataset, tmp_path, capsys):
    from deepfake.cli import extract

    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    clip = next(iter_videos(synth_dataset / "real"))
    shutil.copy(clip, src / "real" / "dup.mp4")
    shutil.copy(clip, src / "real" / "dup.mov")
    out = tmp_path / "out"
    assert extract.main([str(src), str(out), *EXTRACT_ARGS]) == 0
    index = read_csv_dicts(out / "index.csv")
    assert {row["video"] for row in index} == {"real/dup.mov"}  # the first by id keeps crops/real/dup
    failures = read_csv_dicts(out / "failures.csv")
    assert [r["video"] for r in failures] == ["real/dup.mp4"] and "rename one" in failures[0]["reason"]


def test_a_second_run_on_the_same_folder_is_refused(synth_dataset, tmp_path, capsys):
    import fcntl

    from deepfake.cli import extract

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".extract.lock", "a+") as held:
        held.write("pid 1 on elsewhere\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert extract.main([str(synth_dataset), str(out), *EXTRACT_ARGS]) == 2
    err = capsys.readouterr().err
    assert "another deepfake-extract (pid 1 on elsewhere) is writing to" in err and "Traceback" not in err
    assert not (out / "index.csv").exists()


def test_a_write_error_is_that_videos_failure(synth_dataset, tmp_path, monkeypatch):
    import data_prep.dataset as dataset
    from deepfake.cli import extract

    real_write = dataset.write_video_part

    def full_disk(out, record, result, margin):
        if record.video == "real/clip_0000.mp4":
            raise OSError(28, "No space left on device")
        return real_write(out, record, result, margin)

    monkeypatch.setattr(dataset, "write_video_part", full_disk)
    out = tmp_path / "out"
    assert extract.main([str(synth_dataset), str(out), *EXTRACT_ARGS]) == 0
    failures = {r["video"]: r["reason"] for r in read_csv_dicts(out / "failures.csv")}
    assert "No space left on device" in failures["real/clip_0000.mp4"]
    assert len({r["video"] for r in read_csv_dicts(out / "index.csv")}) == 5  # the others went on


def test_a_still_picture_is_scored_with_a_warning(tmp_path, capsys):
    import cv2
    from skimage import data

    from tests.test_predict import make_weights

    still = tmp_path / "photo.mp4"
    cv2.imwrite(str(tmp_path / "photo.jpg"), data.astronaut()[:, :, ::-1])
    (tmp_path / "photo.jpg").rename(still)
    weights = make_weights(tmp_path / "detector.pt")
    assert predict_cli.main([str(still), "--weights", str(weights), "--device", "cpu", "--no-progress"]) == 0
    assert "a single picture, not a video" in capsys.readouterr().err


def test_reused_boxes_are_the_recorded_ones_in_memory_and_after_a_resume(synth_dataset, tmp_path):
    """Why a resumed run once cut one fake's crop a pixel off: its original's boxes came back from the index rounded
    to 2 decimals, where an uninterrupted run reused the unrounded ones. Both now reuse the recorded values."""
    import numpy as np

    from data_prep import parts
    from data_prep.extractor import FaceExtractor
    from data_prep.faces import ExtractConfig
    from data_prep.layouts import VideoRecord

    clip = next(iter_videos(synth_dataset / "real"))
    faces = FaceExtractor(ExtractConfig(stride=2, size=64, device="cpu")).extract(clip, jpeg=True)
    record = VideoRecord(clip, "real/a.mp4", 0, "", "real/a.mp4")
    parts.write_video_part(tmp_path, record, faces, 0.3)
    loaded = parts._load_boxes(tmp_path, "real/a.mp4", 2)
    in_memory = parts._as_recorded(faces, 2)
    raw = [track[2] for track in parts.ReuseBoxes.from_faces(faces, 2).tracks]
    assert not all(np.array_equal(a, b[2]) for a, b in zip(raw, loaded.tracks))  # rounding does change them
    for (t1, f1, b1, s1, p1), (t2, f2, b2, s2, p2) in zip(in_memory.tracks, loaded.tracks):
        assert t1 == t2 and np.array_equal(f1, f2) and np.array_equal(b1, b2) and np.array_equal(s1, s2)
        assert p1 is not None and np.array_equal(p1, p2)  # the landmarks too, as recorded


def test_resume_refuses_a_file_that_is_not_a_results_log(tmp_path, capsys):
    from tests.test_predict import make_weights

    other = tmp_path / "my_notes.csv"
    other.write_text("name,comment\nclip.mp4,keep me\n")
    weights = make_weights(tmp_path / "detector.pt")
    assert predict_cli.main([str(tmp_path), "--weights", str(weights), "--output", str(other), "--resume",
                             "--device", "cpu", "--no-progress"]) == 2
    assert "not a results file of `deepfake predict`" in capsys.readouterr().err
    assert other.read_text() == "name,comment\nclip.mp4,keep me\n"


def test_a_video_gets_the_same_bytes_alone_in_a_folder_and_with_workers(synth_dataset, extracted_dataset, tmp_path):
    from deepfake.cli import extract

    workers = tmp_path / "workers"
    args = [a for a in EXTRACT_ARGS]
    args[args.index("--workers") + 1] = "2"
    assert extract.main([str(synth_dataset), str(workers), *args]) == 0
    clean = _tree(extracted_dataset)
    assert _tree(workers) == clean
    alone_src = tmp_path / "alone_src"
    (alone_src / "real").mkdir(parents=True)
    shutil.copy(synth_dataset / "real" / "clip_0001.mp4", alone_src / "real" / "clip_0001.mp4")
    alone = tmp_path / "alone"
    assert extract.main([str(alone_src), str(alone), *EXTRACT_ARGS]) == 0
    mine = {k: v for k, v in clean.items() if k.startswith("crops/real/clip_0001/")}
    assert mine and {k: v for k, v in _tree(alone).items() if k.startswith("crops/")} == mine
    rows = [r for r in read_csv_dicts(extracted_dataset / "index.csv") if r["video"] == "real/clip_0001.mp4"]
    assert read_csv_dicts(alone / "index.csv") == rows


_POOL_PARENT = """
import time
from data_prep.extractor import FaceExtractor
from data_prep.faces import ExtractConfig
extractor = FaceExtractor(ExtractConfig(device="cpu"), workers=1)  # one: the rule is the same for each
list(extractor.extract_many(["missing.mp4"]))  # the pool is up: its worker took a job
print("ready", flush=True)
time.sleep(300)
"""


def _spawned_children(pid: int) -> list[int]:
    """Processes whose parent is `pid` and that run a multiprocessing spawn (the workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _workers_outlive_parent(sig: int) -> list[int]:
    """Start a process with a pool of extraction workers, send it `sig`, return the workers still alive 20 s on."""
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", _POOL_PARENT], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[1], start_new_session=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        pids = _spawned_children(parent.pid)
        assert len(pids) == 1, pids
        parent.send_signal(sig)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        return [p for p in pids if _alive(p)]
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # what a failed test leaves: the session it started


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_extraction_workers_die_with_a_killed_parent():
    import signal

    assert _workers_outlive_parent(signal.SIGKILL) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_extraction_workers_die_with_a_terminated_or_interrupted_parent(name):
    import signal

    assert _workers_outlive_parent(getattr(signal, name)) == []


def _deflated(src: Path, dst: Path) -> Path:
    """`src` (a PyTorch zip archive) rewritten with every entry deflated: loads the same, far smaller on disk."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    return dst


def test_a_checkpoint_that_unpacks_to_far_more_than_its_size_is_refused_before_loading(tmp_path, capsys):
    from tests.test_predict import make_weights

    weights = make_weights(tmp_path / "detector.pt")
    payload = torch.load(weights, weights_only=True)
    payload["state_dict"]["padding"] = torch.zeros(20_000_000)  # 76 MiB of zeros: deflated to about 80 KB
    torch.save(payload, tmp_path / "stored.pt")
    bomb = _deflated(tmp_path / "stored.pt", tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match="would unpack to 7[0-9] MiB"):
        load_detector(bomb)
    load_detector(_deflated(weights, tmp_path / "small_deflated.pt"))  # an honest deflated detector still loads
    assert predict_cli.main([str(tmp_path / "clip.mp4"), "--weights", str(bomb), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refused before loading" in err and "Traceback" not in err


@pytest.mark.parametrize("key, value", [("mean", "0.5"), ("std", [0.2, 0.0, 0.2]), ("img_size", -3),
                                        ("seq_len", "8"), ("margin", float("nan"))])
def test_a_checkpoint_with_a_bad_setting_is_refused_in_one_line(tmp_path, capsys, key, value):
    from tests.test_predict import make_weights

    weights = make_weights(tmp_path / "detector.pt")
    payload = torch.load(weights, weights_only=True)
    payload["meta"][key] = value
    torch.save(payload, weights)
    with pytest.raises(CheckpointError, match=f"detector setting {key} is"):
        load_detector(weights)
    assert predict_cli.main([str(tmp_path / "clip.mp4"), "--weights", str(weights), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"setting {key}" in err and "\n" not in err and "Traceback" not in err


def test_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    import av
    import numpy as np

    from data_prep.video import VideoError, iter_decoded, probe

    big = tmp_path / "over_8k.mp4"
    with av.open(str(big), "w") as container:  # one 8320x4352 frame: just over 8K (DCI 8192x4320)
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8320, 4352, "gray"
        stream.options = {"preset": "ultrafast"}
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(np.zeros((4352, 8320), np.uint8), "gray")),
                       *stream.encode()]:
            container.mux(packet)
    for read in (probe, lambda p: next(iter_decoded(p))):
        with pytest.raises(VideoError, match=r"frames of 8320x4352 \(36.2 megapixels\) are over the limit of 35.4"):
            read(big)
    assert probe(big, max_pixels=8320 * 4352).width == 8320  # --max-pixels raises it
