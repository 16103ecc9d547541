"""Hostile inputs: link loops, byte-order marks, mistyped folders, checkpoints that try to run code, killed batches."""

from __future__ import annotations

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

    real_append = inference.ResultLog.append
    calls = []

    def append_then_die(self, result, seconds=None):
        real_append(self, result, seconds)
        calls.append(result["video"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the second video reached the disk

    monkeypatch.setattr(inference.ResultLog, "append", append_then_die)
    assert predict_cli.main(args) == 130
    monkeypatch.setattr(inference.ResultLog, "append", real_append)
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
