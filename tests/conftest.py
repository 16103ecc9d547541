"""Shared fixtures: the tests make their own data, from real face photos shipped inside installed packages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Keep CPU tests predictable on small CI machines (2 cores) and quiet about telemetry/hub access.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    """The cache folder (`data_prep.files.cache_folder`: ONNX copies of detectors, MTCNN's ONNX nets) in a
    temporary folder, never the user's."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["DEEPFAKE_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """A small labelled demo set from `deepfake synth`: 3 real + 3 self-blended fake clips, 320x240, 3 s at 10 fps."""
    from deepfake.cli import synth as synth_cli

    out = tmp_path_factory.mktemp("synth")
    status = synth_cli.main([str(out), "--count", "6", "--resolution", "320x240", "--seconds", "3", "--fps", "10",
                             "--seed", "0", "--no-progress"])
    assert status == 0
    return out


@pytest.fixture(scope="session")
def extracted_dataset(synth_dataset, tmp_path_factory) -> Path:
    """`deepfake-extract` over `synth_dataset` (folder layout, stride 2, 64-px crops): a folder with index.csv."""
    from deepfake.cli import extract

    out = tmp_path_factory.mktemp("extracted")
    status = extract.main([str(synth_dataset), str(out), "--layout", "folder", "--stride", "2", "--size", "64",
                           "--device", "cpu", "--workers", "0", "--no-progress"])
    assert status == 0
    assert (out / "index.csv").is_file()
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: MTCNN on small frames gains nothing from more, and idle OpenMP threads
    spinning on a busy 2-core machine slow everything else down. The setting is restored for the other modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hopper() -> np.ndarray:
    """matplotlib's grace_hopper.jpg (a real face photo, 512 wide x 600 high) as RGB."""
    import cv2
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()


@pytest.fixture(scope="session")
def damaged_h264():
    """A function writing RGB frames as H.264 (a keyframe every 10 frames, as phones and web videos have) with the
    data of the given packets zeroed: damage inside a file, as a bad sector or a broken upload leaves."""
    import av

    def write(path: Path, frames: list[np.ndarray], damage: list[int], fps: int = 10, x264: str = "") -> Path:
        h, w = frames[0].shape[:2]
        with av.open(str(path), "w") as container:  # the container from the suffix (.mp4, .mkv, ...)
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.gop_size = 10
            if x264:  # e.g. "bframes=2:b-adapt=0:open-gop=1"
                stream.options = {"x264-params": x264}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with av.open(str(path)) as container:
            packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
        data = bytearray(path.read_bytes())
        for k in damage:
            pos, size = packets[k]
            data[pos + 4:pos + size] = bytes(size - 4)  # keep the NAL length, zero the rest
        path.write_bytes(bytes(data))
        return path

    return write


@pytest.fixture()
def bench_script(monkeypatch):
    """Loads a script of bench/ as a module, `bench_script("footage")`, as running it would: bench/ on the path (its
    scripts import each other) and the module in sys.modules (dataclasses look their module up there)."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(folder))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        return module

    return load
