"""What a user names on a command line (files, folders, glob patterns) -> the videos to score, in order.

`deepfake.inference.collect_videos` is this module's (re-exported there, where predict, evaluate and serve take it).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from data_prep.files import is_video_name, iter_videos, real_key

__all__ = ["collect_videos"]


def collect_videos(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """Expand files, folders (recursively, video extensions only) and glob patterns into video paths, in order.

    A file named explicitly is kept whatever its extension (and whether or not it exists: decoding then says
    what is wrong with it); a pattern keeps the video files it matches; duplicates are dropped.

    Args:
        inputs: what the user gave.

    Returns:
        Entries in input order: (video path, None), or (input, reason) for an input that gave no video (an empty
        folder, a pattern that matches nothing).
    """
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()  # real paths: a video reached twice (a link, two inputs) is scored once

    def add(p: Path) -> None:
        key = real_key(p)
        if key not in seen:
            seen.add(key)
            out.append((os.fspath(p), None))

    for item in inputs:
        path = Path(os.path.expanduser(item))
        if not item.strip():  # Path("") is the current folder: never what was meant
            out.append((item, "empty path"))
        elif path.is_dir():
            found = list(iter_videos(path))
            if not found:
                out.append((item, "folder holds no video files"))
            for p in found:
                add(p)
        elif path.exists() or not glob.has_magic(item):
            add(path)  # a missing file is reported by decoding as "missing: no such file"
        else:
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(item), recursive=True))]
            found = []
            for m in matches:
                found.extend(iter_videos(m) if m.is_dir() else [m] if is_video_name(m) else [])
            if not found:
                out.append((item, "no video file matches this pattern"))
            for p in found:
                add(p)
    return out
