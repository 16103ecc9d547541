"""Property-based fuzzing (Hypothesis) of the readers of files a user hands us: CSVs (labels.csv, index.csv, sample
submissions), DFDC's metadata.json and predict's results journal. Whatever the bytes, each reader either returns
well-formed data or raises its own one-line error; never another exception."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.files import CsvError, csv_text, read_csv_dicts
from data_prep.index import IndexFileError, read_index
from data_prep.layouts import LayoutError, find_videos
from deepfake.results import ResultLog
from deepfake.submission import SubmissionError, read_sample_submission

# Derandomized: CI runs the same examples every time (a failure reproduces); run with more examples locally to search.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like CSV often enough to reach past the parser: separators, quotes, line ends, BOMs, NULs.
csv_like = st.lists(st.sampled_from(list("abc01,\"\n\r\t ;.-_/\ufeff\x00é") + ["video", "label", "real", "fake",
                                                                              "filename", "track", "frame", "crop"]),
                    max_size=60).map("".join)
raw_bytes = st.binary(max_size=200)


_BASE: list[Path] = []  # the module's temporary folder (pytest's, so it is cleaned up like tmp_path)


@pytest.fixture(scope="module", autouse=True)
def _fuzz_folder(tmp_path_factory):
    _BASE.append(tmp_path_factory.mktemp("fuzz"))
    yield
    _BASE.pop()


def _write(data: str | bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-", dir=_BASE[-1]))  # one per example, inside the test's folder
    path = folder / name
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


@FUZZ
@given(st.one_of(csv_like, raw_bytes))
def test_read_csv_dicts_returns_rows_or_says_why(data):
    try:
        rows = read_csv_dicts(_write(data, "x.csv"), need=["video"])
    except CsvError as err:
        assert "\n" not in str(err)
        return
    assert all(isinstance(k, str) and isinstance(v, str) for row in rows for k, v in row.items())


cell = st.text(alphabet=string.ascii_letters + string.digits + " ,\"'é_-./", min_size=1, max_size=12).map(str.strip)


@FUZZ
@given(st.lists(st.lists(cell, min_size=3, max_size=3), max_size=8), st.booleans())
def test_csv_text_and_read_csv_dicts_round_trip(rows, bom):
    rows = [r for r in rows if any(r)]
    text = csv_text(rows, ["video", "label", "note"])
    back = read_csv_dicts(_write(("\ufeff" if bom else "") + text, "x.csv"))
    assert [[r["video"], r["label"], r["note"]] for r in back] == rows


@FUZZ
@given(st.one_of(csv_like, raw_bytes))
def test_read_index_returns_a_checked_table_or_says_why(data):
    try:
        df, _ = read_index(_write(data, "index.csv"))
    except IndexFileError as err:
        assert "\n" not in str(err)
        return
    assert set(df["label"]) <= {0, 1} and set(df["split"]) <= {"", "train", "val", "test"}


@FUZZ
@given(st.one_of(csv_like, raw_bytes))
def test_labels_csv_gives_videos_or_a_layout_error(data):
    path = _write(data, "labels.csv")
    try:
        found = find_videos(path.parent, "folder")
    except LayoutError as err:
        assert "\n" not in str(err)
        return
    assert all(r.label in (0, 1) for r in found.records)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)
metadata = st.dictionaries(st.sampled_from(["a.mp4", "b.mp4", "../x.mp4", "sub/c.mp4", ""]),
                           st.dictionaries(st.sampled_from(["label", "original", "split"]),
                                           st.one_of(st.sampled_from(["REAL", "FAKE", "a.mp4", "train", ""]),
                                                     json_values), max_size=3), max_size=4)


@FUZZ
@given(st.one_of(metadata.map(json.dumps), json_values.map(json.dumps), raw_bytes))
def test_dfdc_metadata_gives_videos_or_a_layout_error(data):
    path = _write(data, "metadata.json")
    (path.parent / "a.mp4").write_bytes(b"")
    try:
        found = find_videos(path.parent, "dfdc")
    except LayoutError as err:
        assert "\n" not in str(err)
        return
    assert all(r.label in (0, 1) and not r.video.startswith("..") for r in found.records)


@FUZZ
@given(st.one_of(csv_like, raw_bytes))
def test_sample_submission_gives_names_or_says_why(data):
    try:
        names = read_sample_submission(_write(data, "sample_submission.csv"))
    except SubmissionError as err:
        assert "\n" not in str(err)
        return
    assert names and all(isinstance(n, str) and n for n in names)


@FUZZ
@given(st.one_of(st.lists(json_values.map(json.dumps)).map("\n".join), csv_like, raw_bytes),
       st.sampled_from(["jsonl", "csv"]))
def test_a_resumed_results_log_keeps_whole_results_only(data, fmt):
    path = _write(data, f"results.{fmt}")
    try:
        log = ResultLog(path, fmt, resume=True)
    except ValueError as err:  # not a results log: refused, and left as it was
        assert "not a results file" in str(err) and path.read_bytes() == (
            data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
        return
    with log:
        assert all(isinstance(v, str) and isinstance(r, dict) for v, r in log.done.items())
        log.append({"video": "new.mp4", "status": "error", "p_fake": None, "verdict": "error", "faces": [],
                    "error": "x"})
    with ResultLog(path, fmt, resume=True) as again:
        assert "new.mp4" in again.done
