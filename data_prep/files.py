"""Files: the one implementation of atomic writes, folder walking and CSV reading that every layer uses.

- Atomic writes: a file is either absent or complete. It is written under a temporary name in its own folder and
  renamed into place (`os.replace`), so a killed job never leaves half a file for a resumed one to trust.
- Folder walking: videos under a folder, recursively, in sorted order, hidden files and folders left out. Links
  are followed, but each real folder is entered once (a link back to a parent cannot loop) and each real file is
  listed once (two links to one video give one entry).
- Outputs: a path a user names as an output must not destroy anything. A regular file (or nothing yet) is replaced
  atomically; a character device or FIFO (`/dev/null`, `/dev/stdout`, a pipe) is written directly, never renamed
  over; a folder, socket or block device is refused in one line (`output_kind`). An output that is one of the
  inputs is refused before any work (`refuse_input_as_output`), and one process at a time writes an output
  (`hold_lock`: the second is refused, naming the first's PID). An empty path is an error (`check_path`).
- CSV reading: user CSVs (labels.csv, index.csv, sample submissions) may start with a byte-order mark (Excel
  writes one); it is dropped, so a header reads the same with or without it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
import tempfile
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["OneLineError", "VIDEO_EXTENSIONS", "is_video_name", "iter_videos", "real_key", "atomic_write",
           "atomic_folder", "atomic_path", "csv_text", "read_csv_dicts", "CsvError", "OutputError", "LockedError",
           "check_path", "output_kind", "refuse_input_as_output", "hold_lock", "ENV_CACHE", "cache_folder", "sha256_of"]

ENV_CACHE = "DEEPFAKE_CACHE"  # overrides the cache folder (`cache_folder`)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")


class OneLineError(Exception):
    """An error a user reads as one line: its message's whitespace (newlines in a file name or a CSV header too)
    is folded into single spaces."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


class CsvError(OneLineError, ValueError):
    """A CSV file that can't be read, or lacks a column; the message is one line naming the file."""


class OutputError(OneLineError, ValueError):
    """An output path that must not be written (a folder, a socket, a block device, one of the inputs, empty)."""


class LockedError(OneLineError):
    """Another process holds the lock on an output; the message names its PID (`holder`: "pid N on HOST")."""

    def __init__(self, message: object = "", holder: str = "another process") -> None:
        super().__init__(message)
        self.holder = holder


# ------------------------------------------------------------------------------------------------ walking


def is_video_name(path: str | os.PathLike) -> bool:
    """Whether a file name is a video's by its extension (hidden files are not)."""
    name = os.path.basename(os.fspath(path))
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and not name.startswith(".")


def real_key(path: str | os.PathLike) -> str:
    """What identifies a file whatever the path or link it is reached by: its resolved, case-normalised path."""
    return os.path.normcase(os.path.realpath(os.fspath(path)))


def iter_videos(folder: str | os.PathLike, seen: set[str] | None = None) -> Iterator[Path]:
    """Video files under `folder`, recursively, in sorted order; hidden files and folders are left out.

    Links to folders are followed, but a real folder is entered only once and a link up to a folder holding
    `folder` is not followed, so a link back to a parent (a loop) ends there; a real file is yielded only once
    however many links reach it.

    Args:
        folder: where to look.
        seen: real keys (`real_key`) of files already yielded by an earlier call, to share across several
            folders; updated in place.

    Yields:
        Paths under `folder` (as reached, not resolved), so a file's name relative to `folder` stays meaningful.
    """
    seen = set() if seen is None else seen
    entered: set[tuple[int, int]] = set()
    start = os.path.realpath(folder)
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        here = os.path.realpath(root)
        # A link back to a folder already walked, or up to one that holds `folder` (whose other parts, e.g. a
        # dataset's fake/ seen from its real/, are not `folder`'s to list): walked no further.
        if (st.st_dev, st.st_ino) in entered or (here != start and os.path.commonpath([here, start]) == here):
            dirs[:] = []
            continue
        entered.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not is_video_name(name):
                continue
            path = Path(root) / name
            key = real_key(path)
            if key not in seen:
                seen.add(key)
                yield path


# ------------------------------------------------------------------------------------------------ the cache


def cache_folder() -> Path:
    """The cache folder (default weights, downloads, ONNX exports): `$DEEPFAKE_CACHE`, else
    `$XDG_CACHE_HOME/deepfake`, else `~/.cache/deepfake`. Not created here."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deepfake"


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ writing


def check_path(path: str | os.PathLike | None, what: str = "path") -> Path:
    """`path` as a Path; OutputError when it is empty (`Path("")` would silently mean the current folder)."""
    if path is None or not os.fspath(path).strip():
        raise OutputError(f"the {what} is empty: give a file or folder name")
    return Path(os.path.expanduser(os.fspath(path)))


def output_kind(path: str | os.PathLike) -> str:
    """How an output path is written: ``file`` (absent or a regular file: atomically, by rename) or ``stream`` (a
    character device or FIFO such as /dev/null, /dev/stdout or a pipe: written directly, never renamed over).

    Raises:
        OutputError: empty, a folder, a socket or a block device, said in one line.
    """
    path = check_path(path, "output path")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file"
    except OSError as err:
        raise OutputError(f"can't write {path}: {err.strerror or err}") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "stream"
    kind = ("a folder" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    raise OutputError(f"can't write {path}: it is {kind}; give a file name")


def refuse_input_as_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str = "--output"
                           ) -> None:
    """OutputError when `output` is one of `inputs` (however reached: links, hard links, `..`, case on case-blind
    disks).

    Checked before any work: writing there would destroy an input before, or instead of, reading it.
    """
    if output_kind(output) == "stream":  # /dev/stdout and the like are no one's input file
        return
    key = real_key(output)
    try:
        st = os.stat(output)
        ident = (st.st_dev, st.st_ino)
    except OSError:
        ident = None  # not there yet: no input can be it
    for item in inputs:
        same = real_key(item) == key
        if not same and ident is not None:
            with contextlib.suppress(OSError):
                same = (os.stat(item).st_dev, os.stat(item).st_ino) == ident
        if same:
            raise OutputError(f"{what} {output} is one of the inputs ({item}); writing it would destroy it: give "
                              "another output")


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a lock file, created and removed here) while the block runs.

    An OS file lock (flock): released by the OS when the process ends however it ends, so a killed run never
    leaves a stale lock. Where the platform has no flock (Windows), runs are not guarded.

    Args:
        path: the lock file (e.g. `.results.jsonl.lock` beside the output it guards).
        what: what the lock guards, for the message (e.g. "results.jsonl").

    Raises:
        LockedError: another process holds it; the message names its PID and host.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise LockedError(f"{what} is being written by another process ({holder}); wait for it to end, or give "
                              "another output", holder) from None
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed it between our open and our lock: take the new one
            same = False
        if same:
            break
        f.close()
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before unlocking: a process waiting on this file re-checks and takes a fresh one
        f.close()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed to `path` when the block ends without an exception.

    The temporary name keeps the file's extension, so writers that choose a format by it (matplotlib, PyAV,
    OpenCV) still do. Its parent folder is created. When `path` is a character device or FIFO (`output_kind`),
    the block gets `path` itself: it is written directly, never replaced by a regular file.

    Raises:
        OutputError: `path` is empty, a folder, a socket or a block device.

    Example:
        >>> with atomic_path("out/plot.png") as tmp:
        ...     fig.savefig(tmp)
    """
    if output_kind(path) == "stream":
        yield Path(path)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """A fresh temporary folder beside `path` to fill; it becomes `path` in one rename when the block ends without
    an exception, and is removed otherwise, so no half-filled folder is ever seen under the real name.

    Args:
        path: the folder to make.
        replace: True: whatever was at `path` is replaced. False: a `path` that exists when the block ends (another
            process finished first) is kept and this one is dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        if path.exists() and not replace:
            return
        if path.exists():
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if replace or not path.exists():  # not another process's folder, arrived in between
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)


def csv_text(rows: Iterable[Iterable | dict], header: list[str], with_header: bool = True) -> str:
    """CSV text with `header` (its line left out with `with_header=False`, for appending to a file); rows are
    sequences, or dicts keyed by the header (missing keys and None empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if with_header:
        writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(k, "") for k in header] if isinstance(row, dict) else row)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ reading


def read_csv_dicts(path: str | os.PathLike, need: Iterable[str] = ()) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of stripped strings, header names stripped too; a leading BOM is dropped.

    Args:
        path: the file.
        need: columns that must be in the header.

    Raises:
        CsvError: unreadable file, not UTF-8, malformed CSV, or a needed column missing (the message names the
            file, the columns needed and those found).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = [row for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise CsvError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as err:
        raise CsvError(f"{path}: not a readable CSV file ({err})") from None
    except OSError as err:
        raise CsvError(f"{path}: can't read ({err.strerror or err})") from None
    missing = [c for c in need if c not in header]
    if missing:
        shown = ",".join(" ".join(h.split()) for h in header)[:200]  # one line, however odd the header
        raise CsvError(f"{path}: needs columns {','.join(need)}; missing {','.join(missing)} "
                       f"(the header is {shown or 'empty'})")
    return [{h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header) if h} for row in rows]
