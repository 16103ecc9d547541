"""`FaceExtractor`: face tracks of videos in memory, in this process or in a pool of worker processes.

It is the one engine behind in-memory use (prediction, notebooks: `extract`, `extract_many`) and the dataset
writer (`data_prep.dataset`, through `run_jobs`). With workers it also serves their detection requests on a GPU:
the frames of all pending requests of one kind and size go to the detector in one batch.
"""

from __future__ import annotations

import os
import queue
import time
import traceback
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from data_prep.detection import DetectRequest, make_detector
from data_prep.faces import ExtractConfig, VideoFaces
from data_prep.pipeline import Progress, ReuseBoxes, run_inline, video_job
from data_prep.video import VideoError
from data_prep.workers import VideoJob, WorkerPool

__all__ = ["FaceExtractor", "extract_faces"]


class FaceExtractor:
    """Face tracks of videos, in memory (the same code path `deepfake-extract` runs).

    Args:
        config: settings; defaults to `ExtractConfig()`.
        workers: processes for `extract_many`, each extracting whole videos (0: this process, decoding on a
            thread so that decoding overlaps detection). On the CPU each worker has its own detector; on a GPU
            the workers decode, track and crop while this process detects for all of them in batches.
        detect_in_main: force that choice (None: detect in this process on a GPU, in the workers on the CPU).

    Example:
        >>> extractor = FaceExtractor(ExtractConfig(stride=5, margin=0.3, size=240, device="auto"))
        >>> faces = extractor.extract("clip.mp4")             # raises VideoError for unreadable input
        >>> for path, result in extractor.extract_many(paths):  # VideoFaces or VideoError, in input order
        ...     pass
    """

    def __init__(self, config: ExtractConfig | None = None, workers: int = 0, *,
                 detect_in_main: bool | None = None) -> None:
        self.config = config or ExtractConfig()
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.detector = make_detector(self.config)
        self.device = self.detector.device
        # With workers: detect in this process for all of them (default on a GPU) or in each worker (CPU).
        self.detect_in_main = self.device.startswith("cuda") if detect_in_main is None else detect_in_main
        self._pool: WorkerPool | None = None  # started on first use, kept for later calls (workers load MTCNN once)
        self._run_id = 0

    def close(self) -> None:
        """Stop the worker processes, if any (they also stop with this process)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> FaceExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the daemon workers go with it
            pass

    def extract(self, path: str | os.PathLike, *, jpeg: bool = False, progress: Progress | None = None,
                reuse: ReuseBoxes | None = None) -> VideoFaces:
        """Face tracks of one video.

        Args:
            path: the video file.
            jpeg: hold the crops as JPEG bytes at `config.quality` (`FaceTrack.jpegs`; `FaceTrack.images()` reads
                either kind), the bytes `deepfake-extract` writes for training: a long video's crops then fit in
                memory (1 h of one face at stride 5, 240 px: about 0.3 GB of JPEG against 3.7 GB of arrays).
            progress: called as the video goes, every 16 sampled frames or so, with (frames of the video done, frames
                in it): for a progress display on long videos.
            reuse: crop with these boxes (a DFDC fake's original's) instead of detecting, when they fit the video.

        Raises:
            VideoError: the video can't be read (missing, empty, not a video, truncated, corrupt).
        """
        return run_inline(video_job(os.fspath(path), self.config, reuse, jpeg=jpeg, progress=progress),
                           self.detector)

    def extract_many(self, paths: Iterable[str | os.PathLike], *, jpeg: bool = False,
                     progress: Callable[[str, int, int], None] | None = None,
                     ) -> Iterator[tuple[str, VideoFaces | VideoError]]:
        """Face tracks of many videos, in input order; a video that fails gives its VideoError, the rest go on.

        Args:
            paths: the videos.
            jpeg: as for `extract`.
            progress: as for `extract`, with the video's path (as given) first: (path, frames done, frames).

        Yields:
            (path as given, VideoFaces or VideoError).
        """
        jobs = [VideoJob(i, os.fspath(p)) for i, p in enumerate(paths)]
        pending: dict[int, VideoFaces | VideoError] = {}
        next_key = 0
        for job, result in self.run_jobs(jobs, jpeg=jpeg, progress=progress):
            pending[job.key] = result
            while next_key in pending:
                yield jobs[next_key].path, pending.pop(next_key)
                next_key += 1

    def run_jobs(self, jobs: list[VideoJob], jpeg: bool,
                 keep_boxes: Callable[[VideoJob, VideoFaces], None] | None = None,
                 reuse_lookup: Callable[[VideoJob], ReuseBoxes | None] | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 ) -> Iterator[tuple[VideoJob, VideoFaces | VideoError]]:
        """Run jobs, results in completion order; a job with `reuse_from` waits for that job and crops with its boxes.

        The engine behind `extract_many` and `data_prep.dataset.extract_dataset`.

        Args:
            jobs: the videos.
            jpeg: return crops as JPEG bytes (`FaceTrack.jpegs`) rather than arrays.
            keep_boxes: called with each finished job's faces (to remember boxes reused later).
            reuse_lookup: the boxes to reuse for a job, or None to detect.
            progress: called with (job path, frames done, frames) as each video goes.
        """
        if self.workers == 0:
            for job in jobs:
                reuse = reuse_lookup(job) if reuse_lookup else None
                report = (lambda done, total, path=job.path: progress(path, done, total)) if progress else None
                try:
                    result: VideoFaces | VideoError = run_inline(
                        video_job(job.path, self.config, reuse, jpeg, progress=report), self.detector)
                except VideoError as err:
                    result = err
                except Exception as err:  # keep a batch going; the reason says what happened
                    result = VideoError(f"internal error: {type(err).__name__}: {err}")
                    traceback.print_exc()
                if keep_boxes and isinstance(result, VideoFaces):
                    keep_boxes(job, result)
                yield job, result
            return
        yield from self._run_pool(jobs, jpeg, keep_boxes, reuse_lookup, progress)

    def _run_pool(self, jobs, jpeg, keep_boxes, reuse_lookup,
                  progress=None) -> Iterator[tuple[VideoJob, VideoFaces | VideoError]]:
        if self._pool is None:
            self._pool = WorkerPool(self.workers, self.config, central_detection=self.detect_in_main)
        pool = self._pool
        self._run_id += 1
        run = self._run_id  # results of an earlier call stopped midway carry another run id and are ignored
        by_key = {job.key: job for job in jobs}
        waiting = list(reversed(jobs))  # pop() from the end keeps input order
        unfinished = {job.key for job in jobs}
        running: set[int] = set()
        last_check = time.monotonic()
        max_running = 2 * self.workers  # enough to keep every worker busy; bounds memory for out-of-order results
        try:
            while unfinished:
                deferred = []
                while waiting and len(running) < max_running:
                    job = waiting.pop()
                    if job.reuse_from is not None and job.reuse_from in unfinished:
                        deferred.append(job)  # its original is still running: take it later
                        continue
                    pool.submit((run, job.key), job.path, reuse_lookup(job) if reuse_lookup else None, jpeg,
                                progress is not None)
                    running.add(job.key)
                waiting.extend(reversed(deferred))
                if not running and waiting:  # only jobs waiting on jobs that can't finish: run them plainly
                    for job in waiting:
                        job.reuse_from = None
                    continue
                try:
                    messages = [pool.results.get(timeout=1.0)]
                except queue.Empty:
                    messages = []
                if time.monotonic() - last_check > 2.0:
                    last_check = time.monotonic()
                    messages += [("done", -1, key, VideoError(reason)) for key, reason in pool.dead_jobs()]
                requests = []
                for kind, wid, tagged, payload in messages:
                    if kind == "detect":  # served whatever run it belongs to: the worker waits for it
                        requests.append((wid, payload))
                        continue
                    if kind == "fatal":
                        self.close()
                        raise RuntimeError(f"extraction worker could not start its detector: {payload}")
                    if kind == "start":
                        pool.current[wid] = tagged
                        continue
                    if kind == "progress":
                        run_of, key = tagged
                        if progress is not None and run_of == run and key in unfinished:
                            progress(by_key[key].path, *payload)
                        continue
                    if wid >= 0:
                        pool.current[wid] = None
                    run_of, key = tagged
                    if kind == "done" and run_of == run and key in unfinished:
                        unfinished.discard(key)
                        running.discard(key)
                        if keep_boxes and isinstance(payload, VideoFaces):
                            keep_boxes(by_key[key], payload)
                        yield by_key[key], payload
                self._serve(pool, requests)
        finally:
            if unfinished:
                pool.cancel_queued()

    def _serve(self, pool: WorkerPool, requests: list[tuple[int, DetectRequest]]) -> None:
        """Detect for workers (GPU mode): the frames of all pending requests of one kind and size go in one batch."""
        groups: dict[tuple, list[tuple[int, DetectRequest]]] = {}
        for wid, request in requests:  # detections by frame size, and re-fits the workers prepared (`_RemoteDetector`)
            key = ("detect", request.frames.shape[1:]) if request.boxes is None else ("refit",)
            groups.setdefault(key, []).append((wid, request))
        for key, group in groups.items():
            if key[0] == "detect":
                results = self.detector.detect(np.concatenate([r.frames for _, r in group]))
            else:
                results = self.detector.refine_inputs(np.concatenate([r.squares for _, r in group]),
                                                      np.concatenate([r.crops for _, r in group]),
                                                      [len(b) for _, r in group for b in r.boxes])
            start = 0
            for wid, request in group:
                if pool.replies_ok(wid):
                    pool.replies[wid].put(results[start:start + len(request)])
                start += len(request)


def extract_faces(path: str | os.PathLike, config: ExtractConfig | None = None) -> VideoFaces:
    """Face tracks of one video with a one-off extractor (`FaceExtractor(config).extract(path)`).

    Raises:
        VideoError: the video can't be read.
    """
    return FaceExtractor(config).extract(path)
