"""`deepfake evaluate`: metrics that agree with scikit-learn, honest accounting of no-face and unreadable videos,
the files it writes for a video folder and for an extracted index, and the `--perturb` robustness table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake import evaluation, robustness
from deepfake.cli import evaluate
from deepfake.evaluation import LabelledVideo, summarize
from deepfake.metrics import binary_metrics

TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=64, lstm_hidden=16)
METRIC_KEYS = {"logloss", "balanced_logloss", "auc", "accuracy", "ap", "eer", "tp", "fp", "tn", "fn", "n", "n_real",
               "n_fake", "threshold", "confusion", "no_face", "errors", "n_videos", "n_scored", "settings"}

# A hand-made prediction set: ties (0.4 twice, across classes), a probability exactly at the threshold, and
# confident ones beyond the [0.01, 0.99] clip on both sides, right and wrong.
Y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.001, 0.9, 0.4, 0.2, 0.55, 0.999, 0.7, 0.6, 0.3, 0.0005])


def make_weights(path: Path) -> Path:
    from deepfake.checkpoint import build_meta, save_detector
    from deepfake.model import DeepfakeDetector

    torch.manual_seed(0)
    net = DeepfakeDetector(**TINY)
    return save_detector(path, net, build_meta(net, seq_len=4, margin=0.3, stride=3))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights") / "detector.pt")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def assert_png(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 300 and img.height >= 300
    assert path.stat().st_size > 5_000


def sklearn_eer(y, p) -> float:
    """EER geometrically: where scikit-learn's ROC polyline (every threshold, vertical steps included) meets the
    line FPR = 1 - TPR, i.e. x + y = 1 in ROC space."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    for (x0, y0), (x1, y1) in zip(zip(fpr, tpr), zip(fpr[1:], tpr[1:])):
        s0, s1 = x0 + y0 - 1.0, x1 + y1 - 1.0
        if s0 <= 0.0 <= s1 and s1 > s0:
            t = -s0 / (s1 - s0)
            return float(x0 + t * (x1 - x0))
    raise AssertionError("the ROC curve never crosses FPR = FNR")


@pytest.mark.parametrize("threshold", [0.5, 0.35])
def test_binary_metrics_match_sklearn(threshold):
    from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, log_loss, roc_auc_score
    from sklearn.utils.class_weight import compute_sample_weight

    m = binary_metrics(Y, P, threshold)
    clipped = np.clip(P, 0.01, 0.99)
    assert m["logloss"] == pytest.approx(log_loss(Y, clipped), rel=1e-9)
    assert m["balanced_logloss"] == pytest.approx(
        log_loss(Y, clipped, sample_weight=compute_sample_weight("balanced", Y)), rel=1e-9)
    assert m["auc"] == pytest.approx(roc_auc_score(Y, P), rel=1e-12)
    assert m["ap"] == pytest.approx(average_precision_score(Y, P), rel=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(Y, P >= threshold), rel=1e-12)
    tn, fp, fn, tp = confusion_matrix(Y, P >= threshold).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert (m["n"], m["n_real"], m["n_fake"]) == (15, 7, 8)
    assert m["eer"] == pytest.approx(sklearn_eer(Y, P), abs=1e-9)


def test_binary_metrics_by_hand():
    # Two videos, numbers worked out on paper: -(ln 0.8 + ln 0.7) / 2; one pair, ranked right: AUC 1, EER 0.
    m = binary_metrics([0, 1], [0.2, 0.7])
    assert m["logloss"] == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2)
    assert m["balanced_logloss"] == pytest.approx(m["logloss"])
    assert (m["auc"], m["ap"], m["eer"], m["accuracy"]) == (1.0, 1.0, 0.0, 1.0)
    assert binary_metrics([0, 1], [0.5, 0.5])["accuracy"] == 0.5  # at the threshold means fake
    one_class = binary_metrics([1, 1], [0.9, 0.2])
    assert one_class["auc"] is None and one_class["eer"] is None and one_class["balanced_logloss"] is None
    assert one_class["accuracy"] == 0.5


def _result(video: str, status: str, p: float | None = None) -> dict:
    return {"video": video, "status": status, "p_fake": p,
            "verdict": {"ok": "fake" if (p or 0) >= 0.5 else "real", "no_face": "no face"}.get(status, "error"),
            "faces": [], "error": "corrupt" if status == "error" else None}


def test_no_face_and_error_videos_are_counted_as_documented():
    from sklearn.metrics import log_loss, roc_auc_score

    videos = [LabelledVideo(f"v{i}.mp4", Path(f"v{i}.mp4"), int(y)) for i, y in enumerate([0, 1, 0, 1, 1, 0])]
    results = [_result("v0.mp4", "ok", 0.2), _result("v1.mp4", "ok", 0.9), _result("v2.mp4", "ok", 0.6),
               _result("v3.mp4", "no_face"), _result("v4.mp4", "error"), _result("v5.mp4", "ok", 0.1)]
    m = summarize(videos, results)
    y, p = [0, 1, 0, 0], [0.2, 0.9, 0.6, 0.1]
    assert m["n"] == 4 and m["n_scored"] == 4 and m["n_videos"] == 6
    assert m["logloss"] == pytest.approx(log_loss(y, p)) and m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["no_face"] == {"count": 1, "counted_as": "excluded from the metrics", "videos": ["v3.mp4"]}
    assert m["errors"]["count"] == 1 and m["errors"]["videos"] == [{"video": "v4.mp4", "error": "corrupt"}]

    with_prior = summarize(videos, results, no_face_prior=0.5)
    y, p = [0, 1, 0, 1, 0], [0.2, 0.9, 0.6, 0.5, 0.1]  # the no-face fake enters at 0.5; the error never does
    assert with_prior["n"] == 5 and with_prior["logloss"] == pytest.approx(log_loss(y, p))
    assert with_prior["auc"] == pytest.approx(roc_auc_score(y, p))
    assert "0.5" in with_prior["no_face"]["counted_as"] and with_prior["errors"]["count"] == 1
    assert with_prior["confusion"]["matrix"] == [[with_prior["tn"], with_prior["fp"]],
                                                 [with_prior["fn"], with_prior["tp"]]]


def test_all_videos_metrics_score_the_unscored_at_the_prior():
    """DFDC's rule: every video counts; a detector that finds no face in a fake can't look better for it."""
    from sklearn.metrics import brier_score_loss, log_loss

    videos = [LabelledVideo(f"v{i}.mp4", Path(f"v{i}.mp4"), int(y)) for i, y in enumerate([0, 1, 0, 1, 1, 0])]
    results = [_result("v0.mp4", "ok", 0.2), _result("v1.mp4", "ok", 0.9), _result("v2.mp4", "ok", 0.6),
               _result("v3.mp4", "no_face"), _result("v4.mp4", "error"), _result("v5.mp4", "ok", 0.1)]
    every = summarize(videos, results)["all_videos"]
    y, p = [0, 1, 0, 1, 1, 0], [0.2, 0.9, 0.6, 0.5, 0.5, 0.1]
    assert (every["n"], every["n_at_prior"], every["prior"]) == (6, 2, 0.5)
    assert every["logloss"] == pytest.approx(log_loss(y, p)) and every["brier"] == pytest.approx(brier_score_loss(y, p))
    # --no-face-prior sets the prior of both blocks; the scored-videos block still leaves errors out.
    m = summarize(videos, results, no_face_prior=0.3)
    assert m["n"] == 5 and m["all_videos"]["n"] == 6 and m["all_videos"]["prior"] == 0.3
    assert m["all_videos"]["logloss"] == pytest.approx(log_loss(y, [0.2, 0.9, 0.6, 0.3, 0.3, 0.1]))
    assert m["ece"] is not None and m["all_videos"]["ece"] is not None


def test_evaluate_video_folder(synth_dataset, tiny_weights, tmp_path):
    from sklearn.metrics import log_loss, roc_auc_score

    out = tmp_path / "eval"
    rc = evaluate.main([str(synth_dataset), "--weights", str(tiny_weights), "--out", str(out), "--device", "cpu",
                        "--no-progress"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["settings"]["mode"] == "videos" and metrics["n_videos"] == 6
    columns, rows = read_csv(out / "predictions.csv")
    assert columns == evaluation.PREDICTION_COLUMNS
    assert sorted(r["video"] for r in rows) == [f"fake/clip_000{i}.mp4" for i in (3, 4, 5)] + \
        [f"real/clip_000{i}.mp4" for i in (0, 1, 2)]
    for r in rows:  # labels from the layout; originals from labels.csv
        assert r["label"] == ("1" if r["video"].startswith("fake/") else "0")
        assert r["status"] == "ok" and r["counted"] == "scored" and 0 <= float(r["p_fake"]) <= 1
    assert {r["original"] for r in rows if r["label"] == "1"} == {f"real/clip_000{i}.mp4" for i in (0, 1, 2)}
    # metrics.json is what scikit-learn says about predictions.csv
    y = [int(r["label"]) for r in rows]
    p = [float(r["p_fake"]) for r in rows]
    assert metrics["n"] == 6 and metrics["logloss"] == pytest.approx(log_loss(y, p), abs=1e-5)
    assert metrics["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert metrics["calibration"] == {"applied": False, "reason": "the checkpoint has no calibration"}
    assert_png(out / "roc.png")
    assert_png(out / "reliability.png")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_evaluate_extracted_index(extracted_dataset, tiny_weights, tmp_path):
    out = tmp_path / "eval"
    rc = evaluate.main([str(extracted_dataset / "index.csv"), "--weights", str(tiny_weights), "--out", str(out),
                        "--device", "cpu", "--no-progress"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["mode"] == "index" and metrics["settings"]["index_extraction"]["size"] == 64
    _, rows = read_csv(out / "predictions.csv")
    with open(extracted_dataset / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert {r["video"] for r in rows} == {r["video"] for r in index}
    crops = {v: sum(1 for r in index if r["video"] == v) for v in {r["video"] for r in index}}
    for r in rows:
        assert r["status"] == "ok" and int(r["crops"]) == crops[r["video"]]
    assert metrics["n"] == len(rows) and metrics["n_real"] + metrics["n_fake"] == len(rows)
    assert_png(out / "roc.png")


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    from data_prep.video_writer import write_video

    write_video(path, frames, fps)


def test_evaluate_lists_no_face_and_unreadable_videos(synth_dataset, tiny_weights, tmp_path, capsys, damaged_h264):
    source = tmp_path / "set"
    (source / "real").mkdir(parents=True)
    (source / "fake").mkdir()
    shutil.copy(synth_dataset / "real" / "clip_0000.mp4", source / "real" / "face.mp4")
    shutil.copy(synth_dataset / "fake" / "clip_0003.mp4", source / "fake" / "face.mp4")
    yy, xx = np.mgrid[0:240, 0:320]
    _write_video(source / "real" / "wall.mp4",
                 [np.dstack([(xx + 9 * i) % 256, yy, np.full_like(xx, 60)]).astype(np.uint8) for i in range(9)])
    (source / "fake" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    from data_prep.video import iter_frames

    # Damaged data inside: scored on its sound frames, with a warning.
    frames = [f for _, f in iter_frames(synth_dataset / "real" / "clip_0001.mp4")]
    damaged_h264(source / "real" / "damaged.mp4", frames + frames[::-1], [25])

    def run(out: Path, *extra: str) -> dict:
        rc = evaluate.main([str(source), "--weights", str(tiny_weights), "--out", str(out), "--device", "cpu",
                            "--no-progress", *extra])
        assert rc == 0  # unreadable videos are listed, not fatal
        return json.loads((out / "metrics.json").read_text())

    m = run(tmp_path / "a")
    assert m["n_videos"] == 5 and m["n"] == 3 and (m["n_real"], m["n_fake"]) == (2, 1)
    assert (m["all_videos"]["n"], m["all_videos"]["n_at_prior"]) == (5, 2)  # the no-face and the broken one
    assert "warning: real/damaged.mp4: " in capsys.readouterr().err
    assert m["no_face"]["videos"] == ["real/wall.mp4"] and "excluded" in m["no_face"]["counted_as"]
    assert [e["video"] for e in m["errors"]["videos"]] == ["fake/broken.mp4"] and m["errors"]["videos"][0]["error"]
    _, rows = read_csv(tmp_path / "a" / "predictions.csv")
    by_video = {r["video"]: r for r in rows}
    assert (by_video["real/wall.mp4"]["status"], by_video["real/wall.mp4"]["counted"]) == ("no_face", "excluded")
    assert by_video["real/wall.mp4"]["p_fake"] == "" and by_video["real/damaged.mp4"]["status"] == "ok"
    assert (by_video["fake/broken.mp4"]["status"], by_video["fake/broken.mp4"]["counted"]) == ("error", "excluded")

    m = run(tmp_path / "b", "--no-face-prior", "0.5")
    assert m["n"] == 4 and m["n_real"] == 3 and m["errors"]["count"] == 1
    _, rows = read_csv(tmp_path / "b" / "predictions.csv")
    assert {r["video"]: r["counted"] for r in rows}["real/wall.mp4"] == "prior"


def test_perturb_table_has_every_cell(synth_dataset, tiny_weights, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    args = [str(synth_dataset), "--weights", str(tiny_weights), "--out", str(out), "--device", "cpu",
            "--no-progress", "--perturb", "GB:2"]
    assert evaluate.main(args) == 0
    columns, rows = read_csv(out / "robustness.csv")
    assert columns == robustness.ROBUSTNESS_COLUMNS
    assert [(r["distortion"], r["kind"], r["level"]) for r in rows] == [("clean", "clean", "0"), ("GB:2", "GB", "2")]
    for r in rows:
        assert all(r[c] != "" for c in columns), r  # every cell
        assert r["n"] == "6" and 0 <= float(r["auc"]) <= 1 and float(r["logloss"]) > 0 and r["errors"] == "0"
    table = json.loads((out / "robustness.json").read_text())
    assert [row["distortion"] for row in table["rows"]] == ["clean", "GB:2"]
    assert all(v is not None for row in table["rows"] for v in row.values())
    clean = json.loads((out / "metrics.json").read_text())
    assert table["rows"][0]["auc"] == pytest.approx(clean["auc"])
    _, per_video = read_csv(out / "robustness_predictions.csv")
    assert len(per_video) == 12 and {r["distortion"] for r in per_video} == {"clean", "GB:2"}
    assert_png(out / "robustness.png")
    assert not (out / ".distorted").exists()

    # A second run reuses the finished distortion instead of distorting the videos again.
    def no_distorting(*args, **kwargs):
        raise AssertionError("distort_video called although the distortion was already done")

    monkeypatch.setattr("deepfake.perturb.distort_video", no_distorting)
    assert evaluate.main(args) == 0
    assert read_csv(out / "robustness.csv")[1] == rows


def test_user_errors(synth_dataset, extracted_dataset, tiny_weights, tmp_path, capsys):
    base = ["--weights", str(tiny_weights), "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress"]
    cases = [
        ([str(tmp_path / "nowhere")], "no such file"),
        ([str(tmp_path)], "layout"),  # a folder that is no dataset
        ([str(extracted_dataset), "--perturb", "GB:2"], "--perturb needs videos"),
        ([str(synth_dataset), "--perturb", "XX:9"], "unknown distortion"),
        ([str(synth_dataset), "--split", "holdout"], "--split"),
        ([str(synth_dataset), "--no-face-prior", "2"], "--no-face-prior"),
    ]
    for args, message in cases:
        rc = evaluate.main(args + base)
        err = capsys.readouterr().err
        assert rc == 2, args
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
