"""The job queue behind `deepfake serve`: a bounded wait list worked by a fixed pool of worker processes.

    pool = JobPool(weights, PredictConfig(device="cpu"), workers=1, capacity=16, retention_s=3600)
    pool.start()                                   # spawns the workers; each loads the detector once (or raises)
    if pool.reserve():                             # a place in the queue, taken before an upload is read
        job = pool.submit(Job.new(pool.root, "clip.mp4"), video_path, owned=True)
    pool.get(job.id).state                         # queued -> running -> done | failed

Why processes, one model each: torch keeps its own thread pool per process, so N workers with
``cores // N`` threads each use the machine without oversubscribing it; a video that crashes the decoder or
exhausts memory kills one worker (its job fails, a new worker takes its place), never the server; and memory a
worker's allocator keeps after a long video is the worker's, not the HTTP server's. The server process itself
never imports torch.

The main process keeps every job's state. Jobs wait in a deque (the queue whose length `capacity` bounds) and the
pool's dispatcher thread hands the next one to an idle worker over that worker's own pipe, so the main process
always knows which job each worker holds: a worker that dies fails exactly its job. Workers report progress,
results and what they wrote (plot, explanation strips) as events. Finished jobs (their folders: plot,
explanations) are deleted `retention_s` after they finish; an uploaded video is deleted as soon as its job ends.

With a `deepfake.serve.store.JobStore` (`--state-dir`) every change of a job's state is written to its table, and a
new pool on the same store takes the jobs up again: queued and running ones queue (again), in the order they were
accepted; finished ones answer until their retention ends. Without one, the jobs live in a temporary folder that a
later start removes if this server was killed.

A worker that fails to start `max_start_failures` times in a row (a damaged weights file, a device gone) makes
the pool unhealthy: `unhealthy` holds the reason, the queued jobs fail with it and no worker is started again.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfake.inference import PredictConfig
from deepfake.serve.store import JobStore, make_temp_root, remove_abandoned_roots

__all__ = ["Job", "JobPool", "LoadError", "STATES"]

STATES = ("queued", "running", "done", "failed")
HOUSEKEEPING_S = 1.0      # how often dead workers and expired jobs are looked for
RECORDED = ("id", "name", "explain", "plot", "state", "progress", "stage", "result", "error", "warning", "files",
            "created", "started", "finished", "seconds", "owned")  # a job's fields in the state table
log = logging.getLogger("deepfake.serve")


class LoadError(RuntimeError):
    """A worker could not load the detector; the message is the one-line reason (missing weights, bad device)."""


@dataclass
class Job:
    """One video to score and what became of it.

    Attributes:
        id: unguessable hex id (the API's `{id}`).
        name: what the result reports as `video` (the uploaded file's name, or the path as given).
        folder: where the job's files live (upload/<name>, plot.png, explain/).
        explain: write explanation strips (`deepfake.explain`) for each face.
        plot: write plot.png (`deepfake.plots.plot_video`).
        state: one of `STATES`.
        progress: 0..1.
        stage: what it is doing now: queued, reading, scoring, plotting, explaining, done, failed.
        result: predict's JSON object once finished.
        error: one-line reason when failed.
        warning: what a user should know about a video that still scored (damaged frames, one face seen once).
        files: names written under `folder` (``plot.png``, ``explain/track0.png``, ...).
    """

    id: str
    name: str
    folder: Path
    explain: bool = False
    plot: bool = True
    state: str = "queued"
    progress: float = 0.0
    stage: str = "queued"
    result: dict | None = None
    error: str | None = None
    warning: str | None = None
    files: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    video: Path | None = None      # the file to read
    owned: bool = False            # the video is an upload of ours (deleted when the job ends)

    def task(self) -> dict[str, Any]:
        """What a worker needs to run the job (`deepfake.serve.worker`): id, video, name, folder, explain, plot."""
        return {"id": self.id, "video": os.fspath(self.video), "name": self.name, "folder": os.fspath(self.folder),
                "explain": self.explain, "plot": self.plot}

    @classmethod
    def new(cls, root: Path, name: str, explain: bool = False, plot: bool = True) -> Job:
        """A queued job with a fresh id and its own folder under `root`."""
        job_id = uuid.uuid4().hex
        folder = Path(root) / job_id
        folder.mkdir(parents=True)
        return cls(job_id, name, folder, explain=explain, plot=plot)

    def record(self) -> dict:
        """The job as the state table stores it (JSON; an upload's path relative to the job's folder)."""
        out = {key: getattr(self, key) for key in RECORDED}
        video = self.video
        if video is not None and self.owned and self.folder in video.parents:
            video = video.relative_to(self.folder)
        out["video"] = os.fspath(video) if video is not None else None
        return out

    @classmethod
    def from_record(cls, root: Path, record: dict) -> Job:
        """A job from `record` whose folder is ``root/<id>``."""
        job = cls(record["id"], record["name"], Path(root) / record["id"],
                  **{key: record[key] for key in RECORDED if key not in ("id", "name") and key in record})
        if record.get("video"):
            job.video = job.folder / record["video"] if job.owned else Path(record["video"])
        return job

    def public(self, position: int | None = None) -> dict:
        """The job as the API shows it (no server paths)."""
        out = {"id": self.id, "video": self.name, "state": self.state, "progress": round(self.progress, 3),
               "stage": self.stage, "result": self.result, "error": self.error, "warning": self.warning,
               "explain": self.explain, "files": list(self.files), "created": self.created,
               "started": self.started, "finished": self.finished, "seconds": self.seconds}
        if position is not None:
            out["queue_position"] = position
        return out


@dataclass
class _Worker:
    index: int
    process: Any
    inbox: Any
    ready: bool = False
    job: str | None = None
    load_error: str | None = None
    info: dict = field(default_factory=dict)


class JobPool:
    """A fixed pool of worker processes, each with the detector loaded once, and the bounded queue feeding it.

    Args:
        weights: the detector file (already resolved: `deepfake.weights.resolve_weights`).
        config: prediction settings; its `workers` (decode processes) is ignored: each worker decodes on a thread.
        workers: worker processes (one model each).
        capacity: jobs that may wait (uploads being received count) before `reserve` says no.
        retention_s: seconds a finished job's results stay.
        root: folder for the jobs' files (default: a new temporary folder, removed by `close`).
        threads: torch threads per worker (default: the CPU count divided by `workers`, at least 1).
        sha256: expected hash of the weights (checked by each worker's `load_predictor`).
        store: the state table of a `--state-dir` (its jobs are taken up; `root` is its jobs folder).
        max_start_failures: worker starts that may fail in a row before the pool gives up (unhealthy).
    """

    def __init__(self, weights: str | os.PathLike, config: PredictConfig, workers: int = 1, capacity: int = 16,
                 retention_s: float = 3600.0, root: str | os.PathLike | None = None, threads: int | None = None,
                 sha256: str | None = None, store: JobStore | None = None, max_start_failures: int = 3) -> None:
        if workers < 1:
            raise ValueError(f"--workers must be an integer >= 1, got {workers}")
        if capacity < 1:
            raise ValueError(f"--queue must be an integer >= 1, got {capacity}")
        if not retention_s > 0:
            raise ValueError(f"--retention-s must be > 0, got {retention_s}")
        if max_start_failures < 1:
            raise ValueError(f"--max-start-failures must be an integer >= 1, got {max_start_failures}")
        self.weights = os.fspath(weights)
        self.config = config
        self.n_workers = workers
        self.capacity = capacity
        self.retention_s = float(retention_s)
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.sha256 = sha256
        self.store = store
        self.max_start_failures = max_start_failures
        self.unhealthy: str | None = None
        self._start_failures = 0
        self._own_root = root is None and store is None
        self._root_lock = None
        if store is not None:
            self.root = store.jobs_root
        elif root is not None:
            self.root = Path(root)
        else:
            remove_abandoned_roots()  # uploads of servers killed before they could remove them
            self.root, self._root_lock = make_temp_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self._waiting: collections.deque[str] = collections.deque()
        if store is not None:
            self._take_up(store)
        self._reserved = 0
        self._lock = threading.RLock()
        self._ctx = mp.get_context("spawn")
        self._events = self._ctx.Queue()
        self._workers: list[_Worker] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.device: str | None = None
        self.load_warnings: list[str] = []  # what loading the detector warned (`deepfake.contract`), one line each
        self.restarts = 0

    # ----------------------------------------------------------------------------------------- life cycle

    def start(self, timeout: float = 600.0) -> None:
        """Spawn the workers and wait until each has loaded the detector.

        Raises:
            LoadError: a worker could not load it (the reason is the worker's one-line message), or none was
                ready within `timeout` seconds.
        """
        for i in range(self.n_workers):
            self._workers.append(self._spawn(i))
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self._workers):
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                dead = [w for w in self._workers if not w.process.is_alive()]
                if dead:
                    self.close()
                    raise LoadError(f"worker {dead[0].index} exited while loading the detector "
                                    f"(exit code {dead[0].process.exitcode})") from None
                if time.monotonic() > deadline:
                    self.close()
                    raise LoadError(f"the workers did not load the detector within {timeout:.0f} s") from None
                continue
            if event[0] == "load_failed":
                self.close()
                raise LoadError(event[2])
            self._handle(event)
        self._thread = threading.Thread(target=self._run, name="deepfake-serve-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the workers (a running job is abandoned) and remove the job folder if it was ours."""
        self._stop.set()
        # The dispatcher first: running, it would take the workers stopped below for dead ones and replace them.
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        # A worker holds nothing to save (a running job is lost either way): SIGTERM spares the seconds a torch
        # process takes to tear itself down after a polite stop.
        for w in self._workers:
            w.process.terminate()
        for w in self._workers:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
        self._workers = []
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._root_lock is not None:
                self._root_lock.release()

    def _take_up(self, store: JobStore) -> None:
        """The stored jobs: finished ones kept, queued and running ones queued in their order; folders without a
        row (an upload the last server was receiving when it stopped) removed."""
        requeued = 0
        for record in store.load():
            job = Job.from_record(self.root, record)
            if job.state in ("queued", "running"):
                if job.owned and (job.video is None or not job.video.is_file()):
                    self.jobs[job.id] = job
                    self._finish(job, {"error": "the uploaded video was lost when the server stopped"})
                    continue
                job.state, job.stage, job.progress, job.started = "queued", "queued", 0.0, None
                self._waiting.append(job.id)
                self._save(job)
                requeued += 1
            self.jobs[job.id] = job
        for folder in self.root.iterdir():
            if folder.name not in self.jobs:
                shutil.rmtree(folder, ignore_errors=True)
        if self.jobs:
            log.info("state %s: %d job(s) taken up, %d of them to run", store.folder, len(self.jobs), requeued)

    def _save(self, job: Job) -> None:
        if self.store is not None:
            self.store.put(job.record())

    def _spawn(self, index: int) -> _Worker:
        from deepfake.serve.worker import worker_main

        inbox = self._ctx.Queue()
        process = self._ctx.Process(target=worker_main, name=f"deepfake-serve-worker-{index}", daemon=True,
                                    args=(index, self.weights, self.config, self.sha256, self.threads, inbox,
                                          self._events))
        process.start()
        return _Worker(index, process, inbox)

    # ------------------------------------------------------------------------------------------ the queue

    def reserve(self) -> bool:
        """Take a place in the queue for a job about to be submitted; False when the queue is full."""
        with self._lock:
            if len(self._waiting) + self._reserved >= self.capacity:
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """Give back a place taken by `reserve` that will not be used (the upload was refused)."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)

    def submit(self, job: Job, video: str | os.PathLike, owned: bool) -> Job:
        """Queue `job` (to read `video`) in the place `reserve` took; `owned` videos are deleted when it ends."""
        job.video, job.owned = Path(video), owned
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
            self.jobs[job.id] = job
            self._waiting.append(job.id)
            self._save(job)
            self._dispatch()
        return job

    def get(self, job_id: str) -> tuple[Job, int | None] | None:
        """The job and its place in the queue (1: next; None unless queued), or None for an unknown id."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            position = self._waiting.index(job_id) + 1 if job.state == "queued" else None
            return job, position

    def delete(self, job_id: str) -> str | None:
        """Forget a queued or finished job and delete its files; returns None, or why it can't (running)."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if job.state == "running":
                return "the job is running; delete it when it has finished"
            if job_id in self._waiting:
                self._waiting.remove(job_id)
            self._forget(job)
            return None

    def stats(self) -> dict:
        """Counts for /health: workers (ready), jobs waiting, running, finished and held, the queue's capacity."""
        with self._lock:
            states = collections.Counter(j.state for j in self.jobs.values())
            return {"workers": self.n_workers, "workers_ready": sum(w.ready for w in self._workers),
                    "threads_per_worker": self.threads, "queued": len(self._waiting), "receiving": self._reserved,
                    "running": states["running"], "done": states["done"], "failed": states["failed"],
                    "capacity": self.capacity, "retention_s": self.retention_s, "restarts": self.restarts,
                    "start_failures": self._start_failures}

    @property
    def ready(self) -> bool:
        """Whether at least one worker has the detector loaded."""
        return any(w.ready for w in self._workers)

    # ------------------------------------------------------------------------------- the dispatcher thread

    def _dispatch(self) -> None:
        """Hand waiting jobs to idle workers (caller holds the lock); a pool kind says what idle is and how a job
        starts (`_idle`, `_start`)."""
        if self.unhealthy:
            return
        for w in self._workers:
            if not self._waiting:
                return
            if self._idle(w):
                self._start(w, self.jobs[self._waiting.popleft()])

    def _idle(self, w: Any) -> bool:
        return w.ready and w.job is None and w.process.is_alive()

    def _start(self, w: Any, job: Job) -> None:
        self._mark_running(w, job, "reading")
        w.inbox.put(job.task())

    def _mark_running(self, w: Any, job: Job, stage: str) -> None:
        job.state, job.stage, job.started = "running", stage, time.time()
        w.job = job.id
        self._save(job)

    def _run(self) -> None:
        last_housekeeping = 0.0
        while not self._stop.is_set():
            try:
                event = self._events.get(timeout=0.2)
            except queue.Empty:
                event = None
            except (OSError, ValueError, EOFError):  # the queue was closed under us at shutdown
                return
            with self._lock:
                if event is not None:
                    self._handle(event)
                if time.monotonic() - last_housekeeping >= HOUSEKEEPING_S:
                    last_housekeeping = time.monotonic()
                    self._replace_dead_workers()
                    self._expire()
                self._dispatch()

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        if kind == "ready":
            _, index, info = event
            w = self._workers[index]
            w.ready, w.info = True, info
            self.device = info.get("device", self.device)
            self._start_failures = 0
            self.load_warnings = info.get("warnings", self.load_warnings)
        elif kind == "load_failed":  # a replacement worker could not load: it exits; counted when found dead
            _, index, reason = event
            self._workers[index].ready = False
            self._workers[index].load_error = reason
        elif kind == "progress":
            _, job_id, stage, progress = event
            job = self.jobs.get(job_id)
            if job is not None and job.state == "running":
                job.stage, job.progress = stage, max(job.progress, float(progress))
        elif kind == "finished":
            _, index, job_id, payload = event
            if 0 <= index < len(self._workers) and self._workers[index].job == job_id:
                self._workers[index].job = None
            job = self.jobs.get(job_id)
            if job is not None:
                self._finish(job, payload)

    def _finish(self, job: Job, payload: dict) -> None:
        result = payload.get("result")
        job.result = result
        job.files = list(payload.get("files", []))
        job.warning = payload.get("warning")
        job.seconds = payload.get("seconds")
        job.error = payload.get("error") or (result or {}).get("error")
        job.state = "failed" if job.error or result is None or result.get("status") == "error" else "done"
        job.stage, job.progress, job.finished = job.state, 1.0, time.time()
        if job.owned and job.video is not None:
            shutil.rmtree(job.video.parent, ignore_errors=True)  # upload/<name>
        self._save(job)

    def _replace_dead_workers(self) -> None:
        for i, w in enumerate(self._workers):
            if w.process.is_alive() or (self.unhealthy and w.job is None):
                continue
            code = w.process.exitcode
            if w.job is not None and w.job in self.jobs:
                from deepfake.scoring import error_result

                job = self.jobs[w.job]
                reason = (f"the worker scoring this video stopped (exit code {code}"
                          + ("; killed: out of memory?" if code is not None and code < 0 else "") + ")")
                self._finish(job, {"result": error_result(job.name, reason), "error": reason})
            w.job = None
            if self.unhealthy:
                continue
            if not w.ready:  # it never loaded the detector
                self._start_failures += 1
                reason = w.load_error or f"a worker exited while loading the detector (exit code {code})"
                log.warning("worker %d failed to start (%d in a row): %s", w.index, self._start_failures, reason)
                if self._start_failures >= self.max_start_failures:
                    self._give_up(f"workers failed to start {self._start_failures} times in a row: {reason}")
                    return
            else:
                log.warning("worker %d stopped (exit code %s); starting another", w.index, code)
            self.restarts += 1
            self._workers[i] = self._spawn(w.index)

    def _give_up(self, reason: str) -> None:
        """Unhealthy: no more workers; the queued jobs fail with `reason` (running ones finish if they can)."""
        from deepfake.scoring import error_result

        self.unhealthy = reason
        log.error("serving stopped: %s", reason)
        while self._waiting:
            job = self.jobs[self._waiting.popleft()]
            self._finish(job, {"result": error_result(job.name, reason), "error": reason})

    def _expire(self) -> None:
        now = time.time()
        for job in [j for j in self.jobs.values() if j.finished and now - j.finished > self.retention_s]:
            self._forget(job)

    def _forget(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if self.store is not None:
            self.store.delete(job.id)
        shutil.rmtree(job.folder, ignore_errors=True)
