"""The Kaggle side: `deepfake.submission.make_submission` always writes a complete, clipped `filename,label` file
(bad videos, no face, missing files, a model that won't load, a crash mid-batch, the time limit), and both
notebooks run end to end with nbclient on data the tests make (parameters injected into the `parameters` cell).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake import submission
from deepfake.cli import submit
from deepfake.submission import SubmissionConfig, SubmissionError, make_submission

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
TINY = dict(backbone="test_efficientnet", pretrained=False, img_size=64, lstm_hidden=16)


# ------------------------------------------------------------------------------------------------- helpers


def save_tiny_weights(path: Path, bias: float | None = None) -> Path:
    """A random-init tiny detector; with `bias`, a head that says p(fake) = sigmoid(bias) for every step."""
    from deepfake.checkpoint import build_meta, save_detector
    from deepfake.model import DeepfakeDetector

    torch.manual_seed(0)
    net = DeepfakeDetector(**TINY)
    if bias is not None:
        with torch.no_grad():
            net.fc.weight.zero_()
            net.fc.bias.fill_(bias)
    return save_detector(path, net, build_meta(net, seq_len=4, margin=0.3, stride=3))


def write_blank_video(path: Path, frames: int = 8) -> Path:
    """A grey H.264 clip without a face."""
    from data_prep.video_writer import write_video

    return write_video(path, [np.full((240, 320, 3), 128, np.uint8)] * frames, 10)


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def test_videos(synth_dataset, tmp_path_factory) -> Path:
    """A DFDC-like flat `test_videos/`: two real and two fake synth clips under opaque names, a corrupt file, a
    video without a face; plus `sample_submission.csv` listing them (in its own order) and one missing file."""
    root = tmp_path_factory.mktemp("kaggle")
    videos = root / "test_videos"
    videos.mkdir()
    for src, name in [("real/clip_0000.mp4", "aaqaifqrwn.mp4"), ("fake/clip_0003.mp4", "bbzgxcldtq.mp4"),
                      ("real/clip_0001.mp4", "ccmmnbvxyz.mp4"), ("fake/clip_0004.mp4", "ddplkjhgfq.mp4")]:
        shutil.copy(synth_dataset / src, videos / name)
    (videos / "eecorrupted.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    write_blank_video(videos / "ffnofacexx.mp4")
    names = ["ddplkjhgfq.mp4", "aaqaifqrwn.mp4", "eecorrupted.mp4", "zzmissingz.mp4", "ffnofacexx.mp4",
             "bbzgxcldtq.mp4", "ccmmnbvxyz.mp4"]
    with open(root / "sample_submission.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), *((n, 0.5) for n in names)])
    return root


@pytest.fixture(scope="module")
def confident_weights(tmp_path_factory) -> Path:
    """Weights that call every face fake with p = sigmoid(6) = 0.9975, beyond the 0.99 clip."""
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "detector.pt", bias=6.0)


EXPECTED = {"ddplkjhgfq.mp4": "ok", "aaqaifqrwn.mp4": "ok", "eecorrupted.mp4": "error", "zzmissingz.mp4": "missing",
            "ffnofacexx.mp4": "no_face", "bbzgxcldtq.mp4": "ok", "ccmmnbvxyz.mp4": "ok"}


# ------------------------------------------------------------------------------------------------- make_submission


def test_submission_is_complete_clipped_and_timed(test_videos, confident_weights, tmp_path):
    out = tmp_path / "sub" / "submission.csv"
    report = make_submission(test_videos / "test_videos", confident_weights, out, prior=0.3, clip=(0.05, 0.95),
                             device="cpu", sample_submission=test_videos / "sample_submission.csv", progress=False)
    rows = read_rows(out)
    assert rows[0] == ["filename", "label"]
    assert [r[0] for r in rows[1:]] == list(EXPECTED), "one row per sample row, in the sample's order"
    assert {r["filename"]: r["status"] for r in report.rows} == EXPECTED
    labels = {name: float(label) for name, label in rows[1:]}
    for name, status in EXPECTED.items():
        # Every face is called fake at 0.9975, written as the clip's top; everything else is the prior.
        assert labels[name] == pytest.approx(0.95 if status == "ok" else 0.3), name
    reasons = {r["filename"]: r["reason"] for r in report.rows}
    assert reasons["eecorrupted.mp4"] and reasons["zzmissingz.mp4"] == "not in the test folder"
    assert report.model_loaded and report.device == "cpu"
    t = report.timing()
    assert t["videos_timed"] == 6 and 0 < t["mean_s"] <= t["max_s"] and t["expected_videos"] == 4000
    assert t["projected_s"] == pytest.approx(t["mean_s"] * 4000 + report.load_seconds)
    printed = report.summary()  # what `deepfake submit` and the notebook print; the library only returns it
    assert "8.1-s budget" in printed and "projected for 4000 videos" in printed
    assert "4 scored" in printed and "1 missing" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv"], "no temporary file left behind"


def test_scores_are_those_of_deepfake_predict(test_videos, tmp_path):
    """Without clipping in the way, a row's label is `deepfake predict`'s p(fake) for that video."""
    from deepfake.inference import PredictConfig, load_predictor, predict_video

    weights = save_tiny_weights(tmp_path / "random.pt")
    videos = test_videos / "test_videos"
    report = make_submission(videos, weights, tmp_path / "s.csv", clip=(0.0, 1.0), device="cpu", progress=False)
    detector, extractor, _ = load_predictor(weights, PredictConfig(device="cpu"))
    labels = {name: float(label) for name, label in read_rows(tmp_path / "s.csv")[1:]}
    # Without a sample, the rows are the videos on disk, sorted.
    assert list(labels) == sorted(p.name for p in videos.iterdir())
    for name in ("aaqaifqrwn.mp4", "bbzgxcldtq.mp4"):
        assert labels[name] == pytest.approx(predict_video(videos / name, detector, extractor)["p_fake"], abs=1e-6)
    assert labels["ffnofacexx.mp4"] == 0.5 and report.count("no_face") == 1


def test_model_that_cannot_load_gives_a_prior_only_submission(test_videos, tmp_path, capsys):
    broken = tmp_path / "detector.pt"
    broken.write_bytes(b"not a checkpoint")
    out = tmp_path / "submission.csv"
    status = submit.main([str(test_videos / "test_videos"), "--weights", str(broken), "--out", str(out),
                              "--sample-submission", str(test_videos / "sample_submission.csv"), "--prior", "0.42",
                              "--device", "cpu", "--no-progress"])
    assert status == 1
    rows = read_rows(out)
    assert [r[0] for r in rows[1:]] == list(EXPECTED)
    assert all(float(r[1]) == pytest.approx(0.42) for r in rows[1:])
    captured = capsys.readouterr()
    assert "THE MODEL COULD NOT BE LOADED" in captured.err and "PRIOR-ONLY" in captured.err
    assert "MODEL NOT LOADED" in captured.out


def test_a_complete_file_exists_before_the_model_loads(test_videos, tmp_path, monkeypatch):
    import deepfake.inference

    out = tmp_path / "submission.csv"
    seen = {}

    def fake_load(*args, **kwargs):
        seen["rows"] = read_rows(out)
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(deepfake.inference, "load_predictor", fake_load)
    report = make_submission(test_videos / "test_videos", "whatever.pt", out, progress=False,
                             sample_submission=test_videos / "sample_submission.csv")
    assert len(seen["rows"]) == 1 + len(EXPECTED) and all(r[1] == "0.500000" for r in seen["rows"][1:])
    assert not report.model_loaded and "out of memory" in report.model_error
    assert report.count("prior") == len(EXPECTED) - 1 and report.count("missing") == 1


def test_a_crash_mid_batch_costs_one_video_not_the_submission(test_videos, confident_weights, tmp_path, monkeypatch):
    """The batch path dies after one video; the rest go one by one, and one of them raises: only it gets the prior."""
    import deepfake.inference as predict

    real_iter, real_video = predict.iter_predictions, predict.predict_video

    def dying_iter(paths, *args, **kwargs):
        gen = real_iter(paths, *args, **kwargs)
        yield next(gen)
        raise RuntimeError("decoder thread died")

    def flaky_video(path, *args, **kwargs):
        if Path(path).name == "ccmmnbvxyz.mp4":
            raise MemoryError("4K video too large")
        return real_video(path, *args, **kwargs)

    monkeypatch.setattr(predict, "iter_predictions", dying_iter)
    monkeypatch.setattr(predict, "predict_video", flaky_video)
    videos = test_videos / "test_videos"
    report = make_submission(videos, confident_weights, tmp_path / "s.csv", device="cpu", progress=False)
    status = {r["filename"]: (r["status"], r["reason"]) for r in report.rows}
    assert len(status) == 6 and len(read_rows(tmp_path / "s.csv")) == 7
    assert status["ccmmnbvxyz.mp4"] == ("error", "MemoryError: 4K video too large")
    assert [status[n][0] for n in ("aaqaifqrwn.mp4", "bbzgxcldtq.mp4", "ddplkjhgfq.mp4")] == ["ok"] * 3
    assert status["ffnofacexx.mp4"][0] == "no_face" and status["eecorrupted.mp4"][0] == "error"


def test_time_limit_gives_the_rest_the_prior(test_videos, confident_weights, tmp_path):
    report = make_submission(test_videos / "test_videos", confident_weights, tmp_path / "s.csv", device="cpu",
                             time_limit_s=1e-6, progress=False)
    statuses = [r["status"] for r in report.rows]
    assert statuses[0] == "ok" and statuses[1:] == ["skipped"] * 5  # the limit is checked after each video
    assert [float(r[1]) for r in read_rows(tmp_path / "s.csv")[1:]] == [0.99] + [0.5] * 5


def test_rows_from_nested_folders_and_sample_names(tmp_path, synth_dataset, confident_weights):
    """Rows are relative paths; a sample row names a file by relative path or by a unique base name."""
    videos = tmp_path / "videos"
    (videos / "a").mkdir(parents=True)
    shutil.copy(synth_dataset / "real/clip_0000.mp4", videos / "a" / "x.mp4")
    (videos / "notes.txt").write_text("not a video")
    assert list(submission.list_videos(videos)) == ["a/x.mp4"]
    sample = tmp_path / "sample.csv"
    sample.write_text("filename,label\nx.mp4,0.5\na/x.mp4,0.5\ny.mp4,0.5\n")
    report = make_submission(videos, confident_weights, tmp_path / "s.csv", device="cpu", progress=False,
                             sample_submission=sample)
    assert [(r["filename"], r["status"]) for r in report.rows] == [("x.mp4", "ok"), ("a/x.mp4", "ok"),
                                                                   ("y.mp4", "missing")]


def test_user_errors(tmp_path, capsys):
    assert submit.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "s.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()
    assert submit.main([str(tmp_path), "--clip", "0.9", "0.1"]) == 2
    assert "0 <= lo <= hi <= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="prior"):
        SubmissionConfig(prior=1.5)
    assert submit.main([str(tmp_path), "--precision", "fp8"]) == 2  # a typo must not become a prior-only file
    assert "precision must be one of" in capsys.readouterr().err
    with pytest.raises(SubmissionError, match="no video files"):
        make_submission(tmp_path, None, tmp_path / "s.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\nx.mp4,0.5\n")
    with pytest.raises(SubmissionError, match="filename"):
        submission.read_sample_submission(bad)


# ------------------------------------------------------------------------------------------------- notebooks


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory) -> str:
    """A Jupyter kernel that runs this interpreter with the repository importable, in a kernelspec dir of our own."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "deepfake-test"
    spec.mkdir(parents=True)
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "NO_ALBUMENTATIONS_UPDATE": "1",
           "MPLBACKEND": "Agg"}
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "deepfake tests", "language": "python", "env": env}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(root))
    yield "deepfake-test"
    mp.undo()


def run_notebook(name: str, params: dict, cwd: Path, kernel: str):
    """Executes notebooks/NAME with the `parameters` cell replaced by `params`; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged `parameters`"
    tagged[0].source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_notebooks_are_committed_without_outputs_and_up_to_date():
    import nbformat

    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import build_notebooks
    finally:
        sys.path.remove(str(NOTEBOOKS))
    assert build_notebooks.main(["--check"]) == 0
    for name in build_notebooks.NOTEBOOKS:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_submission_notebook(test_videos, confident_weights, kernel_name, tmp_path):
    out = tmp_path / "working" / "submission.csv"
    nb = run_notebook("dfdc_submission.ipynb", {
        "WHEELS_DIR": str(tmp_path / "no-wheels-needed"), "WEIGHTS": str(confident_weights),
        "TEST_VIDEOS": str(test_videos / "test_videos"),
        "SAMPLE_SUBMISSION": str(test_videos / "sample_submission.csv"),
        "OUTPUT": str(out), "DEVICE": "cpu", "PRIOR": 0.5, "CLIP": (0.01, 0.99), "TIME_LIMIT_S": 3600.0,
        "STRIDE": None}, tmp_path, kernel_name)
    rows = read_rows(out)
    assert [r[0] for r in rows[1:]] == list(EXPECTED)
    assert {n: float(v) for n, v in rows[1:]} == {n: 0.99 if s == "ok" else 0.5 for n, s in EXPECTED.items()}
    text = outputs_text(nb)
    assert "8.1-s budget" in text and "projected for 4000 videos" in text and "7 rows" in text
    assert "aaqaifqrwn.mp4" in text  # the head of the file is shown


def _dfdc_part(synth_dir: Path, root: Path) -> Path:
    """A DFDC-style part from synth clips: flat *.mp4 under opaque names and metadata.json (label/original/split)."""
    part = root / "dfdc_train_part_0"
    part.mkdir(parents=True)
    labels = list(csv.DictReader(open(synth_dir / "labels.csv", newline="")))
    name = {r["video"]: f"{i:04d}abcd.mp4" for i, r in enumerate(labels)}
    meta = {}
    for r in labels:
        shutil.copy(synth_dir / r["video"], part / name[r["video"]])
        fake = r["label"] == "fake"
        meta[name[r["video"]]] = {"label": "FAKE" if fake else "REAL", "split": "train",
                                  "original": name[r["original"]] if fake else None}
    (part / "metadata.json").write_text(json.dumps(meta))
    return part


@pytest.mark.slow  # 15 s on 2 cores; the submission notebook's run stays in make test
def test_training_notebook(synth_dataset, kernel_name, tmp_path):
    part = _dfdc_part(synth_dataset, tmp_path / "dfdc")
    work = tmp_path / "work"
    nb = run_notebook("train_dfdc.ipynb", {
        "DFDC_PART": str(part), "WORK_DIR": str(work), "CONFIG": str(REPO / "configs" / "tiny_cpu.yaml"),
        "MAX_EPOCHS": 1, "LIMIT_BATCHES": 2, "STRIDE": 2, "CROP_SIZE": 64, "DEVICE": "cpu", "WORKERS": 0,
        "EXTRA_FIT_ARGS": ["--data.val_fraction", "0.34"]}, tmp_path, kernel_name)
    index = list(csv.DictReader(open(work / "extracted" / "index.csv", newline="")))
    assert len({r["video"] for r in index}) == 6
    weights = sorted(work.glob("runs/*/version_*/checkpoints/detector.pt"))
    assert len(weights) == 1
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    val = list(csv.DictReader(open(work / "extracted" / "val_index.csv", newline="")))
    val_videos = {r["video"] for r in val}
    # The evaluation covers exactly the held-out source videos: every fake with its original, none trained on.
    assert metrics["n"] == len(val_videos) >= 2 and metrics["n_real"] >= 1 and metrics["n_fake"] >= 1
    originals = {r["original"] for r in val}
    assert all(r["video"] in val_videos for r in index if r["original"] in originals)
    assert (work / "eval" / "roc.png").is_file()
    text = outputs_text(nb)
    assert "6 videos: 3 real, 3 fake, 3 source videos" in text and "weights:" in text
