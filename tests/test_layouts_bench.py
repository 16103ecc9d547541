"""data_prep.layouts_bench: FaceForensics++ (and DFD), Celeb-DF, DFDC preview and DFDC test mirrors the tests build
(files under the datasets' real folder and file names, the real split-file formats), checked video by video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.layouts import LayoutError, LayoutOptions, detect_layout, find_videos


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def table(result) -> dict[str, tuple]:
    return {r.video: (r.label, r.split, r.original, r.group, r.dataset, r.method) for r in result.records}


def ffpp_mirror(root: Path, compressions=("c23", "c40"), methods=("Deepfakes", "FaceShifter")) -> None:
    for c in compressions:
        touch(root, *(f"original_sequences/youtube/{c}/videos/{v}.mp4" for v in ("000", "003", "953", "974")))
        for m in methods:
            touch(root, *(f"manipulated_sequences/{m}/{c}/videos/{t}_{s}.mp4"
                          for t, s in (("000", "003"), ("003", "000"), ("953", "974"), ("974", "953"))))
        touch(root, "manipulated_sequences/Deepfakes/masks/videos/000_003.mp4",  # masks: not videos to read
              f"original_sequences/actors/{c}/videos/01__exit_phone_room.mp4",
              f"manipulated_sequences/DeepFakeDetection/{c}/videos/01_02__exit_phone_room__YVGY8LOK.mp4")
    (root / "splits").mkdir()
    (root / "splits" / "train.json").write_text(json.dumps([["000", "003"]]))
    (root / "splits" / "val.json").write_text(json.dumps([]))
    (root / "splits" / "test.json").write_text(json.dumps([["953", "974"]]))


def test_ffpp_labels_splits_methods_groups(tmp_path):
    ffpp_mirror(tmp_path)
    assert detect_layout(tmp_path) == "ffpp"
    result = find_videos(tmp_path, LayoutOptions("auto", compression="c40"))
    v, m = "original_sequences/youtube/c40/videos", "manipulated_sequences/{}/c40/videos"
    tr, te = "ffpp:000+003", "ffpp:953+974"
    expected = {f"{v}/000.mp4": (0, "train", f"{v}/000.mp4", tr, "FF++", ""),
                f"{v}/003.mp4": (0, "train", f"{v}/003.mp4", tr, "FF++", ""),
                f"{v}/953.mp4": (0, "test", f"{v}/953.mp4", te, "FF++", ""),
                f"{v}/974.mp4": (0, "test", f"{v}/974.mp4", te, "FF++", "")}
    for method in ("Deepfakes", "FaceShifter"):
        for t, s, split, group in (("000", "003", "train", tr), ("003", "000", "train", tr),
                                   ("953", "974", "test", te), ("974", "953", "test", te)):
            # TARGET_SOURCE: made on TARGET's video, which is its original
            expected[f"{m.format(method)}/{t}_{s}.mp4"] = (1, split, f"{v}/{t}.mp4", group, "FF++", method)
    assert table(result) == expected  # no DFD, no masks, no c23
    assert result.layout == "ffpp" and not result.notes
    # the default compression with several there is c23, and the note says so
    default = find_videos(tmp_path, "ffpp")
    assert all("/c23/" in r.video for r in default.records) and "reading c23" in default.notes[0]


def test_dfd_part(tmp_path):
    ffpp_mirror(tmp_path, compressions=("c23",))
    v = "original_sequences/actors/c23/videos/01__exit_phone_room.mp4"
    f = "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__exit_phone_room__YVGY8LOK.mp4"
    assert table(find_videos(tmp_path, "dfd")) == {v: (0, "", v, "dfd:01", "DFD", ""),
                                                    f: (1, "", v, "dfd:01", "DFD", "DeepFakeDetection")}


def test_ffpp_missing_video_is_reported_and_bad_inputs(tmp_path):
    ffpp_mirror(tmp_path, compressions=("c23",))
    (tmp_path / "manipulated_sequences/FaceShifter/c23/videos/974_953.mp4").unlink()
    (tmp_path / "original_sequences/youtube/c23/videos/000.mp4").unlink()
    result = find_videos(tmp_path, "ffpp")
    assert len(result.notes) == 2
    assert result.notes[0].startswith("splits/train.json names 1 video(s) not on disk, skipped: "
                                      "original_sequences/youtube/c23/videos/000.mp4")
    assert "splits/test.json names 1 video(s)" in result.notes[1] and "FaceShifter/c23/videos/974_953.mp4" in \
        result.notes[1]
    with pytest.raises(LayoutError, match=r"no videos at compression c40 \(found: c23"):
        find_videos(tmp_path, LayoutOptions("ffpp", compression="c40"))
    # a method downloaded at another compression only is left out with a note, not listed as missing videos
    touch(tmp_path, "manipulated_sequences/NeuralTextures/c40/videos/953_974.mp4")
    notes = find_videos(tmp_path, "ffpp").notes
    assert "no c23 videos for NeuralTextures: left out" in notes and not any("NeuralTextures/c23" in n for n in notes)
    (tmp_path / "splits" / "test.json").write_text(json.dumps({"953": "974"}))
    with pytest.raises(LayoutError, match=r"test.json: expected a list of \[target, source\] pairs"):
        find_videos(tmp_path, "ffpp")
    (tmp_path / "splits" / "test.json").write_text("[[")
    with pytest.raises(LayoutError, match="test.json: not readable JSON"):
        find_videos(tmp_path, "ffpp")
    other = tmp_path / "official"
    other.mkdir()
    (other / "test.json").write_text(json.dumps([["953", "974"]]))
    got = table(find_videos(tmp_path, LayoutOptions("ffpp", splits=other)))
    assert got["original_sequences/youtube/c23/videos/953.mp4"][1] == "test"
    assert got["original_sequences/youtube/c23/videos/003.mp4"][1] == ""


def celebdf_mirror(root: Path) -> None:
    touch(root, "Celeb-real/id0_0000.mp4", "Celeb-real/id1_0001.mp4", "YouTube-real/00170.mp4",
          "YouTube-real/00171.mp4", "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0001.mp4",
          "Celeb-synthesis/id0_id16_0004.mp4")
    # the real format: 1 = real, 0 = fake
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00170.mp4\n1 Celeb-real/id1_0001.mp4\n0 Celeb-synthesis/id1_id0_0001.mp4\n"
        "0 Celeb-synthesis/id0_id16_0004.mp4\n")


def test_celebdf_inverted_labels_and_test_list(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    celebdf_mirror(root)
    assert detect_layout(root) == "celebdf"
    d = "Celeb-DF-v2"
    assert table(find_videos(root)) == {
        "Celeb-real/id0_0000.mp4": (0, "train", "Celeb-real/id0_0000.mp4", "celebdf:id0", d, ""),
        "Celeb-real/id1_0001.mp4": (0, "test", "Celeb-real/id1_0001.mp4", "celebdf:id1", d, ""),
        "YouTube-real/00170.mp4": (0, "test", "YouTube-real/00170.mp4", "youtube:00170", d, ""),
        "YouTube-real/00171.mp4": (0, "train", "YouTube-real/00171.mp4", "youtube:00171", d, ""),
        "Celeb-synthesis/id0_id1_0000.mp4": (1, "train", "Celeb-real/id0_0000.mp4", "celebdf:id0", d,
                                             "Celeb-synthesis"),
        "Celeb-synthesis/id1_id0_0001.mp4": (1, "test", "Celeb-real/id1_0001.mp4", "celebdf:id1", d,
                                             "Celeb-synthesis"),
        # its real video is not in the set: its own original
        "Celeb-synthesis/id0_id16_0004.mp4": (1, "test", "Celeb-synthesis/id0_id16_0004.mp4", "celebdf:id0", d,
                                              "Celeb-synthesis"),
    }
    assert {r.dataset for r in find_videos(root, "celebdf-v1").records} == {"Celeb-DF-v1"}


def test_celebdf_bad_lists(tmp_path):
    celebdf_mirror(tmp_path)
    lst = tmp_path / "List_of_testing_videos.txt"
    lst.write_text("1 YouTube-real/00170.mp4\n1 YouTube-real/09999.mp4\n")
    result = find_videos(tmp_path, "celebdf")
    assert result.notes == ["List_of_testing_videos.txt names 1 video(s) not on disk, skipped: "
                            "YouTube-real/09999.mp4"]
    assert "YouTube-real/09999.mp4" not in table(result)
    lst.write_text("0 YouTube-real/00170.mp4\n")  # written as if 1 meant fake
    with pytest.raises(LayoutError, match=r"List_of_testing_videos.txt:1: says 0 \(fake\) for YouTube-real/00170"):
        find_videos(tmp_path, "celebdf")
    lst.write_text("YouTube-real/00170.mp4\n")
    with pytest.raises(LayoutError, match=r"List_of_testing_videos.txt:1: expected 'LABEL PATH'"):
        find_videos(tmp_path, "celebdf")


def test_dfdc_preview_and_public_test(tmp_path):
    pre = tmp_path / "dfdcp"
    touch(pre, "original_videos/643049/1955797.mp4", "method_A/643049/643049_A/1955797.mp4",
          "method_B/1224068/1224068_B/2035893.mp4")
    entries = {"original_videos/643049/1955797.mp4": {"label": "real", "set": "test"},
               "method_A/643049/643049_A/1955797.mp4": {"label": "fake", "set": "test", "target_id": "643049"},
               "method_B/1224068/1224068_B/2035893.mp4": {"label": "fake", "set": "train"},
               "method_B/1224068/1224068_B/gone.mp4": {"label": "fake", "set": "train"}}
    (pre / "dataset.json").write_text(json.dumps(entries))
    assert detect_layout(pre) == "dfdcp"
    result = find_videos(pre)
    a, b, o = ("method_A/643049/643049_A/1955797.mp4", "method_B/1224068/1224068_B/2035893.mp4",
               "original_videos/643049/1955797.mp4")
    assert table(result) == {o: (0, "test", o, "dfdcp:643049", "DFDCP", ""),
                             a: (1, "test", a, "dfdcp:643049", "DFDCP", "method_A"),
                             b: (1, "train", b, "dfdcp:1224068", "DFDCP", "method_B")}
    assert "dataset.json names 1 video(s) not on disk, skipped: method_B/1224068/1224068_B/gone.mp4" in result.notes
    (pre / "dataset.json").write_text(json.dumps({o: {"set": "test"}}))
    with pytest.raises(LayoutError, match="dataset.json: original_videos/643049/1955797.mp4: entry without a label"):
        find_videos(pre)
    (pre / "dataset.json").write_text("[1, 2]")
    with pytest.raises(LayoutError, match="dataset.json: expected an object"):
        find_videos(pre)

    test = tmp_path / "test"
    touch(test, "aalscayrfi.mp4", "abhggqdift.mp4")
    (test / "labels.csv").write_text("filename,label\naalscayrfi.mp4,1\nabhggqdift.mp4,0\nzzz.mp4,1\n")
    assert detect_layout(test) == "dfdc-test"
    result = find_videos(test)
    assert table(result) == {"aalscayrfi.mp4": (1, "test", "aalscayrfi.mp4", "aalscayrfi.mp4", "DFDC", ""),
                             "abhggqdift.mp4": (0, "test", "abhggqdift.mp4", "abhggqdift.mp4", "DFDC", "")}
    assert result.notes == ["labels.csv names 1 video(s) not on disk, skipped: zzz.mp4"]
    (test / "labels.csv").write_text("filename,label\naalscayrfi.mp4,maybe\n")
    with pytest.raises(LayoutError, match=r"labels.csv:2: unknown label 'maybe'"):
        find_videos(test)
