"""The project's one video writer (data_prep.video_writer): atomic, deterministic, odd sizes."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from data_prep.video import iter_frames, probe
from data_prep.video_writer import H264Writer, frame_rate, write_video


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return [np.dstack([(xx * 3 + 5 * i) % 256, (yy * 4) % 256, (xx + yy) % 256]).astype(np.uint8) for i in range(n)]


def test_nothing_under_the_name_until_close_and_abort_leaves_nothing(tmp_path):
    out = tmp_path / "clip.mp4"
    writer = H264Writer(out, 10)
    for frame in _frames(3, 48, 64):
        writer.write(frame)
    assert not out.exists()  # the encoder still holds the frames, or writes them under the temporary name
    assert writer.close() == out and out.exists() and not writer.tmp.exists()
    assert probe(out).n_frames == 3

    with pytest.raises(RuntimeError):
        with H264Writer(tmp_path / "half.mp4", 10) as half:
            half.write(_frames(1, 48, 64)[0])
            raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == [out]


def test_same_frames_same_bytes_and_no_frame_is_an_error(tmp_path):
    frames = _frames(4, 48, 64)
    a = write_video(tmp_path / "a.mp4", frames, 10, x264_params="mbtree=0")
    b = write_video(tmp_path / "b.mp4", frames, 10, x264_params="mbtree=0")
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="no frame"):
        write_video(tmp_path / "empty.mp4", [], 10)
    assert not (tmp_path / "empty.mp4").exists()


@pytest.mark.parametrize("odd_sides, size", [("pad", (50, 66)), ("keep", (49, 65))])
def test_odd_sides_are_padded_or_kept(tmp_path, odd_sides, size):
    frames = _frames(2, 49, 65) + [_frames(1, 30, 40)[0]]  # the last one changes size midway: resized to the first
    out = write_video(tmp_path / "odd.mp4", frames, 10, crf=0, odd_sides=odd_sides)
    decoded = [f for _, f in iter_frames(out)]
    assert len(decoded) == 3 and all(f.shape[:2] == size for f in decoded)
    err = np.abs(decoded[0][:49, :65].astype(int) - frames[0].astype(int)).mean()
    assert err < 3


def test_frame_rate():
    assert frame_rate(30000 / 1001) == Fraction(30000, 1001) and frame_rate(25) == 25
    assert frame_rate(float("nan")) == frame_rate(0) == frame_rate(None) == 25
