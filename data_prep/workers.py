"""Extraction worker processes: whole videos in N spawned processes, and the messages between them and the parent.

Each worker takes a video from a task queue, runs its job (`data_prep.pipeline`) and sends its faces back. On
the CPU each worker has its own detector: MTCNN's cost there is arithmetic that scales with the cores. On a GPU
workers decode, track and crop while the parent process detects for all of them (`_RemoteDetector` sends a job's
detection requests to the parent and waits for the answer), batching their frames: one process drives the GPU.

Messages on the shared results queue are ``(kind, worker id, tag, payload)``: ``start`` (a worker took the job
tagged so), ``progress`` ((frames done, frames)), ``detect`` (a `DetectRequest` to serve, answered on that
worker's own replies queue), ``done`` (VideoFaces or VideoError) and ``fatal`` (the worker could not make its
detector). The parent's side of the protocol is `data_prep.extractor.FaceExtractor`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import cv2

from data_prep.detection import DetectRequest, make_detector
from data_prep.detector import cpu_count
from data_prep.faces import Detections, ExtractConfig, VideoFaces
from data_prep.pipeline import ReuseBoxes, run_inline, video_job
from data_prep.video import VideoError

__all__ = ["default_workers", "die_with_parent"]


def default_workers() -> int:
    """One extraction process per core (at most 16); none on a single core, where in-process is as fast."""
    cpus = cpu_count()
    return 0 if cpus < 2 else min(16, cpus)


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process end when its parent does, however the parent ends: SIGTERM, SIGINT or SIGKILL.

    On Linux the kernel sends SIGKILL at the parent's death (prctl(PR_SET_PDEATHSIG), through ctypes); elsewhere
    a daemon thread checks every second whether the parent is still there. A parent that died before this call
    is caught too (this process was then re-parented). The signal follows the parent *thread* that started this
    process, so pools are started from a thread that lives as long as they do.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    else:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="die-with-parent").start()
    if os.getppid() != parent_pid:
        os._exit(1)


@dataclass
class VideoJob:
    key: int
    path: str
    reuse_from: int | None = None  # key of the job whose boxes this one reuses (a DFDC fake's original)


class _RemoteDetector:
    """A worker's stand-in for the detector when the main process detects for everyone (GPU mode)."""

    def __init__(self, wid: int, key_of: Callable[[], object], results, replies) -> None:
        self.wid, self.key_of, self.results, self.replies = wid, key_of, results, replies

    def run(self, request: DetectRequest) -> list[Detections]:
        # A re-fit goes as O-Net's inputs (7 KB a face), not as the frames (691 KB each at 640x360).
        self.results.put(("detect", self.wid, self.key_of(), request.for_sending()))
        return self.replies.get()


def _worker_main(wid: int, config: ExtractConfig, torch_threads: int, tasks, results, replies,
                 parent_pid: int) -> None:
    """Worker process loop: take a video, decode, detect, track and crop it, send back its faces.

    With `replies` (GPU mode) the worker has no detector: it sends the detection copies of its frames to the main
    process and waits for the boxes. The worker ends with its parent (`die_with_parent`).
    """
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops the pool
    cv2.setNumThreads(1)
    current: list = [None]
    # A decoding thread only pays when this worker has a core to spare or waits for the main process's detector.
    overlap = replies is not None or torch_threads > 1
    if replies is None:
        if config.runtime != "onnx":  # MTCNN on ONNX Runtime: this worker never imports torch
            import torch

            torch.set_num_threads(torch_threads)
        try:
            detector = make_detector(config)
        except Exception as err:  # e.g. CUDA out of memory: every video of this worker would fail the same way
            results.put(("fatal", wid, None, f"{type(err).__name__}: {err}"))
            return
    else:
        detector = _RemoteDetector(wid, lambda: current[0], results, replies)
    while True:
        task = tasks.get()
        if task is None:
            return
        key, path, reuse, jpeg, report = task
        current[0] = key
        results.put(("start", wid, key, None))
        progress = (lambda done, total, key=key: results.put(("progress", wid, key, (done, total)))) if report else None
        try:
            result: VideoFaces | VideoError = run_inline(video_job(path, config, reuse, jpeg, overlap, progress),
                                                          detector)
        except VideoError as err:
            result = err
        except Exception as err:  # a bug or a resource problem: record it, keep the run going
            result = VideoError(f"internal error: {type(err).__name__}: {err}")
            traceback.print_exc()
        results.put(("done", wid, key, result))


class WorkerPool:
    """N worker processes (spawned) extracting whole videos from one task queue.

    With `central_detection` (a GPU) the workers have no detector and send their requests to the process that
    made the pool, which serves them in batches; otherwise each worker detects for itself.
    """

    def __init__(self, workers: int, config: ExtractConfig, central_detection: bool) -> None:
        self.ctx = mp.get_context("spawn")  # fork after CUDA init is unsafe; spawn is safe everywhere
        cpus = cpu_count()
        if config.decode_threads == 0:  # share the cores instead of every worker starting one thread per core
            config = dataclasses.replace(config, decode_threads=max(1, cpus // workers))
        self.torch_threads = max(1, cpus // workers)
        self.config = config
        self.central = central_detection
        self.tasks = self.ctx.Queue()
        self.results = self.ctx.Queue()
        self.replies: list = [None] * workers
        self.procs: list = [None] * workers
        self.current: dict[int, object] = {}
        for wid in range(workers):
            self._start(wid)

    def _start(self, wid: int) -> None:
        self.replies[wid] = self.ctx.Queue() if self.central else None
        proc = self.ctx.Process(target=_worker_main, daemon=True, args=(
            wid, self.config, self.torch_threads, self.tasks, self.results, self.replies[wid], os.getpid()))
        proc.start()
        self.procs[wid] = proc
        self.current[wid] = None

    def submit(self, key: tuple[int, int], path: str, reuse: ReuseBoxes | None, jpeg: bool,
               report: bool = False) -> None:
        self.tasks.put((key, path, reuse, jpeg, report))

    def cancel_queued(self) -> None:
        """Drop tasks no worker has taken yet (after a caller stopped early)."""
        while True:
            try:
                self.tasks.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return

    def dead_jobs(self) -> list[tuple[int, str]]:
        """Jobs whose worker died (crashed or was killed); the worker is restarted."""
        lost = []
        for wid, proc in enumerate(self.procs):
            if not proc.is_alive():
                key = self.current.get(wid)
                if key is not None:
                    lost.append((key, f"worker process died (exit code {proc.exitcode}) on this video"))
                self._start(wid)
        return lost

    def replies_ok(self, wid: int) -> bool:
        """Whether worker `wid` waits for detections on its replies queue and is alive to read them."""
        return self.replies[wid] is not None and self.procs[wid].is_alive()

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=1)
