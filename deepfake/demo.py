"""The demo (`deepfake demo [OUT_DIR]`): the whole pipeline on generated data, in a few CPU minutes, with a report.

    deepfake demo                      # into ./demo_output (what `make demo` runs)
    deepfake demo /tmp/demo --quick    # a much smaller run (under a minute): checks the install
    deepfake demo --install-weights    # also make the demo detector the default weights of `deepfake predict`

Stages (each calls the library function behind the command a user would run; its output goes to OUT_DIR/logs/):
1. **synth**: `deepfake synth` writes a training set of 240 clips (120 real face clips + 120 self-blended fakes made
   from them; 320x240, 4 s at 10 fps; seed 0) into `data/train/`, and a separately seeded held-out set of 80
   clips (seed 1000) into `data/heldout/`. The held-out clips show the same few face photos `deepfake synth`
   ships with, but with motion, light, backgrounds and blend parameters drawn from the other seed: no held-out
   clip, and no fake made from one, is seen in training.
2. **extract**: `deepfake-extract data/train extracted` finds, tracks and crops the faces (64-px crops, every 2nd
   frame) and writes `extracted/index.csv`.
3. **fit**: `deepfake fit --config configs/tiny_cpu.yaml` trains the tiny CPU detector on it (validation on a
   25 % split by source video) for 20 epochs (`--epochs`) or 8 minutes (`--train-minutes`), whichever ends
   first; the best epoch by validation log loss is exported as `detector.pt`.
4. **evaluate**: `deepfake evaluate data/heldout` scores the held-out videos the way `deepfake predict` does
   (detection, tracking, crops, model) and writes `eval/metrics.json`, `roc.png`, `predictions.csv`.
5. **predict**: `deepfake predict` on one held-out fake with `--plot`: `predict/prediction.json` and a PNG of
   p(fake) over time with the face crops. The clip is a typical one, not a picked one: the fake with the median
   score in the evaluation.
6. **generalize**: a second detector trained from the real training clips alone (`configs/sbi_tiny_cpu.yaml`:
   self-blended and temporal fakes made on the fly), and both detectors scored on the held-out self-blended fakes
   and on held-out face swaps and reenact clips (`deepfake synth --fake-kind swap|reenact`, the held-out seed)
   that neither was trained on: `cross/cross.md`.

The report (printed, and written to `report.txt` / `report.json`) gives the validation AUC of the exported epoch,
the held-out AUC, log loss and accuracy, the held-out log loss and ECE of the raw and the calibrated scores (the
calibration `deepfake fit` fitted on its validation videos), the seconds per stage and where each artifact is.

Re-running reuses what is finished: each stage records its settings in `OUT_DIR/demo.json` and is skipped when
they are unchanged and its outputs are still there; a stage whose settings changed (e.g. `--quick` after a full
run) is redone from scratch, and so is every stage after it. `--fresh` redoes everything. OUT_DIR must be new,
empty, or an earlier demo's folder: the demo only ever deletes its own subfolders there.

Weights: the demo's detector has only seen `deepfake synth`'s faces and blends; it is a working example, not a
model for real videos. So it is **not** installed as the default weights unless `--install-weights` is given,
which copies it to `~/.cache/deepfake/detector.pt` (`$DEEPFAKE_CACHE` when set), where `deepfake predict`
and `deepfake evaluate` look when `--weights` is not given.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_prep.files import atomic_write
from deepfake.demo_report import (
    STAGES,
    DemoError,
    fit_summary,
    format_report,
    format_value,
    index_counts,
    label_of,
    pick_clip,
)
from deepfake.demo_stages import DemoFolderError, DemoProgress, StageRunner, find_config, stage_key

__all__ = ["DemoConfig", "DemoError", "DemoFolderError", "DemoProgress", "run_demo", "find_config", "format_report"]

STATE_FILE = "demo.json"
STATE_VERSION = 1
# Everything the demo writes in OUT_DIR; nothing else there is ever touched.
OWNED = ("data", "extracted", "runs", "eval", "predict", "logs", "cross", STATE_FILE, "report.txt", "report.json")
RUN_NAME = "demo"


@dataclass
class DemoConfig:
    """Settings of a demo run (the defaults are the full demo; `DemoConfig.quick_config()` the quick one).

    Attributes:
        train_count: clips of the training set (half real, half self-blended fakes).
        heldout_count: clips of the held-out set.
        unseen_count: clips of the set of face swaps of a person the demo never shows (`--people unseen`).
        width: frame width of the generated clips.
        height: frame height.
        seconds: clip length.
        fps: frame rate.
        seed: seed of the training set.
        heldout_seed: seed of the held-out set (different: new backgrounds, motion and blends).
        stride: keep every `stride`-th frame for the crops.
        size: crop side in pixels (the tiny config's input size).
        config: training config, a path or a name under `configs/`.
        max_epochs: epochs to train; None keeps the config's.
        train_minutes: stop training after this many minutes even if epochs are left (None: no limit).
        device: device of face detection, evaluation and prediction (training follows the config: CPU).
        extract_workers: extraction processes; None: `deepfake-extract`'s default (one per core).
        threads: torch CPU threads of the stages run in this process (training, scoring; None: torch's default).
            One by default: training loads its data in another process (`loader_workers`) and extraction has its
            own worker processes, which keeps two cores busy, and unlike several OpenMP threads one thread does
            not collapse when other programs share the cores (measured on a shared 2-core machine: 2 training
            epochs took 131 s with two torch threads, 23 s with one thread and one loader process).
        loader_workers: data-loading processes while training (`--data.num_workers`).
        sbi_steps: optimiser steps of the real-only detector of the generalization stage.
        quick: the small settings (recorded in the report).
    """

    train_count: int = 240
    heldout_count: int = 80
    unseen_count: int = 40
    width: int = 320
    height: int = 240
    seconds: float = 4.0
    fps: float = 10.0
    seed: int = 0
    heldout_seed: int = 1000
    stride: int = 2
    size: int = 64
    config: str = "tiny_cpu.yaml"
    max_epochs: int | None = 20
    train_minutes: float | None = 8.0
    device: str = "auto"
    extract_workers: int | None = None
    threads: int | None = 1
    loader_workers: int = 1
    sbi_steps: int = 400
    quick: bool = False

    def __post_init__(self) -> None:
        for name in ("train_count", "heldout_count", "unseen_count"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 4):
                raise ValueError(f"{name} must be an integer >= 4 (two real clips and their fakes), got {value!r}")
        if self.seed == self.heldout_seed:
            raise ValueError("the held-out set needs its own seed (heldout_seed != seed), or it repeats training clips")
        if not (self.seconds > 0 and self.fps > 0):
            raise ValueError(f"seconds and fps must be > 0, got {self.seconds} and {self.fps}")
        if not (isinstance(self.stride, int) and self.stride >= 1):
            raise ValueError(f"stride must be an integer >= 1, got {self.stride!r}")
        if self.max_epochs is not None and not (isinstance(self.max_epochs, int) and self.max_epochs >= 1):
            raise ValueError(f"--epochs must be an integer >= 1, got {self.max_epochs!r}")
        if self.train_minutes is not None and not self.train_minutes > 0:
            raise ValueError(f"--train-minutes must be > 0, got {self.train_minutes}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be an integer >= 1 or None, got {self.threads!r}")
        if not (isinstance(self.loader_workers, int) and self.loader_workers >= 0):
            raise ValueError(f"loader_workers must be an integer >= 0, got {self.loader_workers!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @classmethod
    def quick_config(cls, **overrides: Any) -> DemoConfig:
        """Small and fast: 16 training clips of 2 s, 8 held-out clips, 3 epochs, no worker processes."""
        settings = dict(train_count=16, heldout_count=8, unseen_count=4, seconds=2.0, max_epochs=3, train_minutes=None,
                        extract_workers=0, loader_workers=0, sbi_steps=20, quick=True)
        return cls(**{**settings, **overrides})


# ------------------------------------------------------------------------------------------------- the stages


class _Demo(StageRunner):
    """One demo run in OUT_DIR: its stages and the report (the bookkeeping is `StageRunner`'s)."""

    state_file, state_version, owned, n_stages = STATE_FILE, STATE_VERSION, OWNED, len(STAGES)

    def __init__(self, out: Path, config: DemoConfig, fresh: bool, say: Callable[[str], None]) -> None:
        self.out = out
        self.config = config
        self.say = say
        self.config_path = find_config(config.config)
        self.prepare_folder(fresh)
        self.state = self.read_state()
        self.upstream_changed = False
        self.report: dict[str, Any] = {"stages": {}, "artifacts": {}}

    # stages --------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        c = self.config
        data = self.out / "data"
        train_dir, heldout_dir = data / "train", data / "heldout"
        extracted = self.out / "extracted"
        runs = self.out / "runs"
        eval_dir = self.out / "eval"
        predict_dir = self.out / "predict"
        from data_prep import synth
        from data_prep.dataset import extract_dataset
        from data_prep.faces import ExtractConfig
        from deepfake import train
        from deepfake.evaluation import evaluate
        from deepfake.inference import PredictConfig, iter_predictions, load_predictor
        from deepfake.artefacts import write_artefacts
        from deepfake.plots import plot_name
        from deepfake.results import write_results

        synth_key = stage_key("synth", c.train_count, c.heldout_count, c.width, c.height, c.seconds, c.fps, c.seed,
                         c.heldout_seed, synth.GENERATOR_VERSION)

        def run_synth() -> dict:
            for folder, count, seed in ((train_dir, c.train_count, c.seed), (heldout_dir, c.heldout_count,
                                                                              c.heldout_seed)):
                cfg = synth.SynthConfig(count=count, width=c.width, height=c.height, seconds=c.seconds, fps=c.fps,
                                        seed=seed, progress=False)
                self.quiet("synth", f"deepfake synth {folder} --count {count} --resolution {c.width}x{c.height} "
                            f"--seconds {c.seconds:g} --fps {c.fps:g} --seed {seed}",
                            lambda folder=folder, cfg=cfg: synth.make_dataset(folder, cfg))
            return {}

        self.stage("synth", 1, synth_key,
                    f"{c.train_count} training + {c.heldout_count} held-out clips ({c.width}x{c.height}, "
                    f"{c.seconds:g} s at {c.fps:g} fps; half real faces, half self-blended fakes)",
                    [train_dir / "labels.csv", heldout_dir / "labels.csv"], [data], run_synth)

        extract_key = stage_key(synth_key, "extract", c.stride, c.size)

        def run_extract() -> dict:
            cfg = ExtractConfig(stride=c.stride, size=c.size, device=c.device)
            workers = "" if c.extract_workers is None else f" --workers {c.extract_workers}"
            self.quiet("extract", f"deepfake-extract {train_dir} {extracted} --layout folder --stride {c.stride} "
                        f"--size {c.size} --device {c.device}{workers}",
                        lambda: extract_dataset(train_dir, extracted, cfg, layout="folder", workers=c.extract_workers))
            return index_counts(extracted / "index.csv")

        info = self.stage("extract", 2, extract_key, f"faces of the {c.train_count} training videos (frame stride "
                           f"{c.stride}, {c.size}-px crops)", [extracted / "index.csv"], [extracted],
                           run_extract)
        self.report["extract"] = {k: info.get(k) for k in ("videos", "tracks", "crops")}

        config_text = self.config_path.read_text()
        fit_key = stage_key(extract_key, "fit", config_text, c.max_epochs, c.train_minutes, c.loader_workers)

        def run_fit() -> dict:
            overrides: dict[str, Any] = {
                "data.index": extracted, "run_dir": runs, "run_name": RUN_NAME,
                "trainer.enable_progress_bar": False, "data.num_workers": c.loader_workers,
                "data.persistent_workers": bool(c.loader_workers)}
            if c.max_epochs is not None:
                overrides["trainer.max_epochs"] = c.max_epochs
            if c.train_minutes is not None:
                minutes = max(1, math.ceil(c.train_minutes))
                overrides["trainer.max_time"] = f"00:{minutes // 60:02d}:{minutes % 60:02d}:00"
            options = " ".join(f"--{k} {train.option_text(v)}" for k, v in overrides.items())
            def work() -> train.FitResult:
                result = train.fit(self.config_path, overrides, callbacks=[DemoProgress()])
                for line in result.report:  # into the stage's log, as the command prints them
                    print(f"deepfake fit: {line}", flush=True)
                return result

            fitted = self.quiet("fit", f"deepfake fit --config {self.config_path} {options}", work)
            return fit_summary(fitted.run_dir, self.out)

        limit = f", at most {c.train_minutes:g} min" if c.train_minutes else ""
        info = self.stage("fit", 3, fit_key, f"{self.config_path.name}{limit}", [], [runs], run_fit)
        weights = self.out / info["weights"]
        if not weights.is_file():
            raise DemoError(f"the trained weights {weights} are gone; run again with --fresh")
        self.report["fit"] = info

        eval_key = stage_key(fit_key, "evaluate")

        def run_evaluate() -> dict:
            self.quiet("evaluate", f"deepfake evaluate {heldout_dir} --weights {weights} --out {eval_dir} "
                        f"--device {c.device}",
                        lambda: evaluate(heldout_dir, eval_dir, weights, predict_config=PredictConfig(device=c.device)))
            return {}

        self.stage("evaluate", 4, eval_key, f"the detector on the {c.heldout_count} held-out videos",
                    [eval_dir / "metrics.json"], [eval_dir], run_evaluate)
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        self.report["heldout"] = {k: metrics.get(k) for k in ("n", "n_real", "n_fake", "auc", "logloss",
                                                              "balanced_logloss", "accuracy", "ap", "eer", "ece",
                                                              "brier")}
        self.report["heldout"]["no_face"] = (metrics.get("no_face") or {}).get("count")
        self.report["heldout"]["errors"] = (metrics.get("errors") or {}).get("count")
        self.report["heldout"]["calibration"] = metrics.get("calibration")
        self.report["heldout"]["uncalibrated"] = metrics.get("uncalibrated")

        clip = pick_clip(heldout_dir, eval_dir / "predictions.csv")
        predict_key = stage_key(fit_key, "predict", os.fspath(clip.relative_to(heldout_dir)))

        def run_predict() -> dict:
            def work() -> None:
                detector, extractor, _ = load_predictor(weights, PredictConfig(device=c.device))
                with extractor:
                    pred = next(iter_predictions([clip], detector, extractor))
                atomic_write(predict_dir / "prediction.json", write_results([pred.result], "json"))
                where = os.path.abspath(clip)
                plot = predict_dir / "plots" / plot_name(where, set(), root=os.path.dirname(where))
                made = write_artefacts(pred.result, pred.faces, detector, plot=plot, threshold=0.5)
                for note in made.notes:
                    print(f"deepfake predict: warning: {note}", flush=True)

            self.quiet("predict", f"deepfake predict {clip} --weights {weights} --format json --output "
                        f"{predict_dir / 'prediction.json'} --plot {predict_dir / 'plots'} --device {c.device}", work)
            return {}

        self.stage("predict", 5, predict_key, f"a typical held-out fake (median score), "
                    f"{clip.relative_to(heldout_dir).as_posix()}, with a plot", [predict_dir / "prediction.json"],
                    [predict_dir], run_predict)
        result = json.loads((predict_dir / "prediction.json").read_text())[0]
        plots = sorted((predict_dir / "plots").glob("*.png"))
        self.report["predict"] = {"video": clip.relative_to(heldout_dir).as_posix(), "label": label_of(clip),
                                  "p_fake": result.get("p_fake"), "verdict": result.get("verdict"),
                                  "faces": len(result.get("faces") or []), "status": result.get("status")}

        self._generalize(extracted, runs, weights, heldout_dir, data, fit_key)

        self.report["artifacts"] = {
            "training videos": os.fspath(train_dir),
            "held-out videos": os.fspath(heldout_dir),
            "face crops + index": os.fspath(extracted / "index.csv"),
            "training run": f"{self.out / info['run_dir']} (config.yaml, metrics.csv, TensorBoard events)",
            "detector weights": os.fspath(weights),
            "held-out evaluation": f"{eval_dir / 'metrics.json'}, roc.png, reliability.png, predictions.csv",
            "prediction": os.fspath(predict_dir / "prediction.json"),
            "plot": os.fspath(plots[0]) if plots else "(no plot written)",
            "cross-manipulation table": os.fspath(self.out / "cross" / "cross.md"),
            "logs": os.fspath(self.out / "logs"),
        }
        return self.report

    def _generalize(self, extracted: Path, runs: Path, weights: Path, heldout: Path, data: Path, fit_key: str) -> None:
        """Stage 6: a detector trained from the real clips alone (`sbi_tiny_cpu.yaml`: self-blended and temporal
        fakes made on the fly) beside the one trained on labelled fakes, both scored on the held-out self-blended
        fakes, on held-out face swaps and reenact clips (mouth and eyes warped over time) that neither saw
        (`deepfake synth --fake-kind swap|reenact`), and on face swaps of a person neither saw (`--people unseen`,
        the cameraman: the demo's own two people flatter every detector trained on them)."""
        swaps, reenacts, unseen = data / "heldout_swap", data / "heldout_reenact", data / "unseen_swap"
        from data_prep import synth
        from deepfake import train
        from deepfake.cross import evaluate_sets
        from deepfake.inference import PredictConfig

        c = self.config
        sbi_config = find_config("sbi_tiny_cpu.yaml")
        key = stage_key(fit_key, "generalize", sbi_config.read_text(), c.sbi_steps, synth.GENERATOR_VERSION, "reenact",
                       "unseen", c.unseen_count)
        cross = self.out / "cross"

        def run() -> dict:
            for folder, kind, count, people in ((swaps, "swap", c.heldout_count, "demo"),
                                                (reenacts, "reenact", c.heldout_count, "demo"),
                                                (unseen, "swap", c.unseen_count, "unseen")):
                cfg = synth.SynthConfig(count=count, width=c.width, height=c.height, seconds=c.seconds, fps=c.fps,
                                        seed=c.heldout_seed, fake_kind=kind, people=people, progress=False)
                self.quiet("generalize", f"deepfake synth {folder} --count {count} --resolution "
                            f"{c.width}x{c.height} --seconds {c.seconds:g} --fps {c.fps:g} --seed {c.heldout_seed} "
                            f"--fake-kind {kind} --people {people}",
                           lambda folder=folder, cfg=cfg: synth.make_dataset(folder, cfg))
            overrides: dict[str, Any] = {"data.index": extracted, "run_dir": runs, "run_name": "demo_sbi",
                                         "trainer.enable_progress_bar": False, "trainer.max_steps": c.sbi_steps,
                                         "data.num_workers": c.loader_workers,
                                         "data.persistent_workers": bool(c.loader_workers)}
            options = " ".join(f"--{k} {train.option_text(v)}" for k, v in overrides.items())
            fitted = self.quiet("generalize", f"deepfake fit --config {sbi_config} {options}",
                                 lambda: train.fit(sbi_config, overrides))
            table = {}
            sets = ("self-blended fakes", "face swaps (never seen)", "reenact clips (never seen)",
                    "face swaps, unseen person")
            for name, w in (("labelled fakes (tiny_cpu.yaml)", weights),
                            ("real faces only (sbi_tiny_cpu.yaml)", fitted.weights)):
                folder = cross / ("labelled" if w == weights else "real_only")
                rows = self.quiet("generalize", f"deepfake evaluate {heldout} {swaps} {reenacts} {unseen} "
                                   f"--weights {w} --out {folder}",
                                   lambda w=w, folder=folder: evaluate_sets(
                                       [heldout, swaps, reenacts, unseen], folder, w,
                                       predict_config=PredictConfig(device=c.device)))
                table[name] = {label: row.get("auc") for label, row in zip(sets, rows)}
            lines = ["| trained on | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
            lines += [f"| {name} | " + " | ".join(format_value(aucs[s]) for s in sets) + " |"
                      for name, aucs in table.items()]
            atomic_write(cross / "cross.md", "\n".join(lines) + "\n")
            return {"table": table, "sbi_weights": fitted.weights.relative_to(self.out).as_posix()}

        info = self.stage("generalize", 6, key, f"a detector trained from the real clips alone, and both detectors "
                           f"on held-out face swaps and reenact clips, and on swaps of an unseen person "
                           f"({c.sbi_steps} steps)", [cross / "cross.md"], [cross, swaps, reenacts, unseen], run)
        self.report["generalize"] = info.get("table")


def run_demo(out_dir: str | os.PathLike, config: DemoConfig | None = None, fresh: bool = False,
             install_weights: bool = False, say: Callable[[str], None] | None = None) -> dict:
    """Runs the demo (module docstring) and returns the report dict (also written to OUT_DIR/report.json).

    Args:
        out_dir: the demo folder (new, empty, or an earlier demo's).
        config: the settings (default: the full demo).
        fresh: redo every stage.
        install_weights: copy the trained detector to the default weights place.
        say: where progress lines go (default: print).

    Raises:
        DemoError: a stage failed (the message names its log) or OUT_DIR can't be used.
    """
    config = config or DemoConfig()
    say = say or (lambda line: print(line, flush=True))
    start = time.perf_counter()
    out = Path(out_dir).expanduser()
    demo = _Demo(out, config, fresh, say)
    report = demo.run()
    report["quick"] = config.quick
    report["settings"] = asdict(config)
    if install_weights:
        from deepfake.weights import install

        report["installed"] = os.fspath(install(report["artifacts"]["detector weights"]))
    total = time.perf_counter() - start
    report["seconds"] = round(total, 2)
    text = format_report(report, total)
    atomic_write(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write(out / "report.txt", text + "\n")
    say("")
    say(text)
    return report
