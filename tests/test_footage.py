"""bench/footage.py: false alarms of detectors on real footage, cut into the suite's clip shape."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_predict import make_weights


@pytest.fixture()
def footage(bench_script):
    return bench_script("footage")


def numbered(frame: np.ndarray, i: int) -> np.ndarray:
    """`frame` with `i` written into two flat blocks in its top-left corner (i % 16, i // 16, in steps of 16)."""
    frame = frame.copy()
    frame[:32, :32], frame[:32, 32:64] = (i % 16) * 16, (i // 16) * 16
    return frame


def number_of(frame: np.ndarray, scale: float) -> int:
    """The number `numbered` wrote, read back from a frame scaled by `scale` (centres of the blocks)."""
    c = int(16 * scale)
    return round(frame[c, c].mean() / 16) + 16 * round(frame[c, 3 * c].mean() / 16)


def test_clips_keep_the_source_speed_at_any_frame_rate(footage, synth_dataset, tmp_path):
    from data_prep.video import iter_frames, probe
    from data_prep.video_writer import write_video

    faces = [f for _, f in iter_frames(synth_dataset / "real" / "clip_0000.mp4")]  # 320x240
    # 25 fps, 4.4 s: tick k (k / 10 s) shows source frame floor(2.5 k), the last one shown at or before it.
    write_video(tmp_path / "fast.mp4", [numbered(faces[i % len(faces)], i) for i in range(110)], 25)
    names = footage.cut(tmp_path / "fast.mp4", tmp_path / "cut", 2.0)
    assert names == ["fast_00.mp4", "fast_00_mirror.mp4", "fast_01.mp4", "fast_01_mirror.mp4"]
    clips = [tmp_path / "cut" / "crf18" / name for name in names]
    info = probe(clips[0])
    assert (info.width, info.height, info.n_frames) == (640, 480, 20) and info.fps == pytest.approx(10)
    shown = [number_of(f, 2.0) for c in clips[0::2] for _, f in iter_frames(c)]
    assert shown == [int(2.5 * k) for k in range(40)]
    first, mirrored = (next(iter_frames(c))[1].astype(int) for c in clips[:2])
    assert np.abs(first[:, ::-1] - mirrored).mean() < 3  # the mirror image, up to compression
    # 5 fps, 4 s: every source frame shown on two ticks, two clips.
    write_video(tmp_path / "slow.mp4", [numbered(faces[i], i) for i in range(20)], 5)
    slow = [tmp_path / "cut" / "crf18" / name for name in footage.cut(tmp_path / "slow.mp4", tmp_path / "cut", 2.0)]
    assert [number_of(f, 2.0) for c in slow[0::2] for _, f in iter_frames(c)] == [k // 2 for k in range(40)]
    assert footage.cut(tmp_path / "slow.mp4", tmp_path / "cut", 4.5) == []  # shorter than one clip
    assert footage.source_of("real/crf18/talk_01_mirror.mp4") == footage.source_of("talk_00.mp4") == "talk"
    with pytest.raises(ValueError, match="at least one frame"):
        footage.cut(tmp_path / "slow.mp4", tmp_path / "cut", 0.01)


def test_real_footage_is_scored_and_reported(footage, synth_dataset, tmp_path, capsys):
    from data_prep.video import iter_frames
    from data_prep.video_writer import write_video

    frames = [f for _, f in iter_frames(synth_dataset / "real" / "clip_0000.mp4")]
    videos = tmp_path / "videos"
    write_video(videos / "talk.mp4", [frames[(i * 10 // 25) % len(frames)] for i in range(110)], 25)
    (videos / "notes.txt").write_text("not a video")
    weights = make_weights(tmp_path / "w" / "detector.pt")
    out = tmp_path / "out"
    assert footage.main([str(out), "--videos", str(videos), "--weights", str(weights), "--bootstrap", "50"]) == 0
    report = json.loads((out / "detectors" / "footage.json").read_text())
    (_, sets), = report["summary"].items()
    assert set(sets) == {"footage", "footage_crf38"}
    data = next((out / "data").iterdir())
    for name, s in sets.items():
        assert s["clips"] + s["no_face"] == 4 and s["clips"] >= 2
        with open(next(data.glob(f"scores/*/{name}/predictions.csv")), newline="") as f:
            p = np.array([float(r["p_fake"]) for r in csv.DictReader(f) if r["status"] == "ok"])
        assert len(p) == s["clips"] and s["mean"] == pytest.approx(np.mean(p >= 0.5))
        assert s["mean_p_fake"] == pytest.approx(p.mean(), abs=1e-6)
        assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
        assert s["by_video"] == {"talk": pytest.approx(s["mean"])} and s["clips_by_video"] == {"talk": s["clips"]}
        assert s["suite"] is None  # detectors given by hand: no suite to compare with
    table = (out / "detectors" / "footage.md").read_text()
    assert "| called fake, by source video (clips with a face) | talk |" in table

    # The suite's runs are found by name; each run's scores of the suite's swap sets give the comparison columns.
    suite = tmp_path / "suite"
    run = suite / "runs" / "baseline" / "lstm_seed3" / "run" / "version_0"
    run.mkdir(parents=True)
    other = make_weights(run / "detector.pt")
    other.write_bytes(other.read_bytes() + b"\0")  # other bytes: scored afresh, not taken from the run above
    (suite / "runs" / "baseline" / "frame_seed0").mkdir()  # not finished: no detector.pt
    assert footage.suite_detectors(suite, "baseline") == {"lstm": {3: run / "detector.pt"}}
    for kind, rows in (("swap", "r.mp4,0,0.2,ok\nf.mp4,1,0.9,ok\ng.mp4,1,0.1,ok\n"),
                       ("swap_crf38", "r.mp4,0,0.6,ok\nf.mp4,1,0.7,ok\n")):
        (run.parent / "suite" / kind).mkdir(parents=True)
        (run.parent / "suite" / kind / "predictions.csv").write_text("video,label,p_fake,status\n" + rows)
    assert footage.main([str(out), "--videos", str(videos), "--suite", str(suite), "--bootstrap", "20"]) == 0
    got = json.loads((out / "baseline" / "footage.json").read_text())["summary"]["lstm"]
    assert len(list(data.glob("scores/*"))) == 2  # one folder of scores per detector
    from deepfake.metrics import binary_metrics

    mine = data / "scores" / footage_hash(other)
    for name, fakes, reals_called, swap_auc in (("footage", [0.9, 0.1], 0.0, 0.5),
                                                ("footage_crf38", [0.7], 1.0, 1.0)):
        suite_cols = got[name]["suite"]  # each set against the suite's swaps at its own CRF
        assert suite_cols["reals_called_fake"] == reals_called and suite_cols["swap_auc"] == pytest.approx(swap_auc)
        assert suite_cols["scored"] == [str(run.parent / "suite" / footage.SUITE_SET[name])]
        with open(mine / name / "predictions.csv", newline="") as f:
            p = np.array([float(r["p_fake"]) for r in csv.DictReader(f) if r["status"] == "ok"])
        y = np.r_[np.zeros(len(p)), np.ones(len(fakes))]
        assert suite_cols["swap_auc_footage_as_reals"] == pytest.approx(binary_metrics(y, np.r_[p, fakes])["auc"])
    capsys.readouterr()

    # Bad input: one line each, status 2.
    assert footage.main([str(out), "--videos", str(tmp_path / "none"), "--weights", str(weights)]) == 2
    assert "no video" in capsys.readouterr().err
    assert footage.main([str(out), "--videos", str(videos), "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert footage.main([str(out), "--videos", str(videos), "--suite", str(suite), "--name", "other"]) == 2
    assert "no finished run of 'other'" in capsys.readouterr().err
    shutil.copy(videos / "talk.mp4", videos / "talk.mov")
    assert footage.main([str(out), "--videos", str(videos), "--weights", str(weights)]) == 2
    assert "two videos named talk" in capsys.readouterr().err


def footage_hash(path: Path) -> str:
    from data_prep.files import sha256_of

    return sha256_of(path)[:16]
