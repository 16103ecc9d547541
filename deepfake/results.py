"""Prediction results as files a person or a program reads: a table, JSON, JSON Lines or CSV, and a results log
that is written as results are made (so a killed batch keeps them and `--resume` goes on).

A result is predict's JSON object (`deepfake.scoring.video_result`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from data_prep.files import csv_text

__all__ = ["CSV_COLUMNS", "FORMATS", "format_table", "write_results", "ResultLog"]

CSV_COLUMNS = ["video", "status", "verdict", "p_fake", "faces", "crops", "seconds", "error"]
FORMATS = ("table", "json", "csv", "jsonl")


def _fmt_p(p: float | None) -> str:
    return "-" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.3f}"


def _csv_row(result: dict, seconds: float | None) -> dict:
    return {"video": result["video"], "status": result["status"], "verdict": result["verdict"],
            "p_fake": "" if result["p_fake"] is None else f"{result['p_fake']:.6f}",
            "faces": len(result["faces"]) if result["status"] != "error" else "",
            "crops": sum(len(f["frames"]) for f in result["faces"]) if result["status"] != "error" else "",
            "seconds": "" if seconds is None else f"{seconds:.3f}", "error": result["error"] or ""}


def format_table(results: Sequence[dict], seconds: Sequence[float | None]) -> str:
    """A plain-text table: video, verdict, p(fake), faces, seconds, and a note for errors."""
    rows = [["video", "verdict", "p(fake)", "faces", "seconds"]]
    notes = []
    for r, s in zip(results, seconds):
        faces = str(len(r["faces"])) if r["status"] != "error" else "-"
        rows.append([r["video"], r["verdict"], _fmt_p(r["p_fake"]), faces, "-" if s is None else f"{s:.2f}"])
        notes.append(r["error"] or "")
    if any(notes):
        rows[0].append("reason")
        for row, note in zip(rows[1:], notes):
            row.append(note)
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    right = {2, 3, 4}  # numbers line up on the right
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if c in right else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[dict], fmt: str, seconds: Sequence[float | None] | None = None) -> str:
    """The text of `results` in `fmt` (``table``, ``json``, ``csv`` or ``jsonl``: one JSON object a line)."""
    seconds = list(seconds) if seconds is not None else [None] * len(results)
    if fmt == "json":
        return json.dumps(list(results), indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in results)
    if fmt == "csv":
        return csv_text([_csv_row(r, s) for r, s in zip(results, seconds)], CSV_COLUMNS)
    return format_table(results, seconds)


class ResultLog:
    """Results written as they are made: one line appended and flushed per video, so a killed batch keeps them.

    The file is JSON Lines (``jsonl``: predict's JSON object a line) or CSV (``csv``: `CSV_COLUMNS`). A line cut
    short by a kill is dropped when the file is opened again.

    Raises:
        ValueError: resuming a file that is not such a log (a line that is not a result, another CSV header):
            it is left untouched.

    Args:
        path: the file.
        fmt: ``jsonl`` or ``csv``.
        resume: keep what the file holds (`done` lists it) and append; otherwise start it anew.
    """

    def __init__(self, path: str | os.PathLike, fmt: str, resume: bool = False) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"a results log is jsonl or csv, not {fmt!r}")
        self.path, self.fmt = Path(path), fmt
        self.done: dict[str, dict] = {}  # video -> its result (a CSV row's fields, for csv)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = 0
        if resume and self.path.is_file():
            raw = self.path.read_bytes()
            kept = raw.rfind(b"\n") + 1  # a last line without its newline was cut by a kill: drop it
            self._read(raw[:kept].decode("utf-8", errors="replace"))
            if kept != len(raw):
                os.truncate(self.path, kept)
        self._file = open(self.path, "a" if kept else "w", encoding="utf-8", newline="")
        self._sync = stat.S_ISREG(os.fstat(self._file.fileno()).st_mode)  # fsync of a device or pipe: EINVAL
        if fmt == "csv" and not kept:
            self._file.write(csv_text([], CSV_COLUMNS))
        self._file.flush()

    def _read(self, text: str) -> None:
        not_ours = f"{self.path} is not a results file of `deepfake predict`"
        if self.fmt == "jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                try:
                    result = json.loads(line)
                except ValueError:
                    result = None
                if not (isinstance(result, dict) and isinstance(result.get("video"), str)):
                    raise ValueError(f"{not_ours} (line {n} is not a result); give another --output")
                self.done[result["video"]] = result
        elif text:
            try:
                reader = csv.DictReader(io.StringIO(text, newline=""))
                if reader.fieldnames != CSV_COLUMNS:
                    raise ValueError(f"{not_ours} (its header is not {','.join(CSV_COLUMNS)}); give another --output")
                rows = list(reader)
            except csv.Error as err:
                raise ValueError(f"{not_ours} (not readable as CSV: {err}); give another --output") from None
            for row in rows:
                if row.get("video"):
                    self.done[row["video"]] = row

    def append(self, result: dict, seconds: float | None = None) -> None:
        """Write one video's result and flush it to disk."""
        self._file.write(csv_text([_csv_row(result, seconds)], CSV_COLUMNS, with_header=False) if self.fmt == "csv"
                         else write_results([result], self.fmt))
        self._file.flush()
        if self._sync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file; a flush that fails here (a full disk) was already reported by `append`."""
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> ResultLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
