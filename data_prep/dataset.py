"""A dataset's face crops on disk: SOURCE videos -> OUT_DIR/crops/**.jpg + OUT_DIR/index.csv (`extract_dataset`).

What OUT_DIR holds:
- ``crops/<video id without extension>/t<track>_f<frame:06d>.jpg``: the crops of each video.
- ``parts/<video id>.csv`` and ``parts/<video id>.json``: each video's index rows and its status. A finished
  video writes its crops (a folder renamed into place) and then, atomically, these two, the status last: it
  marks the video done. So a killed run resumes where it stopped; videos that failed to decode are retried by
  the next run, videos without a face are not.
- ``index.csv`` (`data_prep.index.INDEX_COLUMNS`, one row per crop) and ``failures.csv`` (video, reason),
  assembled from the parts at the end of a run.
- ``extract_config.json`` (`data_prep.index.EXTRACT_SETTINGS`): the settings that change what is written. A
  later run into the same OUT_DIR must use the same ones, or it is refused (`DatasetError`): crops made two
  ways never mix in one index.

Sharding: shard K of N takes the videos whose `original` hashes to K (`shard_of`), so a fake always lands with
its original and a group never splits across machines. Each shard writes ``index.shard-K-of-N.csv`` /
``failures.shard-K-of-N.csv``; the shard that finishes last merges them into index.csv / failures.csv (or
`merge_shards` does, for ``deepfake-extract OUT_DIR --merge``).

Box reuse: a DFDC fake whose original is extracted in the same run (or was, by an earlier run into the same
OUT_DIR) is cropped with the original's boxes when it has the same frame count and size: no detection at all,
and crops aligned with the original's. Originals run first; their fakes wait for them. The boxes reused are
always those the index records (rounded as written), whether they come from memory or from an earlier run's
parts, so a killed and resumed run writes the same bytes as one that ran through.

Safety: two videos whose crop folders would be one (the same path but for the extension, or for letter case)
are not mixed: the first by id keeps the folder, the other fails with a reason. One run at a time writes a given
OUT_DIR (or a given shard of it): a second is refused while the first holds `.extract[.shard-K-of-N].lock`.
A video whose outputs can't be written (disk full, permissions) fails with that reason; the run goes on.

This module prints nothing: progress and warnings go to the caller's callbacks, errors a user must see are
`DatasetError`s with a one-line message (the command, `deepfake.cli.extract`, prints them).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


from data_prep.extractor import FaceExtractor
from data_prep.faces import ExtractConfig, VideoFaces, damage_note, output_settings
from data_prep.files import atomic_write, csv_text
from data_prep.index import EXTRACT_SETTINGS, FAILURE_COLUMNS, INDEX_COLUMNS
from data_prep.layouts import LayoutError, VideoRecord, find_videos
from data_prep.workers import default_workers

from data_prep.parts import (
    BoxReuse, DatasetError, crop_clashes, is_done, part_paths, read_part_status, run_lock, write_failure,
    write_video_part,
)

__all__ = ["DatasetError", "ExtractSummary", "extract_dataset", "merge_shards", "shard_name", "shard_of"]


@dataclass
class ExtractSummary:
    """What a run of `extract_dataset` did.

    Attributes:
        videos: videos of this shard (after `limit`).
        tracks: face tracks over them (this run's and earlier runs').
        failures: videos in failures.csv (unreadable, no face, not processed).
        done_now: videos extracted by this run.
        already_done: videos an earlier run had finished.
        elapsed: seconds from the start of extraction (the detector loaded) to the index written.
        device: the detector's device.
        index: the index written: index.csv, or with shards this shard's index.shard-K-of-N.csv.
        merged: index.csv when this run finished the last shard and merged them all, else None.
        shards: the number of shards.
    """

    videos: int
    tracks: int
    failures: int
    done_now: int
    already_done: int
    elapsed: float
    device: str
    index: Path
    merged: Path | None = None
    shards: int = 1


# ------------------------------------------------------------------------------------------------ shards, index


def shard_of(original: str, n_shards: int) -> int:
    """Shard of a video group (a real video and its fakes share `original`): stable across runs and machines."""
    return zlib.crc32(original.encode("utf-8")) % n_shards


def shard_name(kind: str, k: int, n: int) -> str:
    """File name of shard K of N's ``index`` or ``failures`` file."""
    return f"{kind}.shard-{k}-of-{n}.csv"


def _assemble(out: Path, records: list[VideoRecord]) -> tuple[str, str, int, int, int]:
    """Index and failures CSV text for a list of records, from their per-video fragments."""
    lines: list[str] = []
    failures: list[list[str]] = []
    n_tracks = 0
    header = ",".join(INDEX_COLUMNS) + "\n"
    for record in records:
        csv_path, _ = part_paths(out, record.video)
        meta = read_part_status(out, record.video)
        if meta is None:
            failures.append([record.video, "not processed (run interrupted?)"])
            continue
        if meta.get("reason"):
            failures.append([record.video, meta["reason"]])
        if meta.get("status") in ("ok", "no_face"):
            n_tracks += int(meta.get("tracks", 0))
            text = csv_path.read_text()
            lines.append(text[len(header):] if text.startswith(header) else _rows_as_current(text))
    return header + "".join(lines), csv_text(failures, FAILURE_COLUMNS), len(records), n_tracks, len(failures)


def _rows_as_current(text: str) -> str:
    """The rows of a part written with other index columns (by an older version), as the current columns (cells
    the part lacks are empty: unknown)."""
    rows = [[row.get(c) or "" for c in INDEX_COLUMNS] for row in csv.DictReader(text.splitlines())]
    return csv_text(rows, INDEX_COLUMNS, with_header=False)


def merge_shards(out: str | os.PathLike, n_shards: int | None = None) -> tuple[int, int, int]:
    """Concatenate the per-shard index and failure files into index.csv and failures.csv.

    Args:
        out: OUT_DIR.
        n_shards: the number of shards (None: from the shard files found).

    Returns:
        (index rows, failures, shards merged).

    Raises:
        DatasetError: no shard files, shard files for several shard counts, or shards not finished yet (the
            message says which).
    """
    out = Path(out)
    if n_shards is None:
        found = sorted({int(m.group(2)) for p in out.glob("index.shard-*-of-*.csv")
                        if (m := re.fullmatch(r"index\.shard-(\d+)-of-(\d+)\.csv", p.name))})
        if not found:
            raise DatasetError(f"{out}: no index.shard-K-of-N.csv files to merge")
        if len(found) > 1:
            raise DatasetError(f"{out}: shard files for several shard counts ({found}); remove the stale ones")
        n_shards = found[0]
    missing = [k for k in range(n_shards) if not (out / shard_name("index", k, n_shards)).is_file()]
    if missing:
        raise DatasetError(f"{out}: shards {missing} of {n_shards} are not finished yet")
    index_parts, failure_parts = [], []
    for k in range(n_shards):
        index_parts.append((out / shard_name("index", k, n_shards)).read_text().split("\n", 1)[1])
        fail = out / shard_name("failures", k, n_shards)
        failure_parts.append(fail.read_text().split("\n", 1)[1] if fail.is_file() else "")
    index_text = ",".join(INDEX_COLUMNS) + "\n" + "".join(index_parts)
    failures_text = ",".join(FAILURE_COLUMNS) + "\n" + "".join(failure_parts)
    atomic_write(out / "index.csv", index_text)
    atomic_write(out / "failures.csv", failures_text)
    return index_text.count("\n") - 1, failures_text.count("\n") - 1, n_shards


def _check_settings(out: Path, config: ExtractConfig) -> None:
    """Write OUT_DIR's settings file, or check that `config` matches the one there (DatasetError if not)."""
    settings = output_settings(config)
    settings_path = out / EXTRACT_SETTINGS
    if settings_path.is_file():
        try:
            previous = json.loads(settings_path.read_text())
        except ValueError:
            previous = None
        # A setting the folder's file does not name is newer than the folder's crops: not a change.
        changed = {key: (previous[key], value) for key, value in settings.items()
                   if isinstance(previous, dict) and key in previous and previous[key] != value}
        if changed:
            what = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changed.items())
            raise DatasetError(f"{out} holds crops made with other settings ({what}); use another OUT_DIR or "
                               "the same settings")
    else:
        atomic_write(settings_path, json.dumps(settings, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ a run


def extract_dataset(source: str | os.PathLike, out: str | os.PathLike, config: ExtractConfig, *,
                    layout: str = "auto", shard: tuple[int, int] = (0, 1), limit: int | None = None,
                    workers: int | None = None, reuse_original_boxes: bool = True,
                    progress: Callable[[int, int, int, int], None] | None = None,
                    warn: Callable[[str], None] | None = None, engine: Callable = FaceExtractor) -> ExtractSummary:
    """Extract the faces of a dataset's videos into OUT_DIR, resuming what an earlier run left (module docstring).

    Args:
        source: the dataset folder.
        out: OUT_DIR.
        config: extraction settings; those that change the output must match OUT_DIR's settings file.
        layout: the dataset layout: a `data_prep.layouts.LAYOUTS` name or a `LayoutOptions` (FF++ compression).
        shard: (K, N): process shard K of N (0-based).
        limit: process at most this many of the shard's videos.
        workers: extraction processes (0: this process; None: one per core, at most 16).
        reuse_original_boxes: crop a DFDC fake with its original's boxes when they fit.
        progress: called with (videos done, videos to do, face tracks found, failures) by this run, once with
            0 videos done when extraction starts (the detector loaded), then after each video.
        warn: called with one-line remarks, ``note: ...`` (about the dataset) or ``warning: ...`` (about a
            video: damaged data skipped).
        engine: makes the extractor from (config, workers): `FaceExtractor`, or `data_prep.ray_extract`'s on Ray.

    Returns:
        What was done, and where the index is.

    Raises:
        DatasetError: SOURCE does not fit the layout, OUT_DIR holds crops made with other settings, or the
            extractor can't be made as asked (a GPU asked for without one, workers < 0).
    """
    if not (os.fspath(source).strip() and os.fspath(out).strip()):  # Path("") would be the current folder
        raise DatasetError("an empty path was given: name SOURCE and OUT_DIR")
    source, out = Path(source), Path(out)
    try:
        found = find_videos(source, layout)
    except LayoutError as err:
        raise DatasetError(str(err)) from None
    for note in found.notes:
        if warn is not None:
            warn(f"note: {note}")
    k, n = shard
    records = [r for r in found.records if shard_of(r.original, n) == k]
    if limit is not None:
        records = records[:max(0, limit)]

    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / ".extract.write-test", "w"):
            pass
        os.unlink(out / ".extract.write-test")
    except OSError as err:  # a file in the way, a read-only disk or folder: before any work, in one line
        raise DatasetError(f"can't write to OUT_DIR {out}: {err.strerror or err}") from None
    with run_lock(out, shard):
        return _extract_locked(out, config, records, found.records, shard, workers, reuse_original_boxes, progress,
                               warn, engine)


def _extract_locked(out: Path, config: ExtractConfig, records: list[VideoRecord], all_records: list[VideoRecord],
                    shard: tuple[int, int], workers: int | None, reuse_original_boxes: bool,
                    progress: Callable[[int, int, int, int], None] | None,
                    warn: Callable[[str], None] | None, engine: Callable = FaceExtractor) -> ExtractSummary:
    """`extract_dataset` once OUT_DIR's lock is held."""
    k, n = shard
    _check_settings(out, config)
    clashes = crop_clashes(all_records)  # over every shard's videos: shards share the crops folder
    refused = [r for r in records if r.video in clashes]
    for r in refused:
        write_failure(out, r.video, clashes[r.video])
    todo = [r for r in records if r.video not in clashes and not is_done(out, r.video)]
    workers = default_workers() if workers is None else workers
    try:
        extractor = engine(config, min(workers, len(todo)) if todo else 0)
    except ValueError as err:
        raise DatasetError(str(err)) from None
    try:
        reuse = BoxReuse(out, records, config.stride, reuse_original_boxes)
        jobs = reuse.order(todo)
        started = time.monotonic()
        n_new_tracks = n_new_fail = 0
        if progress is not None:
            progress(0, len(todo), 0, 0)
        for done, (job, result) in enumerate(extractor.run_jobs(jobs, jpeg=True, keep_boxes=reuse.keep,
                                                                reuse_lookup=reuse.lookup), 1):
            try:
                tracks, _, reason = write_video_part(out, todo[job.key], result, config.margin)
            except OSError as err:  # disk full, permissions, a folder changed under us: this video fails, not the run
                tracks, reason = 0, f"can't write its outputs: {err}"
                with contextlib.suppress(OSError):
                    write_failure(out, todo[job.key].video, reason)
            if isinstance(result, VideoFaces) and result.damaged_frames and warn is not None:
                warn(f"warning: {todo[job.key].video}: {damage_note(result)}")
            n_new_tracks += tracks
            n_new_fail += reason is not None
            if progress is not None:
                progress(done, len(todo), n_new_tracks, n_new_fail)
    finally:
        extractor.close()

    index_text, failures_text, n_videos, n_tracks, n_failures = _assemble(out, records)
    merged = None
    if n == 1:
        atomic_write(out / "index.csv", index_text)
        atomic_write(out / "failures.csv", failures_text)
        index = out / "index.csv"
    else:
        atomic_write(out / shard_name("failures", k, n), failures_text)
        atomic_write(out / shard_name("index", k, n), index_text)
        index = out / shard_name("index", k, n)
        try:
            merge_shards(out, n)
            merged = out / "index.csv"
        except DatasetError:  # other shards still running: the last one merges
            pass
    return ExtractSummary(videos=n_videos, tracks=n_tracks, failures=n_failures, done_now=len(todo),
                          already_done=len(records) - len(todo) - len(refused), elapsed=time.monotonic() - started,
                          device=extractor.device, index=index, merged=merged, shards=n)
