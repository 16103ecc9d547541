"""Face extraction on a Ray cluster (Ray Data): the same per-video jobs as `data_prep.extractor`, spread over nodes.

    with ray_session("local", num_cpus=2) as session:        # or "10.0.0.5:6379", or "auto" ($RAY_ADDRESS)
        with RayFaceExtractor(ExtractConfig(), session) as extractor:
            for path, result in extractor.extract_many(paths, jpeg=True):   # VideoFaces or VideoError, input order
                ...

`RayFaceExtractor` has the interface of `FaceExtractor` that `data_prep.dataset.extract_dataset` drives (`config`,
`device`, `run_jobs`, `extract_many`, `close`), so `deepfake-extract --ray` writes the same files through the same
writer. How the work runs (`stream_videos`, also behind `deepfake predict --ray`):

- The videos are a Ray dataset with one video a block; a pool of actors maps it, each actor holding one detector
  (MTCNN; for prediction also the deepfake model): one actor per CPU slot, or on GPU nodes one per core sharing the
  node's GPUs. An actor decodes, detects, tracks and crops a whole video (`FaceExtractor.extract`, the pipeline of
  `data_prep.pipeline`) and sends back its faces.
- Ray Data's streaming executor bounds what is in flight (its backpressure on the object store), and the results
  reach the caller as each video ends: memory does not grow with the number of videos.
- A video that fails is its result (a `VideoError` with the reason); an actor that dies on a video (a crash in a
  decoder) costs that video only: Ray restarts the actor, the run goes on, and the videos that were queued on the
  dead actor run once more at the end; one that kills its worker again is reported as lost, with that reason.

The videos' paths must be readable on every node (a shared file system), as for SLURM shards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from data_prep.detector import cpu_count
from data_prep.faces import ExtractConfig, VideoFaces
from data_prep.pipeline import ReuseBoxes
from data_prep.video import VideoError

__all__ = ["RayError", "RaySession", "ray_session", "stream_videos", "RayFaceExtractor", "LOST"]

LOST = "its Ray worker died while processing it (the process crashed or was killed); run again to retry it"
_CONNECT_TIMEOUT_S = 10.0  # a TCP check before ray.init, which can wait for minutes on an address that never answers


class RayError(ValueError):
    """Ray is missing, the cluster can't be reached, or its workers can't start; the message is one line."""


@dataclass
class RaySession:
    """A connection to a Ray instance: what `ray_session` gives.

    Attributes:
        address: what was asked (``local``, ``auto`` or an address).
        cpus: CPUs of the cluster.
        gpus: GPUs of the cluster.
        started: whether this process started the instance (then it stops it at the end).
    """

    address: str
    cpus: int
    gpus: int
    started: bool

    def actors(self, workers: int | None, device: str) -> tuple[int, float]:
        """(actors, GPUs per actor) for a pool: one actor per CPU slot (or `workers`); with GPUs (and `device`
        not ``cpu``) the actors share them evenly, so every GPU holds models and every core decodes."""
        n = max(1, workers or self.cpus)
        if self.gpus and device != "cpu":
            n = max(n, self.gpus)
            return n, self.gpus / n
        return n, 0.0


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data's own dependencies (pyarrow) too
    except ImportError as err:
        raise RayError(f"--ray needs Ray Data: pip install 'deepfake[ray]' ({err})") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail in one line, within seconds, when nothing listens at HOST:PORT (ray.init can hang there)."""
    host_port = address.split("://", 1)[-1]
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        raise RayError(f"Ray address {address!r} is not HOST:PORT (or local, or auto for $RAY_ADDRESS)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise RayError(f"can't reach the Ray cluster at {address}: {err.strerror or err}; is `ray start --head` "
                       f"running there and its port open?") from None


@contextlib.contextmanager
def ray_session(address: str = "local", num_cpus: int | None = None) -> Iterator[RaySession]:
    """Connect to Ray for the length of a run.

    Args:
        address: ``local`` (start an instance on this machine, stopped at the end), ``auto`` (the cluster
            `$RAY_ADDRESS` names, or one started on this machine with `ray start`), or a cluster's ``HOST:PORT``
            (``ray://HOST:PORT`` for Ray Client). An instance already started in this process (`ray.init`) is
            used as it is.
        num_cpus: CPUs of a ``local`` instance (default: the cores this process may use).

    Raises:
        RayError: Ray is not installed, or the address can't be reached (in about 10 s).
    """
    ray = _import_ray()
    started = False
    address = address or "local"
    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
    if address == "auto" and not target:
        target = "auto"  # a cluster started on this machine with `ray start`
    if target not in ("local", "auto"):
        _check_reachable(target)
    if not ray.is_initialized():
        # ERROR: Ray's notices (token authentication, deprecations) are not the command's output.
        options = dict(include_dashboard=False, logging_level=logging.ERROR, configure_logging=True)
        try:
            if target == "local":
                ray.init(num_cpus=num_cpus or cpu_count(), **options)
                started = True
            else:
                ray.init(address=target, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RayError(f"can't connect to Ray at {target}: {' '.join(str(err).split())[:300]}") from None
    try:
        resources = ray.cluster_resources()
        yield RaySession(address, int(resources.get("CPU", 0)), int(resources.get("GPU", 0)), started)
    finally:
        if started:
            ray.shutdown()


def _quiet_ray_data(ray) -> None:
    """Ray Data's defaults for a notebook (progress bars, an INFO line per dataset) would break a command's output:
    progress is the command's own bar. A lost video is reported as its row, not as Ray's traceback."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.max_errored_blocks = -1  # a block whose actor died is skipped (and reported by the caller), not fatal
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def stream_videos(session: RaySession, items: list[dict], make_actor: Callable[[bool], type], workers: int | None,
                  device: str, retry: bool = True) -> Iterator[tuple[int, object]]:
    """Map videos through a pool of actors, one video a task; results as they come, then the lost ones.

    Args:
        session: the Ray connection.
        items: one dict per video with at least ``key`` (int, unique); the rest is what the actor's `__call__`
            reads (a column each: ``path``, ...).
        make_actor: returns the actor class given whether its actors hold a share of a GPU: `__init__(self)`
            loads its models, `__call__(self, batch)` takes a batch of one video (columns as numpy arrays) and
            returns ``{"key": [key], "out": [bytes]}`` with the result pickled.
        workers: actors (None: one per CPU slot of the cluster).
        device: ``cpu`` keeps the actors off GPUs.
        retry: run the videos of actors that died once more, in a new pool (a task is never retried in place).

    Yields:
        (key, result unpickled) per video in completion order; a video whose actor died (twice, with `retry`)
        gives (key, None) after the others.
    """
    if not items:
        return
    ray = _import_ray()
    _quiet_ray_data(ray)
    actors, gpus = session.actors(workers, device)
    actors = min(actors, len(items))
    # One video in flight per actor: none waits behind a long one on a busy actor while another is idle, and an
    # actor that dies takes only its own video with it.
    actor_class = make_actor(gpus > 0)  # settings travel in the class: no constructor arguments to keep
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # a block per video: the pool balances videos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray's notice that `max_task_retries` will be renamed
        ds = ds.map_batches(actor_class, batch_size=1, batch_format="numpy", num_cpus=1, num_gpus=gpus or None,
                            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                            max_restarts=-1, max_task_retries=0)
    seen: set[int] = set()
    try:
        for row in ds.iter_rows():
            key = int(row["key"])
            seen.add(key)
            yield key, pickle.loads(row["out"])
    except Exception as err:  # the pool could not start (a constructor failed on every node), or Ray itself broke
        raise RayError(f"the Ray run failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}") from None
    lost = [item for item in items if int(item["key"]) not in seen]
    if lost and retry and len(lost) < len(items):
        # The videos queued on a dying actor go with it; run them once more: only one that kills its worker
        # again is lost.
        yield from stream_videos(session, lost, make_actor, workers, device, retry=False)
    else:
        yield from ((int(item["key"]), None) for item in lost)


def extract_one(extractor, path: str, jpeg: bool, reuse: ReuseBoxes | None = None) -> VideoFaces | VideoError:
    """One video's faces, or the VideoError that says why there are none (an unexpected failure becomes an
    ``internal error`` reason, as in the extractor's own loop): what an actor returns."""
    try:
        return extractor.extract(path, jpeg=jpeg, reuse=reuse)
    except VideoError as err:
        return err
    except Exception as err:  # a bug or a resource problem: this video's reason; the run goes on
        traceback.print_exc()
        return VideoError(f"internal error: {type(err).__name__}: {err}")


@dataclass
class _Job:
    """A video of `extract_many` (the fields `run_jobs` reads)."""

    key: int
    path: str
    reuse_from: int | None = None


def _extract_actor(config: ExtractConfig, jpeg: bool, gpu: bool) -> type:
    """The actor class of `RayFaceExtractor` (made here so that the settings travel with the class)."""

    class ExtractActor:
        def __init__(self) -> None:
            from data_prep.extractor import FaceExtractor

            self.extractor = FaceExtractor(replace(config, device="cuda" if gpu else "cpu"))

        def __call__(self, batch: dict) -> dict:
            reuse = pickle.loads(batch["reuse"][0]) if len(batch["reuse"][0]) else None
            result = extract_one(self.extractor, str(batch["path"][0]), jpeg, reuse)
            return {"key": batch["key"], "out": np.array([pickle.dumps(result)], dtype=object)}

    return ExtractActor


class RayFaceExtractor:
    """`FaceExtractor`'s batch interface on a Ray cluster (module docstring).

    Args:
        config: extraction settings (its `device`: ``cpu`` keeps the work off GPUs; otherwise GPU nodes detect on
            their GPUs).
        session: from `ray_session`.
        workers: actors (None: one per CPU slot of the cluster).
    """

    def __init__(self, config: ExtractConfig, session: RaySession, workers: int | None = None) -> None:
        self.config, self.session, self.workers = config, session, workers
        actors, gpus = session.actors(workers, config.device)
        where = f"{session.gpus} GPU(s)" if gpus else "CPU"
        self.device = f"Ray ({session.address}: {actors} actors, {session.cpus} CPUs, {where})"

    def run_jobs(self, jobs: list, jpeg: bool, keep_boxes: Callable | None = None,
                 reuse_lookup: Callable | None = None, progress: Callable | None = None) -> Iterator[tuple]:
        """`FaceExtractor.run_jobs` on Ray: (job, VideoFaces or VideoError) in completion order.

        A job whose `reuse_from` is in `jobs` (a fake whose original runs now) goes in a second wave, after the
        first: its original's boxes are known by then. `progress` within a video is not reported from remote
        workers (the caller still counts videos).
        """
        keys = {job.key for job in jobs}
        first = [job for job in jobs if job.reuse_from is None or job.reuse_from not in keys]
        first_keys = {job.key for job in first}
        for wave in (first, [job for job in jobs if job.key not in first_keys]):
            by_key = {job.key: job for job in wave}
            items = []
            for job in wave:
                reuse = reuse_lookup(job) if reuse_lookup else None
                items.append({"key": job.key, "path": job.path, "reuse": pickle.dumps(reuse) if reuse else b""})
            for key, result in stream_videos(self.session, items, partial(_extract_actor, self.config, jpeg),
                                             self.workers, self.config.device):
                result = VideoError(LOST) if result is None else result
                if keep_boxes and isinstance(result, VideoFaces):
                    keep_boxes(by_key[key], result)
                yield by_key[key], result

    def extract_many(self, paths: Iterable[str | os.PathLike], *, jpeg: bool = False,
                     ) -> Iterator[tuple[str, VideoFaces | VideoError]]:
        """Face tracks of many videos, in input order (as `FaceExtractor.extract_many`)."""
        jobs = [_Job(i, os.path.abspath(p)) for i, p in enumerate(paths)]
        pending: dict[int, VideoFaces | VideoError] = {}
        next_key = 0
        for job, result in self.run_jobs(jobs, jpeg):
            pending[job.key] = result
            while next_key in pending:
                yield jobs[next_key].path, pending.pop(next_key)
                next_key += 1

    def close(self) -> None:
        """Nothing to stop: a run's actors end with it (the session stops a local instance)."""

    def __enter__(self) -> RayFaceExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

