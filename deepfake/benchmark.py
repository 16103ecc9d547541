"""The field's cross-dataset benchmark: one detector, trained on one set, scored on several test sets, one table
(`deepfake benchmark CONFIG`).

    report = run_benchmark(load_config("configs/benchmark_ffpp_sbi_b1_lstm.yaml"))

CONFIG (YAML; relative paths are relative to the working directory)::

    name: ffpp_sbi_b1_lstm
    train: FF++ c23 real videos only (train split); configs/ffpp_sbi_b1_lstm.yaml   # what the weights learnt from
    weights: runs/ffpp_sbi_b1_lstm/detector.pt
    out: benchmark/ffpp_sbi_b1_lstm
    bootstrap: 1000            # resamples of each 95% interval (0: none)
    seed: 0
    threshold: 0.5
    no_face_prior: null        # p(fake) of a video without a face; null leaves it out (counted as excluded)
    test_sets:
      - {name: CDF-v2, source: crops/celebdf_v2, split: test}     # an extracted index (folder or index.csv) ...
      - {name: DFD, source: data/FaceForensics++, layout: dfd, compression: c23}   # ... or the videos themselves
      - {name: FF++, source: crops/ffpp_c23, split: test, published: FF++}

Each test set is a source `deepfake evaluate` takes (`deepfake.evaluation.load_source`: an index.csv, or a folder
of videos in a `data_prep.layouts` layout, with `layout`, `compression` and `splits`), optionally one `split`;
`published` names the set in the published figures (`deepfake.benchmark_report.PUBLISHED_SETS`; default: its
name when that is one). Scoring reuses evaluation's functions (`score_index`, `score_videos`, `summarize`).

OUT holds, per test set, ``sets/<name>/videos.csv`` (video, label, dataset, method, status, p_fake, error),
``frames.csv`` (video, frame, label, method, p_fake) and ``done.json`` (what was scored, with which weights, and
the videos without a face or unreadable), written in that order, atomically: a set whose ``done.json`` matches
the weights' SHA-256 and the set's settings is **not scored again** (a killed run resumes at the set it was on);
then ``benchmark.md``, ``benchmark.csv``, ``benchmark.json`` and ``benchmark.png`` (`deepfake.benchmark_report`),
recomputed from the stored scores every run.
"""

from __future__ import annotations

import logging
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from data_prep.files import CsvError, OneLineError, atomic_write, csv_text, read_csv_dicts
from deepfake.benchmark_report import BENCH_COLUMNS, PUBLISHED_SETS, markdown_report, set_rows, write_plot
from deepfake.evaluation import EvaluationError, json_text, load_source, score_index, score_videos, summarize
from deepfake.inference import PredictConfig, load_predictor
from deepfake.scoring import RULE

__all__ = ["BenchmarkError", "TestSet", "BenchmarkConfig", "load_config", "score_set", "run_benchmark",
           "VIDEO_COLUMNS", "FRAME_COLUMNS"]

log = logging.getLogger(__name__)

VIDEO_COLUMNS = ["video", "label", "dataset", "method", "status", "p_fake", "error"]
FRAME_COLUMNS = ["video", "frame", "label", "method", "p_fake"]


class BenchmarkError(OneLineError):
    """A config or test set that can't be benchmarked, or outputs that can't be written; one line.

    Attributes:
        code: the exit status `deepfake benchmark` gives it (2: a bad config, 1: nothing scored or a write failed).
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class TestSet:
    """One test set of a benchmark (module docstring)."""

    name: str
    source: str
    split: str | None = None
    layout: str = "auto"
    compression: str | None = None
    splits: str | None = None
    published: str | None = None

    def __post_init__(self) -> None:
        from data_prep.layouts import LAYOUTS

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", str(self.name)):
            raise BenchmarkError(f"test set name {self.name!r}: use letters, digits and . _ + - (it names a folder)")
        if self.split not in (None, "train", "val", "test"):
            raise BenchmarkError(f"test set {self.name}: split must be train, val, test or null, got {self.split!r}")
        if self.layout not in LAYOUTS:
            raise BenchmarkError(f"test set {self.name}: layout must be one of {', '.join(LAYOUTS)}")
        if self.published is None and self.name in PUBLISHED_SETS:
            self.published = self.name
        if self.published is not None and self.published not in PUBLISHED_SETS:
            raise BenchmarkError(f"test set {self.name}: published must be one of {', '.join(PUBLISHED_SETS)} "
                                 f"(the set's name in the published figures), got {self.published!r}")


@dataclass
class BenchmarkConfig:
    """A benchmark: the detector, what it was trained on, the test sets, where the table goes (module docstring)."""

    name: str
    test_sets: list[TestSet]
    out: str = "benchmark"
    weights: str | None = None
    train: str = ""
    bootstrap: int = 1000
    seed: int = 0
    threshold: float = 0.5
    no_face_prior: float | None = None
    source_file: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.test_sets:
            raise BenchmarkError(f"{self.source_file or 'config'}: no test_sets")
        names = [t.name for t in self.test_sets]
        if len(set(names)) != len(names):
            raise BenchmarkError(f"{self.source_file or 'config'}: test set names repeat ({', '.join(names)})")
        if not (isinstance(self.bootstrap, int) and self.bootstrap >= 0):
            raise BenchmarkError(f"bootstrap must be an integer >= 0, got {self.bootstrap!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise BenchmarkError(f"threshold must be a probability in [0, 1], got {self.threshold}")
        if self.no_face_prior is not None and not 0.0 <= float(self.no_face_prior) <= 1.0:
            raise BenchmarkError(f"no_face_prior must be a probability in [0, 1] or null, got {self.no_face_prior}")


def load_config(path: str | os.PathLike) -> BenchmarkConfig:
    """Read a benchmark CONFIG (YAML, module docstring); BenchmarkError naming the file and what is wrong."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise BenchmarkError(f"{path}: can't read ({getattr(err, 'strerror', None) or err})") from None
    except yaml.YAMLError as err:
        raise BenchmarkError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("test_sets"), list):
        raise BenchmarkError(f"{path}: expected a mapping with name, weights, out and a test_sets list")
    known = set(BenchmarkConfig.__dataclass_fields__) - {"source_file"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BenchmarkError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    sets = []
    for i, entry in enumerate(raw["test_sets"], start=1):
        if not isinstance(entry, dict) or not {"name", "source"} <= set(entry):
            raise BenchmarkError(f"{path}: test set {i} needs name and source")
        extra = sorted(set(entry) - set(TestSet.__dataclass_fields__))
        if extra:
            raise BenchmarkError(f"{path}: test set {entry['name']}: unknown key(s) {', '.join(extra)}")
        sets.append(TestSet(**{k: (str(v) if k in ("name", "source", "splits") and v is not None else v)
                               for k, v in entry.items()}))
    return BenchmarkConfig(**{**raw, "test_sets": sets, "name": str(raw.get("name") or path.stem),
                              "source_file": str(path)})


# ------------------------------------------------------------------------------------------------ one test set


def _identity(ts: TestSet, sha256: str, config: BenchmarkConfig, predict_config: PredictConfig) -> dict:
    """What decides a set's scores: a stored set with the same identity is not scored again."""
    return {"weights_sha256": sha256, "source": os.path.abspath(ts.source), "split": ts.split, "layout": ts.layout,
            "compression": ts.compression, "splits": ts.splits, "threshold": config.threshold,
            "calibrated": predict_config.calibrated, "stride": predict_config.stride}


def _layout(ts: TestSet):
    from data_prep.layouts import LayoutOptions

    return LayoutOptions(ts.layout, ts.compression, ts.splits) if (ts.compression or ts.splits) else ts.layout


def score_set(ts: TestSet, folder: Path, predictor: tuple, identity: dict, threshold: float = 0.5,
              progress: bool = False) -> dict:
    """Score one test set and store its video and frame scores in `folder` (module docstring).

    Returns:
        The contents of its ``done.json``.

    Raises:
        EvaluationError: the source can't be read or holds nothing to score.
        OSError: the folder can't be written.
    """
    detector, extractor, _ = predictor
    start = time.perf_counter()
    mode, items, notes = load_source(ts.source, _layout(ts), ts.split)
    if mode == "index":
        videos, scored, extra = score_index(items, notes[0], detector, threshold, progress)
        first = items.groupby("video", sort=True).first()
        about = {str(v): (str(r["dataset"]), str(r["method"])) for v, r in first.iterrows()}
    else:
        from data_prep.layouts import find_videos

        videos, extra = items, []
        scored = score_videos(videos, detector, extractor, threshold, progress, desc=ts.name)
        about = {r.video: (r.dataset, r.method) for r in find_videos(ts.source, _layout(ts)).records}
    results = [s.result for s in scored]
    summary = summarize(videos, results, threshold, None, extra)
    video_rows, frame_rows = [], []
    for v, r in zip(videos, results):
        dataset, method = about.get(v.video, ("", ""))
        method = method if v.label == 1 else ""
        video_rows.append([v.video, v.label, dataset, method, r["status"],
                           "" if r["p_fake"] is None else f"{r['p_fake']:.6f}", r["error"] or ""])
        per_frame: dict[int, float] = {}
        for face in r["faces"] if r["status"] == "ok" else []:
            for frame, step in zip(face["frames"], face["steps"]):
                per_frame[int(frame)] = max(per_frame.get(int(frame), 0.0), float(step))
        frame_rows += [[v.video, f, v.label, method, f"{q:.6f}"] for f, q in sorted(per_frame.items())]
    done = {"identity": identity, "mode": mode, "notes": notes, "n_videos": len(videos),
            "n_scored": summary["n_scored"], "no_face": summary["no_face"], "errors": summary["errors"],
            "seconds": round(time.perf_counter() - start, 3)}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "videos.csv", csv_text(video_rows, VIDEO_COLUMNS))
    atomic_write(folder / "frames.csv", csv_text(frame_rows, FRAME_COLUMNS))
    atomic_write(folder / "done.json", json_text(done))  # last: it marks the set scored
    return done


def _stored(folder: Path, identity: dict) -> dict | None:
    """A set's ``done.json`` when it was scored with this identity and its score files are there, else None."""
    try:
        done = json.loads((folder / "done.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(done, dict) and done.get("identity") == identity
    return done if ok and (folder / "videos.csv").is_file() and (folder / "frames.csv").is_file() else None


def _read_scores(folder: Path) -> tuple[list[dict], list[dict]]:
    try:
        videos = read_csv_dicts(folder / "videos.csv", need=VIDEO_COLUMNS)
        frames = read_csv_dicts(folder / "frames.csv", need=FRAME_COLUMNS)
    except CsvError as err:
        raise BenchmarkError(f"{err}; delete {folder} to score the set again", 1) from None
    for v in videos:
        v["p_fake"] = float(v["p_fake"]) if v["p_fake"] else None
    return videos, frames


# ------------------------------------------------------------------------------------------------ the benchmark


def run_benchmark(config: BenchmarkConfig, predict_config: PredictConfig | None = None, rescore: bool = False,
                  progress: bool = False, say: Callable[[str], None] = log.info,
                  warn: Callable[[str], None] = log.warning) -> dict:
    """Score every test set not scored yet, then write the table (module docstring).

    Args:
        config: the benchmark.
        predict_config: the model's settings (device, precision, batch size; stride for video sources).
        rescore: score every set again, even those already stored.
        progress: progress bars on stderr.
        say: where one line per test set goes.
        warn: where warnings go.

    Returns:
        The report written to ``benchmark.json``.

    Raises:
        BenchmarkError: no set could be scored (code 1), outputs not writable (code 1).
        deepfake.weights.WeightsError: the weights can't be found or loaded.
    """
    from deepfake.weights import resolve_weights, sha256_of

    pconfig = predict_config or PredictConfig()
    out = Path(config.out)
    weights = resolve_weights(config.weights, progress=progress)
    sha256 = sha256_of(weights)
    predictor = None
    rows, notes, accounts = [], {}, {}
    for ts in config.test_sets:
        folder = out / "sets" / ts.name
        identity = _identity(ts, sha256, config, pconfig)
        done = None if rescore else _stored(folder, identity)
        if done is not None:
            say(f"{ts.name}: already scored ({done['n_scored']} of {done['n_videos']} videos), not scored again")
        else:
            try:
                predictor = predictor or load_predictor(weights, pconfig)
                done = score_set(ts, folder, predictor, identity, config.threshold, progress)
                say(f"{ts.name}: scored {done['n_scored']} of {done['n_videos']} videos in {done['seconds']:.1f} s "
                    f"(no face {done['no_face']['count']}, unreadable {done['errors']['count']})")
            except EvaluationError as err:
                warn(f"warning: {ts.name}: {err}")
                rows.append({**dict.fromkeys(BENCH_COLUMNS, ""), "set": ts.name, "error": str(err)})
                continue
            except OSError as err:
                raise BenchmarkError(f"can't write to {folder}: {err}", 1) from None
        notes[ts.name] = [n for n in done.get("notes", []) if not str(n).startswith(("layout ", "index "))]
        accounts[ts.name] = {k: done[k] for k in ("n_videos", "n_scored", "no_face", "errors")}
        videos, frames = _read_scores(folder)
        rows += set_rows(ts.name, videos, frames, config.bootstrap, config.seed, config.no_face_prior)
    report = {"name": config.name, "train": config.train, "weights": os.fspath(weights), "weights_sha256": sha256,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "bootstrap": config.bootstrap,
              "seed": config.seed, "threshold": config.threshold, "no_face_prior": config.no_face_prior,
              "score_rule": RULE, "published_keys": {t.name: t.published for t in config.test_sets},
              "test_sets": [asdict(t) for t in config.test_sets], "sets": accounts, "notes": notes, "rows": rows}
    try:
        atomic_write(out / "benchmark.json", json_text(report))
        atomic_write(out / "benchmark.csv", csv_text([{k: _fmt(r.get(k)) for k in BENCH_COLUMNS} for r in rows],
                                                     BENCH_COLUMNS))
        atomic_write(out / "benchmark.md", markdown_report(report))
        write_plot(report, out / "benchmark.png")
    except OSError as err:
        raise BenchmarkError(f"can't write to {out}: {err}", 1) from None
    if not any(r.get("level") for r in rows):
        raise BenchmarkError("no test set could be scored (see benchmark.md for the reasons)", 1)
    return report


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6f}" if isinstance(value, float) else str(value)
