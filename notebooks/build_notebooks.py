"""Writes the two notebooks of this folder from the cell sources below (without outputs).

    python notebooks/build_notebooks.py          # rewrite dfdc_submission.ipynb and train_dfdc.ipynb
    python notebooks/build_notebooks.py --check  # exit 1 when a committed notebook differs from what this writes

The notebooks are thin on purpose: every step is a call into the package (`deepfake.submission.make_submission`,
`deepfake.cli.extract.main`, `deepfake.cli.train.main`, `deepfake.cli.evaluate.main`), so the code that runs on Kaggle is
the code the tests cover. Each has one cell tagged `parameters` (papermill's convention): the tests, papermill or
a person replace its source to point the notebook elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------------------ dfdc_submission

SUBMISSION = [
    ("md", """# DFDC submission: `deepfake` EfficientNet + LSTM detector

Kaggle's Deepfake Detection Challenge inference kernel (offline; about 4000 test videos in 9 hours, i.e. 8.1 s
per video). All the logic lives in the `deepfake` package (`deepfake.submission.make_submission`); this notebook
only installs it, points it at the data and shows what it wrote.

`submission.csv` is **always complete**: one `filename,label` row per video of `sample_submission.csv`, `label` =
p(fake) clipped to [0.01, 0.99]. A video without a score (no face found, unreadable, scoring failed, missing,
or left when `TIME_LIMIT_S` runs out) gets the prior `PRIOR`; if the model can't be loaded at all, every row
does, with a loud warning. The file is written before scoring starts and refreshed every minute, so even a
killed kernel leaves a complete submission.

Attach two datasets to the kernel (Internet off):
- **wheels** (`WHEELS_DIR`): `pip wheel --no-deps -w wheels/ .` in a checkout of this repository, plus
  `pip download --no-deps -d wheels/ NAME==VERSION` for each dependency the Kaggle image lacks (the pins are
  in `requirements/lock.txt`; the install cell below lists what pip could not find);
- **weights** (`WEIGHTS`): a `detector.pt` written by `deepfake fit` (or its Lightning `.ckpt`)."""),
    ("params", """WHEELS_DIR = "/kaggle/input/deepfake-wheels"  # the package's wheel + the dependencies Kaggle lacks
WEIGHTS = "/kaggle/input/deepfake-weights/detector.pt"
TEST_VIDEOS = "/kaggle/input/deepfake-detection-challenge/test_videos"
SAMPLE_SUBMISSION = "/kaggle/input/deepfake-detection-challenge/sample_submission.csv"
OUTPUT = "/kaggle/working/submission.csv"
DEVICE = "auto"             # the GPU when there is one
PRIOR = 0.5                 # p(fake) of a video without a score
CLIP = (0.01, 0.99)         # every label is clipped to this range (log loss punishes confident mistakes)
TIME_LIMIT_S = 8.5 * 3600   # stop scoring here (the rest get the prior), before Kaggle's 9 hours
STRIDE = None               # keep every STRIDE-th frame; None: what the model was trained with"""),
    ("md", """## Install

`import deepfake` first; only when that fails, install it and its missing dependencies from the wheels
dataset, offline. Should even that fail, a prior-only submission is written before the error is raised, so
the kernel still leaves a valid file."""),
    ("code", """import csv, importlib, os, subprocess, sys

try:
    import deepfake
except ImportError:
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", WHEELS_DIR, "deepfake"]
    print(" ".join(cmd))
    done = subprocess.run(cmd)
    importlib.invalidate_caches()
    try:
        import deepfake
    except ImportError:
        # Last resort: a complete prior-only file from the sample submission, then stop here loudly.
        with open(SAMPLE_SUBMISSION, newline="") as f:
            names = [row["filename"] for row in csv.DictReader(f)]
        with open(OUTPUT, "w", newline="") as f:
            csv.writer(f).writerows([("filename", "label"), *((n, PRIOR) for n in names)])
        raise RuntimeError(f"deepfake could not be installed from {WHEELS_DIR} (pip exit {done.returncode}); "
                           f"wrote a prior-only {OUTPUT}")
print("deepfake", deepfake.__version__, "from", os.path.dirname(deepfake.__file__))"""),
    ("md", """## The model

What the checkpoint says about itself: the network and the crops it was trained on (`extraction`: the whole recipe,
docs/contract.md). `make_submission` loads it again and cuts faces the same way."""),
    ("code", """import torch
from deepfake.checkpoint import load_detector

print("torch", torch.__version__, "| CUDA:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
try:
    _, meta = load_detector(WEIGHTS)
    print({k: meta.get(k) for k in ("model", "img_size", "seq_len", "extraction")})
except Exception as err:  # make_submission still writes a (prior-only) file and says why
    print("WARNING: the weights can't be loaded:", err)"""),
    ("md", """## Score the test videos"""),
    ("code", """from deepfake.submission import make_submission

report = make_submission(TEST_VIDEOS, WEIGHTS, OUTPUT, sample_submission=SAMPLE_SUBMISSION, prior=PRIOR,
                         clip=CLIP, device=DEVICE, stride=STRIDE, time_limit_s=TIME_LIMIT_S, progress=False)
print(report.summary())"""),
    ("md", """## What was written

The head of the file, the rows by status (a row other than `ok` holds the prior), and the time per video
against the 8.1-s budget."""),
    ("code", """import pandas as pd

submission = pd.read_csv(OUTPUT)
rows = pd.DataFrame(report.rows)
print(f"{len(submission)} rows; label range [{submission.label.min():.3f}, {submission.label.max():.3f}]")
print(rows.status.value_counts().to_string())
print(pd.Series(report.timing()).to_string())
submission.head()"""),
]

# ------------------------------------------------------------------------------------------ train_dfdc

TRAIN = [
    ("md", """# Training the detector on a DFDC part, step by step

1. **Extract** the faces of a DFDC training part (a folder of `*.mp4` with its `metadata.json`): detect, track
   and crop them, and write `index.csv` (`deepfake-extract`; resumable).
2. **Train** the detector on the crops (`deepfake fit`, LightningCLI), validating on a split by source video
   (a fake and the real video it was made from never straddle train and validation).
3. **Evaluate** the exported `detector.pt` on that validation split (`deepfake evaluate`): log loss, AUC,
   accuracy, ROC curve, per-video predictions.

Each step calls the package's `main` with the arguments you would type after the command, so a cell is the same
as its shell line, e.g. `deepfake-extract DFDC_PART WORK_DIR/extracted --layout dfdc`. For several parts, point
`DFDC_PART` at the folder holding them (the layout finds every `metadata.json` under it); for all of DFDC, run the
extraction as a SLURM array (`--shard K/N`) and training on several GPUs (`--trainer.devices`,
`--trainer.strategy ddp`), as the README explains."""),
    ("params", """DFDC_PART = "/data/dfdc/dfdc_train_part_49"  # a DFDC part: *.mp4 + metadata.json
WORK_DIR = "/data/deepfake/part_49"            # crops, runs and the evaluation go here
CONFIG = "b1_lstm.yaml"          # a path, or a name in the repository's configs/
MAX_EPOCHS = 30
LIMIT_BATCHES = None             # e.g. 0.1 (a share) or 20 (batches) per epoch for a quick look; None: all
STRIDE = 5                       # keep every STRIDE-th frame
CROP_SIZE = 240                  # the backbone's input size (240 for EfficientNet-B1)
DEVICE = "auto"                  # face detection and evaluation
WORKERS = None                   # decode processes of the extraction; None: CPU cores - 1
EXTRA_FIT_ARGS = []              # e.g. ["--model.net.pretrained_file", "/data/weights/efficientnet_b1.pth"]"""),
    ("code", """import json
from pathlib import Path

import pandas as pd

from data_prep.layouts import find_videos

work = Path(WORK_DIR)
extracted, runs, eval_dir = work / "extracted", work / "runs", work / "eval"
found = find_videos(DFDC_PART, "dfdc")
videos = pd.DataFrame([{"video": r.video, "label": r.label, "split": r.split, "original": r.original}
                       for r in found.records])
print(f"{len(videos)} videos: {int((videos.label == 0).sum())} real, {int((videos.label == 1).sum())} fake, "
      f"{videos.original.nunique()} source videos")
print(*found.notes, sep="\\n")"""),
    ("md", """## 1. Extract the faces

Fakes reuse the face boxes of their original (DFDC's `original`), so only the real videos go through the
detector. Re-running skips the videos already done."""),
    ("code", """from deepfake.cli import extract

args = [DFDC_PART, str(extracted), "--layout", "dfdc", "--stride", str(STRIDE), "--size", str(CROP_SIZE),
        "--device", DEVICE, "--no-progress"]
if WORKERS is not None:
    args += ["--workers", str(WORKERS)]
assert extract.main(args) == 0, "extraction failed (see above)"
index = pd.read_csv(extracted / "index.csv")
failures = pd.read_csv(extracted / "failures.csv")
print(f"{len(index)} crops of {index.video.nunique()} videos; {len(failures)} videos without crops")
index.head()"""),
    ("md", """## 2. Train

`deepfake fit` with the config; `--print_config` shows every setting. The run folder holds `config.yaml`,
`metrics.csv`, TensorBoard events and `checkpoints/` with the best epoch by validation log loss, `last.ckpt`
(resume with `--ckpt_path`) and the exported `detector.pt`."""),
    ("code", """from deepfake.cli import train
from deepfake.demo import find_config

config = find_config(CONFIG)
args = ["fit", "--config", str(config), "--data.index", str(extracted), "--run_dir", str(runs),
        "--trainer.max_epochs", str(MAX_EPOCHS), "--trainer.enable_progress_bar", "false", *EXTRA_FIT_ARGS]
if LIMIT_BATCHES is not None:
    args += ["--trainer.limit_train_batches", str(LIMIT_BATCHES), "--trainer.limit_val_batches", str(LIMIT_BATCHES)]
before = set(runs.glob("*/version_*"))
assert train.main(args) == 0, "training failed (see above)"
run = max(set(runs.glob("*/version_*")) - before, key=lambda p: p.stat().st_mtime)
weights = run / "checkpoints" / "detector.pt"
metrics = pd.read_csv(run / "metrics.csv")
per_epoch = metrics.groupby("epoch").last()
print("run:", run, "\\nweights:", weights)
per_epoch[[c for c in ("train/loss_epoch", "val/logloss", "val/auc", "val/acc") if c in per_epoch]]"""),
    ("md", """## 3. Evaluate on the validation split

The validation videos are the ones the training's data module held out (same index, `val_fraction` and
`split_seed` as the run's `config.yaml`); their rows of the index go to `val_index.csv` beside it, and
`deepfake evaluate` scores their crops with `detector.pt`."""),
    ("code", """import yaml

from deepfake.cli import evaluate
from deepfake.data import FaceSequenceDataModule

data_cfg = yaml.safe_load((run / "config.yaml").read_text())["data"]
dm = FaceSequenceDataModule(str(extracted), img_size=CROP_SIZE, val_fraction=data_cfg["val_fraction"],
                            test_fraction=data_cfg.get("test_fraction", 0.0), split_seed=data_cfg.get("split_seed", 0))
dm.setup("validate")
val_videos = {t.video for t in dm.tracks["val"]}
val_index = extracted / "val_index.csv"
index[index.video.isin(val_videos)].to_csv(val_index, index=False)
assert evaluate.main([str(val_index), "--weights", str(weights), "--out", str(eval_dir), "--device", DEVICE,
                      "--no-progress"]) == 0
result = json.loads((eval_dir / "metrics.json").read_text())
print({k: result[k] for k in ("n", "n_real", "n_fake", "logloss", "balanced_logloss", "auc", "accuracy", "ap")})
print("ROC curve:", eval_dir / "roc.png", "| per-video predictions:", eval_dir / "predictions.csv")"""),
]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook of markdown/code cells; the `params` cell is a code cell tagged `parameters`."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(new_markdown_cell(source))
        else:
            cell = new_code_cell(source)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives the same file
        cell["id"] = f"cell-{i:02d}"
    return nb


NOTEBOOKS = {"dfdc_submission.ipynb": SUBMISSION, "train_dfdc.ipynb": TRAIN}


def main(args: list[str] | None = None) -> int:
    """Writes (or with --check, compares) the notebooks; returns the exit status."""
    p = argparse.ArgumentParser(description="Write the notebooks of this folder from their cell sources.")
    p.add_argument("--check", action="store_true", help="only check that the committed notebooks are up to date")
    ns = p.parse_args(args)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(build(cells)) + "\n"
        path = HERE / name
        if ns.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python notebooks/build_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
