"""`deepfake benchmark` end to end on two tiny mirrored sets (FaceForensics++ and Celeb-DF folder and file names, the
real split-file formats, clips from `deepfake synth`), resuming, bad configs; the bootstrap and the fast metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from data_prep.files import read_csv_dicts
from deepfake.cli import benchmark as benchmark_cli
from deepfake.metrics import binary_metrics, bootstrap_intervals, ranking_metrics
from tests.test_predict import make_weights


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.link(src, dst)


@pytest.fixture(scope="module")
def mirrors(synth_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """An FF++ mirror (2 real and 2 fake synth clips) and a Celeb-DF one (1 + 1) under the datasets' own names."""
    labels = {r["video"]: r["label"] for r in read_csv_dicts(synth_dataset / "labels.csv")}
    reals = sorted(synth_dataset / v for v, lab in labels.items() if lab in ("real", "0"))[:2]
    fakes = sorted(synth_dataset / v for v, lab in labels.items() if lab in ("fake", "1"))[:2]
    root = tmp_path_factory.mktemp("mirrors")
    ffpp, cdf = root / "FaceForensics++", root / "Celeb-DF-v2"
    link(reals[0], ffpp / "original_sequences/youtube/c23/videos/000.mp4")
    link(reals[1], ffpp / "original_sequences/youtube/c23/videos/003.mp4")
    link(fakes[0], ffpp / "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4")
    link(fakes[1], ffpp / "manipulated_sequences/FaceSwap/c23/videos/003_000.mp4")
    (ffpp / "splits").mkdir()
    (ffpp / "splits/test.json").write_text(json.dumps([["000", "003"]]))
    link(reals[1], cdf / "YouTube-real/00000.mp4")
    link(fakes[0], cdf / "Celeb-synthesis/id0_id1_0000.mp4")
    link(fakes[1], cdf / "Celeb-synthesis/id1_id0_0001.mp4")  # not listed: train, so not scored
    (cdf / "List_of_testing_videos.txt").write_text("1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    return ffpp, cdf


def write_config(path: Path, ffpp: Path, cdf: Path, out: Path, weights: Path, extra_set: str = "") -> Path:
    path.write_text(f"""name: tiny
train: a random-init tiny detector (no training)
weights: {weights}
out: {out}
bootstrap: 50
test_sets:
  - {{name: FF++, source: {ffpp}, split: test}}
  - {{name: CDF-v2, source: {cdf}, split: test}}
{extra_set}""")
    return path


def test_benchmark_end_to_end_and_resume(mirrors, tmp_path, capsys):
    from deepfake.cli import extract

    ffpp, cdf = mirrors
    weights = make_weights(tmp_path / "detector.pt")
    # FF++ as most users will run it: extracted first (the index keeps dataset, method, split and group) ...
    crops = tmp_path / "crops_ffpp"
    assert extract.main([str(ffpp), str(crops), "--layout", "ffpp", "--compression", "c23", "--stride", "3",
                         "--size", "64", "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
    index = {r["video"]: r for r in read_csv_dicts(crops / "index.csv")}
    fs = index["manipulated_sequences/FaceSwap/c23/videos/003_000.mp4"]
    assert (fs["label"], fs["split"], fs["dataset"], fs["method"], fs["group"], fs["original"]) == (
        "1", "test", "FF++", "FaceSwap", "ffpp:000+003", "original_sequences/youtube/c23/videos/003.mp4")
    assert len(index) == 4
    # ... and Celeb-DF scored from its videos
    out = tmp_path / "bench"
    config = write_config(tmp_path / "bench.yaml", crops, cdf, out, weights,
                          "  - {name: gone, source: " + str(tmp_path / "nowhere") + "}\n")
    assert benchmark_cli.main([str(config), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "| FF++ | Deepfakes | video |" in printed.out and "gone: " in printed.err

    rows = read_csv_dicts(out / "benchmark.csv")
    got = [(r["set"], r["subset"], r["level"]) for r in rows if not r["error"]]
    assert got == [("FF++", s, lev) for s in ("all", "Deepfakes", "FaceSwap") for lev in ("video", "frame")] + \
        [("CDF-v2", "all", "video"), ("CDF-v2", "all", "frame")]
    assert [r["set"] for r in rows if r["error"]] == ["gone"]
    for name, n in (("FF++", 4), ("CDF-v2", 2)):
        videos = read_csv_dicts(out / "sets" / name / "videos.csv")
        frames = read_csv_dicts(out / "sets" / name / "frames.csv")
        assert len(videos) == n and all(v["status"] == "ok" for v in videos)
        # the table's figures are those of the stored scores, video and frame level kept apart
        video_row = next(r for r in rows if (r["set"], r["subset"], r["level"]) == (name, "all", "video"))
        frame_row = next(r for r in rows if (r["set"], r["subset"], r["level"]) == (name, "all", "frame"))
        m = ranking_metrics([int(v["label"]) for v in videos], [float(v["p_fake"]) for v in videos])
        assert float(video_row["auc"]) == pytest.approx(m["auc"]) and video_row["n_real"] == str(n // 2)
        f = ranking_metrics([int(x["label"]) for x in frames], [float(x["p_fake"]) for x in frames])
        assert float(frame_row["auc"]) == pytest.approx(f["auc"]) and int(frame_row["n_real"]) > n // 2
        # with 1 real and 1 fake, half the resamples lack a class: the interval may be left empty, never made up
        if n == 4 or video_row["auc_lo"]:
            assert float(video_row["auc_lo"]) <= float(video_row["auc"]) <= float(video_row["auc_hi"])
    ff_videos = {v["video"]: v for v in read_csv_dicts(out / "sets/FF++/videos.csv")}
    assert ff_videos["manipulated_sequences/FaceSwap/c23/videos/003_000.mp4"]["method"] == "FaceSwap"
    assert ff_videos["original_sequences/youtube/c23/videos/000.mp4"]["dataset"] == "FF++"
    # other harnesses' entry point gives the score the benchmark gave the same video file
    from deepfake.api import predict_path

    clip = "Celeb-synthesis/id0_id1_0000.mp4"
    cdf_videos = {v["video"]: v for v in read_csv_dicts(out / "sets/CDF-v2/videos.csv")}
    assert predict_path(cdf / clip, weights, device="cpu") == pytest.approx(float(cdf_videos[clip]["p_fake"]),
                                                                            abs=2e-6)
    md = (out / "benchmark.md").read_text()
    assert "ours: video AUC | ours: frame AUC" in md and "SBI (EfficientNet-B4) (video AUC; FF++ real only)" in md
    assert "| 93.82 |" in md and "EfficientNet-B4 (DeepfakeBench) (frame AUC; FF++ fakes)" in md
    report = json.loads((out / "benchmark.json").read_text())
    assert report["sets"]["CDF-v2"]["n_scored"] == 2 and (out / "benchmark.png").stat().st_size > 1000

    # a second run scores nothing again: the stored scores are reused and the table is the same
    stamp = (out / "sets/FF++/done.json").stat().st_mtime_ns
    assert benchmark_cli.main([str(config), "--device", "cpu", "--no-progress"]) == 0
    assert "FF++: already scored (4 of 4 videos), not scored again" in capsys.readouterr().out
    assert (out / "sets/FF++/done.json").stat().st_mtime_ns == stamp
    assert read_csv_dicts(out / "benchmark.csv") == rows


def test_bad_configs_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    cases = {"name: x\ntest_sets: []\n": "no test_sets",
             "name: x\nweigths: a.pt\ntest_sets: [{name: a, source: b}]\n": "unknown key(s) weigths",
             "name: x\ntest_sets: [{name: a}]\n": "test set 1 needs name and source",
             "name: x\ntest_sets: [{name: a, source: b, published: CDF-v3}]\n": "published must be one of",
             "name: x\ntest_sets: [{name: a/b, source: b}]\n": "it names a folder",
             "name: [\n": "not valid YAML"}
    for text, message in cases.items():
        bad.write_text(text)
        assert benchmark_cli.main([str(bad)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_fast_metrics_equal_sklearns_and_the_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    for n in (5, 60, 400):
        y = rng.integers(0, 2, n)
        p = np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 1)  # many ties
        fast, ref = ranking_metrics(y, p), binary_metrics(y, p)
        for key in ("auc", "ap", "eer", "logloss"):
            assert fast[key] == pytest.approx(ref[key], abs=1e-12), key
    assert ranking_metrics([1, 1], [0.2, 0.9])["auc"] is None
    y = rng.integers(0, 2, 300)
    p = np.clip(0.4 * y + 0.6 * rng.random(300), 0, 1)
    a, b = bootstrap_intervals(y, p, n_boot=200, seed=3), bootstrap_intervals(y, p, n_boot=200, seed=3)
    assert a == b and a["auc"][0] < ranking_metrics(y, p)["auc"] < a["auc"][1]
    # resampling whole videos of 20 identical frames: as wide as resampling the videos themselves
    frames = bootstrap_intervals(np.repeat(y, 20), np.repeat(p, 20), np.repeat(np.arange(300), 20), 200, 3)
    assert frames["auc"] == pytest.approx(a["auc"], abs=1e-9)


def test_predict_path_without_a_face_or_a_video(tmp_path, caplog):
    from deepfake import api
    from tests.test_predict import write_video

    weights = make_weights(tmp_path / "detector.pt")
    score = api.load_scorer(weights, device="cpu")
    blank = write_video(tmp_path / "blank.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 12)
    with caplog.at_level("WARNING", logger="deepfake.api"):
        assert score(blank) == 0.5
    assert "no face found; scored 0.5" in caplog.text
    with pytest.raises(api.NoFaceError, match="blank.mp4: no face found"):
        api.load_scorer(weights, device="cpu", no_face=None)(blank)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="junk.mp4: "):
        score(tmp_path / "junk.mp4")
