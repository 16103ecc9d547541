"""Writing videos: the one H.264 MP4 writer of the project.

`deepfake synth`'s clips, `deepfake distort`'s copies, `predict --explain-video`'s annotated video and the tests' own
clips are all written by `H264Writer`: libx264 through PyAV, frames converted to BT.601 limited-range YUV 4:2:0 by
OpenCV (what decoders assume for untagged video, and several times faster than swscale), a fixed thread count so the
bitstream does not depend on the machine's cores, and an atomic finish: the file is written under a hidden temporary
name beside its destination and renamed into place only when it is complete, so a killed job never leaves a
truncated video under the real name.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from data_prep.files import atomic_path

__all__ = ["H264Writer", "X264_THREADS", "frame_rate", "write_video"]

X264_THREADS = 4  # fixed, so that the bitstream does not depend on the machine's core count


def frame_rate(fps: float | Fraction | None, default: int = 25) -> Fraction:
    """A container's frame rate as an exact fraction (29.97 -> 30000/1001); `default` for an unknown or absurd one."""
    if fps is None or not math.isfinite(float(fps)) or fps <= 0 or fps > 1000:
        return Fraction(default)
    return Fraction(fps).limit_denominator(1001)


class H264Writer:
    """An H.264 MP4 written frame by frame (RGB uint8 arrays, H x W x 3) and moved into place by `close`.

    Args:
        path: the video to write; its folder must exist.
        rate: frames per second (an int or a Fraction; see `frame_rate`).
        crf: libx264's constant rate factor (0 lossless, 18 visually clean, 35+ heavy compression).
        preset: libx264's speed preset.
        x264_params: extra libx264 parameters, e.g. "mbtree=0" (with mbtree, libx264 now and then writes a different
            bitstream for the same frames; off, the same frames give the same bytes).
        gop: the keyframe interval, None for libx264's default.
        odd_sides: what a frame with an odd width or height becomes, since 4:2:0 needs even sides: "pad" adds one
            black row or column; "keep" writes 4:4:4 at the frame's own size.

    The size is the first frame's; a later frame of another size is resized to it. Used as a context manager it
    closes on success and aborts (removing the temporary file) on an exception.
    """

    def __init__(self, path: str | os.PathLike, rate: int | float | Fraction, *, crf: int = 18,
                 preset: str = "veryfast", x264_params: str | None = None, gop: int | None = None,
                 odd_sides: Literal["pad", "keep"] = "pad") -> None:
        if odd_sides not in ("pad", "keep"):
            raise ValueError(f"odd_sides must be 'pad' or 'keep', not {odd_sides!r}")
        self.path = Path(path)
        self._atomic = atomic_path(self.path)  # data_prep.files: the one rule for atomic writes
        self.tmp = self._atomic.__enter__()
        self.rate = rate if isinstance(rate, Fraction) else frame_rate(rate)
        self.options = {"crf": str(crf), "preset": preset, "threads": str(X264_THREADS)}
        if x264_params:
            self.options["x264-params"] = x264_params
        self.gop, self.odd_sides = gop, odd_sides
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (height, width) of the frames as given
        self._container = None
        self._stream = None

    def _open(self, height: int, width: int) -> None:
        import av

        self._container = av.open(os.fspath(self.tmp), mode="w", format="mp4")
        stream = self._container.add_stream("libx264", rate=self.rate)
        odd = width % 2 or height % 2
        if odd and self.odd_sides == "keep":
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        else:
            stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        if self.gop is not None:
            stream.codec_context.gop_size = self.gop
        stream.options = self.options
        self._stream, self.size = stream, (height, width)

    def write(self, rgb: np.ndarray) -> None:
        """Encode one RGB frame (uint8, H x W x 3)."""
        import av

        if self._container is None:
            self._open(*rgb.shape[:2])
        if rgb.shape[:2] != self.size:  # a stream that changes size midway keeps its first size
            rgb = cv2.resize(rgb, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        stream = self._stream
        if stream.pix_fmt == "yuv444p":
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv444p")
        else:
            if (stream.height, stream.width) != rgb.shape[:2]:  # "pad": odd sides grow by one black pixel
                canvas = np.zeros((stream.height, stream.width, 3), np.uint8)
                canvas[:rgb.shape[0], :rgb.shape[1]] = rgb
                rgb = canvas
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        frame.pts = self.frames
        self.frames += 1
        for packet in stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        """Finish the file and rename it into place; returns its path. A writer given no frame writes nothing and
        raises ValueError."""
        if self._container is None:
            self.abort()
            raise ValueError(f"{self.path}: no frame to write")
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        self._finish(None)  # renamed into place
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - already failing; the partial file goes below
                pass
            self._container = None
        self._finish(RuntimeError("aborted"))  # the partial file is removed

    def _finish(self, error: BaseException | None) -> None:
        atomic, self._atomic = self._atomic, None
        if atomic is not None:  # once: a second close or abort does nothing
            atomic.__exit__(type(error) if error else None, error, None)

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames, rate: int | float | Fraction = 25, **options) -> Path:
    """Write a sequence of RGB frames as an H.264 MP4 in one call (`H264Writer`'s options); returns the path."""
    with H264Writer(path, rate, **options) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path
