"""`deepfake serve --ray ADDRESS`: the same job queue, scored by Ray actors spread over a cluster.

    ray_init("local")                                   # or "auto" ($RAY_ADDRESS), or "head:6379"
    pool = RayJobPool(weights, PredictConfig(), workers=None)   # None: one actor per GPU, else per CPU slot
    pool.start()
    # ... create_app(pool, config) exactly as with `JobPool`

The HTTP front stays one process (`deepfake.serve.app`, unchanged: the same API, page, auth and limits) and keeps
the job table (`JobPool`'s, with `--state-dir` the same SQLite store). Scoring moves to `ScoringActor`s, each
holding one detector (`deepfake.inference.load_predictor`, as a worker process does) and scoring with the same
`deepfake.serve.worker.run_job`, so a result is predict's JSON object whichever path made it.

How a video reaches an actor: **through Ray's object store**. The front reads the upload (or the file under
`--allow-dir`) and puts its bytes in the store; the actor writes them to a temporary file on its own node, scores
it, and returns the payload with the files it made (plot, explanation strips) as bytes, which the front writes to
the job's folder. No shared filesystem is needed; the weights travel the same way once per actor start. The limit
that follows: a video is held whole in the front's memory while it is put, and in the object store while its job
runs (at most `--workers` of them at once), so `--max-upload-mb` (default 500) must fit in the object store of the
front's node (Ray's default: 30% of its RAM).

Fail-over: an actor that dies (its node lost, the process killed, out of memory) loses its job, which goes back to
the front of the queue and runs on another actor (Ray places the replacement on a live node); a job lost
`MAX_ATTEMPTS` times fails with the reason. An actor that cannot load the detector counts as a failed start, and
`max_start_failures` of them in a row make the pool unhealthy, as with worker processes. Progress within a job is
not reported (a running job shows progress 0 until it ends).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.files import OneLineError
from deepfake.inference import PredictConfig
from deepfake.serve.jobs import HOUSEKEEPING_S, Job, JobPool
from deepfake.serve.store import make_temp_root, remove_abandoned_roots

__all__ = ["RayJobPool", "ScoringActor", "RayError", "ray_init", "MAX_ATTEMPTS", "CONNECT_TIMEOUT_S"]

log = logging.getLogger("deepfake.serve")

MAX_ATTEMPTS = 3          # a job whose actor died this many times fails
CONNECT_TIMEOUT_S = 30.0  # an unreachable Ray address fails within this
ACTOR_PREFIX = "deepfake-ray-actor-"  # each actor's temporary folder, $TMPDIR/deepfake-ray-actor-*


class RayError(OneLineError):
    """Ray is missing or its cluster cannot be reached; one line."""


def ray_init(address: str, num_cpus: int | None = None, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Connect to Ray: ``local`` starts an instance on this machine (`num_cpus` CPUs), ``auto`` joins
    ``$RAY_ADDRESS`` (or a cluster started here), anything else is a cluster's address (``head:6379``,
    ``ray://head:10001``). Returns whether this call started Ray (and `ray.shutdown` is ours to call).

    Raises:
        RayError: ray is not installed, or the cluster cannot be reached within `timeout` seconds.
    """
    try:
        import ray
    except ImportError:
        raise RayError("--ray needs Ray: pip install 'deepfake[ray]'") from None
    if ray.is_initialized():
        return False
    if not address or not address.strip():
        raise RayError("--ray is empty: give local, auto or the cluster's address (head:6379)")
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                              "include_dashboard": False}
    if address == "local":  # on loopback: nobody joins it, and it works where the host's address is unroutable
        kwargs.update(num_cpus=num_cpus, _node_ip_address="127.0.0.1")
    else:
        kwargs["address"] = address
        kwargs.pop("include_dashboard")
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # its retries to connect would fill the terminal
    outcome: dict[str, Any] = {}

    def connect() -> None:
        try:
            ray.init(**kwargs)
        except Exception as err:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError: one line
            outcome["error"] = err

    if address == "local":
        # On this thread: Ray ties the processes it starts (GCS, raylet) to the thread that started them, and
        # they would end with a helper thread. Starting a local instance needs no time limit.
        connect()
    else:
        thread = threading.Thread(target=connect, name="ray-init", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise RayError(f"--ray {address}: no Ray cluster answered within {timeout:g} s")
    if "error" in outcome:
        err = outcome["error"]
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RayError(f"--ray {address}: can't connect: {first}")
    return address == "local"


class _Progress:
    """Where `run_job` reports progress inside an actor (not sent on)."""

    def put(self, _event) -> None:
        pass


class ScoringActor:
    """One detector on one Ray worker (a GPU, or `threads` CPUs); made an actor by `RayJobPool`.

    Args:
        weights: the detector file's bytes, and `weights_name` its name (the suffix picks the loader).
        config: prediction settings (decoding on a thread: one video at a time).
        sha256: the expected hash of the weights.
        threads: torch threads.
    """

    def __init__(self, weights: bytes, weights_name: str, config: PredictConfig, sha256: str | None,
                 threads: int) -> None:
        import torch

        from deepfake.serve.worker import load_serving_predictor, one_line

        torch.set_num_threads(max(1, int(threads)))
        # Its folder is locked while the actor lives; those of actors killed before they could remove theirs go now.
        remove_abandoned_roots(prefix=ACTOR_PREFIX)
        self.folder, self._lock = make_temp_root(ACTOR_PREFIX)
        self.detector = self.extractor = None
        self.load_error: str | None = None
        try:
            path = self.folder / Path(weights_name).name
            path.write_bytes(weights)
            self.config, (self.detector, self.extractor, _) = load_serving_predictor(path, config, sha256)
        except Exception as err:  # noqa: BLE001 - the front reads it and counts a failed start
            self.load_error = one_line(err)

    def info(self) -> dict:
        """What /health shows about this actor, or ``{"load_error": reason}``."""
        import ray
        import torch

        if self.load_error is not None:
            return {"load_error": self.load_error}
        return {"device": str(self.detector.device), "precision": self.detector.precision,
                "calibrated": self.detector.calibration is not None, "threads": torch.get_num_threads(),
                "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def run(self, task: dict, video: bytes) -> dict:
        """Score one job: `task` as a worker process gets it (its paths are the front's), `video` the file's bytes.
        Returns the payload with ``blobs``: the files made, by their name under the job's folder."""
        from deepfake.serve.worker import run_job_safely

        work = Path(tempfile.mkdtemp(dir=self.folder))
        try:
            local = work / "upload" / Path(task["video"]).name
            local.parent.mkdir()
            local.write_bytes(video)
            payload = run_job_safely({**task, "video": os.fspath(local), "folder": os.fspath(work)}, self.detector,
                                     self.extractor, self.config.threshold, _Progress())
            payload["blobs"] = {name: (work / name).read_bytes() for name in payload.get("files", [])}
            return payload
        finally:
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class _Actor:
    index: int
    handle: Any
    pending: Any                 # the info() call until it answers, then the running job's run() call
    ready: bool = False
    job: str | None = None
    info: dict = field(default_factory=dict)


class RayJobPool(JobPool):
    """`JobPool` whose workers are Ray actors (see the module's docstring); call `ray_init` first.

    Args:
        workers: actors (models); None: one per GPU of the cluster when the device is a GPU (or ``auto`` and the
            cluster has GPUs), else one per `threads` CPUs of the cluster.
        threads: torch threads (and Ray CPUs) per CPU actor (default 2).
        Other arguments: as `JobPool`'s.
    """

    def __init__(self, weights, config: PredictConfig, workers: int | None = None, threads: int | None = None,
                 **kwargs) -> None:
        import ray

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.use_gpu = gpus > 0 and str(config.device) != "cpu"
        threads = threads or 2
        if workers is None:
            workers = gpus if self.use_gpu else max(1, int(resources.get("CPU", 1)) // threads)
        super().__init__(weights, config, workers=workers, threads=threads, **kwargs)
        self._attempts: dict[str, int] = {}
        self._actor_class = ray.remote(ScoringActor)

    # ----------------------------------------------------------------------------------------- life cycle

    def start(self, timeout: float = 600.0) -> None:
        """Start the actors and wait until each has loaded the detector.

        Raises:
            deepfake.serve.jobs.LoadError: an actor could not load it (its one-line reason), or the cluster had
                no room for the actors within `timeout` seconds.
        """
        import ray

        from deepfake.serve.jobs import LoadError

        self._workers = [self._spawn(i) for i in range(self.n_workers)]
        deadline = time.monotonic() + timeout
        for w in self._workers:
            ready, _ = ray.wait([w.pending], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                self.close()
                raise LoadError(f"the Ray cluster did not start {self.n_workers} scoring actor(s) within "
                                f"{timeout:.0f} s (each needs {self._resources()}): add nodes or give --workers")
            reason = self._take_info(w)
            if reason:
                self.close()
                raise LoadError(reason)
        self._thread = threading.Thread(target=self._run, name="deepfake-serve-ray", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the dispatcher and the actors (running jobs are abandoned; with a state folder they run again at
        the next start)."""
        import ray

        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for w in self._workers:
            try:
                ray.kill(w.handle, no_restart=True)
            except Exception as err:  # noqa: BLE001 - gone with its node, or Ray shut down already
                log.debug("actor %d: %s", w.index, err)
        self._workers = []
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._root_lock is not None:
                self._root_lock.release()

    def _resources(self) -> dict:
        return {"num_gpus": 1, "num_cpus": 1} if self.use_gpu else {"num_cpus": self.threads}

    def _spawn(self, index: int) -> _Actor:
        import ray

        weights = ray.put(Path(self.weights).read_bytes())
        handle = self._actor_class.options(**self._resources(), max_restarts=0).remote(
            weights, Path(self.weights).name, self.config, self.sha256, self.threads)
        return _Actor(index, handle, handle.info.remote())

    def _take_info(self, w: _Actor) -> str | None:
        """Read an actor's info() answer: None when it is ready, else why it did not start."""
        import ray

        try:
            info = ray.get(w.pending)
        except Exception as err:  # noqa: BLE001 - the actor died while loading (RayActorError and kin)
            info = {"load_error": f"a scoring actor died while loading the detector ({type(err).__name__})"}
        w.pending = None
        if "load_error" in info:
            return info["load_error"]
        w.ready, w.info = True, info
        self.device = info.get("device", self.device)
        return None

    # ------------------------------------------------------------------------------- the dispatcher thread

    def _idle(self, w: _Actor) -> bool:
        return w.ready and w.job is None

    def _start(self, w: _Actor, job: Job) -> None:
        """The video goes into Ray's object store (an actor may run on another node), then to the actor."""
        import ray

        try:
            video = ray.put(job.video.read_bytes())
        except OSError as err:
            self._fail(job, f"can't read the video: {err.strerror or err}")
            return
        self._mark_running(w, job, "scoring")
        w.pending = w.handle.run.remote(job.task(), video)

    def _run(self) -> None:
        import ray

        last_housekeeping = 0.0
        while not self._stop.is_set():
            with self._lock:
                pending = {w.pending: w for w in self._workers if w.pending is not None}
            done = []
            if pending:
                try:
                    done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.2, fetch_local=False)
                except Exception as err:  # noqa: BLE001 - Ray shut down under us at exit
                    log.debug("ray.wait: %s", err)
                    return
            else:
                self._stop.wait(0.2)
            with self._lock:
                for ref in done:
                    w = pending[ref]
                    if w.ready:
                        self._job_returned(w)
                    else:
                        self._actor_started(w)
                if time.monotonic() - last_housekeeping >= HOUSEKEEPING_S:
                    last_housekeeping = time.monotonic()
                    self._expire()
                self._dispatch()

    def _actor_started(self, w: _Actor) -> None:
        reason = self._take_info(w)
        if reason is None:
            self._start_failures = 0
            return
        self._start_failures += 1
        log.warning("scoring actor %d failed to start (%d in a row): %s", w.index, self._start_failures, reason)
        if self._start_failures >= self.max_start_failures:
            self._give_up(f"workers failed to start {self._start_failures} times in a row: {reason}")
            return
        self._replace(w)

    def _job_returned(self, w: _Actor) -> None:
        import ray

        ref, job_id = w.pending, w.job
        w.pending, w.job = None, None
        job = self.jobs.get(job_id)
        try:
            payload = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - the actor or its node died (RayActorError and kin)
            log.warning("scoring actor %d was lost (%s); starting another", w.index, type(err).__name__)
            self._replace(w)
            if job is not None and job.state == "running":
                self._lost(job, type(err).__name__)
            return
        if job is None:  # deleted meanwhile
            return
        for name, data in payload.pop("blobs", {}).items():
            (job.folder / name).parent.mkdir(parents=True, exist_ok=True)
            (job.folder / name).write_bytes(data)
        self._attempts.pop(job.id, None)
        self._finish(job, payload)

    def _lost(self, job: Job, why: str) -> None:
        """The actor running `job` died: the job queues again at the front, or fails after MAX_ATTEMPTS."""
        attempts = self._attempts.get(job.id, 0) + 1
        self._attempts[job.id] = attempts
        if attempts >= MAX_ATTEMPTS:
            self._fail(job, f"the worker scoring this video was lost {attempts} times ({why}; out of memory, or "
                            f"its node went away)")
            return
        job.state, job.stage, job.progress, job.started = "queued", "queued", 0.0, None
        self._waiting.appendleft(job.id)
        self._save(job)

    def _fail(self, job: Job, reason: str) -> None:
        from deepfake.scoring import error_result

        self._attempts.pop(job.id, None)
        self._finish(job, {"result": error_result(job.name, reason), "error": reason})

    def _replace(self, w: _Actor) -> None:
        import ray

        try:
            ray.kill(w.handle, no_restart=True)
        except Exception as err:  # noqa: BLE001 - already gone
            log.debug("actor %d: %s", w.index, err)
        self.restarts += 1
        self._workers[self._workers.index(w)] = self._spawn(w.index)
