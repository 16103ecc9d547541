"""Files: the one implementation of atomic writes, folder walking and CSV reading that every layer uses.

- Atomic writes: a file is either absent or complete. It is written under a temporary name in its own folder and
  renamed into place (`os.replace`), so a killed job never leaves half a file for a resumed one to trust.
- Folder walking: videos under a folder, recursively, in sorted order, hidden files and folders left out. Links
  are followed, but each real folder is entered once (a link back to a parent cannot loop) and each real file is
  listed once (two links to one video give one entry).
- CSV reading: user CSVs (labels.csv, index.csv, sample submissions) may start with a byte-order mark (Excel
  writes one); it is dropped, so a header reads the same with or without it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["OneLineError", "VIDEO_EXTENSIONS", "is_video_name", "iter_videos", "real_key", "atomic_write",
           "atomic_path", "csv_text", "read_csv_dicts", "CsvError", "ENV_CACHE", "cache_folder", "sha256_of"]

ENV_CACHE = "DEEPFAKE_CACHE"  # overrides the cache folder (`cache_folder`)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")


class OneLineError(Exception):
    """An error a user reads as one line: its message's whitespace (newlines in a file name or a CSV header too)
    is folded into single spaces."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


class CsvError(OneLineError, ValueError):
    """A CSV file that can't be read, or lacks a column; the message is one line naming the file."""


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed to `path` when the block ends without an exception.

    The temporary name keeps the file's extension, so writers that choose a format by it (matplotlib, PyAV,
    OpenCV) still do. Its parent folder is created.

    Example:
        >>> with atomic_path("out/plot.png") as tmp:
        ...     fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


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
