"""Tests of deepfake.data: index reading, splits, sequences, consistent augmentation, balanced sampling.

The helpers at the top make `index.csv` folders without the extraction stage, so these tests (and
test_train.py, which imports them) stand alone:
- `make_face_index`: crops of a real face photo (scikit-image's astronaut) moving over "frames", with fakes made
  by blending a colour-shifted copy of the face back through a soft elliptical mask (a small self-blend);
- `index_from_synth`: crops of `deepfake synth` videos cut at the ground-truth boxes of its boxes.csv, as
  extraction would cut them.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepfake.data import (AugmentConfig, BalancedSampler, FacePartCutout, FaceSequenceDataModule,
                           FaceSequenceDataset, IndexFileError, build_augment, load_tracks, read_index,
                           split_by_original)

INDEX_HEADER = ["video", "label", "split", "original", "track", "frame", "x1", "y1", "x2", "y2", "score", "crop"]
ASTRONAUT_FACE = (172.0, 62.0, 262.0, 162.0)  # x1, y1, x2, y2 of the face in skimage.data.astronaut()


def square_crop(frame: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """Square crop around `box` with `margin` of its size per side (zero-padded at the border), resized."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    scale = size / side
    m = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]], dtype=np.float64)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)


def _blend_fake(frame: np.ndarray, box, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A small self-blend: a colour-shifted, slightly blurred copy of the face pasted back through a soft ellipse."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box
    mask = np.zeros((h, w), np.float32)
    centre = (int((x1 + x2) / 2), int((y1 + y2) / 2 + 0.05 * (y2 - y1)))
    axes = (int(0.42 * (x2 - x1)), int(0.5 * (y2 - y1)))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.04 * (x2 - x1))[..., None]
    shift = rng.uniform(12, 28, size=3) * rng.choice([-1, 1], size=3) * strength
    copy = cv2.GaussianBlur(frame, (0, 0), 1.0).astype(np.float32) + shift
    out = frame.astype(np.float32) * (1 - mask) + copy * mask
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_face_index(root: Path, n_pairs: int = 4, n_frames: int = 12, size: int = 64, margin: float = 0.3,
                    stride: int = 2, seed: int = 0, fake_strength: float = 1.0, split: str = "",
                    two_tracks: bool = False, val_pairs: int = 0) -> Path:
    """Writes root/index.csv and root/crops/: `n_pairs` real "videos" and one fake made from each.

    Each video is the astronaut photo, randomly mirrored and colour-graded, its face drifting and zooming over
    `n_frames` crops (frame numbers 0, stride, 2 * stride, ...). Fake `fake/vNN` has `original` `real/vNN`.
    Rows get `split`, except the first `val_pairs` pairs, which get "val".

    Returns:
        root.
    """
    from skimage import data

    rng = np.random.default_rng(seed)
    photo = data.astronaut()
    rows = []
    for pair in range(n_pairs):
        flip = pair % 2 == 1
        grade = rng.uniform(0.8, 1.2, size=3)
        base = np.clip(photo.astype(np.float32) * grade, 0, 255).astype(np.uint8)
        box0 = np.array(ASTRONAUT_FACE)
        if flip:
            base = base[:, ::-1].copy()
            box0 = np.array([512 - box0[2], box0[1], 512 - box0[0], box0[3]])
        drift = rng.uniform(-1.5, 1.5, size=2)
        zoom = rng.uniform(-0.01, 0.01)
        fake_rng = np.random.default_rng([seed, pair])
        fake_params = fake_rng.integers(0, 2**31)
        for label, kind in ((0, "real"), (1, "fake")):
            video = f"{kind}/v{pair:02d}.mp4"
            tracks = (0, 1) if two_tracks else (0,)
            for t in range(n_frames):
                frame_no = t * stride
                c = (box0[:2] + box0[2:]) / 2 + drift * t
                half = (box0[2:] - box0[:2]) / 2 * (1 + zoom * t)
                box = np.concatenate([c - half, c + half])
                img = _blend_fake(base, box, np.random.default_rng(fake_params), fake_strength) if label else base
                for track in tracks:
                    crop = square_crop(img if track == 0 else img[:, ::-1], box, margin, size)
                    rel = f"crops/{kind}/v{pair:02d}/t{track}_f{frame_no:06d}.jpg"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(root / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                    rows.append([video, label, "val" if pair < val_pairs else split, f"real/v{pair:02d}.mp4",
                                 track, frame_no,
                                 *(f"{v:.1f}" for v in box), "0.999", rel])
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([INDEX_HEADER, *rows])
    return root


def index_from_synth(synth_dir: Path, out: Path, stride: int = 2, size: int = 64, margin: float = 0.3) -> Path:
    """index.csv + crops of a `deepfake synth` folder, cut at its ground-truth boxes (one track per face).

    Stands in for `deepfake-extract` (same layout and columns), without face detection.
    """
    import av
    import pandas as pd

    labels = pd.read_csv(synth_dir / "labels.csv")
    boxes = pd.read_csv(synth_dir / "boxes.csv")
    rows = []
    for video, label, original in labels[["video", "label", "original"]].itertuples(index=False):
        per_frame = {f: g[["x1", "y1", "x2", "y2"]].to_numpy() for f, g in boxes[boxes.video == video].groupby("frame")}
        with av.open(str(synth_dir / video)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % stride or i not in per_frame:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                for track, box in enumerate(sorted(per_frame[i].tolist(), key=lambda b: (b[0], b[1]))):
                    crop = square_crop(rgb, box, margin, size)
                    rel = f"crops/{Path(video).with_suffix('')}/t{track}_f{i:06d}.jpg"
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                    rows.append([video, int(label == "fake"), "", original, track, i, *box, 1.0, rel])
    with open(out / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([INDEX_HEADER, *rows])
    return out


# ------------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def face_index(tmp_path_factory) -> Path:
    return make_face_index(tmp_path_factory.mktemp("faces"), n_pairs=4, n_frames=12, two_tracks=True)


def test_read_index_and_tracks(face_index):
    df, root = read_index(face_index)  # the folder works as well as the file
    assert root == face_index
    assert set(df["label"]) == {0, 1} and (df["split"] == "").all()
    tracks = load_tracks(df, root)
    assert len(tracks) == 4 * 2 * 2  # pairs x (real, fake) x tracks
    for t in tracks:
        assert list(t.frames) == sorted(t.frames) and len(t.crops) == 12
        assert all(Path(c).is_file() for c in t.crops)
        assert t.label == int(t.video.startswith("fake/"))
        assert t.original == t.video.replace("fake/", "real/")


def test_read_index_errors(tmp_path):
    with pytest.raises(IndexFileError, match="does not exist"):
        read_index(tmp_path)
    (tmp_path / "index.csv").write_text("video,label,frame\nv.mp4,0,1\n")
    with pytest.raises(IndexFileError, match="lacks column"):
        read_index(tmp_path)
    (tmp_path / "index.csv").write_text(",".join(INDEX_HEADER) + "\nv.mp4,maybe,,v.mp4,0,0,0,0,1,1,1,c.jpg\n")
    with pytest.raises(IndexFileError, match="not 0/1"):
        read_index(tmp_path)


def test_split_by_original_is_deterministic_and_groups_sources():
    originals = [f"real/clip_{i:04d}.mp4" for i in range(200)]
    a = split_by_original(originals, 0.2, 0.1, seed=0)
    assert a == split_by_original(list(reversed(originals)), 0.2, 0.1, seed=0)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert 20 <= counts["val"] <= 60 and 5 <= counts["test"] <= 35, counts
    # Adding sources never moves the ones already assigned.
    b = split_by_original(originals + [f"real/new_{i}.mp4" for i in range(50)], 0.2, 0.1, seed=0)
    assert all(b[o] == a[o] for o in originals)
    # A tiny set still gets a validation source.
    assert "val" in split_by_original(["a", "b", "c"], 0.1).values()
    with pytest.raises(ValueError):
        split_by_original(originals, 0.6, 0.5)


def test_datamodule_splits_by_original_and_batches(face_index):
    dm = FaceSequenceDataModule(str(face_index), seq_len=5, img_size=48, batch_size=3, num_workers=0,
                                val_fraction=0.25, augment=AugmentConfig(strength=1.0))
    dm.setup("fit")
    train_o = {t.original for t in dm.tracks["train"]}
    val_o = {t.original for t in dm.tracks["val"]}
    assert train_o and val_o and not train_o & val_o  # a fake and its source never straddle train and val
    assert {t.label for t in dm.tracks["val"]} == {0, 1}
    assert dm.extraction_meta() == {"seq_len": 5, "margin": 0.3, "stride": 2,  # stride inferred from frames
                                    "extraction": {"stride": 2, "margin": 0.3, "size": 64}}  # size: read from a crop
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (3, 5, 3, 48, 48) and batch["frames"].dtype == torch.uint8
    assert batch["length"].tolist() == [5, 5, 5]
    # Evaluation: the windows deepfake predict scores (12 crops, T=5 -> starts 0, 5, 7), always the same.
    val = dm.eval_dataset("val")
    assert len(val) == 3 * len(dm.tracks["val"])
    assert [s for _, s, _ in val.items[:3]] == [0, 5, 7]
    a, b = val[2], val[2]
    assert torch.equal(a["frames"], b["frames"]) and a["track"] == 0 and a["length"] == 5
    assert val.videos[a["video"]] == dm.tracks["val"][0].video


def test_datamodule_uses_index_splits(tmp_path):
    import pandas as pd

    make_face_index(tmp_path, n_pairs=3, n_frames=4)
    df = pd.read_csv(tmp_path / "index.csv")
    df["split"] = np.where(df["original"] == "real/v02.mp4", "test", "train")
    df.to_csv(tmp_path / "index.csv", index=False)
    dm = FaceSequenceDataModule(str(tmp_path), seq_len=4, img_size=32, num_workers=0, val_fraction=0.5)
    dm.setup()
    assert {t.video for t in dm.tracks["test"]} == {"real/v02.mp4", "fake/v02.mp4"}
    # No val rows in the index: val is carved out of train by original, whole pairs at a time.
    assert len(dm.tracks["val"]) == 2 and len(dm.tracks["train"]) == 2
    assert len({t.original for t in dm.tracks["val"]}) == 1


def test_short_tracks_are_padded(face_index):
    df, root = read_index(face_index)
    tracks = load_tracks(df[df["frame"] < 6], root)  # 3 crops per track
    ds = FaceSequenceDataset(tracks, seq_len=5, img_size=40, train=True)
    item = ds[0]
    assert item["length"] == 3 and item["frames"].shape == (5, 3, 40, 40)
    assert item["frames"][:3].float().mean() > 10 and int(item["frames"][3:].abs().sum()) == 0


def test_augmentation_is_the_same_on_every_frame(face_index):
    """All frames of a sequence get the same random parameters: identical input frames stay identical."""
    df, root = read_index(face_index)
    track = load_tracks(df, root)[0]
    track.crops = [track.crops[0]] * 6  # six copies of one crop
    pipeline = build_augment(AugmentConfig(strength=2.0))
    ds = FaceSequenceDataset([track], seq_len=6, img_size=64, train=True, transform=pipeline)
    plain = FaceSequenceDataset([track], seq_len=6, img_size=64, train=True)[0]["frames"]
    changed = 0
    for _ in range(8):
        frames = ds[0]["frames"]
        assert all(torch.equal(frames[0], frames[i]) for i in range(1, 6))
        changed += int(not torch.equal(frames[0], plain[0]))
    assert changed >= 6  # and strength 2 does augment nearly every time


def test_augment_strength_zero_keeps_only_flips():
    names = [type(t).__name__ for t in build_augment(AugmentConfig(strength=0.0)).transforms]
    assert names == ["HorizontalFlip"]
    assert build_augment(AugmentConfig(strength=0.0, flip=False)) is None
    full = [type(t).__name__ for t in build_augment(AugmentConfig(strength=1.0)).transforms]
    assert {"ImageCompression", "GaussNoise", "GaussianBlur", "ToGray", "Affine", "FacePartCutout"} <= set(full)
    with pytest.raises(ValueError, match="strength"):
        AugmentConfig(strength=3.0)


def test_augment_gray_takes_a_probability_of_its_own():
    from deepfake.augment import AugmentConfig, build_augment

    def gray_p(cfg):
        return [t.p for t in build_augment(cfg).transforms if type(t).__name__ == "ToGray"]

    assert gray_p(AugmentConfig(strength=0.3)) == [pytest.approx(0.03)]  # true: 0.1 scaled by strength, as before
    assert gray_p(AugmentConfig(strength=0.3, gray=0.4)) == [0.4] and gray_p(AugmentConfig(gray=False)) == []
    with pytest.raises(ValueError, match="augment gray must be"):
        AugmentConfig(gray=1.5)


def test_augment_soften_blurs_every_frame_of_a_sequence_alike():
    from deepfake.augment import AugmentConfig, build_augment

    only = AugmentConfig(strength=1.0, flip=False, jpeg=False, noise=False, blur=False, color=False, gray=False,
                         geometric=False, cutout=False, soften=1.0)
    assert [type(t).__name__ for t in build_augment(only).transforms] == ["Downscale"]
    assert "Downscale" not in [type(t).__name__ for t in build_augment(AugmentConfig()).transforms]  # off by default
    sharp = np.indices((64, 64)).sum(0) % 2 * 255  # a checkerboard: all high frequency
    frames = np.stack([np.repeat(sharp[..., None], 3, -1).astype(np.uint8)] * 4)
    out = build_augment(only)(images=frames)["images"]
    assert out.shape == frames.shape and all(np.array_equal(out[0], out[i]) for i in range(4))
    assert np.abs(np.diff(out[0].astype(float), axis=1)).mean() < 0.5 * np.abs(np.diff(frames[0].astype(float),
                                                                                          axis=1)).mean()
    for bad in (1.5, -0.1, True, "yes"):
        with pytest.raises(ValueError, match="augment soften must be"):
            AugmentConfig(soften=bad)


def test_augment_perturb_hook():
    from deepfake import perturb_augment

    pipeline = build_augment(AugmentConfig(strength=0.0, flip=False, perturb={"mode": "mix", "p": 1.0}))
    assert isinstance(pipeline.transforms[-1], perturb_augment.DeeperForensicsDistortion)
    frames = np.stack([np.full((32, 32, 3), 120, np.uint8)] * 3)
    out = pipeline(images=frames)["images"]
    assert out.shape == frames.shape and all(np.array_equal(out[0], out[i]) for i in range(3))


def test_face_part_cutout_hits_the_face_only():
    t = FacePartCutout(margin=0.3, p=1.0)
    img = np.full((100, 100, 3), 200, np.uint8)
    for _ in range(20):
        out = t(image=img)["image"]
        ys, xs = np.nonzero(out[..., 0] == 0)
        assert len(ys) > 0
        # Inside the face box (the crop minus the margin: 18.75 % per side) give or take the jitter.
        assert ys.min() >= 12 and ys.max() <= 88 and xs.min() >= 12 and xs.max() <= 88


def test_balanced_sampler():
    labels = [1] * 90 + [0] * 10
    s = BalancedSampler(labels, num_samples=4000, seed=3)
    drawn = np.array(labels)[list(s)]
    assert 0.45 < drawn.mean() < 0.55
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(0)
    assert list(s) == first  # the epoch picks the order: every DDP rank draws the same
    s.set_epoch(1)
    assert list(s) != first
    unbalanced = np.array(labels)[list(BalancedSampler(labels, 4000, balance=False))]
    assert unbalanced.mean() > 0.85


def test_datamodule_on_extracted_dataset(request):
    """The index `deepfake-extract` writes from `deepfake synth` videos feeds the datamodule."""
    extracted_dataset = request.getfixturevalue("extracted_dataset")
    dm = FaceSequenceDataModule(str(extracted_dataset), seq_len=4, img_size=64, batch_size=2, num_workers=0,
                                val_fraction=0.3)
    dm.setup("fit")
    assert dm.tracks["train"] and dm.tracks["val"]
    assert {t.label for t in dm.tracks["train"] + dm.tracks["val"]} == {0, 1}
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape[1:] == (4, 3, 64, 64)
    assert next(iter(dm.val_dataloader()))["frames"].shape[1:] == (4, 3, 64, 64)


def test_splits_never_share_a_group_and_the_run_writes_its_split(face_index, tmp_path):
    """With a `group` column (who is in a video), validation and training never share one; without it, each
    source video is its own group."""
    import pandas as pd

    df = pd.read_csv(face_index / "index.csv", dtype=str, keep_default_na=False)
    df["group"] = [f"person{int(v[-2:]) % 2}" for v in df["original"].str.replace(".mp4", "", regex=False)]
    folder = tmp_path / "grouped"
    shutil.copytree(face_index, folder)
    df.to_csv(folder / "index.csv", index=False)
    dm = FaceSequenceDataModule(str(folder), seq_len=4, img_size=64, batch_size=2, num_workers=0, val_fraction=0.3)
    dm.setup("fit")
    groups = {split: {t.group for t in tracks} for split, tracks in dm.tracks.items()}
    assert groups["train"] and groups["val"] and not groups["train"] & groups["val"]
    plain = FaceSequenceDataModule(str(face_index), seq_len=4, img_size=64, batch_size=2, num_workers=0)
    plain.setup("fit")
    assert all(t.group == t.original for split in plain.tracks.values() for t in split)
