"""`deepfake predict --ray`: videos scored on a Ray cluster, the same predictions as on one machine.

    with ray_session("local", num_cpus=2) as session:
        for pred in iter_entries_on_ray(collect_videos(paths), weights, config, extract_config, session):
            pred.result, pred.seconds            # as `deepfake.inference.iter_entries` gives them, in input order

Each actor of the pool (`data_prep.ray_extract.stream_videos`: one video a task, streamed with backpressure) holds
the face detector and the deepfake detector, loaded once from the weights' bytes (shipped through Ray's object
store, so worker nodes need no copy of the file), and runs for its video exactly what `deepfake predict` runs
without Ray: `deepfake.inference.iter_predictions` on that one video (extraction, scoring, the error result of a
file that can't be read). Only the result, its seconds and, when the caller needs them (`--plot`, `--explain`), the
crops travel back; otherwise the faces come back without crops (the warnings need only their frames).

A video lost with its worker (a crash) is an ``error`` row with that reason. Rows come in input order, as without
Ray; the caller's results log (`deepfake.results.ResultLog`) makes the run resumable the same way.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from data_prep.faces import ExtractConfig
from data_prep.ray_extract import LOST, RaySession, stream_videos
from deepfake.inference import Prediction, PredictConfig
from deepfake.scoring import error_result

__all__ = ["iter_entries_on_ray"]


def _without_crops(faces):
    """The faces with their crops dropped (frames, boxes and counts kept): what the caller needs without plots."""
    if faces is None:
        return None
    tracks = [dataclasses.replace(t, crops=t.crops[:0], jpegs=[] if t.jpegs is not None else None)
              for t in faces.tracks]
    return dataclasses.replace(faces, tracks=tracks)


def _predict_actor(weights_ref, suffix: str, config: PredictConfig, extract_config: ExtractConfig,
                   keep_crops: bool, gpu: bool) -> type:
    """The actor class: one face detector and one deepfake detector, scoring a video a call."""

    class PredictActor:
        def __init__(self) -> None:
            import ray

            from data_prep.extractor import FaceExtractor
            from deepfake.inference import Detector

            device = "cuda" if gpu else "cpu"
            with tempfile.TemporaryDirectory(prefix="deepfake-ray-") as tmp:  # the loaders take a file
                path = Path(tmp) / f"detector{suffix}"
                path.write_bytes(ray.get(weights_ref) if isinstance(weights_ref, ray.ObjectRef) else weights_ref)
                self.detector = Detector.load(path, device=device, batch_size=config.batch_size,
                                              precision=config.precision, calibrated=config.calibrated)
            self.extractor = FaceExtractor(dataclasses.replace(extract_config, device=device))

        def __call__(self, batch: dict) -> dict:
            from deepfake.inference import iter_predictions

            path, name = str(batch["path"][0]), str(batch["name"][0])
            pred = next(iter(iter_predictions([path], self.detector, self.extractor, config.threshold,
                                              names=[name])))
            if not keep_crops:
                pred.faces = _without_crops(pred.faces)
            return {"key": batch["key"], "out": np.array([pickle.dumps(pred)], dtype=object)}

    return PredictActor


def iter_entries_on_ray(entries: Sequence[tuple[str, str | None]], weights: str | os.PathLike, config: PredictConfig,
                        extract_config: ExtractConfig, session: RaySession,
                        keep_crops: bool = False) -> Iterator[Prediction]:
    """`deepfake.inference.iter_entries` on a Ray cluster (module docstring): a `Prediction` per entry, in order.

    Args:
        entries: from `deepfake.inference.collect_videos` (inputs that gave no video carry their reason).
        weights: the detector file (`load_predictor`'s third value): its bytes go to every actor.
        config: the prediction settings (`workers`: actors, 0 or None for one per CPU slot of the cluster; `device`
            ``cpu`` keeps the actors off GPUs).
        extract_config: the extraction settings matching the detector (`load_predictor`'s extractor's).
        session: from `data_prep.ray_extract.ray_session`.
        keep_crops: send the crops back too (for `--plot` and `--explain`).

    Raises:
        data_prep.ray_extract.RayError: the actors could not start (the message says why).
    """
    import ray

    weights = Path(weights)
    weights_ref = ray.put(weights.read_bytes())
    items = [{"key": k, "path": os.path.abspath(path), "name": path}  # absolute: see iter_predictions
             for k, (path, reason) in enumerate(entries) if reason is None]
    results = stream_videos(session, items, partial(_predict_actor, weights_ref, weights.suffix, config,
                                                    extract_config, keep_crops), config.workers or None, config.device)
    pending: dict[int, Prediction] = {}
    for key, (item, reason) in enumerate(entries):
        if reason is not None:
            yield Prediction(error_result(item, reason), 0.0)
            continue
        while key not in pending:
            done, pred = next(results)
            pending[done] = pred if pred is not None else Prediction(error_result(entries[done][0], LOST), 0.0)
        yield pending.pop(key)
