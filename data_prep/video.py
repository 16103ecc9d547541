"""Video decoding for face extraction: probe a file, stream every `stride`-th frame as RGB, fail with one line.

Decoding goes through PyAV (FFmpeg) with slice threading, the fastest of the decoders tried (OpenCV's
`grab()`/`retrieve()` and PyAV's frame threading were slower; figures in bench/README.md). PyAV is also the one
that reports the display rotation of phone videos, decodes the one frame a truncated file still has before it
fails, and raises errors we can turn into reasons. Frames are decoded one by one and only the kept ones are
converted to RGB (`DecodedFrame`: face extraction converts only a small copy and the face regions), so a video is
never held in memory as a whole.

Every problem with a file is a `VideoError` whose message is one line a user can act on (it goes to
`failures.csv` as is).
"""

from __future__ import annotations

import bisect
import errno
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.files import VIDEO_EXTENSIONS

__all__ = ["VideoError", "VideoInfo", "DecodedFrame", "probe", "iter_frames", "iter_decoded", "VIDEO_EXTENSIONS",
           "MAX_PIXELS", "check_frame_size"]

# 8K (DCI, 8192x4320): a larger frame is refused before decoding. A 400 KB clip can declare 16384x8192 frames,
# 400 MB of RGB each, so the limit is what bounds memory whatever the file's size.
MAX_PIXELS = 8192 * 4320


class VideoError(Exception):
    """A video that can't be used; `str(error)` is a one-line reason (e.g. ``empty file (0 bytes)``)."""

    def __init__(self, reason: str) -> None:
        # One line, whatever FFmpeg said; drop its "[Errno N] " prefix, which tells a user nothing.
        super().__init__(re.sub(r"\[Errno -?\d+\]\s*", "", " ".join(str(reason).split())))

    @property
    def reason(self) -> str:
        """The one-line reason."""
        return str(self)


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video tells.

    Attributes:
        path: the file.
        n_frames: frame count from the container, or estimated from duration x fps when the container has none
            (`n_frames_exact` False); decoding gives the exact count.
        n_frames_exact: whether `n_frames` came from the container.
        fps: average frame rate (0.0 when unknown).
        width: width as displayed, i.e. after `rotation`.
        height: height as displayed.
        rotation: degrees counter-clockwise the stored frames are turned to display them (0, 90, 180, 270).
        codec: decoder name, e.g. ``h264``.
    """

    path: str
    n_frames: int
    n_frames_exact: bool
    fps: float
    width: int
    height: int
    rotation: int
    codec: str


def _check_file(path: Path) -> None:
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise VideoError("a link that loops (it leads back to itself): no file at its end") from None
        if os.path.islink(path):
            raise VideoError(f"a broken link: {os.readlink(path)} does not exist") from None
        raise VideoError("missing: no such file" if err.errno == errno.ENOENT
                         else f"can't read: {err.strerror or err}") from None
    if not path.is_file():
        raise VideoError("not a file")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")


def check_frame_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """VideoError when frames of `width` x `height` are over `max_pixels` (the one rule, also for uploads)."""
    if width * height > max_pixels:
        raise VideoError(f"frames of {width}x{height} ({width * height / 1e6:.1f} megapixels) are over the limit of "
                         f"{max_pixels / 1e6:.1f} megapixels (8K by default; --max-pixels raises it)")


def _open(path: Path, max_pixels: int = MAX_PIXELS):
    """Open the container and its first video stream, mapping every FFmpeg complaint to a VideoError; frames over
    `max_pixels` are refused from the header, before decoding, and FFmpeg's decoder is held to the same limit (a
    stream whose size grows later)."""
    import av

    try:
        container = av.open(os.fspath(path), mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise VideoError("not a video, or truncated/corrupt (FFmpeg: invalid data; e.g. moov atom missing)") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(f"cannot open: {err}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream (audio only, or not a video)")
    stream = container.streams.video[0]
    try:
        check_frame_size(stream.codec_context.width, stream.codec_context.height, max_pixels)
    except VideoError:
        container.close()
        raise
    stream.codec_context.options = {**stream.codec_context.options, "max_pixels": str(int(max_pixels))}
    return container, stream


def _rotation(frame) -> int:
    """Counter-clockwise display rotation of a decoded frame, snapped to 0/90/180/270."""
    try:
        deg = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    return int(round(deg / 90.0)) % 4 * 90


def _to_rgb(frame, rotation: int) -> np.ndarray:
    """A decoded frame as an upright (H, W, 3) uint8 RGB array, whatever its pixel format (grayscale too)."""
    rgb = frame.to_ndarray(format="rgb24")
    if rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    return rgb


# 8-bit planar 4:2:0, what nearly every H.264/HEVC/VP9 video decodes to: regions convert to RGB on their own.
_PLANAR_420 = ("yuv420p", "yuvj420p")


class DecodedFrame:
    """A decoded frame that converts to RGB only what is asked of it.

    Face extraction needs a small copy of every sampled frame (for the detector) and a few face regions at full
    resolution; converting the whole frame to RGB first costs more than both together. For 8-bit 4:2:0 frames shown
    as stored (no display rotation), regions are cut from the frame's planes and converted alone, bit for bit what
    the whole-frame conversion gives there (the same FFmpeg conversion, same colour matrix and range); other frames
    are converted whole once.

    Attributes:
        height: rows as displayed.
        width: columns as displayed.
    """

    __slots__ = ("_frame", "_rotation", "_rgb", "height", "width")

    def __init__(self, frame, rotation: int) -> None:
        self._frame, self._rotation, self._rgb = frame, rotation, None
        self.width, self.height = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3), as for the RGB array."""
        return self.height, self.width, 3

    @property
    def _planar(self) -> bool:
        return self._rotation == 0 and self._frame.format.name in _PLANAR_420

    def rgb(self) -> np.ndarray:
        """The whole frame, upright, as (H, W, 3) uint8 RGB (converted once, then kept)."""
        if self._rgb is None:
            self._rgb = _to_rgb(self._frame, self._rotation)
        return self._rgb

    def resized(self, width: int, height: int) -> np.ndarray:
        """The frame, upright, resized to (height, width, 3) uint8 RGB by area averaging."""
        if self._planar and self._rgb is None:
            return self._frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA",
                                        threads=1).to_ndarray()
        import cv2

        rgb = self.rgb()
        if rgb.shape[:2] == (height, width):
            return rgb
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Rows y0:y1 and columns x0:x1 of the upright frame (inside it) as (y1 - y0, x1 - x0, 3) uint8 RGB."""
        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ValueError(f"region {(x0, y0, x1, y1)} is not inside the {self.width}x{self.height} frame")
        if not self._planar or self._rgb is not None:
            return self.rgb()[y0:y1, x0:x1]
        import av

        # Whole chroma samples (even bounds) plus a 2-pixel border, so chroma upsampling sees the same neighbours.
        ex0, ey0 = max(0, (x0 - 2) & ~1), max(0, (y0 - 2) & ~1)
        ex1, ey1 = min(self.width, (x1 + 3) & ~1), min(self.height, (y1 + 3) & ~1)
        if (ex1 - ex0) % 2 or (ey1 - ey0) % 2:  # odd frame size: the last column/row has no chroma partner
            return self.rgb()[y0:y1, x0:x1]
        y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size) for p in self._frame.planes)
        pw, ph = ex1 - ex0, ey1 - ey0
        buf = np.empty((ph * 3 // 2, pw), np.uint8)
        buf[:ph] = y[ey0:ey1, ex0:ex1]
        flat = buf[ph:].reshape(-1)
        quarter = (ph // 2) * (pw // 2)
        flat[:quarter] = u[ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2].reshape(-1)
        flat[quarter:] = v[ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2].reshape(-1)
        patch = av.VideoFrame.from_ndarray(buf, format=self._frame.format.name)
        rgb = patch.reformat(format="rgb24", src_colorspace=self._frame.colorspace, threads=1).to_ndarray()
        return rgb[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]


def probe(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> VideoInfo:
    """Read a video's header and decode its first frame.

    Args:
        path: the video file.
        max_pixels: frames with more pixels are refused before decoding (VideoError).

    Returns:
        Its `VideoInfo`.

    Raises:
        VideoError: missing, empty, not a video, truncated or corrupt, or without a decodable frame.
    """
    path = Path(path)
    _check_file(path)
    container, stream = _open(path, max_pixels)
    try:
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        n_frames, exact = int(stream.frames or 0), True
        if n_frames <= 0:
            exact = False
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000  # AV_TIME_BASE
            n_frames = int(round(duration * fps)) if duration and fps else 0
        first = _first_frame(container, stream)
        check_frame_size(first.width, first.height, max_pixels)
        rotation = _rotation(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        codec = stream.codec_context.name
    finally:
        container.close()
    return VideoInfo(os.fspath(path), max(n_frames, 1), exact, fps, int(width), int(height), rotation, codec)


def _first_frame(container, stream):
    """The first frame that decodes; damaged data before it is skipped to the next keyframe (as `iter_decoded`)."""
    import av

    first_error, resume = None, False
    try:
        for packet in container.demux(stream):
            if resume:
                if not packet.is_keyframe:
                    continue
                resume = False
                stream.codec_context.flush_buffers()
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as err:
                first_error, resume = first_error or err, True
                continue
            if frames:
                return frames[0]
    except av.error.FFmpegError as err:
        raise VideoError(f"corrupt: no frame could be decoded ({err})") from None
    if first_error is not None:
        raise VideoError(f"corrupt: no frame could be decoded ({first_error})")
    raise VideoError("no frames: the video stream is empty")


def iter_frames(path: str | os.PathLike, stride: int = 1, *, threads: int = 0, min_complete: float = 0.9,
                stats: dict | None = None, skip_unneeded: bool = True,
                max_pixels: int = MAX_PIXELS) -> Iterator[tuple[int, np.ndarray]]:
    """Stream every `stride`-th frame of a video as RGB: `iter_decoded` with each kept frame converted whole.

    Yields:
        (frame index, upright (H, W, 3) uint8 RGB array).
    """
    for index, frame in iter_decoded(path, stride, threads=threads, min_complete=min_complete, stats=stats,
                                     skip_unneeded=skip_unneeded, max_pixels=max_pixels):
        yield index, frame.rgb()


def iter_decoded(path: str | os.PathLike, stride: int = 1, *, threads: int = 0, min_complete: float = 0.9,
                 stats: dict | None = None, skip_unneeded: bool = True,
                 max_pixels: int = MAX_PIXELS) -> Iterator[tuple[int, DecodedFrame]]:
    """Stream every `stride`-th frame of a video (frames 0, stride, 2*stride, ...), decoding the file once.

    Kept frames come as `DecodedFrame`s, which convert to RGB only what is asked of them; frames are decoded one
    by one, so only the kept frames the caller holds stay in memory (plus the decoder's own reference frames).
    Frame N is the N-th frame shown: its rank by presentation time among the stream's packets, so numbers stay
    right with variable frame rates, B-frames, edit lists and frames the decoder skips or loses. Frames are counted
    instead where there are no presentation times (AVI, raw streams) or they are not one a frame (a repeated time,
    field pictures). With presentation times, frames that are neither kept nor referenced by other frames (e.g.
    most B-frames) are not decoded at all (FFmpeg's ``skip_frame=NONREF``, set packet by packet), which roughly
    halves decoding for typical H.264 with B-frames.

    Args:
        path: the video file.
        stride: keep one frame in `stride`.
        threads: decoder threads (0: FFmpeg picks, one per core, with frame and slice threading; 1: one thread,
            best when several processes decode at once).
        min_complete: when the container states a frame count, decoding fewer than this share of it means the
            file was cut short, which is an error (a truncated download should not pass for a short clip).
        stats: when given, set once the stream ends: ``stats["n_frames"]``, the number of frames in the stream, and
            ``stats["damaged_frames"]``, about how many could not be decoded (see Raises; with `stride` > 1 the
            count can include a few frames that were not needed anyway).
        skip_unneeded: skip decoding frames nothing needs (see above); False decodes every frame.
        max_pixels: frames with more pixels are refused: from the header before decoding (VideoError), and by
            FFmpeg's decoder for a stream whose frame size grows later.

    Yields:
        (frame index, `DecodedFrame`).

    Raises:
        VideoError: the file can't be opened, no frame can be decoded, the container can't be read on, or the file
            ends early. Frames already yielded stay valid; the caller decides whether a partial video is of any
            use. Damaged data inside a stream is not an error: as FFmpeg's own tools do, decoding goes on, from the
            next keyframe (so that no frame is built on the damage), and the frames lost are counted in `stats`.
    """
    import av

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    path = Path(path)
    _check_file(path)
    container, stream = _open(path, max_pixels)
    try:
        stream.thread_type = "SLICE" if threads == 1 else "AUTO"
        stream.thread_count = int(threads)
        declared = int(stream.frames or 0)
        context = stream.codec_context
        # Frame N is the N-th frame shown: its rank by presentation time among the packets seen so far. When the
        # decoder gives a frame, every frame shown before it has been decoded, so its packet has been seen: the rank
        # is exact with B-frames, open GOPs, variable frame rates, and frames skipped or lost to damage. Frames are
        # counted instead where there are no presentation times (AVI: FFmpeg numbers its packets in decoding
        # order), and from the first sign that packets are not frames (a repeated time; two packets, i.e. fields,
        # between the first two frames).
        timed = "avi" not in stream.container.format.name.split(",")
        fell_back = False  # timed at first, counting since
        shown: list = []  # presentation times of the packets seen, sorted
        offset = None  # rank of the first frame shown (leading frames of a cut-open GOP are never shown)
        skip = skip_unneeded and stride > 1  # decode only what is kept or referenced (once numbering is settled)
        index, packets, hidden, rotation, last_pts = -1, 0, 0, None, None
        n_out = 0  # frames the decoder gave
        damaged, first_error = 0, None  # frames lost to undecodable data, and FFmpeg's first complaint
        resume = False  # after damage: skip packets until the next keyframe, from which decoding is clean again

        def rank(pts) -> int:
            return bisect.bisect_left(shown, pts) - (offset or 0)

        try:
            for packet in container.demux(stream):
                if packet.size and packet.is_discard:  # before an edit list's start: decoded, never shown
                    hidden += 1
                elif packet.size:
                    packets += 1
                    if timed and packet.pts is not None:
                        at = bisect.bisect_left(shown, packet.pts)
                        if at < len(shown) and shown[at] == packet.pts:
                            timed, fell_back = False, True  # the same time twice: times are not one a frame
                        else:
                            shown.insert(at, packet.pts)
                if resume:
                    if not packet.is_keyframe:
                        continue
                    resume = False
                    context.flush_buffers()  # drop what the damage left in the decoder (frames in flight too)
                    restart = rank(packet.pts) if (timed and packet.pts is not None and offset is not None) \
                        else packets - 1
                    damaged += max(0, restart - (index + 1))
                    index = max(index, restart - 1)
                wanted = True
                if skip and timed and n_out >= 2 and packet.pts is not None:
                    # A frame nothing refers to (the only kind FFmpeg skips) arrives after every frame shown before
                    # it, so its rank is already final here.
                    wanted = rank(packet.pts) % stride == 0
                context.skip_frame = "DEFAULT" if wanted else "NONREF"
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError as err:
                    # Damaged data inside the file (a bad sector, a broken upload): FFmpeg's own tools go on past
                    # it, and so do we, from the next keyframe so that no frame is built on the damage.
                    first_error = first_error or str(err)
                    resume = True
                    continue
                for frame in decoded:
                    check_frame_size(frame.width, frame.height, max_pixels)
                    n_out += 1
                    at = bisect.bisect_left(shown, frame.pts) if (timed and frame.pts is not None and shown) else None
                    if at is not None:
                        if offset is None:
                            offset = 0 if first_error is not None else at
                        elif n_out == 2 and first_error is None and last_pts is not None \
                                and at - bisect.bisect_left(shown, last_pts) > 1:
                            timed, fell_back, at = False, True, None  # two packets for one frame (fields): count
                    index = index + 1 if at is None else max(index + 1, at - offset)
                    last_pts = frame.pts
                    if rotation is None:
                        rotation = _rotation(frame)
                    if index % stride == 0:
                        yield index, DecodedFrame(frame, rotation)
        except av.error.FFmpegError as err:
            if n_out == 0:
                raise VideoError(f"corrupt: no frame could be decoded ({err})") from None
            raise VideoError(f"corrupt: decoding failed after frame {index} ({err})") from None
        if n_out == 0:
            if first_error is not None:
                raise VideoError(f"corrupt: no frame could be decoded ({VideoError(first_error)})")
            raise VideoError("no frames: the video stream is empty")
        # Frames in the stream: those the decoder dropped unseen (skipped, lost at its end) count too, where
        # packets are frames.
        if timed and shown:
            total = len(shown) - (offset or 0)
        else:
            total = index + 1 if fell_back else packets
        if resume:  # the damage ran to the end of the stream
            damaged += max(0, total - (index + 1))
        n_frames = max(index + 1, total)
        if stats is not None:
            stats["n_frames"] = n_frames
            stats["damaged_frames"] = damaged
        # Cut short: fewer samples in the container than its header states (samples may be fields, so not frames).
        if declared > 1 and max(n_frames, packets) + hidden < math.floor(declared * min_complete):
            raise VideoError(f"truncated: decoded {n_frames} of {declared} frames")
    finally:
        container.close()
