"""`deepfake demo`: the quick demo end to end (report, artifacts, logs), re-runs that reuse finished stages, the
opt-in weights install, and the folders it refuses. The full demo (minutes) is marked slow."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from deepfake import demo, demo_stages
from deepfake.cli import demo as demo_cli

STAGE_LINES = ["[1/6] synth", "[2/6] extract", "[3/6] fit", "[4/6] evaluate", "[5/6] predict", "[6/6] generalize"]


def run_captured(args: list[str], terminal: Path) -> tuple[int, str]:
    """`deepfake demo ARGS` with everything it prints (Python and file-descriptor level) captured in `terminal`."""
    with demo_stages.output_to(terminal):
        status = demo_cli.main(args)
    return status, terminal.read_text()


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, str, dict]:
    root = tmp_path_factory.mktemp("demo")
    cache = root / "cache"
    mp = pytest.MonkeyPatch()
    mp.setenv("DEEPFAKE_CACHE", str(cache))  # where --install-weights would copy to: no detector.pt there
    try:
        status, text = run_captured([str(root / "out"), "--quick", "--device", "cpu"], root / "terminal.txt")
    finally:
        mp.undo()
    assert status == 0, text
    # Only the fast path's ONNX copies (docs/speed.md) may be there: no detector.pt installed.
    assert not cache.exists() or {p.name for p in cache.iterdir()} <= {"onnx", "mtcnn-onnx"}, \
        "the demo installed weights without --install-weights"
    return root / "out", text, json.loads((root / "out" / "report.json").read_text())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_quick_demo_report_and_artifacts(quick_demo):
    from deepfake.checkpoint import load_detector

    out, text, report = quick_demo
    # The terminal shows the stages, one line per training epoch, and the report; the stages' own chatter
    # (Lightning, FFmpeg, tqdm) went to their logs.
    for line in STAGE_LINES:
        assert line in text
    assert "epoch  1/3:" in text and "epoch  3/3:" in text and "val AUC" in text
    for heading in ("metrics (video level)", "videos never trained on", "time per stage", "artifacts"):
        assert heading in text
    fit_log = (out / "logs" / "fit.log").read_text()
    assert "GPU available" not in text and "deepfake fit: detector weights in" not in text
    assert fit_log.startswith("$ deepfake fit --config") and "deepfake fit: detector weights in" in fit_log
    for name in demo.STAGES:
        assert (out / "logs" / f"{name}.log").stat().st_size > 0
    assert (out / "report.txt").read_text().strip() in text

    fit, held, pred = report["fit"], report["heldout"], report["predict"]
    assert fit["epochs"] == 3 and 1 <= fit["best_epoch"] <= 3
    assert held["n"] + held["no_face"] + held["errors"] == 8 and held["n"] >= 6
    assert 0.0 <= held["auc"] <= 1.0 and held["logloss"] > 0
    assert f"AUC {held['auc']:.3f}" in text and f"log loss {held['logloss']:.3f}" in text
    # 4 validation videos: too few to fit a calibration on, and the report says so.
    assert held["calibration"]["applied"] is False and "calibration: none (skipped in fit validation" in text
    assert pred["status"] == "ok" and pred["label"] == "fake" and pred["video"].startswith("fake/")

    weights = out / report["fit"]["weights"]
    model, meta = load_detector(weights)
    assert meta["img_size"] == 64 and meta["stride"] == 2
    art = report["artifacts"]
    assert Path(art["detector weights"]) == weights and Path(art["face crops + index"]).is_file()
    for name in ("metrics.json", "roc.png", "predictions.csv"):
        assert (out / "eval" / name).stat().st_size > 0
    with open(out / "eval" / "predictions.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 8
    assert Path(art["plot"]).suffix == ".png" and Path(art["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prediction = json.loads((out / "predict" / "prediction.json").read_text())
    assert len(prediction) == 1 and prediction[0]["p_fake"] == pred["p_fake"]
    # Generalization: the labelled-fake detector and the real-only one, on self-blends and on unseen face swaps and
    # reenact clips.
    cross = report["generalize"]
    assert len(cross) == 2 and all(set(aucs) == {"self-blended fakes", "face swaps (never seen)",
                                                 "reenact clips (never seen)", "face swaps, unseen person"}
                                   for aucs in cross.values())
    assert "reenact clips (never seen)" in text and (out / "data" / "heldout_reenact" / "labels.csv").is_file()
    assert "face swaps, unseen person" in text and (out / "data" / "unseen_swap" / "labels.csv").is_file()
    assert "generalization: held-out video AUC" in text and (out / "cross" / "cross.md").is_file()


def test_heldout_set_is_separately_seeded(quick_demo):
    out, _, _ = quick_demo
    seeds = {name: json.loads((out / "data" / name / "synth.json").read_text())["config"]["seed"]
             for name in ("train", "heldout")}
    assert seeds == {"train": 0, "heldout": 1000}
    train = {sha(p) for p in (out / "data" / "train").rglob("*.mp4")}
    held = {sha(p) for p in (out / "data" / "heldout").rglob("*.mp4")}
    assert len(train) == 16 and len(held) == 8 and not train & held


@pytest.mark.slow  # 28 s on 2 cores; the quick demo's own test stays in make test
def test_rerun_reuses_finished_stages_and_redoes_what_is_gone(quick_demo, tmp_path):
    out, _, report = quick_demo
    copy = tmp_path / "moved"
    shutil.copytree(out, copy)  # a moved demo folder is still reused: the state holds relative paths
    status, text = run_captured([str(copy), "--quick", "--device", "cpu"], tmp_path / "t1.txt")
    assert status == 0, text
    assert text.count("reused from an earlier run") == 2 * len(demo.STAGES)  # stage lines + time table
    assert "epoch  1/3" not in text
    again = json.loads((copy / "report.json").read_text())
    assert again["heldout"] == report["heldout"] and again["fit"]["weights"] == report["fit"]["weights"]

    shutil.rmtree(copy / "eval")  # the evaluation is redone, and so is every stage after it
    status, text = run_captured([str(copy), "--quick", "--device", "cpu"], tmp_path / "t2.txt")
    assert status == 0, text
    reused = [line for line in text.splitlines() if line.startswith("[") and "reused" in line]
    assert len(reused) == 3 and all(line.startswith(s) for line, s in zip(reused, STAGE_LINES))
    assert json.loads((copy / "report.json").read_text())["heldout"] == report["heldout"]


def test_install_weights_is_opt_in(quick_demo, tmp_path, monkeypatch):
    out, _, report = quick_demo
    copy = tmp_path / "demo"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    status, text = run_captured([str(copy), "--quick", "--device", "cpu", "--install-weights"], tmp_path / "t.txt")
    assert status == 0, text
    installed = tmp_path / "cache" / "detector.pt"
    assert sha(installed) == sha(copy / report["fit"]["weights"])
    assert f"installed as the default weights: {installed}" in text


def test_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    assert demo_cli.main([str(tmp_path), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "not empty and holds no earlier demo" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]
    assert demo_cli.main([str(tmp_path / "x"), "--epochs", "0"]) == 2
    assert "--epochs must be an integer >= 1" in capsys.readouterr().err


def test_a_failing_stage_names_its_log(tmp_path, capsys, monkeypatch):
    import data_prep.dataset

    def no_faces(*args, **kwargs):
        print("no faces anywhere")
        raise RuntimeError("extraction found nothing")

    monkeypatch.setattr(data_prep.dataset, "extract_dataset", no_faces)
    assert demo_cli.main([str(tmp_path / "out"), "--quick", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "stage extract failed (RuntimeError: extraction found nothing)" in err
    assert str(tmp_path / "out" / "logs" / "extract.log") in err
    assert "no faces anywhere" in err  # the log's tail is shown


@pytest.mark.slow
def test_full_demo_learns(tmp_path):
    """The demo as `make demo` runs it: minutes on 2 CPU cores, held-out AUC well above chance."""
    status, text = run_captured([str(tmp_path / "out")], tmp_path / "terminal.txt")
    assert status == 0, text
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["heldout"]["n"] >= 70, report["heldout"]
    assert report["heldout"]["auc"] >= 0.9 and report["heldout"]["logloss"] < 0.5, report["heldout"]
    assert report["fit"]["val_auc"] >= 0.9, report["fit"]
    held = report["heldout"]  # fit's calibration helps on videos it never saw (README: Calibration)
    assert held["calibration"]["applied"] and held["logloss"] < held["uncalibrated"]["logloss"], held
    assert held["ece"] < held["uncalibrated"]["ece"], held
