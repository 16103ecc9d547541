"""A corpus of bad files beside good ones, through every command that takes a folder: `deepfake predict`,
`deepfake-extract`, `deepfake evaluate` and `deepfake submit`. Each bad file gets its one-line reason (or its
warning), nothing prints a traceback, the exit status is the documented one, and the good files still score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep.files import read_csv_dicts
from deepfake.cli import evaluate, extract, predict, submit
from tests.test_predict import make_weights, read_frames, write_video

# file -> what predict says of it: ok, no_face or error (a one-line reason)
EXPECTED = {
    "real/good.mp4": "ok", "fake/good.mp4": "ok",
    "real/one_frame.mp4": "ok", "fake/still_picture.mp4": "ok",
    "real/no_face.mp4": "no_face", "fake/two_faces.mp4": "ok", "real/portrait.mp4": "ok", "real/gray.mp4": "ok",
    "real/uhd_4k.mp4": "ok", "fake/damaged_inside.mp4": "ok",
    "real/zero_byte.mp4": "error", "real/truncated.mp4": "error", "real/text_file.mp4": "error",
    "fake/random_bytes.mov": "error",
}


@pytest.fixture(scope="module")
def corpus(synth_dataset, tmp_path_factory, damaged_h264) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "real").mkdir()
    (root / "fake").mkdir()
    real = synth_dataset / "real" / "clip_0000.mp4"
    face = read_frames(real, 12)
    other = read_frames(synth_dataset / "real" / "clip_0001.mp4", 12)
    shutil.copy(real, root / "real/good.mp4")
    shutil.copy(synth_dataset / "fake" / "clip_0003.mp4", root / "fake/good.mp4")
    write_video(root / "real/one_frame.mp4", face[:1])
    cv2.imwrite(str(root / "still.jpg"), face[0][:, :, ::-1])
    (root / "still.jpg").rename(root / "fake/still_picture.mp4")
    yy, xx = np.mgrid[0:240, 0:320]
    write_video(root / "real/no_face.mp4", [np.dstack([(xx + 8 * i) % 256, yy // 2 + 30, np.full_like(xx, 90)])
                                            .astype(np.uint8) for i in range(12)])
    write_video(root / "fake/two_faces.mp4", [np.hstack([a, b]) for a, b in zip(face, other)])
    write_video(root / "real/portrait.mp4", [np.pad(f, ((120, 120), (0, 0), (0, 0))) for f in face])
    write_video(root / "real/gray.mp4", face, gray=True)
    write_video(root / "real/uhd_4k.mp4", [cv2.resize(f, (3840, 2160)) for f in face[:4]])
    frames = face + face[::-1] + face
    damaged_h264(root / "fake/damaged_inside.mp4", frames, [15])
    (root / "real/zero_byte.mp4").write_bytes(b"")
    data = real.read_bytes()
    (root / "real/truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "real/text_file.mp4").write_text("this is a text file with a video's name\n")
    (root / "fake/random_bytes.mov").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "real/loop").symlink_to(root)  # a link back to the top: must neither hang nor repeat videos
    (root / "notes.txt").write_text("not a video, not listed\n")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights") / "detector.pt")


def _one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "Traceback" not in text


def test_predict_gives_every_file_its_status(corpus, weights, tmp_path, capsys):
    out = tmp_path / "results.json"
    rc = predict.main([str(corpus), "--weights", str(weights), "--output", str(out), "--device", "cpu",
                       "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err  # 1: some files could not be read
    results = {Path(r["video"]).relative_to(corpus).as_posix(): r for r in json.loads(out.read_text())}
    assert sorted(results) == sorted(EXPECTED)  # each video once, despite the link loop
    for name, status in EXPECTED.items():
        r = results[name]
        assert r["status"] == status, (name, r)
        if status == "error":
            assert _one_line(r["error"]), (name, r["error"])
        elif status == "ok":
            assert 0 <= r["p_fake"] <= 1
    assert "still_picture.mp4: a single picture, not a video" in err
    assert "damaged_inside.mp4: " in err and "could not be decoded" in err


def test_extract_lists_every_bad_file_and_crops_the_rest(corpus, tmp_path, capsys):
    out = tmp_path / "extracted"
    rc = extract.main([str(corpus), str(out), "--layout", "folder", "--stride", "2", "--size", "64", "--device", "cpu",
                       "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    failures = {r["video"]: r["reason"] for r in read_csv_dicts(out / "failures.csv")}
    cropped = {r["video"] for r in read_csv_dicts(out / "index.csv")}
    for name, status in EXPECTED.items():
        if status == "ok":
            assert name in cropped, name
        else:
            assert _one_line(failures[name]) and name not in cropped, (name, failures.get(name))


@pytest.mark.slow
def test_evaluate_and_submit_go_on_past_bad_files(corpus, weights, tmp_path, capsys):
    rc = evaluate.main([str(corpus), "--weights", str(weights), "--out", str(tmp_path / "eval"), "--layout", "folder",
                        "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    errors = {e["video"]: e["error"] for e in metrics["errors"]["videos"]}
    assert set(errors) == {k for k, v in EXPECTED.items() if v == "error"}
    assert all(_one_line(reason) for reason in errors.values())
    assert metrics["n"] == sum(v == "ok" for v in EXPECTED.values())

    sub = tmp_path / "submission.csv"
    rc = submit.main([str(corpus), "--weights", str(weights), "--out", str(sub), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    rows = {r["filename"]: float(r["label"]) for r in read_csv_dicts(sub)}
    assert sorted(rows) == sorted(EXPECTED) and all(0.01 <= p <= 0.99 for p in rows.values())
    assert all(rows[k] == 0.5 for k, v in EXPECTED.items() if v != "ok")  # no score: the prior


# ------------------------------------------------------------------------------------------------ hostile outputs
# Outputs that must never destroy a file (issue 31): devices, pipes, inputs named as outputs, two writers at once, a
# full disk, empty paths. Each case runs the command once on one short clip.


@pytest.fixture(scope="module")
def clip(corpus) -> Path:
    return corpus / "real/good.mp4"


def _predict(*args: str) -> int:
    return predict.main([*args, "--device", "cpu", "--no-progress", "--stride", "10"])


def _char_device(path: Path) -> Path:
    """A node for the null device (major 1, minor 3) inside a temp folder; skips where nodes can't be made."""
    import os

    try:
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
        with open(path, "w") as f:
            f.write("")
    except OSError as err:
        pytest.skip(f"can't make or open a device node here ({err.strerror}): needs root and a disk without nodev")
    return path


def _is_char_device(path: Path) -> bool:
    import stat

    return stat.S_ISCHR(path.lstat().st_mode)


@pytest.mark.parametrize("fmt", ["json", "csv"])  # journaled, and appended to (jsonl: the FIFO test)
def test_predict_writes_a_device_directly_never_renaming_over_it(clip, weights, tmp_path, capsys, fmt):
    node = _char_device(tmp_path / "null")
    assert _predict(str(clip), "--weights", str(weights), "-o", str(node), "--format", fmt) == 0
    err = capsys.readouterr().err
    assert _is_char_device(node) and "Traceback" not in err  # still the device: nothing renamed onto it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # no journal, lock or temporary file beside it
    if fmt == "csv":  # submit's output too
        sample = node.parent / "sample.csv"
        sample.write_text(f"filename,label\n{clip.name},0.5\n")
        assert submit.main([str(clip.parent), "--weights", str(weights), "--out", str(node), "--device", "cpu",
                            "--sample-submission", str(sample), "--no-progress", "--stride", "10"]) == 0
        sample.unlink()
        assert _is_char_device(node) and sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_predict_writes_a_fifo_directly(clip, weights, tmp_path):
    import os
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert _predict(str(clip), "--weights", str(weights), "-o", str(fifo), "--format", "jsonl") == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert json.loads(got[0])["video"] == str(clip)


def test_predict_refuses_an_output_that_is_a_folder_or_socket(clip, weights, tmp_path, capsys):
    import socket

    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        for target, kind in ((tmp_path, "a folder"), (sock_path, "a socket")):
            assert _predict(str(clip), "--weights", str(weights), "-o", str(target), "--format", "json") == 2
            err = capsys.readouterr().err
            assert _one_line(err.strip()) and kind in err
    assert sock_path.is_socket()


def test_an_output_that_is_an_input_is_refused_before_any_work(clip, weights, tmp_path, capsys):
    videos = tmp_path / "self"
    videos.mkdir()
    shutil.copy(clip, videos / "a.mp4")
    shutil.copy(clip, videos / "b.mp4")
    before = (videos / "b.mp4").read_bytes()
    assert _predict(str(videos), "--weights", str(tmp_path / "absent.pt"), "-o", str(videos / "b.mp4")) == 2
    err = capsys.readouterr().err
    assert "is one of the inputs" in err and _one_line(err.strip())  # refused before the (missing) weights
    assert (videos / "b.mp4").read_bytes() == before
    (tmp_path / "hard_link.json").hardlink_to(videos / "a.mp4")  # the same file by another name
    assert _predict(str(videos), "--weights", str(weights), "-o", str(tmp_path / "hard_link.json")) == 2
    assert _predict(str(videos), "--weights", str(weights), "-o", str(weights)) == 2  # the weights are an input too
    assert "is one of the inputs" in capsys.readouterr().err and (videos / "b.mp4").read_bytes() == before

    sample = tmp_path / "sample.csv"
    sample.write_text("filename,label\na.mp4,0.5\nb.mp4,0.5\n")
    for out in (videos / "a.mp4", sample):
        data = out.read_bytes()
        assert submit.main([str(videos), "--weights", str(weights), "--out", str(out), "--sample-submission",
                            str(sample), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "is one of the inputs" in err and out.read_bytes() == data


def test_a_second_writer_of_one_output_is_refused_naming_the_first(clip, weights, tmp_path, capsys):
    from data_prep.files import hold_lock

    out = tmp_path / "r.jsonl"
    with hold_lock(tmp_path / ".r.jsonl.lock", str(out)):  # what a running `predict -o r.jsonl` holds
        assert _predict(str(clip), "--weights", str(weights), "-o", str(out)) == 2
        err = capsys.readouterr().err
        assert f"pid {__import__('os').getpid()}" in err and _one_line(err.strip())
        assert not out.exists()
        sub = tmp_path / "submission.csv"
        with hold_lock(tmp_path / ".submission.csv.lock", str(sub)):
            assert submit.main([str(clip.parent), "--weights", str(weights), "--out", str(sub),
                                "--no-progress"]) == 2
            assert "being written by another process" in capsys.readouterr().err and not sub.exists()
    assert _predict(str(clip), "--weights", str(weights), "-o", str(out)) == 0  # the lock went with its holder
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]


@pytest.mark.parametrize("argv", [
    ["predict", ""], ["predict", "CLIP", "-o", ""], ["predict", "CLIP", "--weights", ""],
    ["predict", "CLIP", "--plot", ""], ["submit", ""], ["submit", "DIR", "--out", ""],
    ["submit", "DIR", "--sample-submission", ""], ["extract", "", "OUT"], ["extract", "DIR", ""],
    ["evaluate", ""], ["evaluate", "DIR", "--out", ""],
])
def test_an_empty_path_is_an_error_everywhere(clip, weights, tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(clip.parent)  # "" must not mean this folder of videos
    command, *rest = argv
    rest = [{"CLIP": str(clip), "DIR": str(clip.parent), "OUT": str(tmp_path / "out")}.get(a, a) for a in rest]
    main = {"predict": predict.main, "submit": submit.main, "extract": extract.main, "evaluate": evaluate.main}[command]
    extra = {"predict": ["--weights", str(weights)], "submit": ["--weights", str(weights)], "extract": [],
             "evaluate": ["--weights", str(weights)]}[command]
    assert main([*rest, *extra, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "empty" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs mounted inside tmp_path and unmounted after (needs root and mount rights, as in CI)."""
    import subprocess

    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"can't mount a small tmpfs to fill up ({done.stderr.strip()}): needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(folder: Path, leave: int = 0) -> None:
    """Fill the disk holding `folder` up to `leave` bytes (whole 4 KiB pages on tmpfs)."""
    import os

    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_full_disk_during_predict_is_one_line_and_leaves_no_temporary_file(clip, weights, small_disk, capsys, fmt):
    out = small_disk / f"r.{fmt}"
    _fill(small_disk, leave=4096)  # the lock file's page: then nothing more fits
    assert _predict(str(clip), "--weights", str(weights), "-o", str(out)) == 1
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and _one_line(err.splitlines()[-1]) and "Traceback" not in err
    left = sorted(p.name for p in small_disk.iterdir())
    assert left == (["filler", "r.jsonl"] if fmt == "jsonl" else ["filler"]), left  # no journal, lock or .partial


def test_a_full_disk_during_extract_is_one_line_and_leaves_no_temporary_folder(corpus, small_disk, capsys):
    source = small_disk.parent / "source"
    (source / "real").mkdir(parents=True)
    shutil.copy(corpus / "real/good.mp4", source / "real/good.mp4")
    out = small_disk / "out"
    args = [str(source), str(out), "--layout", "folder", "--stride", "3", "--size", "64", "--device", "cpu",
            "--workers", "0", "--no-progress"]
    _fill(small_disk, leave=6 * 4096)  # room for the settings, lock and index, not for the crops
    assert extract.main(args) == 0  # as documented: that video fails with the reason, the run goes on
    failures = read_csv_dicts(out / "failures.csv")
    assert "No space left on device" in failures[0]["reason"] and _one_line(failures[0]["reason"])
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".partial" in p.name]  # the crop folder went

    shutil.rmtree(out)
    (small_disk / "filler").unlink()
    _fill(small_disk, leave=4096)  # then not even the index fits: the run ends in one line
    assert extract.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and "Traceback" not in err and _one_line(err.splitlines()[-1]), err
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".partial" in p.name]


def test_extract_onto_a_file_or_under_one_is_one_line(corpus, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    for out in (tmp_path / "a_file", tmp_path / "a_file" / "below"):
        assert extract.main([str(corpus), str(out), "--layout", "folder", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "can't write to OUT_DIR" in err and _one_line(err)
    assert (tmp_path / "a_file").read_text() == "x"


def test_a_failed_plot_is_exit_1_and_a_self_looping_link_is_named(clip, weights, tmp_path, capsys):
    (tmp_path / "self.mp4").symlink_to("self.mp4")
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "r.json"
    assert _predict(str(clip), "--weights", str(weights), "--plot", str(tmp_path / "a_file"), "-o", str(out)) == 1
    assert "plots in" in capsys.readouterr().err and json.loads(out.read_text())[0]["status"] == "ok"
    _predict(str(tmp_path / "self.mp4"), "--weights", str(weights), "-o", str(out))
    assert "a link that loops" in json.loads(out.read_text())[0]["error"]


def test_submit_says_what_it_did_with_repeated_rows(clip, weights, tmp_path, capsys):
    sample = tmp_path / "sample.csv"
    sample.write_text(f"filename,label\n{clip.name},0.5\n{clip.name},0.5\n")
    out = tmp_path / "submission.csv"
    assert submit.main([str(clip.parent), "--weights", str(weights), "--out", str(out), "--sample-submission",
                        str(sample), "--device", "cpu", "--no-progress", "--stride", "10"]) == 0
    captured = capsys.readouterr()
    assert "lists 1 filename(s) more than once" in captured.err
    assert "; 1 scored; labels clipped" in captured.out  # not "1 scored, ;"
    assert len(read_csv_dicts(out)) == 1


def test_evaluate_into_a_folder_that_cannot_be_made_is_exit_1(corpus, weights, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    rc = evaluate.main([str(corpus), "--weights", str(weights), "--out", str(tmp_path / "a_file" / "eval"),
                        "--layout", "folder", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "can't create" in err and _one_line(err), err
