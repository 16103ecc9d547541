"""data_prep.video: probing, strided streaming decode, rotation/grayscale handling, and one-line VideoErrors."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from data_prep.video import VideoError, iter_decoded, iter_frames, probe
from tests.videos import write_exotic


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, pix_fmt: str = "yuv420p",
                rotation: int | None = None, options: dict | None = None) -> Path:
    """H.264 video of RGB frames in any pixel format, rotation and container options (tests/videos.py)."""
    return write_exotic(path, frames, fps, pix_fmt=pix_fmt, rotation=rotation, container_options=options)


def numbered_frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    """Frames whose brightness encodes their index (survives compression), to check which frames come back."""
    return [np.full((h, w, 3), 10 + 20 * i, np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", numbered_frames(11))


def test_probe_reads_header_and_first_frame(clip):
    info = probe(clip)
    assert (info.n_frames, info.width, info.height, info.rotation) == (11, 64, 48, 0)
    assert info.n_frames_exact and info.fps == pytest.approx(10.0) and info.codec == "h264"


@pytest.mark.parametrize("stride", [1, 3, 5, 20])
def test_iter_frames_keeps_every_stride_th_frame(clip, stride):
    stats: dict = {}
    got = list(iter_frames(clip, stride, stats=stats))
    assert [i for i, _ in got] == list(range(0, 11, stride))
    for index, frame in got:
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert abs(float(frame.mean()) - (10 + 20 * index)) < 6  # really frame `index`, not another one
    assert stats["n_frames"] == 11


def test_iter_frames_streams_lazily(clip):
    frames = iter_frames(clip, 1)
    index, first = next(frames)
    assert index == 0 and first.shape == (48, 64, 3)
    frames.close()  # stopping early closes the container without error


def test_grayscale_video_comes_back_as_rgb(tmp_path):
    gray = [np.dstack([np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))] * 3)] * 3
    path = write_video(tmp_path / "gray.mp4", gray, pix_fmt="gray")
    (_, frame), *_ = list(iter_frames(path, 1))
    assert frame.shape == (48, 64, 3)
    assert np.abs(frame[..., 0].astype(int) - frame[..., 1]).max() <= 2  # equal channels: gray, as RGB
    assert frame[:, -1].mean() > frame[:, 0].mean() + 150  # the gradient survived


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, rotation):
    """A phone video stored landscape with a rotation flag comes out upright (marker where a player shows it)."""
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:8, :8] = 255  # marker in the stored top-left corner
    path = write_video(tmp_path / "rot.mp4", [frame] * 2, rotation=rotation)
    info = probe(path)
    (_, upright), _ = list(iter_frames(path, 1))
    expected = np.rot90(frame, k=rotation // 90)  # counter-clockwise, as players show a rotation flag
    assert upright.shape == expected.shape == (info.height, info.width, 3)
    marker = np.argwhere(upright[..., 0] > 128).mean(0)
    assert np.allclose(marker, np.argwhere(expected[..., 0] > 128).mean(0), atol=1.5)


def test_portrait_video(tmp_path):
    path = write_video(tmp_path / "portrait.mp4", numbered_frames(2, h=96, w=48))
    info = probe(path)
    assert (info.width, info.height) == (48, 96)
    assert next(iter_frames(path))[1].shape == (96, 48, 3)


def _bad_files(tmp_path: Path, clip: Path) -> dict[str, tuple[Path, str]]:
    data = clip.read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 40)
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov atom (at the end) lost
    (tmp_path / "folder.mp4").mkdir()
    return {
        "missing": (tmp_path / "nope.mp4", "missing"),
        "empty": (tmp_path / "empty.mp4", "empty file"),
        "text": (tmp_path / "text.mp4", "not a video"),
        "truncated": (tmp_path / "cut.mp4", "truncated"),
        "folder": (tmp_path / "folder.mp4", "not a file"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "folder"])
def test_bad_files_raise_one_line_video_errors(tmp_path, clip, case):
    path, words = _bad_files(tmp_path, clip)[case]
    for call in (lambda: probe(path), lambda: list(iter_frames(path, 2))):
        with pytest.raises(VideoError) as info:
            call()
        reason = str(info.value)
        assert words in reason and "\n" not in reason and "Errno" not in reason


def test_truncated_faststart_video_fails_after_its_good_frames(tmp_path):
    """moov at the front (faststart) and the tail cut: the frames that are there decode, then a clear error."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30)]  # noise: ~equal-size frames
    full = write_video(tmp_path / "full.mp4", frames, options={"movflags": "faststart"})
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert probe(cut).n_frames == 30  # the header still promises 30 frames
    seen = []
    with pytest.raises(VideoError, match="truncated|corrupt"):
        for index, _ in iter_frames(cut, 1):
            seen.append(index)
    assert 0 < len(seen) < 30


def _noise_frames(n: int) -> list[np.ndarray]:
    """Frames of noise (each its own keyframe in H.264), told apart by content."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("threads", [1, 0], ids=["one-thread", "frame-threads"])
@pytest.mark.parametrize("suffix, x264", [(".mp4", ""), (".mkv", "bframes=2:b-adapt=0:open-gop=1")],
                         ids=["mp4", "mkv-open-gop-bframes"])
def test_damaged_data_inside_a_video_is_skipped_with_the_frames_it_spoils(tmp_path, threads, suffix, x264,
                                                                        damaged_h264):
    """As FFmpeg's tools do, decoding goes on past damaged data (from the next keyframe); every frame that comes
    back is the frame its number says (mkv: no frame count, so frames are counted, not timed), and the frames lost
    are counted. Damage in the first group of frames does not stop `probe` either."""
    frames = _noise_frames(40)
    for damage in ([15], [0]):
        path = damaged_h264(tmp_path / f"damaged{damage[0]}{suffix}", frames, damage, x264=x264)
        assert probe(path).width == 64
        for stride in (1, 5):
            stats: dict = {}
            got = [(i, f.rgb()) for i, f in iter_decoded(path, stride, threads=threads, stats=stats)]
            indices = [i for i, _ in got]
            assert stats["n_frames"] == 40 and damage[0] not in indices and indices[-1] == 40 - stride
            # Lost: the damaged frame, what depends on it up to the next keyframe (frame 10 or 20), and the frames
            # the decoder still held back (reordering delay, frame threads): flushed, as they may hold the damage.
            assert set(range(20, 40, stride)) <= set(indices)
            assert damage == [0] or set(range(0, 10, stride)) <= set(indices)
            assert 1 <= stats["damaged_frames"] <= 10 and stats["damaged_frames"] >= (40 - len(indices) * stride) // 5
            for i, rgb in got:  # the frame with this number, not a neighbour
                errors = [np.abs(rgb.astype(int) - f).mean() for f in frames]
                assert int(np.argmin(errors)) == i
    stats = {}
    tail = [i for i, _ in iter_decoded(damaged_h264(tmp_path / "tail.mp4", frames, [38, 39]), 1, threads=threads,
                                       stats=stats)]
    # Damage up to the end: the rest still counts. Frame threads may still hold a frame each, flushed with it.
    in_flight = 0 if threads == 1 else min(16, os.cpu_count() or 1) + 2
    assert tail == list(range(len(tail))) and len(tail) >= 38 - 2 - in_flight
    assert stats["damaged_frames"] == 40 - len(tail) and stats["n_frames"] == 40
    with pytest.raises(VideoError, match="corrupt: no frame could be decoded"):
        list(iter_decoded(damaged_h264(tmp_path / "all.mp4", frames[:4], [0, 1, 2, 3]), 1))
    stats = {}
    assert len(list(iter_decoded(write_video(tmp_path / "sound.mp4", frames[:5]), 1, stats=stats))) == 5
    assert stats["damaged_frames"] == 0


def _check_numbers(path: Path, frames: list[np.ndarray], n: int, shift: int = 0) -> None:
    """At strides 1 and 5: the stream has `n` frames, every multiple of the stride comes, and frame i shows
    `frames[i + shift]` (closer to it than to its neighbours)."""
    for stride in (1, 5):
        stats: dict = {}
        got = [(i, f.rgb()) for i, f in iter_decoded(path, stride, stats=stats)]
        assert stats["n_frames"] == n and [i for i, _ in got] == list(range(0, n, stride))
        for i, rgb in got:
            near = range(max(0, i + shift - 3), min(len(frames), i + shift + 4))
            assert near[int(np.argmin([np.abs(rgb.astype(int) - frames[j]).mean() for j in near]))] == i + shift


@pytest.mark.parametrize("suffix, n, slow", [(".mp4", 60, range(30, 60)), (".mkv", 60, range(30, 60)),
                                             (".mp4", 300, [10])],
                         ids=["mp4-25-then-12.5-fps", "mkv-25-then-12.5-fps", "mp4-one-late-frame"])
def test_variable_frame_rate_keeps_frame_numbers(tmp_path, suffix, n, slow):
    """A phone-style variable frame rate (25 fps, then 12.5; or one frame shown twice as long, as a capture that
    dropped one leaves), with B-frames: frame N is the N-th frame shown, and every one a stride asks for comes."""
    from fractions import Fraction

    frames = _noise_frames(n)
    path = tmp_path / f"vfr{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25,
                                      options={"x264-params": "bframes=3:b-adapt=0:b-pyramid=normal"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            t += 80 if i in slow else 40
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    _check_numbers(path, frames, n)


def test_a_trimmed_mp4_starts_at_its_first_shown_frame(tmp_path, damaged_h264):
    """A stream-copied trim keeps the group of frames it cut into, behind an edit list: the frames before the cut
    are decoded but never shown, and frame 0 is the first one shown."""
    frames = _noise_frames(40)
    source = damaged_h264(tmp_path / "source.mp4", frames, [], x264="bframes=2:b-adapt=0")
    with av.open(str(source)) as inp, av.open(str(tmp_path / "trim.mp4"), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        shift = round(5 / (stream.average_rate * stream.time_base))  # 5 frames before the start
        for packet in inp.demux(stream):
            if packet.size:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, copy
                out.mux(packet)
    _check_numbers(tmp_path / "trim.mp4", frames, 35, shift=5)


def test_avi_with_b_frames_keeps_frame_numbers(tmp_path):
    """AVI stores frames in decoding order without presentation times: the numbers come from counting frames."""
    base = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    frames = [np.roll(base, i, axis=1) ^ np.uint8(5 * i) for i in range(40)]
    path = tmp_path / "bframes.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"x264-params": "bframes=2:b-adapt=0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    _check_numbers(path, frames, 40)


def test_one_frame_video(tmp_path):
    path = write_video(tmp_path / "one.mp4", numbered_frames(1))
    assert probe(path).n_frames == 1
    assert [i for i, _ in iter_frames(path, 5)] == [0]


def test_stride_must_be_positive(clip):
    with pytest.raises(ValueError, match="stride"):
        next(iter_frames(clip, 0))


# ------------------------------------------------------------------------------------------ DecodedFrame
def _textured(n: int, h: int, w: int) -> list[np.ndarray]:
    """A real photo (colour, edges, fine detail) moving sideways, so a misplaced region or wrong chroma would show."""
    import cv2
    from skimage import data as skdata

    photo = cv2.resize(skdata.astronaut(), (w, h), interpolation=cv2.INTER_AREA)
    return [np.roll(photo, 3 * i, axis=1) for i in range(n)]


@pytest.mark.parametrize("pix_fmt, rotation", [("yuv420p", None), ("yuvj420p", None), ("yuv444p", None),
                                               ("yuv420p", 90), ("gray", None)])
def test_decoded_frame_regions_are_the_whole_frame_conversion(tmp_path, pix_fmt, rotation):
    """Regions cut from the YUV planes (4:2:0, upright) or from the converted frame (anything else) are exactly
    what converting the whole frame gives there, at edges and odd offsets too."""
    path = write_video(tmp_path / f"{pix_fmt}.mp4", _textured(3, 96, 160), pix_fmt=pix_fmt, rotation=rotation)
    whole = [f for _, f in iter_frames(path, 1)]
    for (index, frame), rgb in zip(iter_decoded(path, 1), whole):
        fast = frame._planar  # 8-bit 4:2:0 shown as stored: regions come from the planes, never the whole frame
        assert fast or pix_fmt not in ("yuv420p", "yuvj420p") or rotation is not None
        h, w = rgb.shape[:2]
        assert frame.shape == rgb.shape and (frame.height, frame.width) == (h, w)
        for x0, y0, x1, y1 in [(0, 0, w, h), (0, 0, 17, 9), (w - 33, h - 21, w, h), (5, 7, 6, 8), (13, 3, 61, 50)]:
            np.testing.assert_array_equal(frame.region(x0, y0, x1, y1), rgb[y0:y1, x0:x1])
        assert (frame._rgb is None) == fast  # the fast path converted nothing whole; the others converted once
        small = frame.resized(w // 3, h // 3)  # the detector's copy: area-averaged, close to OpenCV's INTER_AREA
        import cv2

        reference = cv2.resize(rgb, (w // 3, h // 3), interpolation=cv2.INTER_AREA)
        assert small.shape == reference.shape and np.abs(small.astype(int) - reference).mean() < 4
        with pytest.raises(ValueError, match="not inside"):
            frame.region(0, 0, w + 1, h)
