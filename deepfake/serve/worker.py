"""A `deepfake serve` worker process: loads the detector once, then scores the videos the pool hands it.

Everything a job produces is made by the library functions `deepfake predict` uses: the result is
`deepfake.inference.iter_predictions`'s (predict's JSON object), the plot `deepfake.plots.plot_video`'s (what
`predict --plot` draws) and the strips `deepfake.explain.write_explanation`'s (what `predict --explain` writes).
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

from deepfake.inference import PredictConfig

__all__ = ["worker_main", "run_job", "run_job_safely", "one_line", "load_serving_predictor"]

PROGRESS_EVERY_S = 0.25  # a job's progress is reported at most this often


def one_line(err: BaseException) -> str:
    """An exception as one line (its message, or its type's name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def load_serving_predictor(weights, config: PredictConfig, sha256: str | None = None):
    """`load_predictor` as every server worker (process or Ray actor) loads it: one video at a time (decoding on a
    thread), and under `--runtime auto` PyTorch kept, since jobs may ask for explanations; `--runtime onnx` is faster
    and answers such jobs without explanations (a note), as with an exported model (docs/speed.md).

    Returns:
        (the config used, (detector, extractor, weights path)).
    """
    from deepfake.inference import load_predictor

    config = PredictConfig(**{**config.__dict__, "workers": 0})
    return config, load_predictor(weights, config, sha256,
                                  needs_torch="explanations" if config.runtime == "auto" else None)


def worker_main(index: int, weights: str, config: PredictConfig, sha256: str | None, threads: int, inbox,
                events) -> None:
    """The worker's loop: ("ready", index, info) once loaded (or ("load_failed", index, reason)), then per job
    ("progress", id, stage, p)... and ("finished", index, id, payload); a None in `inbox` ends it."""
    # Ctrl+C is the server's, which stops the workers in order (a terminal sends SIGINT to the whole group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    from deepfake.weights import WeightsError, resolve_weights

    try:  # a file gone since the server started fails here, before the seconds torch takes to import
        resolve_weights(weights, progress=False)
    except WeightsError as err:
        events.put(("load_failed", index, one_line(err)))
        return
    import torch

    torch.set_num_threads(max(1, int(threads)))
    from deepfake.contract import ExtractionWarning

    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. a --stride unlike the training crops'
            warnings.simplefilter("always", ExtractionWarning)
            config, (detector, extractor, path) = load_serving_predictor(weights, config, sha256)
    except Exception as err:  # noqa: BLE001 - WeightsError, ValueError (bad device), anything else: one line
        events.put(("load_failed", index, one_line(err)))
        return
    events.put(("ready", index, {"device": str(detector.device), "precision": detector.precision,
                                 "calibrated": detector.calibration is not None, "weights": Path(path).name,
                                 "threads": torch.get_num_threads(), "pid": os.getpid(),
                                 "warnings": [str(w.message) for w in caught if w.category is ExtractionWarning]}))
    try:
        while (task := inbox.get()) is not None:
            payload = run_job_safely(task, detector, extractor, config.threshold, events)
            events.put(("finished", index, task["id"], payload))
    finally:
        extractor.close()


def _exit_with_parent() -> None:
    """End this worker when the server process ends, however it ends (SIGKILL included): the job pipes stay open
    in the worker itself, so it would otherwise wait for work forever."""
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's sentinel closes
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-server", daemon=True).start()


def run_job_safely(task: dict, detector, extractor, threshold: float, events) -> dict:
    """`run_job`, with an exception turned into the job's error result (a job's failure never ends a worker)."""
    try:
        return run_job(task, detector, extractor, threshold, events)
    except Exception as err:  # noqa: BLE001 - anything a video can make the decoder or the model raise
        from deepfake.scoring import error_result

        reason = f"scoring failed: {type(err).__name__}: {one_line(err)}"
        return {"result": error_result(task["name"], reason), "error": reason}


def run_job(task: dict, detector, extractor, threshold: float, events) -> dict:
    """Score one video and write its plot / explanations; returns the payload of the "finished" event.

    Args:
        task: ``{"id", "video", "name", "folder", "explain", "plot"}`` from the pool.
        detector, extractor: from `deepfake.inference.load_predictor`.
        threshold: verdict threshold.
        events: where progress goes.
    """
    from deepfake.inference import iter_predictions

    job_id, folder = task["id"], Path(task["folder"])
    last = [0.0]

    def progress(_name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or done >= total:
            last[0] = now
            reading = done < total
            events.put(("progress", job_id, "reading" if reading else "scoring",
                        0.85 * done / max(total, 1) if reading else 0.9))

    pred = next(iter(iter_predictions([task["video"]], detector, extractor, threshold, names=[task["name"]],
                                      progress=progress)))
    from deepfake.artefacts import write_artefacts

    result = pred.result
    made = write_artefacts(result, pred.faces, detector, plot=folder / "plot.png" if task.get("plot", True) else None,
                           explain=folder / "explain" if task.get("explain") else None,
                           margin=extractor.config.margin, threshold=threshold,
                           stage=lambda name: events.put(("progress", job_id, name,
                                                          0.93 if name == "plotting" else 0.96)))
    files = (["plot.png"] if made.plot else []) + [f"explain/{p.name}" for p in made.explanations if p.suffix == ".png"]
    warning = "; ".join([w for w in [pred.warning, *made.notes] if w]) or None
    return {"result": result, "files": files, "warning": warning, "seconds": round(pred.seconds, 3)}
