"""A Kaggle DFDC `submission.csv` that is always complete: one `filename,label` row per test video, whatever happens.

    deepfake submit test_videos/ --weights detector.pt --out submission.csv \\
        --sample-submission sample_submission.csv

    from deepfake.submission import make_submission
    report = make_submission("test_videos/", "detector.pt", "submission.csv",
                             sample_submission="sample_submission.csv")
    print(report.summary())

What goes in the file:
- The rows: the `filename` column of `sample_submission.csv` when given (its order; Kaggle scores exactly those
  videos), else every video file under the test folder (searched recursively, sorted), named by its path
  relative to the folder with `/` separators (a bare file name for DFDC's flat `test_videos/`). A name of the
  sample is matched to the file at that relative path, else to the only file with that base name.
- `label` is the video's p(fake) by `deepfake predict`'s rule (a face track's score is the mean over windows of
  `seq_len` crops of the last step's p(fake); a video's is its most fake face), **clipped to [0.01, 0.99]**
  (`clip`): DFDC is scored by log loss, where one confident mistake costs more than a set of well-calibrated
  answers gains.
- A video that gets no score gets the **prior** (default 0.5, the log-loss-optimal answer when nothing is known
  about a video of a balanced test set; pass the fake rate of your test set if you know it better), clipped
  like the rest: a video in which no face was found, a file that can't be read, a video whose scoring failed,
  a sample row without a file, and the videos left when the time limit (`time_limit_s`) runs out.
- When the model itself can't be loaded (missing or broken weights, a GPU that isn't there), the submission is
  still written, every row at the prior, and a loud warning says so: a prior-only file scores 0.693 and beats a
  failed kernel.

The file is written atomically (temporary file + rename) as soon as the row list is known (all rows at the
prior) and rewritten with the scores so far every `flush_every_s` seconds, so a kernel killed at the time limit
still leaves a complete file. The report prints the time per video against DFDC's budget of 8.1 s per video
(about 4000 videos in 9 hours on a P100): mean, max, and the projected total for `expected_videos` videos.
"""

from __future__ import annotations

import logging
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.files import (
    CsvError,
    LockedError,
    OneLineError,
    OutputError,
    atomic_write,
    check_path,
    csv_text,
    hold_lock,
    iter_videos,
    output_kind,
    read_csv_dicts,
    refuse_input_as_output,
)
from data_prep.video import MAX_PIXELS

__all__ = ["SubmissionConfig", "SubmissionReport", "SubmissionError", "BUDGET_S", "KAGGLE_VIDEOS", "list_videos",
           "read_sample_submission", "make_submission"]

log = logging.getLogger(__name__)

BUDGET_S = 8.1  # DFDC: about 4000 test videos in 9 hours
KAGGLE_VIDEOS = 4000
KAGGLE_HOURS = 9.0
COLUMNS = ("filename", "label")


class SubmissionError(OneLineError):
    """A problem the user must fix before a submission can be written (e.g. nothing to list the rows from)."""


@dataclass
class SubmissionConfig:
    """Settings of a submission run.

    Attributes:
        prior: p(fake) written for a video without a score (no face, unreadable, failed, missing, out of time).
        clip: every label written is clipped to [lo, hi].
        device: ``auto`` (GPU when present), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: windows of `seq_len` crops per forward pass; None: one on a CPU, eight on a GPU.
        workers: extraction processes, each taking whole videos (0: this process, decoding on a thread overlapped
            with detection; on a GPU the workers decode and crop while this process detects for all of them).
        stride: keep every `stride`-th frame; None takes the checkpoint's (what it was trained with).
        precision: the detector's arithmetic (`deepfake.inference.PredictConfig`): ``auto`` (bfloat16 where the
            hardware has it, float16 on older GPUs such as Kaggle's P100, else float32), ``bf16``, ``fp16``,
            ``fp32``.
        calibrated: apply the calibration stored in the weights (`deepfake.calibration`), before the clip;
            False writes the raw scores.
        time_limit_s: stop scoring after this many seconds and give the remaining videos the prior (None: no
            limit). Leave room for the kernel's start and the model load.
        flush_every_s: rewrite the (complete) file with the scores so far this often.
        expected_videos: the number of videos the timing projects to (Kaggle's hidden test set: about 4000).
        progress: a progress bar over videos on stderr.
        max_pixels: videos with larger frames are refused before decoding (their rows get the prior).
    """

    prior: float = 0.5
    clip: tuple[float, float] = (0.01, 0.99)
    device: str = "auto"
    batch_size: int | None = None
    workers: int = 0
    stride: int | None = None
    precision: str = "auto"
    calibrated: bool = True
    runtime: str = "auto"
    time_limit_s: float | None = None
    flush_every_s: float = 60.0
    expected_videos: int = KAGGLE_VIDEOS
    progress: bool = True
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if not (isinstance(self.prior, (int, float)) and 0.0 <= self.prior <= 1.0):
            raise ValueError(f"prior must be a probability in [0, 1] (e.g. 0.5), got {self.prior!r}")
        try:
            lo, hi = (float(v) for v in self.clip)
        except (TypeError, ValueError):
            raise ValueError(f"clip must be two probabilities (lo, hi), e.g. (0.01, 0.99); got {self.clip!r}") from None
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"clip must satisfy 0 <= lo <= hi <= 1 (e.g. 0.01 0.99), got {lo} {hi}")
        self.clip = (lo, hi)
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (isinstance(self.workers, int) and self.workers >= 0):
            raise ValueError(f"workers must be an integer >= 0, got {self.workers!r}")
        if self.stride is not None and not (isinstance(self.stride, int) and self.stride >= 1):
            raise ValueError(f"stride must be an integer >= 1 or None, got {self.stride!r}")
        from deepfake.inference import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0 seconds or None, got {self.time_limit_s}")
        if not self.flush_every_s > 0:
            raise ValueError(f"flush_every_s must be > 0 seconds, got {self.flush_every_s}")
        if not (isinstance(self.max_pixels, int) and self.max_pixels >= 1):
            raise ValueError(f"max_pixels must be an integer >= 1, got {self.max_pixels!r}")
        if not (isinstance(self.expected_videos, int) and self.expected_videos >= 1):
            raise ValueError(f"expected_videos must be an integer >= 1, got {self.expected_videos!r}")


@dataclass
class _Row:
    filename: str
    path: Path | None  # None: a sample row without a file
    label: float = math.nan
    status: str = "pending"  # ok, no_face, error, missing, skipped (time limit), prior (model not loaded)
    reason: str = ""
    seconds: float | None = None


@dataclass
class SubmissionReport:
    """What `make_submission` wrote and how long it took.

    Attributes:
        out_csv: the submission file.
        rows: one dict per row: filename, label (as written), status (``ok``, ``no_face``, ``error``,
            ``missing``, ``skipped``, ``prior``), reason, seconds (time on this video; None when not scored).
        model_loaded: False when the weights could not be loaded (every row is the prior).
        model_error: why the model could not be loaded.
        weights: the weights file used.
        device: where the model ran.
        load_seconds: time to load the model.
        elapsed_seconds: time from start to the final write.
        notes: warnings worth reading (extra videos not in the sample, unreadable sample, ...).
        config: the settings.
    """

    out_csv: Path
    rows: list[dict]
    model_loaded: bool
    model_error: str | None
    weights: str | None
    device: str | None
    load_seconds: float
    elapsed_seconds: float
    notes: list[str] = field(default_factory=list)
    config: SubmissionConfig = field(default_factory=SubmissionConfig)

    def count(self, status: str) -> int:
        """Rows with this status."""
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def seconds(self) -> list[float]:
        """Time spent per scored video (every video the model looked at, whatever its status)."""
        return [r["seconds"] for r in self.rows if r["seconds"] is not None]

    def timing(self) -> dict:
        """Mean/max seconds per video, the projected total for `expected_videos` and the budget check."""
        s = self.seconds
        mean = sum(s) / len(s) if s else None
        n = self.config.expected_videos
        return {"videos_timed": len(s), "mean_s": mean, "max_s": max(s) if s else None,
                "total_s": sum(s), "budget_s": BUDGET_S, "within_budget": None if mean is None else mean <= BUDGET_S,
                "expected_videos": n, "projected_s": None if mean is None else mean * n + self.load_seconds,
                "budget_total_s": BUDGET_S * n}

    def summary(self) -> str:
        """A few lines for a log or a notebook: rows by status, then the timing against the 8.1-s budget."""
        lines = []
        if not self.model_loaded:
            lines.append(f"!!! MODEL NOT LOADED ({self.model_error}): every row is the prior "
                         f"{self.config.prior:g} !!!")
        counts = {k: self.count(k) for k in ("ok", "no_face", "error", "missing", "skipped", "prior")}
        lo, hi = self.config.clip
        unscored = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if k != "ok" and v)
        lines.append(f"{self.out_csv}: {len(self.rows)} rows; {counts['ok']} scored"
                     + (f", {unscored} (those at the prior {self.config.prior:g})" if unscored else "")
                     + f"; labels clipped to [{lo:g}, {hi:g}]")
        t = self.timing()
        if t["mean_s"] is None:
            lines.append("time per video: no video was scored")
        else:
            verdict = "within" if t["within_budget"] else "OVER"
            lines.append(f"time per video on {self.device}: mean {t['mean_s']:.2f} s, max {t['max_s']:.2f} s over "
                         f"{t['videos_timed']} videos ({verdict} the {BUDGET_S:g}-s budget); model load "
                         f"{self.load_seconds:.1f} s")
            lines.append(f"projected for {t['expected_videos']} videos: {_hours(t['projected_s'])} "
                         f"(budget {_hours(t['budget_total_s'])})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


# ------------------------------------------------------------------------------------------------- the rows


def list_videos(test_dir: str | os.PathLike) -> dict[str, Path]:
    """Video files under `test_dir` (recursively, hidden entries skipped), by name relative to it, sorted.

    Raises:
        SubmissionError: `test_dir` is not a folder.
    """
    try:
        root = check_path(test_dir, "test folder")
    except OutputError as err:
        raise SubmissionError(str(err)) from None
    if not root.is_dir():
        raise SubmissionError(f"test folder {root} does not exist or is not a folder")
    return dict(sorted((path.relative_to(root).as_posix(), path) for path in iter_videos(root)))


def read_sample_submission(path: str | os.PathLike) -> list[str]:
    """The `filename` column of a sample submission, in order, without duplicates.

    Raises:
        SubmissionError: missing file, no `filename` column, or no rows.
    """
    try:
        path = check_path(path, "sample submission")
        names = [row["filename"] for row in read_csv_dicts(path, need=["filename"])]
    except (CsvError, OutputError) as err:
        raise SubmissionError(str(err)) from None
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise SubmissionError(f"{path}: no filenames listed")
    return names


def _repeated_names(path: str | os.PathLike, names: list[str]) -> str:
    """A note on the names a sample submission lists more than once (Kaggle scores one row per video), or ""."""
    listed = [row.get("filename", "") for row in read_csv_dicts(path)]
    extra = len([n for n in listed if n]) - len(names)
    return f"{path} lists {extra} filename(s) more than once" if extra else ""


def _plan_rows(test_dir: str | os.PathLike, sample_submission: str | os.PathLike | None,
               warn: Callable[[str], None]) -> tuple[list[_Row], list[str]]:
    """The rows to write and notes: the sample's names matched to files, else the videos on disk."""
    notes: list[str] = []
    # A mistyped folder is a mistake to report, not a file of priors that scores like a real submission.
    on_disk = list_videos(test_dir)
    names: list[str] | None = None
    if sample_submission is not None:
        try:
            names = read_sample_submission(sample_submission)
            repeated = _repeated_names(sample_submission, names)
            if repeated:
                warn(f"{repeated}; each gets one row")
                notes.append(repeated)
        except SubmissionError as err:
            if not on_disk:
                raise SubmissionError(f"{err}; and no video in {test_dir} to list the rows from instead") from None
            warn(f"{err}; listing the rows from the videos in {test_dir} instead")
            notes.append(f"sample submission unusable ({err}); rows are the videos on disk")
    if names is None:
        if not on_disk:
            raise SubmissionError(f"no video files in {test_dir} (extensions .mp4, .avi, .mov, ...) and no sample "
                                  "submission to list the rows from")
        return [_Row(name, path) for name, path in on_disk.items()], notes
    by_base: dict[str, list[Path]] = {}
    for rel, path in on_disk.items():
        by_base.setdefault(rel.rsplit("/", 1)[-1], []).append(path)
    rows, used = [], set()
    for name in names:
        key = name.replace("\\", "/")
        while key.startswith("./"):
            key = key[2:]
        path = on_disk.get(key)
        if path is None and len(by_base.get(key.rsplit("/", 1)[-1], [])) == 1:
            path = by_base[key.rsplit("/", 1)[-1]][0]
        rows.append(_Row(name, path))
        if path is not None:
            used.add(path)
    missing = sum(1 for r in rows if r.path is None)
    if missing:
        warn(f"{missing} of {len(rows)} videos of the sample submission are not in {test_dir}: they get the prior")
        notes.append(f"{missing} sample rows without a video file (prior)")
    extra = len(on_disk) - len(used)
    if extra:
        notes.append(f"{extra} video(s) in {test_dir} not in the sample submission were not scored")
    return rows, notes


# ------------------------------------------------------------------------------------------------- writing


def _label(row: _Row, config: SubmissionConfig) -> float:
    lo, hi = config.clip
    p = row.label if row.status == "ok" and math.isfinite(row.label) else config.prior
    return min(max(float(p), lo), hi)


def _write(out_csv: Path, rows: Sequence[_Row], config: SubmissionConfig) -> None:
    """All rows (unscored ones at the prior), through a temporary file and a rename."""
    atomic_write(out_csv, csv_text([[row.filename, f"{_label(row, config):.6f}"] for row in rows], COLUMNS))


def _warn(message: str) -> None:
    log.warning(message)  # `deepfake submit` prints it (cli.common.printed_warnings), a notebook shows it


# ------------------------------------------------------------------------------------------------- scoring


def _score(rows: list[_Row], detector, extractor, config: SubmissionConfig, flush: Callable[[], None],
           start: float) -> None:
    """Fill in the rows' scores in place; a failure costs one video, the time limit the rest."""
    from tqdm import tqdm  # not tqdm.auto: no widget warnings in a Kaggle notebook

    from deepfake.inference import iter_predictions, predict_video

    todo = [r for r in rows if r.path is not None]
    last_flush = time.perf_counter()
    bar = tqdm(total=len(todo), unit="video", desc="submission", disable=not config.progress, file=sys.stderr)

    def take(row: _Row, result: dict, seconds: float) -> None:
        row.seconds = seconds
        row.status = result["status"]
        if row.status == "ok":
            row.label = float(result["p_fake"])
        else:
            row.reason = result.get("error") or ("no face found" if row.status == "no_face" else "")
        bar.update(1)

    def out_of_time() -> bool:
        return config.time_limit_s is not None and time.perf_counter() - start > config.time_limit_s

    done = 0
    try:
        for pred in iter_predictions([r.path for r in todo], detector, extractor, names=[r.filename for r in todo]):
            take(todo[done], pred.result, pred.seconds)
            done += 1
            if time.perf_counter() - last_flush > config.flush_every_s:
                flush()
                last_flush = time.perf_counter()
            if out_of_time():
                break
    except Exception as err:  # noqa: BLE001 - the batch path broke; finish video by video rather than stop
        _warn(f"batch prediction failed at video {done + 1} ({type(err).__name__}: {err}); going on one by one")
        for row in todo[done:]:
            if out_of_time():
                break
            t0 = time.perf_counter()
            try:
                result = predict_video(row.path, detector, extractor)
            except Exception as err2:  # noqa: BLE001 - one video's failure is that video's reason
                result = {"status": "error", "p_fake": None, "error": f"{type(err2).__name__}: {err2}"}
            take(row, result, time.perf_counter() - t0)
            done += 1
    finally:
        bar.close()
    left = [r for r in todo if r.status == "pending"]
    for row in left:
        row.status, row.reason = "skipped", f"time limit of {config.time_limit_s:g} s reached"
    if left:
        _warn(f"time limit of {config.time_limit_s:g} s reached: {len(left)} video(s) not scored get the prior")


def make_submission(test_dir: str | os.PathLike, weights: str | os.PathLike | None, out_csv: str | os.PathLike,
                    prior: float = 0.5, clip: tuple[float, float] = (0.01, 0.99), device: str = "auto",
                    sample_submission: str | os.PathLike | None = None, config: SubmissionConfig | None = None,
                    **settings) -> SubmissionReport:
    """Score every test video and write a complete `filename,label` submission (see the module docstring).

    Args:
        test_dir: the folder of test videos (Kaggle: `/kaggle/input/deepfake-detection-challenge/test_videos`).
        weights: detector weights (`detector.pt` or a `deepfake fit` .ckpt); None: the default place
            (`deepfake.weights`).
        out_csv: the submission file to write.
        prior: p(fake) of a video without a score.
        clip: labels are clipped to [lo, hi].
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        sample_submission: the competition's `sample_submission.csv`; its `filename` column is the row list.
        config: all settings at once (overrides `prior`, `clip`, `device` and `settings`).
        **settings: other `SubmissionConfig` fields (batch_size, workers, stride, precision, time_limit_s,
            flush_every_s, expected_videos, progress).

    Returns:
        The report (`report.summary()` for the lines to print; they are printed too).

    Raises:
        SubmissionError: there is no way to know the rows (no test videos and no readable sample submission), or
            `out_csv` can't be written as asked: empty, a folder, one of the inputs (a test video, the sample
            submission), or being written by another run (the message names its PID).
        ValueError: bad settings.
    """
    start = time.perf_counter()
    config = config or SubmissionConfig(prior=prior, clip=clip, device=device, **settings)
    try:
        out_csv = check_path(out_csv, "output")
        stream = output_kind(out_csv) == "stream"  # /dev/stdout: written once, at the end, never renamed over
        rows, notes = _plan_rows(test_dir, sample_submission, _warn)
        refuse_input_as_output(out_csv, [r.path for r in rows if r.path is not None]
                               + [p for p in (sample_submission, weights) if p is not None], "--out")
        if not stream:
            out_csv.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.nullcontext() if stream else hold_lock(out_csv.with_name(f".{out_csv.name}.lock"),
                                                               os.fspath(out_csv)):
            return _make(rows, notes, weights, out_csv, stream, config, start)
    except (OutputError, LockedError) as err:
        raise SubmissionError(str(err)) from None


def _make(rows: list[_Row], notes: list[str], weights: str | os.PathLike | None, out_csv: Path, stream: bool,
          config: SubmissionConfig, start: float) -> SubmissionReport:
    """`make_submission` once the rows are known and the output is checked and locked."""
    for row in rows:
        if row.path is None:
            row.status, row.reason = "missing", "not in the test folder"
    write = (lambda: None) if stream else (lambda: _write(out_csv, rows, config))  # interim writes: files only
    write()  # a complete prior-only file before anything can go wrong

    detector = extractor = None
    model_error = path = None
    t0 = time.perf_counter()
    try:
        from deepfake.inference import PredictConfig, load_predictor

        pconfig = PredictConfig(batch_size=config.batch_size, device=config.device, stride=config.stride,
                                workers=config.workers, precision=config.precision, calibrated=config.calibrated,
                                max_pixels=config.max_pixels, runtime=config.runtime)
        detector, extractor, path = load_predictor(weights, pconfig)
        if detector.runtime_note:
            notes.append(detector.runtime_note)
        if detector.calibration is not None:
            notes.append(f"scores calibrated (temperature {detector.calibration[0]:.3f}, bias "
                         f"{detector.calibration[1]:+.3f}) before the clip")
    except Exception as err:  # noqa: BLE001 - any failure here still leaves a complete, prior-only submission
        model_error = " ".join(str(err).split()) or type(err).__name__
        bar = "!" * 100
        _warn(f"\n{bar}\nTHE MODEL COULD NOT BE LOADED: {model_error}\nWriting a PRIOR-ONLY submission: every one of "
              f"the {len(rows)} rows is {config.prior:g} (log loss about 0.69). Fix the weights and run again.\n{bar}")
    load_seconds = time.perf_counter() - t0

    if detector is None:
        for row in rows:
            if row.status == "pending":
                row.status, row.reason = "prior", "model not loaded"
    else:
        try:
            _score(rows, detector, extractor, config, write, start)
        except KeyboardInterrupt:
            write()
            _warn(f"interrupted: {out_csv} holds the scores so far and the prior for the rest")
            raise
    _write(out_csv, rows, config)
    report = SubmissionReport(
        out_csv=out_csv,
        rows=[{"filename": r.filename, "label": _label(r, config), "status": r.status, "reason": r.reason,
               "seconds": r.seconds} for r in rows],
        model_loaded=detector is not None, model_error=model_error,
        weights=os.fspath(path) if path is not None else (os.fspath(weights) if weights is not None else None),
        device=str(detector.device) if detector is not None else None, load_seconds=load_seconds,
        elapsed_seconds=time.perf_counter() - start, notes=notes, config=config)
    log.info("%s", report.summary())
    return report
