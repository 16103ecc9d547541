"""DeeperForensics-1.0's real-world distortions: seven types at five levels and their mixes.

DeeperForensics-1.0 (Jiang et al., CVPR 2020) perturbs its videos with seven distortion types at five
intensity levels, alone (`std/sing`: one type per video) or mixed (`std/mix`: 2, 3 or 4 distinct random
types, each at a random level, applied one after the other). The values and their meaning below are read
from the authors' released script (github.com/EndlessSora/DeeperForensics-1.0, `perturbation/
add_distortion_to_video.py`: `get_distortion_parameter`, and `perturbation/distortions.py`), which the
dataset README says reproduces the dataset's perturbed videos. The code here is our own.

| type | what is done to each frame (released script)                       | 1     | 2     | 3     | 4     | 5    |
|------|---------------------------------------------------------------------|-------|-------|-------|-------|------|
| CS   | colour saturation: Cb, Cr (BT.601) scaled towards grey by            | 0.4   | 0.3   | 0.2   | 0.1   | 0.0  |
| CC   | colour contrast: every pixel value multiplied by                     | 0.85  | 0.725 | 0.6   | 0.475 | 0.35 |
| BW   | block-wise: 8x8 grey (128) blocks, per 256 px of the shorter side    | 16    | 32    | 48    | 64    | 80   |
| GNC  | white Gaussian noise on Y, Cb and Cr, variance (on a [0, 1] scale)   | 0.001 | 0.002 | 0.005 | 0.01  | 0.05 |
| GB   | Gaussian blur, kernel size k (sigma = k / 6)                         | 7     | 9     | 13    | 17    | 21   |
| JPEG | resolution loss: downscale by this factor, upscale back (bilinear)   | 2     | 3     | 4     | 5     | 6    |
| VC   | video compression: re-encode with H.264 (libx264) at this CRF        | 30    | 32    | 35    | 38    | 40   |

Level 0 is the identity for every type. What each value means exactly, where we deliberately differ from the
released script (one near-lossless encode for frame-level types, rounding, mixes with VC last) and how
`VC_JPEG_QUALITY` was measured are in docs/distortions.md.

Typical use:

    specs = parse_perturb("all")                      # 35 Distortions: every type at levels 1-5
    distort_video("clip.mp4", "out/GB_3/clip.mp4", Distortion("GB", 3), seed=video_seed(0, "clip.mp4"))
    # training: deepfake.perturb_augment.DeeperForensicsDistortion(mode="mix", p=0.5), an albumentations transform

`deepfake distort SRC... --out DIR --perturb SPEC [--seed K]` writes `DIR/<type>_<level>/<video>.mp4` and a
`distortions.csv` per folder saying what was applied to each video.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "KINDS", "LEVELS", "MIX_COUNTS", "PARAMS", "VC_JPEG_QUALITY", "FRAME_CRF", "CLEAN",
    "Distortion", "parse_perturb", "resolve", "applied_distortions", "video_seed",
    "distort_frame", "distort_video", "apply_distortion", "check_frame",
]

KINDS: tuple[str, ...] = ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC")
LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
MIX_COUNTS: tuple[int, ...] = (2, 3, 4)

# Per-level parameters, from the released script's get_distortion_parameter (see the module docstring).
PARAMS: dict[str, tuple[float, ...]] = {
    "CS": (0.4, 0.3, 0.2, 0.1, 0.0),          # chroma scale factor; smaller is worse
    "CC": (0.85, 0.725, 0.6, 0.475, 0.35),    # pixel value factor; smaller is worse
    "BW": (16, 32, 48, 64, 80),               # 8x8 blocks per 256 px of the shorter side
    "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),  # noise variance on [0, 1]-scaled YCbCr
    "GB": (7, 9, 13, 17, 21),                 # Gaussian kernel size; sigma = size / 6
    "JPEG": (2, 3, 4, 5, 6),                  # down/up-scale factor
    "VC": (30, 32, 35, 38, 40),               # H.264 CRF
}
# JPEG quality standing in for VC where there is no video to encode (PSNR-matched to the CRF; see above).
VC_JPEG_QUALITY: tuple[int, ...] = (50, 36, 22, 14, 11)

BW_BLOCK = 8       # block side, px (released script)
BW_VALUE = 128     # block grey value (released script)
# The released GNC's effective noise std per unit sqrt(variance), in 8-bit units (see the docstring).
GNC_Y_SCALE = 255.0 * 255.0 / 219.0
GNC_C_SCALE = 255.0 * 255.0 / 224.0
# Inverse BT.601 as OpenCV's YCrCb uses it: R = Y + 1.403 Cr, G = Y - 0.714 Cr - 0.344 Cb, B = Y + 1.773 Cb.
_CR_TO_RGB = np.array([1.403, -0.714, 0.0], np.float32)
_CB_TO_RGB = np.array([0.0, -0.344, 1.773], np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

FRAME_CRF = 10            # near-lossless encode of frame-level distortions
FRAME_PRESET = "veryfast"  # quality is set by the CRF; the preset only trades speed for file size
# libx264 with macroblock-tree rate control (its default) writes a slightly different bitstream from run to run
# for the same frames (measured: 2-8 distinct outputs in 12 runs, even with one thread). The near-lossless encode
# turns it off and is exactly reproducible; VC keeps x264's defaults, as `ffmpeg -crf X` had them, because
# without mbtree the same CRF compresses much less (+60% bytes, +0.6 dB at CRF 35 on a test clip).
FRAME_X264_PARAMS = "mbtree=0"
VC_PRESET = "medium"       # FFmpeg's default, what the released script's `ffmpeg -crf X` used


# ---------------------------------------------------------------------------------------------- what to apply


@dataclass(frozen=True, eq=False)
class Distortion:
    """One distortion setting. Two settings are equal when their `name`s are (every level 0 is "clean").

    Attributes:
        kind: one of `KINDS` ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC") or "mix".
        level: 1-5 for a type (0 = identity); for "mix", the number of distinct random types (2-4; 0 = identity),
            each applied at a random level 1-5.
    """

    kind: str
    level: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS and self.kind != "mix":
            raise ValueError(f"unknown distortion type {self.kind!r}; expected one of {', '.join(KINDS)} or mix")
        if isinstance(self.level, bool) or not isinstance(self.level, (int, np.integer)):
            raise ValueError(f"distortion level must be an integer, got {self.level!r}")
        object.__setattr__(self, "level", int(self.level))
        if self.kind == "mix":
            if self.level != 0 and self.level not in MIX_COUNTS:
                raise ValueError(f"mix takes 2, 3 or 4 types (0 = clean), got {self.level}")
        elif self.level != 0 and self.level not in LEVELS:
            raise ValueError(f"{self.kind} level must be 1-5 (0 = clean), got {self.level}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Distortion) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def is_identity(self) -> bool:
        """True for level 0, which leaves frames (and videos) untouched."""
        return self.level == 0

    @property
    def name(self) -> str:
        """`"GB:3"`, `"mix:2"`, or `"clean"` for the identity."""
        return "clean" if self.is_identity else f"{self.kind}:{self.level}"

    @property
    def dirname(self) -> str:
        """`name` safe as a folder name: `"GB_3"`, `"mix_2"`, `"clean"`.

        A colon in a relative path makes FFmpeg (hence PyAV and OpenCV) read `GB:3/clip.mp4` as a URL with
        protocol `GB`, and Windows forbids it.
        """
        return self.name.replace(":", "_")

    @property
    def param(self) -> float | None:
        """The level's parameter from `PARAMS` (None for identity and mix)."""
        if self.is_identity or self.kind == "mix":
            return None
        return PARAMS[self.kind][self.level - 1]


CLEAN = Distortion("mix", 0)

_SPEC_HELP = ("expected 'all', 'clean', a type (CS, CC, BW, GNC, GB, JPEG, VC: levels 1-5), TYPE:LEVEL (e.g. GB:3), "
              "'mix' (mix:2, mix:3, mix:4) or mix:N (N = 2-4), comma-separated")


def parse_perturb(spec: str) -> list[Distortion]:
    """Parse a `--perturb` value into distortions, in the order given, without duplicates.

    Args:
        spec: `all` (every type at levels 1-5: 35), `TYPE` (its levels 1-5), `TYPE:LEVEL`, `mix` (mix:2..4),
            `mix:N`, `clean` (the identity), or a comma-separated list of these (`GB:3,JPEG`). Types are case
            insensitive.

    Returns:
        The distortions.

    Raises:
        ValueError: a clear one-line message naming the bad part.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty --perturb value; {_SPEC_HELP}")
    kinds_by_upper = {k.upper(): k for k in (*KINDS, "mix")}
    out: list[Distortion] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"empty item in --perturb {spec!r}; {_SPEC_HELP}")
        head, sep, tail = item.partition(":")
        key = head.strip().upper()
        if sep and key in {"ALL", "CLEAN", "NONE"}:
            raise ValueError(f"{item!r} in --perturb {spec!r}: {head.strip()!r} takes no level; {_SPEC_HELP}")
        if not sep and key == "ALL":
            out += [Distortion(k, lv) for k in KINDS for lv in LEVELS]
            continue
        if not sep and key in {"CLEAN", "NONE"}:
            out.append(CLEAN)
            continue
        if key not in kinds_by_upper:
            raise ValueError(f"unknown distortion type {head.strip()!r} in --perturb {spec!r}; {_SPEC_HELP}")
        kind = kinds_by_upper[key]
        if not sep:
            out += [Distortion(kind, n) for n in (MIX_COUNTS if kind == "mix" else LEVELS)]
            continue
        tail = tail.strip()
        if not tail.isdigit():
            what = "a number of types 2-4" if kind == "mix" else "a level 1-5"
            raise ValueError(f"{item!r} in --perturb {spec!r}: expected {what} after ':', got {tail!r}")
        try:
            out.append(Distortion(kind, int(tail)))
        except ValueError as err:
            raise ValueError(f"{item!r} in --perturb {spec!r}: {err}") from None
    return list(dict.fromkeys(out))


def resolve(d: Distortion, rng: np.random.Generator) -> tuple[Distortion, ...]:
    """The single-type distortions `d` stands for: () for identity, (d,) for a type, drawn ones for a mix.

    A mix of N draws N distinct types uniformly from the seven, in random order, each at a level drawn
    uniformly from 1-5 (the dataset's std/mix protocol).

    Args:
        d: the distortion.
        rng: where a mix's draws come from.

    Returns:
        The distortions in the order they are applied (`distort_video` moves VC last).
    """
    if d.is_identity:
        return ()
    if d.kind != "mix":
        return (d,)
    kinds = rng.choice(len(KINDS), size=d.level, replace=False)
    levels = rng.integers(1, len(LEVELS) + 1, size=d.level)
    return tuple(Distortion(KINDS[int(k)], int(lv)) for k, lv in zip(kinds, levels))


def applied_distortions(d: Distortion, seed: int = 0) -> tuple[Distortion, ...]:
    """What `distort_video(src, dst, d, seed)` applies, in order (frame-level types first, then VC).

    Args:
        d: the distortion.
        seed: the seed given to `distort_video`.

    Returns:
        The single-type distortions; () for the identity.
    """
    plan = resolve(d, np.random.default_rng(seed))
    return tuple(p for p in plan if p.kind != "VC") + tuple(p for p in plan if p.kind == "VC")


def video_seed(base: int, *keys: str) -> int:
    """A seed for one video (and distortion) from a run's seed, stable across runs, machines and Python versions.

    Each video should get its own seed, so that mixes, noise and block positions differ between videos as in
    the dataset, while a rerun with the same `base` writes the same files.

    Args:
        base: the run's seed.
        *keys: what identifies the item, e.g. the video's relative path and `Distortion.name`.

    Returns:
        A non-negative 63-bit seed.
    """
    crc = zlib.crc32("\x00".join(keys).encode("utf-8"))
    return int(np.random.SeedSequence([int(base) & 0xFFFFFFFFFFFFFFFF, crc]).generate_state(2, np.uint64)[0] >> 1)


# -------------------------------------------------------------------------------------------- per-frame kernels


def _saturation(img: np.ndarray, factor: float) -> np.ndarray:
    # Y + f * (RGB - Y) is linear in RGB: one 3x3 colour matrix, applied with rounding and saturation by OpenCV.
    m = (1.0 - factor) * np.outer(np.ones(3), _LUMA) + factor * np.eye(3)
    return cv2.transform(img, m.astype(np.float32))


def _contrast(img: np.ndarray, factor: float) -> np.ndarray:
    return cv2.convertScaleAbs(img, alpha=float(factor))  # rounds and saturates; values stay >= 0


def _n_blocks(height: int, width: int, per_256: float) -> int:
    side = min(height, width)
    if side >= 256:
        return int(side // 256 * per_256)
    return max(1, int(round(per_256 * side / 256)))


def _blocks(img: np.ndarray, per_256: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    n = _n_blocks(h, w, per_256)
    ys = rng.integers(0, max(h - BW_BLOCK, 0) + 1, size=n)
    xs = rng.integers(0, max(w - BW_BLOCK, 0) + 1, size=n)
    out = img.copy()
    for y, x in zip(ys, xs):
        out[y:y + BW_BLOCK, x:x + BW_BLOCK] = BW_VALUE
    return out


def _noise(img: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    n = rng.standard_normal(img.shape, dtype=np.float32)  # white noise on Y, Cb, Cr
    sd = math.sqrt(variance)
    # (Y, Cb, Cr) noise -> RGB noise: scale each component to the released script's size, then inverse BT.601.
    to_rgb = np.stack([np.ones(3, np.float32), _CB_TO_RGB, _CR_TO_RGB], axis=1) * np.array(
        [GNC_Y_SCALE * sd, GNC_C_SCALE * sd, GNC_C_SCALE * sd], np.float32)
    return cv2.add(img, cv2.transform(n, to_rgb), dtype=cv2.CV_8U)  # rounds and saturates to [0, 255]


def _blur(img: np.ndarray, ksize: int) -> np.ndarray:
    return cv2.GaussianBlur(img, (int(ksize), int(ksize)), ksize / 6.0)


def _resolution_loss(img: np.ndarray, factor: int) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, w // int(factor)), max(1, h // int(factor))), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    # OpenCV's JPEG codec takes BGR; encoding RGB as is would weight the wrong channels in its luma.
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the frame")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


_VC_PER_FRAME = ("VC (video compression) is a video-level distortion: use distort_video, or "
                 "DeeperForensicsDistortion for its per-frame JPEG approximation")


def apply_distortion(img: np.ndarray, d: Distortion, rng: np.random.Generator, *, vc_as_jpeg: bool) -> np.ndarray:
    """One single-type distortion (level >= 1) on a contiguous RGB uint8 frame."""
    p = d.param
    if d.kind == "CS":
        return _saturation(img, p)
    if d.kind == "CC":
        return _contrast(img, p)
    if d.kind == "BW":
        return _blocks(img, p, rng)
    if d.kind == "GNC":
        return _noise(img, p, rng)
    if d.kind == "GB":
        return _blur(img, int(p))
    if d.kind == "JPEG":
        return _resolution_loss(img, int(p))
    if d.kind == "VC" and vc_as_jpeg:
        return _jpeg(img, VC_JPEG_QUALITY[d.level - 1])
    raise ValueError(_VC_PER_FRAME)


def check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
        raise ValueError(f"expected an RGB uint8 HxWx3 frame, got dtype {frame.dtype} and shape {frame.shape}")
    return np.ascontiguousarray(frame)


def distort_frame(frame: np.ndarray, d: Distortion, rng: np.random.Generator) -> np.ndarray:
    """Apply a distortion to one frame.

    Args:
        frame: RGB uint8 (H, W, 3); not modified.
        d: the distortion. VC is refused (it is a video-level distortion). A mix draws its types and levels
            from `rng` at every call (so frames of one video would get different mixes: for a video, use
            `distort_video`, or `resolve` the mix once and apply its parts); a drawn VC is approximated by a JPEG
            encode at `VC_JPEG_QUALITY`.
        rng: source of the random parts (mix draws, block positions, noise).

    Returns:
        The distorted frame, RGB uint8 (H, W, 3), a new array.

    Raises:
        ValueError: a frame that is not RGB uint8 HxWx3, or VC.
    """
    img = check_frame(frame)
    if d.kind == "VC" and not d.is_identity:
        raise ValueError(_VC_PER_FRAME)
    out = img.copy()
    for part in resolve(d, rng):
        out = apply_distortion(out, part, rng, vc_as_jpeg=True)
    return out


# ---------------------------------------------------------------------------------------------------- videos


def distort_video(src: str | os.PathLike, dst: str | os.PathLike, d: Distortion, seed: int = 0) -> Path:
    """Write a distorted copy of a video as H.264 MP4.

    Frame-level types distort every frame and encode the result near-losslessly (CRF `FRAME_CRF`); VC
    re-encodes at its level's CRF; a mix applies its frame-level types in their drawn order, then encodes at
    the CRF of its VC if it drew one. Everything random (the mix, block positions, noise) comes from `seed`:
    the same arguments give the same file, except that an output encoded for VC may differ very slightly from
    run to run (libx264's mbtree; measured >= 44 dB PSNR between runs, see `FRAME_X264_PARAMS`). The identity
    (level 0) copies the file byte for byte. Frames are streamed: the video is never held in memory. The file
    appears at `dst` only when complete.

    Args:
        src: the video.
        dst: the output file (parent folders are created; an existing file is replaced). Must not be `src`.
        d: the distortion.
        seed: seed of the random parts; give each video its own (`video_seed`) to vary them between videos.

    Returns:
        `dst` as a Path.

    Raises:
        data_prep.video.VideoError: `src` is missing, empty, not a video, truncated or corrupt, or the encode
            failed; its message is one line.
        ValueError: `dst` is `src`.
    """
    import shutil

    import av

    from data_prep.files import atomic_path
    from data_prep.video import VideoError, iter_frames, probe
    from data_prep.video_writer import H264Writer, frame_rate

    src, dst = Path(src), Path(dst)
    if src.exists() and dst.exists() and src.resolve() == dst.resolve():
        raise ValueError(f"output {dst} is the input video")
    # Absolute paths: FFmpeg would read a relative 'GB:3/x.mp4' as a URL with protocol 'GB'.
    src, dst = src.absolute(), dst.absolute()
    info = probe(src)  # checks the file and gives the frame rate
    dst.parent.mkdir(parents=True, exist_ok=True)
    if d.is_identity:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        return dst

    rng = np.random.default_rng(seed)
    plan = resolve(d, rng)
    frame_parts = [p for p in plan if p.kind != "VC"]
    vc = [p for p in plan if p.kind == "VC"]
    if vc:
        options = {"crf": int(vc[0].param), "preset": VC_PRESET}
    else:
        options = {"crf": FRAME_CRF, "preset": FRAME_PRESET, "x264_params": FRAME_X264_PARAMS}
    # 4:4:4 keeps an odd-sized video at its size instead of padding it
    encoder = H264Writer(dst, frame_rate(info.fps), odd_sides="keep", **options)
    try:
        for _, rgb in iter_frames(src):
            for part in frame_parts:
                rgb = apply_distortion(rgb, part, rng, vc_as_jpeg=False)
            encoder.write(rgb)
        if encoder.frames == 0:
            raise VideoError("no frames: the video stream is empty")
        encoder.close()
    except av.error.FFmpegError as err:
        encoder.abort()
        raise VideoError(f"encoding failed: {err}") from None
    except BaseException:
        encoder.abort()
        raise
    return dst
