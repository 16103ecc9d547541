"""data_prep.layouts: each dataset layout on a small tree of (empty) files the test builds, and auto-detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.layouts import LayoutError, detect_layout, find_videos


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def table(result) -> dict[str, tuple[int, str, str]]:
    return {r.video: (r.label, r.split, r.original) for r in result.records}


def test_dfdc_parts_with_metadata(tmp_path):
    for part, meta in {
        "dfdc_train_part_0": {"a.mp4": {"label": "REAL", "split": "train", "original": None},
                              "b.mp4": {"label": "FAKE", "split": "train", "original": "a.mp4"},
                              "gone.mp4": {"label": "FAKE", "split": "train", "original": "elsewhere.mp4"}},
        "dfdc_train_part_1": {"c.mp4": {"label": "REAL", "split": "validation"}},
    }.items():
        touch(tmp_path, *(f"{part}/{name}" for name in meta if name != "gone.mp4"))
        (tmp_path / part / "metadata.json").write_text(json.dumps(meta))
    touch(tmp_path, "dfdc_train_part_1/unlisted.mp4")
    assert detect_layout(tmp_path) == "dfdc"
    result = find_videos(tmp_path)
    assert result.layout == "dfdc"
    assert table(result) == {
        "dfdc_train_part_0/a.mp4": (0, "train", "dfdc_train_part_0/a.mp4"),
        "dfdc_train_part_0/b.mp4": (1, "train", "dfdc_train_part_0/a.mp4"),
        # listed but missing on disk: kept, so extraction reports it; its original is known by name
        "dfdc_train_part_0/gone.mp4": (1, "train", "dfdc_train_part_0/elsewhere.mp4"),
        "dfdc_train_part_1/c.mp4": (0, "val", "dfdc_train_part_1/c.mp4"),
    }
    assert result.skipped == 1 and "not listed" in result.notes[0]
    assert [r.video for r in result.records] == sorted(r.video for r in result.records)
    assert result.records[0].path == tmp_path / "dfdc_train_part_0" / "a.mp4"


def test_dfdc_single_folder_and_bad_label(tmp_path):
    touch(tmp_path, "x.mp4")
    (tmp_path / "metadata.json").write_text(json.dumps({"x.mp4": {"label": "MAYBE"}}))
    with pytest.raises(LayoutError, match="unknown label 'MAYBE'"):
        find_videos(tmp_path, "dfdc")
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(LayoutError, match="not readable JSON"):
        find_videos(tmp_path, "dfdc")


def test_deeperforensics_fakes_reals_and_splits(tmp_path):
    touch(tmp_path,
          "manipulated_videos/end_to_end/000_M101.mp4", "manipulated_videos/end_to_end/001_M101.mp4",
          "manipulated_videos/end_to_end/002_W102.mp4", "manipulated_videos/end_to_end_level_1/000_M101.mp4",
          "manipulated_videos/end_to_end/003_M999.mp4",
          "source_videos/M101/light_uniform/happy/camera_front/M101_happy.mp4",
          "source_videos/W102/light_uniform/neutral/camera_left/W102_neutral.mp4",
          "source_videos/W103/neutral/camera_front/W103.mp4")
    splits = tmp_path / "lists" / "splits"
    splits.mkdir(parents=True)
    (splits / "train.txt").write_text("000_M101.mp4\n001_M101.mp4\n")
    (splits / "val.txt").write_text("")
    (splits / "test.txt").write_text("002_W102.mp4\n")
    assert detect_layout(tmp_path) == "deeperforensics"
    got = table(find_videos(tmp_path))
    assert got == {
        "manipulated_videos/end_to_end/000_M101.mp4": (1, "train", "manipulated_videos/end_to_end/000_M101.mp4"),
        "manipulated_videos/end_to_end/001_M101.mp4": (1, "train", "manipulated_videos/end_to_end/001_M101.mp4"),
        "manipulated_videos/end_to_end/002_W102.mp4": (1, "test", "manipulated_videos/end_to_end/002_W102.mp4"),
        "manipulated_videos/end_to_end/003_M999.mp4": (1, "", "manipulated_videos/end_to_end/003_M999.mp4"),
        # the same clip under another method folder gets the same split (lists name files, not paths)
        "manipulated_videos/end_to_end_level_1/000_M101.mp4":
            (1, "train", "manipulated_videos/end_to_end_level_1/000_M101.mp4"),
        # real videos follow their actor's fakes; an actor without listed fakes gets no split
        "source_videos/M101/light_uniform/happy/camera_front/M101_happy.mp4":
            (0, "train", "source_videos/M101/light_uniform/happy/camera_front/M101_happy.mp4"),
        "source_videos/W102/light_uniform/neutral/camera_left/W102_neutral.mp4":
            (0, "test", "source_videos/W102/light_uniform/neutral/camera_left/W102_neutral.mp4"),
        "source_videos/W103/neutral/camera_front/W103.mp4": (0, "", "source_videos/W103/neutral/camera_front/W103.mp4"),
    }


def test_deeperforensics_actor_in_two_splits_goes_to_the_later(tmp_path):
    touch(tmp_path, "manipulated_videos/m/000_M1.mp4", "manipulated_videos/m/001_M1.mp4", "source_videos/M1/a.mp4")
    (tmp_path / "lists" / "splits").mkdir(parents=True)
    (tmp_path / "lists" / "splits" / "train.txt").write_text("000_M1.mp4\n")
    (tmp_path / "lists" / "splits" / "test.txt").write_text("001_M1.mp4\n")
    assert table(find_videos(tmp_path, "deeperforensics"))["source_videos/M1/a.mp4"][1] == "test"


def test_folder_from_directories(tmp_path):
    touch(tmp_path, "real/a.mp4", "real/sub/b.MOV", "fake/c.avi", "fake/notes.txt", "fake/.hidden.mp4", "other/d.mp4")
    assert detect_layout(tmp_path) == "folder"
    assert table(find_videos(tmp_path)) == {
        "real/a.mp4": (0, "", "real/a.mp4"), "real/sub/b.MOV": (0, "", "real/sub/b.MOV"),
        "fake/c.avi": (1, "", "fake/c.avi")}


def test_folder_with_labels_csv_as_synth_writes_it(tmp_path):
    touch(tmp_path, "real/clip_0000.mp4", "fake/clip_0001.mp4", "fake/clip_0002.mp4", "extra/e.mp4")
    (tmp_path / "labels.csv").write_text(
        "video,label,original\n"
        "real/clip_0000.mp4,real,real/clip_0000.mp4\n"
        "fake/clip_0001.mp4,fake,real/clip_0000.mp4\n"
        "clip_0002.mp4,1,\n"                       # bare unique file name, 0/1 label, unknown original
        "extra/e.mp4,0,\n"                          # outside real/ and fake/: labels.csv may list it
        "real/missing.mp4,real,\n")                 # listed but absent: kept for extraction to report
    got = table(find_videos(tmp_path, "folder"))
    assert got == {
        "real/clip_0000.mp4": (0, "", "real/clip_0000.mp4"),
        "fake/clip_0001.mp4": (1, "", "real/clip_0000.mp4"),
        "fake/clip_0002.mp4": (1, "", "fake/clip_0002.mp4"),
        "extra/e.mp4": (0, "", "extra/e.mp4"),
        "real/missing.mp4": (0, "", "real/missing.mp4"),
    }


def test_folder_labels_csv_errors(tmp_path):
    touch(tmp_path, "real/a.mp4")
    (tmp_path / "labels.csv").write_text("file,kind\na.mp4,real\n")
    with pytest.raises(LayoutError, match="needs columns video,label"):
        find_videos(tmp_path)
    (tmp_path / "labels.csv").write_text("video,label,split\nreal/a.mp4,real,holdout\n")
    with pytest.raises(LayoutError, match="unknown split 'holdout'"):
        find_videos(tmp_path)
    (tmp_path / "labels.csv").write_text("video,label\nreal/a.mp4,yes\n")
    with pytest.raises(LayoutError, match=r"labels.csv:2: unknown label 'yes'"):
        find_videos(tmp_path)
    (tmp_path / "labels.csv").write_text("video,label\n../outside.mp4,real\n")
    with pytest.raises(LayoutError, match="not inside the dataset folder"):
        find_videos(tmp_path)


def test_unknown_or_empty_source(tmp_path):
    with pytest.raises(LayoutError, match="not a folder"):
        find_videos(tmp_path / "nope")
    touch(tmp_path, "loose.mp4")
    with pytest.raises(LayoutError, match="can't tell the layout"):
        find_videos(tmp_path)
    (tmp_path / "real").mkdir()
    with pytest.raises(LayoutError, match="no videos found"):
        find_videos(tmp_path)
    with pytest.raises(LayoutError, match="unknown layout"):
        find_videos(tmp_path, "kinetics")
