"""DeeperForensics-1.0 distortions: direction and size of every type, videos, mixes, the augmentation, the command."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import albumentations as A
import av
import cv2
import numpy as np
import pytest
from skimage import data

from data_prep.video import VideoError
from deepfake import cli
from deepfake.perturb import (
    CLEAN, KINDS, LEVELS, PARAMS, Distortion, applied_distortions, distort_frame, distort_video, parse_perturb, resolve,
    video_seed,
)
from deepfake.perturb_augment import DeeperForensicsDistortion
from tests.videos import write_exotic


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real face photo, 256x256 (astronaut, downscaled so the tests stay fast)."""
    return cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _write_video(path: Path, w: int = 128, h: int = 96, n: int = 8, crf: int = 10, rotation: int = 0) -> Path:
    """A short panning clip over the astronaut photo, H.264 at `crf` (10: near-lossless)."""
    img = data.astronaut()
    frames = [img[40 + 3 * i:40 + 3 * i + 2 * h:2, 150 + 2 * i:150 + 2 * i + 2 * w:2] for i in range(n)]
    return write_exotic(path, frames, 10, pix_fmt="yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p",
                        rotation=rotation or None, stream_options={"crf": str(crf), "threads": "1"})


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("perturb") / "clip.mp4")


# --------------------------------------------------------------------------------------------------- parsing


def test_parse_perturb_forms():
    every = parse_perturb("all")
    assert len(every) == 35 and len(set(every)) == 35
    assert [d.name for d in every[:6]] == ["CS:1", "CS:2", "CS:3", "CS:4", "CS:5", "CC:1"]
    assert {d.kind for d in every} == set(KINDS)
    assert [d.name for d in parse_perturb("GB")] == ["GB:1", "GB:2", "GB:3", "GB:4", "GB:5"]
    assert parse_perturb("GB:3") == [Distortion("GB", 3)]
    assert parse_perturb("mix:2") == [Distortion("mix", 2)]
    assert [d.name for d in parse_perturb("mix")] == ["mix:2", "mix:3", "mix:4"]
    assert [d.name for d in parse_perturb(" gb:3 , JPEG,GB:3")] == ["GB:3", "JPEG:1", "JPEG:2", "JPEG:3", "JPEG:4",
                                                                     "JPEG:5"]
    assert parse_perturb("clean") == [CLEAN] and CLEAN.name == "clean" and Distortion("GB", 0).name == "clean"
    assert parse_perturb("clean,GB:0,CS:0") == [CLEAN]  # every level 0 is the same identity
    assert Distortion("mix", 3).name == "mix:3" and Distortion("GB", 3).dirname == "GB_3"


@pytest.mark.parametrize("spec, needle", [
    ("", "empty"), ("  ", "empty"), ("XY", "'XY'"), ("GB:6", "1-5"), ("GB:x", "'x'"), ("GB:-1", "'-1'"),
    ("mix:5", "2, 3 or 4"), ("mix:1", "2, 3 or 4"), ("GB:3:1", "'3:1'"), ("GB:3,,JPEG", "empty item"),
    ("all:2", "takes no level"),
])
def test_parse_perturb_errors(spec, needle):
    with pytest.raises(ValueError, match=needle) as info:
        parse_perturb(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind, level", [("XX", 1), ("GB", 6), ("GB", -1), ("mix", 1), ("mix", 5), ("GB", 2.0),
                                         ("GB", True)])
def test_distortion_rejects_bad_values(kind, level):
    with pytest.raises(ValueError):
        Distortion(kind, level)


# ------------------------------------------------------------------------------------- each type, per frame


@pytest.mark.parametrize("kind", [*KINDS, "mix"])
def test_level_zero_is_identity(face, kind):
    out = distort_frame(face, Distortion(kind, 0), np.random.default_rng(0))
    assert out is not face and np.array_equal(out, face)


def test_jpeg_psnr_falls_with_level(face):
    rng = np.random.default_rng(0)
    psnr = [_psnr(face, distort_frame(face, Distortion("JPEG", lv), rng)) for lv in LEVELS]
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr
    assert psnr[0] < 35  # level 1 (half resolution) is a visible loss, not rounding noise


def test_blur_lowers_high_frequency_energy(face):
    rng = np.random.default_rng(0)
    grey = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)  # noqa: E731
    energy = [cv2.Laplacian(grey(face), cv2.CV_64F).var()]
    energy += [cv2.Laplacian(grey(distort_frame(face, Distortion("GB", lv), rng)), cv2.CV_64F).var() for lv in LEVELS]
    assert all(a > b for a, b in zip(energy, energy[1:])), energy
    assert energy[-1] < 0.1 * energy[0]


def test_noise_grows_with_level_at_the_scripts_size():
    grey = np.full((256, 256, 3), 128, np.uint8)  # mid-grey: level 1-4 noise is not clipped
    rng = np.random.default_rng(0)
    stds = [(distort_frame(grey, Distortion("GNC", lv), rng).astype(np.float64) - 128).reshape(-1, 3).std(0)
            for lv in LEVELS]
    assert all((a < b).all() for a, b in zip(stds, stds[1:])), stds
    # The released script's formula gives, per RGB channel at level 1 (variance 0.001), about these std values.
    np.testing.assert_allclose(stds[0], [15.99, 11.88, 18.84], rtol=0.05)
    np.testing.assert_allclose(stds[3], np.array([15.99, 11.88, 18.84]) * math.sqrt(10), rtol=0.05)


def test_saturation_falls_and_luma_stays(face):
    rng = np.random.default_rng(0)
    sat = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2HSV)[..., 1].mean()  # noqa: E731
    luma = lambda im: (im.astype(np.float64) @ [0.299, 0.587, 0.114]).mean()  # noqa: E731
    outs = [distort_frame(face, Distortion("CS", lv), rng) for lv in LEVELS]
    s = [sat(face)] + [sat(o) for o in outs]
    assert all(a > b for a, b in zip(s, s[1:])), s
    assert np.ptp(outs[-1].astype(int), axis=2).max() <= 1  # level 5: grey
    assert all(abs(luma(o) - luma(face)) < 1.0 for o in outs)


def test_contrast_falls_by_the_level_factor(face):
    rng = np.random.default_rng(0)
    stds = [distort_frame(face, Distortion("CC", lv), rng).std() for lv in LEVELS]
    assert all(a > b for a, b in zip([face.std(), *stds], stds)), stds
    np.testing.assert_allclose(np.array(stds) / face.std(), PARAMS["CC"], rtol=0.01)


def test_blocks_cover_more_with_level(face):
    rng = np.random.default_rng(0)
    changed = []
    for lv in LEVELS:
        out = distort_frame(face, Distortion("BW", lv), rng)
        diff = (out != face).any(axis=2)
        assert (out[diff] == 128).all()  # only grey block pixels change
        changed.append(diff.mean())
    assert all(a < b for a, b in zip(changed, changed[1:])), changed
    # 256 px: 16 blocks of 8x8 at level 1, at most 16 * 64 pixels.
    assert 0 < changed[0] <= 16 * 64 / 256**2
    small = face[:100, :120]  # the script would add no block to a frame under 256 px; we still do
    assert (distort_frame(small, Distortion("BW", 1), rng) != small).any()


def test_vc_is_refused_per_frame_and_bad_frames_are_rejected(face):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="video-level"):
        distort_frame(face, Distortion("VC", 3), rng)
    for bad in (face.astype(np.float32), face[..., 0], face[..., :2], np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError, match="RGB uint8"):
            distort_frame(bad, Distortion("GB", 1), rng)


def test_tiny_and_odd_frames_keep_their_shape():
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (3, 5, 3), (7, 301, 3)]:
        img = np.full(shape, 90, np.uint8)
        for d in parse_perturb("CS:5,CC:5,BW:5,GNC:5,GB:5,JPEG:5,mix:4"):
            out = distort_frame(img, d, rng)
            assert out.shape == shape and out.dtype == np.uint8


def test_mix_is_reproducible_and_draws_distinct_types(face):
    d = Distortion("mix", 4)
    a = distort_frame(face, d, np.random.default_rng(5))
    b = distort_frame(face, d, np.random.default_rng(5))
    assert np.array_equal(a, b) and not np.array_equal(a, face)
    for seed in range(20):
        parts = resolve(d, np.random.default_rng(seed))
        assert len(parts) == 4 and len({p.kind for p in parts}) == 4
        assert all(p.level in LEVELS for p in parts)
        vc_last = applied_distortions(d, seed)
        assert sorted(vc_last, key=str) == sorted(parts, key=str) and "VC" not in [p.kind for p in vc_last[:-1]]
    assert len({applied_distortions(d, s) for s in range(20)}) > 10


def test_video_seed_is_stable_and_distinct():
    assert video_seed(0, "a.mp4", "GB:3") == video_seed(0, "a.mp4", "GB:3")
    seeds = {video_seed(b, v, n) for b in (0, 1) for v in ("a.mp4", "b.mp4") for n in ("GB:3", "mix:2")}
    assert len(seeds) == 8 and all(s >= 0 for s in seeds)


# ---------------------------------------------------------------------------------------------------- videos


def test_frame_distortion_dominates_the_encode(clip, tmp_path):
    out = distort_video(clip, tmp_path / "GB_3" / "clip.mp4", Distortion("GB", 3), seed=0)
    src, dst = _frames(clip), _frames(out)
    assert dst.shape == src.shape
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and float(c.streams.video[0].average_rate) == 10
    expected = [distort_frame(f, Distortion("GB", 3), np.random.default_rng(0)) for f in src]
    assert min(_psnr(e, o) for e, o in zip(expected, dst)) > 40  # the codec adds little
    assert max(_psnr(s, o) for s, o in zip(src, dst)) < 30  # the blur is there
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["clip.mp4"]  # no partial file left


def test_vc_higher_level_smaller_file(clip, tmp_path):
    sizes = {lv: distort_video(clip, tmp_path / f"vc{lv}.mp4", Distortion("VC", lv)).stat().st_size
             for lv in (1, 5)}
    assert sizes[5] < sizes[1] < clip.stat().st_size  # the clip itself is near-lossless (CRF 10)
    src = _frames(clip)
    psnr = {lv: np.mean([_psnr(a, b) for a, b in zip(src, _frames(tmp_path / f"vc{lv}.mp4"))]) for lv in (1, 5)}
    assert psnr[5] < psnr[1] < 40


def test_mix_video_is_reproducible(clip, tmp_path):
    d = Distortion("mix", 3)
    kinds = lambda seed: {p.kind for p in applied_distortions(d, seed)}  # noqa: E731
    seed = next(s for s in range(100) if not kinds(s) & {"VC"} and kinds(s) & {"GNC", "BW"})  # random per frame
    a = distort_video(clip, tmp_path / "a.mp4", d, seed=seed)
    b = distort_video(clip, tmp_path / "b.mp4", d, seed=seed)
    assert a.read_bytes() == b.read_bytes()  # the near-lossless encode is exactly reproducible
    other = next(s for s in range(100) if applied_distortions(d, s) != applied_distortions(d, seed))
    c = distort_video(clip, tmp_path / "c.mp4", d, seed=other)
    assert not np.array_equal(_frames(a), _frames(c))
    # With VC in the mix, x264's own rate control may move a few pixels between runs, no more.
    seed = next(s for s in range(100) if "VC" in kinds(s))
    v1 = _frames(distort_video(clip, tmp_path / "v1.mp4", d, seed=seed))
    v2 = _frames(distort_video(clip, tmp_path / "v2.mp4", d, seed=seed))
    assert _psnr(v1, v2) > 40


def test_clean_copies_the_file(clip, tmp_path):
    out = distort_video(clip, tmp_path / "clean.mp4", CLEAN)
    assert out.read_bytes() == clip.read_bytes()


def test_rotated_and_odd_sized_videos(tmp_path):
    portrait = _write_video(tmp_path / "portrait.mp4", rotation=90)  # stored 128x96, shown 96x128
    out = distort_video(portrait, tmp_path / "out" / "portrait.mp4", Distortion("CS", 1))
    ok, shown = cv2.VideoCapture(str(portrait)).read()  # OpenCV applies the display rotation
    assert ok and _frames(out)[0].shape == shown.shape == (128, 96, 3)
    odd = _write_video(tmp_path / "odd.mp4", w=65, h=49, n=3)
    frames = _frames(distort_video(odd, tmp_path / "out" / "odd.mp4", Distortion("JPEG", 2)))
    assert frames.shape == (3, 49, 65, 3)


def test_bad_videos_give_one_line_reasons(clip, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n")
    for name in ("missing.mp4", "empty.mp4", "text.mp4"):
        with pytest.raises(VideoError) as info:
            distort_video(tmp_path / name, tmp_path / "out" / name, Distortion("GB", 1))
        assert "\n" not in str(info.value) and str(info.value)
    assert not (tmp_path / "out").exists()  # checked before anything is written
    with pytest.raises(ValueError, match="is the input"):
        distort_video(clip, clip, Distortion("GB", 1))


# ------------------------------------------------------------------------------------- training augmentation


@pytest.mark.parametrize("mode", ["sing", "mix"])
def test_transform_applies_identical_params_to_every_target(face, mode):
    aug = A.Compose([DeeperForensicsDistortion(mode=mode, p=1.0)], additional_targets={"f1": "image", "f2": "image"},
                    seed=0)
    seq = np.stack([face] * 3)
    outs = []
    for _ in range(12):
        r = aug(image=face, f1=face.copy(), f2=face.copy())
        assert np.array_equal(r["image"], r["f1"]) and np.array_equal(r["image"], r["f2"])
        outs.append(r["image"])
        batch = aug(images=seq)["images"]  # a sequence as one (N, H, W, 3) target
        assert batch.shape == seq.shape and all(np.array_equal(batch[0], b) for b in batch[1:])
    assert len({o.tobytes() for o in outs}) > 6  # a new distortion per call
    assert sum(not np.array_equal(o, face) for o in outs) >= 11


def test_transform_params_and_vc_approximation(face):
    t = DeeperForensicsDistortion(mode="mix", levels=(2, 4), p=1.0)
    t.set_random_seed(0)
    for _ in range(50):
        params = t.get_params()
        kinds = [k for k, _ in params["ops"]]
        assert 2 <= len(kinds) <= 4 and len(set(kinds)) == len(kinds)
        assert all(2 <= lv <= 4 for _, lv in params["ops"])
    sing = DeeperForensicsDistortion(mode="sing", levels=3, p=1.0)
    assert all(len(sing.get_params()["ops"]) == 1 for _ in range(10))
    vc = [_psnr(face, DeeperForensicsDistortion(kinds=["VC"]).apply(face, ops=(("VC", lv),), seed=0)) for lv in LEVELS]
    assert all(a > b for a, b in zip(vc, vc[1:])), vc
    assert np.array_equal(A.Compose([DeeperForensicsDistortion(p=0.0)])(image=face)["image"], face)


@pytest.mark.parametrize("kwargs", [{"mode": "both"}, {"levels": (0, 5)}, {"levels": (4, 2)}, {"kinds": ["XX"]},
                                    {"kinds": []}, {"mix_counts": (2, 5)},
                                    {"mode": "mix", "kinds": ["GB", "CS"], "mix_counts": (2, 3)}])
def test_transform_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        DeeperForensicsDistortion(**kwargs)


# ------------------------------------------------------------------------------------------------ the command


def test_distort_command_goes_on_after_bad_inputs(clip, tmp_path, capsys):
    (tmp_path / "junk.mp4").write_text("not a video\n")
    out = tmp_path / "out"
    args = ["distort", str(clip), str(tmp_path / "junk.mp4"), str(tmp_path / "nope.mp4"), "--out", str(out),
            "--perturb", "GB:2,mix:2", "--seed", "3", "--no-progress"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "junk.mp4" in err and "nope.mp4" in err and len([ln for ln in err.splitlines() if "junk" in ln]) == 1
    for folder, name in (("GB_2", "GB:2"), ("mix_2", "mix:2")):
        assert (out / folder / "clip.mp4").is_file()
        rows = list(csv.DictReader((out / folder / "distortions.csv").open()))
        assert [r["video"] for r in rows] == ["clip.mp4"] and rows[0]["distortion"] == name
        seed = int(rows[0]["seed"])
        assert rows[0]["applied"] == " ".join(p.name for p in applied_distortions(parse_perturb(name)[0], seed))
    stamp = (out / "GB_2" / "clip.mp4").stat().st_mtime_ns
    assert cli.main(["distort", str(clip), "--out", str(out), "--perturb", "GB:2", "--no-progress"]) == 0
    assert (out / "GB_2" / "clip.mp4").stat().st_mtime_ns == stamp  # kept: an interrupted run resumes
    assert cli.main(["distort", str(clip), "--out", str(out), "--perturb", "GB:9", "--no-progress"]) == 2
    assert "GB:9" in capsys.readouterr().err
