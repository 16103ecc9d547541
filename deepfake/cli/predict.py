"""`deepfake predict PATH...`: how fake is each video, per video, per face and per frame.

    deepfake predict clip.mp4 videos/ "more/**/*.mov" --weights detector.pt [--format json] [--plot plots/]
                     [--explain explain/ [--explain-video]]

The work is `deepfake.inference` (extraction as in training, then the detector) and the scores follow
`deepfake.scoring`: a track's p(fake) is the mean over windows of `seq_len` crops of the last step's p(fake), a
video's the most fake of its faces; `verdict` is ``fake`` when p(fake) >= `--threshold` (0.5 by default), else
``real``; ``no face`` when no face was found (status ``no_face``, p_fake null: no made-up probability); ``error``
when the file can't be read (status ``error``, with a one-line reason in `error`). `--explain` shows where in each
face crop the score came from (`deepfake.explain`: Grad-CAM through the LSTM); a failed explanation or plot is a
warning, never a lost prediction (the exit status is then 1).

Output (`--format`): ``table`` (default) with video, verdict, p(fake), faces, seconds (time taken on this video);
``json``: a list with one object per video, exactly
``{"video", "status", "p_fake", "verdict", "faces": [{"track", "p_fake", "frames", "steps"}], "error"}``;
``csv``: one row per video with the columns of `deepfake.results.CSV_COLUMNS`. The exit status is 1 when any
file errored or a plot or explanation failed, 2 for a usage error (bad option, missing weights, an output that
can't be written as asked: a folder, one of the inputs, one another run is writing), else 0.

`--output` never destroys a file: a device or pipe (/dev/null, /dev/stdout, a FIFO) is written directly, once; an
output that is one of the inputs (a video, the weights) is refused before any work; one run at a time writes it
(`.NAME.lock` beside it, naming the PID that holds it). See docs/robustness.md.

Weights: `--weights` is a file or an https URL (see `deepfake.weights`); without it, `$DEEPFAKE_WEIGHTS`, then
`~/.cache/deepfake/detector.pt`. Scores are calibrated by the calibration stored in the weights, when they hold one
(`deepfake.calibration`); `--no-calibration` gives the raw scores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from data_prep.files import LockedError, OutputError, atomic_write, hold_lock, output_kind, refuse_input_as_output
from deepfake.cli.common import (
    OneLineParser, UsageError, add_max_pixels, add_model_options, fail, path_arg, library_warnings, printed_warnings,
)
from data_prep.ray_extract import RayError  # Ray itself is imported only with --ray
from deepfake.inference import PredictConfig, collect_videos, iter_entries, load_predictor
from deepfake.results import FORMATS, ResultLog, write_results

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="deepfake predict",
        description="Score videos: p(fake) per video, per face and per frame. A video's p(fake) is the most fake "
                    "of its faces; a face's is the mean over windows of seq_len crops of the last step's score.",
        epilog="Exit status: 0 all files read, 1 some file could not be read (its row says why) or a plot or "
               "explanation failed, 2 usage error.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", type=path_arg,
                   help="video files, folders (searched recursively) or glob patterns (quote them: 'clips/**/*.mp4')")
    add_model_options(p)
    add_max_pixels(p)
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default), json, csv or jsonl (one JSON object a line); with --output, taken from the "
                        "file's extension when not given")
    p.add_argument("--output", "-o", metavar="FILE", type=path_arg,
                   help="write the results here instead of stdout; each is on disk as soon as it is made (.jsonl "
                        "and .csv are appended to per video, other formats are journaled beside the file)")
    p.add_argument("--resume", action="store_true",
                   help="with --output: skip the videos already in FILE (or its journal) from a killed run")
    p.add_argument("--plot", metavar="DIR", type=path_arg,
                   help="write per video a PNG of p(fake) over time per face, with crops")
    p.add_argument("--explain", metavar="DIR", type=path_arg,
                   help="write per video DIR/<video>/track<k>.png (each face's crops with a Grad-CAM heat map of "
                        "where the fake score came from, and each step's score) and heatmaps.npz (the raw maps)")
    p.add_argument("--explain-video", action="store_true",
                   help="with --explain: also DIR/<video>/explained.mp4, the video with each face's box coloured "
                        "by its current score and the heat overlaid")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="score on Ray (the ray extra): `local` (the default when ADDRESS is left out) starts Ray here "
                        "with --workers CPUs (default: all), HOST:PORT joins a cluster, auto uses $RAY_ADDRESS; one "
                        "actor per CPU slot (or sharing the GPUs); same rows as without --ray (docs/scale.md)")
    return p


def _common_folder(paths: Sequence[str]) -> str | None:
    """The deepest folder holding all `paths` (plot names are taken relative to it), or None."""
    try:
        return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else None
    except ValueError:  # different drives on Windows
        return None


_fail = partial(fail, "deepfake predict")


def main(args: list[str] | None = None) -> int:
    """`deepfake predict PATH... [options]`; returns the exit status (0 ok, 1 some file errored, 2 usage error)."""
    try:
        ns = _parser().parse_args(args)
        config = PredictConfig(threshold=ns.threshold, batch_size=ns.batch_size, device=ns.device,
                               stride=ns.stride, workers=ns.workers, precision=ns.precision, max_pixels=ns.max_pixels,
                               calibrated=not ns.no_calibration, runtime=ns.runtime)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, ValueError) as err:
        return _fail(str(err))
    fmt = ns.format
    if fmt is None:
        suffix = Path(ns.output).suffix.lower().lstrip(".") if ns.output else ""
        fmt = suffix if suffix in ("json", "csv", "jsonl") else "table"
    if ns.resume and not ns.output:
        return _fail("--resume needs --output FILE (the results of the run to go on with)")
    if ns.explain_video and not ns.explain:
        return _fail("--explain-video needs --explain DIR (where the video goes)")
    # Results reach the disk as they are made: JSON Lines and CSV outputs are appended to directly; the others
    # go through a JSON Lines journal beside the output, replaced by the final file at the end. A device or pipe
    # (/dev/null, /dev/stdout, a FIFO) is written directly, once, with no journal, lock or rename.
    journal, lock = None, contextlib.nullcontext()
    entries = collect_videos(ns.paths)
    if ns.output:
        output = Path(ns.output)
        try:
            stream = output_kind(output) == "stream"
            inputs = [p for p, reason in entries if reason is None] + ([ns.weights] if ns.weights else [])
            refuse_input_as_output(output, inputs)
        except OutputError as err:
            return _fail(err)
        if stream and ns.resume:
            return _fail(f"--resume needs a file as --output, and {output} is a device or pipe")
        if not stream:
            journal = output if fmt in ("jsonl", "csv") else output.with_name(f".{output.name}.partial.jsonl")
            if ns.resume and not journal.is_file() and fmt == "json" and output.is_file():
                return _fail(f"{ns.output} is a finished run: nothing to resume")
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                return _fail(f"can't write {ns.output}: {err.strerror or err}", 1)
            lock = hold_lock(output.with_name(f".{output.name}.lock"), os.fspath(output))
    try:
        with lock, library_warnings("deepfake predict"):  # what the library logs, one line each
            return _run(ns, fmt, config, entries, journal)
    except LockedError as err:
        return _fail(err)
    except OSError as err:  # a read-only or full disk (the lock file, the journal): one line, never a traceback
        return _fail(f"{err.filename or ns.output}: {err.strerror or err}", 1)


def _run(ns: argparse.Namespace, fmt: str, config: PredictConfig, entries: list[tuple[str, str | None]],
         journal: Path | None) -> int:
    """Predict once the output is checked and locked: load, score, write; returns the exit status."""
    from deepfake.weights import WeightsError

    try:
        with printed_warnings("deepfake predict"):  # e.g. a --stride unlike the detector's training crops'
            detector, extractor, weights = load_predictor(ns.weights, config, ns.sha256, progress=not ns.no_progress,
                                                          needs_torch="--explain" if ns.explain else None)
    except (WeightsError, ValueError) as err:
        return _fail(str(err))
    if detector.runtime_note:
        print(f"deepfake predict: {detector.runtime_note}", file=sys.stderr)
    if ns.explain and detector.exported:
        return _fail(f"--explain needs the PyTorch weights (detector.pt): {weights} is an exported model, which has no "
                     f"gradients or layers to explain with")

    from tqdm import tqdm

    try:
        log = ResultLog(journal, "csv" if fmt == "csv" else "jsonl", resume=ns.resume) if journal else None
    except OSError as err:
        return _fail(f"can't write {journal}: {err.strerror or err}", 1)
    except ValueError as err:  # --resume on a file that is not a results log: left untouched
        return _fail(str(err))
    previous = list(log.done.values()) if log else []  # results of the run being resumed
    if previous:
        print(f"deepfake predict: resuming: {len(previous)} video(s) already in {journal}", file=sys.stderr)
    entries = [e for e in entries if e[0] not in log.done] if log else entries
    results: list[dict] = []
    seconds: list[float | None] = []
    plot_dir = Path(ns.plot) if ns.plot else None
    plot_names: set[str] = set()
    plot_root = _common_folder([p for p, reason in entries if reason is None])
    plot_failures = 0
    explain_dir = Path(ns.explain) if ns.explain else None
    explain_names: set[str] = set()
    explain_failures = 0
    start = time.perf_counter()
    bar = tqdm(total=len(entries), unit="video", disable=ns.no_progress, file=sys.stderr, dynamic_ncols=True)

    def show(name: str, done: int, total: int) -> None:  # how far into the current video: long ones take minutes
        step = "scoring" if done >= total else f"reading {done / max(total, 1):.0%}"
        bar.set_postfix_str(f"{Path(name).name}: {step}")

    stack = contextlib.ExitStack()  # the Ray session, with --ray
    try:
        if ns.ray:
            from data_prep.ray_extract import ray_session
            from deepfake.raybatch import iter_entries_on_ray

            session = stack.enter_context(ray_session(ns.ray, num_cpus=ns.workers or None))
            preds = iter_entries_on_ray(entries, weights, config, extractor.config, session,
                                        keep_crops=bool(plot_dir or explain_dir))
        else:
            preds = iter_entries(entries, detector, extractor, config.threshold,
                                 progress=None if ns.no_progress else show)
        for pred in preds:
            results.append(pred.result)
            seconds.append(pred.seconds)
            if log is not None:
                try:
                    log.append(pred.result, pred.seconds)
                except OSError as err:  # a full disk: stop here, with what is on disk kept for --resume
                    bar.close()
                    kept = "; the results before it are kept: free space, then --resume" if (
                        log.done or len(results) > 1) else ""
                    if not kept and journal != Path(ns.output):
                        journal.unlink(missing_ok=True)  # nothing in it: no temporary file left behind
                    return _fail(f"can't write {journal}: {err.strerror or err}{kept}", 1)
            if pred.warning:
                bar.write(f"deepfake predict: warning: {pred.warning}", file=sys.stderr)
            if plot_dir is not None or explain_dir is not None:
                from deepfake.artefacts import write_artefacts
                from deepfake.plots import plot_name

                video = pred.result["video"]
                wants_plot = plot_dir is not None and pred.result["status"] != "error"
                wants_explain = explain_dir is not None and pred.result["status"] == "ok"
                made = write_artefacts(
                    pred.result, pred.faces, detector,
                    plot=plot_dir / plot_name(video, plot_names, root=plot_root) if wants_plot else None,
                    explain=(explain_dir / plot_name(video, explain_names, root=plot_root).removesuffix(".png")
                             if wants_explain else None),
                    explain_video=ns.explain_video, margin=extractor.config.margin, threshold=config.threshold)
                for note in made.notes:  # "no plot: ..." / "no explanation: ...": the prediction stands
                    plot_failures += note.startswith("no plot")
                    explain_failures += note.startswith("no explanation")
                    what, _, why = note.partition(": ")
                    bar.write(f"deepfake predict: warning: {what} for {video}: {why}", file=sys.stderr)
            bar.set_postfix_str(f"{Path(pred.result['video']).name}: {pred.result['verdict']}", refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        print("deepfake predict: interrupted" + (f"; the results so far are in {journal}, --resume goes on"
                                                 if journal else ""), file=sys.stderr)
        return 130
    except RayError as err:  # with --ray: the cluster can't be reached or its workers can't start (one line)
        bar.close()
        return _fail(str(err), 1 if results else 2)
    finally:
        stack.close()
        if log is not None:
            log.close()
    bar.close()
    elapsed = time.perf_counter() - start

    if not ns.output:
        sys.stdout.write(write_results(results, fmt, seconds))
        sys.stdout.flush()
    elif journal != Path(ns.output):
        try:
            atomic_write(ns.output, write_results([*previous, *results], fmt, [None] * len(previous) + seconds))
        except OSError as err:
            kept = f"; the results are kept in {journal}: free space, then --resume" if journal else ""
            return _fail(f"can't write {ns.output}: {err.strerror or err}{kept}", 1)
        if journal is not None:
            journal.unlink(missing_ok=True)
    results = [*previous, *results]  # a resumed csv's rows: the fields counted below are there too
    counts = {k: sum(1 for r in results if r["verdict"] == k) for k in ("fake", "real", "no face", "error")}
    summary = (f"{len(results)} video(s): {counts['fake']} fake, {counts['real']} real, {counts['no face']} no face, "
               f"{counts['error']} error(s); threshold {config.threshold:g}; {elapsed:.1f} s on {detector.device}")
    if ns.output:
        summary += f"; results in {ns.output}"
    if plot_dir is not None:
        summary += f"; plots in {plot_dir}" + (f" ({plot_failures} failed)" if plot_failures else "")
    if explain_dir is not None:
        summary += f"; explanations in {explain_dir}" + (f" ({explain_failures} failed)" if explain_failures else "")
    print(f"deepfake predict: {summary}", file=sys.stderr)
    return 1 if counts["error"] or plot_failures or explain_failures else 0


if __name__ == "__main__":
    sys.exit(main())
