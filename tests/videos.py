"""Videos the tests write that the project's writer (data_prep.video_writer) does not make on purpose: other pixel
formats (gray, 4:4:4, 10-bit), a display rotation, container options. Plain H.264 clips come from
`data_prep.video_writer.write_video`, the writer the project itself uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_exotic(path: Path, frames: list[np.ndarray], fps: int = 10, pix_fmt: str = "yuv420p",
                 rotation: int | None = None, container_options: dict | None = None,
                 stream_options: dict | None = None) -> Path:
    """H.264 of RGB frames in `pix_fmt` (converted by swscale; "gray" stores one channel), the container chosen by
    the file's suffix, with an optional display rotation."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if stream_options:
            stream.options = stream_options
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
