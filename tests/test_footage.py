"""bench/footage.py: false alarms of detectors on real footage, cut into the suite's clip shape."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_predict import make_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def footage(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_footage", ROOT / "bench" / "footage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_footage_is_cut_scored_and_reported(footage, synth_dataset, tmp_path, capsys):
    from data_prep.video import iter_frames, probe
    from data_prep.video_writer import write_video

    # A 25-fps video of 4.4 s (a synth real clip's frames, each shown 2-3 times, twice over): two 2-s clips at 10 fps.
    frames = [f for _, f in iter_frames(synth_dataset / "real" / "clip_0000.mp4")]
    videos = tmp_path / "videos"
    write_video(videos / "talk.mp4", [frames[(i * 10 // 25) % len(frames)] for i in range(110)], 25)
    (videos / "notes.txt").write_text("not a video")
    clips = footage.cut(videos / "talk.mp4", tmp_path / "cut", 2.0)
    assert [c.name for c in clips] == ["talk_00.mp4", "talk_00_mirror.mp4", "talk_01.mp4", "talk_01_mirror.mp4"]
    info = probe(clips[0])
    assert (info.width, info.height, info.n_frames) == (640, 480, 20) and info.fps == pytest.approx(10)
    first, mirrored = (next(iter_frames(c))[1].astype(int) for c in clips[:2])
    assert np.abs(first[:, ::-1] - mirrored).mean() < 3  # the mirror image, up to compression
    assert footage.source_of("real/crf18/talk_01_mirror.mp4") == footage.source_of("talk_00.mp4") == "talk"

    weights = make_weights(tmp_path / "w" / "detector.pt")
    out = tmp_path / "out"
    assert footage.main([str(out), "--videos", str(videos), "--weights", str(weights), "--bootstrap", "50"]) == 0
    report = json.loads((out / "footage.json").read_text())
    (model, sets), = report["summary"].items()
    assert set(sets) == {"footage", "footage_crf38"}
    for s in sets.values():
        assert s["clips"] + s["no_face"] == 4 and s["clips"] >= 2
        assert 0.0 <= s["mean"] <= 1.0 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
        assert s["mean"] == pytest.approx(s["by_video"]["talk"]) and s["clips_by_video"] == {"talk": s["clips"]}
        assert s["suite"] is None  # detectors given by hand: no suite to compare with
    assert "| called fake, by source video (clips with a face) | talk |" in (out / "footage.md").read_text()

    # The suite's runs are found by name; the swap set each run scored gives the comparison columns.
    suite = tmp_path / "suite"
    run = suite / "runs" / "baseline" / "lstm_seed3" / "run" / "version_0"
    run.mkdir(parents=True)
    shutil.copy(weights, run / "detector.pt")
    (suite / "runs" / "baseline" / "frame_seed0").mkdir()  # not finished: no detector.pt
    assert footage.suite_detectors(suite, "baseline") == {"lstm": {3: run / "detector.pt"}}
    scored = run.parent / "suite" / "swap"
    scored.mkdir(parents=True)
    (scored / "predictions.csv").write_text("video,label,p_fake,status\nr.mp4,0,0.2,ok\nf.mp4,1,0.9,ok\n"
                                            "g.mp4,1,0.1,ok\n")
    assert footage.main([str(out), "--videos", str(videos), "--suite", str(suite), "--bootstrap", "20"]) == 0
    entry = json.loads((out / "footage.json").read_text())["summary"]["lstm"]["footage"]
    assert entry["suite"]["swap_auc"] == pytest.approx(0.5) and entry["suite"]["reals_called_fake"] == 0.0
    assert 0.0 <= entry["suite"]["swap_auc_footage_as_reals"] <= 1.0
    capsys.readouterr()

    # Bad input: one line each, status 2.
    assert footage.main([str(out), "--videos", str(tmp_path / "cut" / "none"), "--weights", str(weights)]) == 2
    assert "no video" in capsys.readouterr().err
    assert footage.main([str(out), "--videos", str(videos), "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert footage.main([str(out), "--videos", str(videos), "--suite", str(suite), "--name", "other"]) == 2
    assert "no finished run of 'other'" in capsys.readouterr().err
