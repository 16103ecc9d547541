"""Training data: sequences of face crops from `index.csv`, augmented consistently, real/fake balanced.

    dm = FaceSequenceDataModule("out/extracted", seq_len=10, img_size=240, batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch["frames"]   # (B, T, 3, H, W) uint8 RGB; the LightningModule scales and normalises on the device
    batch["length"]   # (B,) valid frames; a track shorter than T is zero-padded at the end
    batch["label"]    # (B,) float, 1 fake

An item is a window of T consecutive crops of one face track (consecutive in the index, i.e. every
`stride`-th video frame). Training draws a random window per item; evaluation takes the windows `deepfake
predict` scores (`eval_windows="all"`) or the centred one.

Frames travel as uint8: a quarter of the bytes through worker queues, pinned memory and the host-to-device
copy, and normalisation is one fused op on the GPU (`DeepfakeLitModule.on_after_batch_transfer`).

Augmentations (`deepfake.augment`) give every frame of a sequence the same random parameters; fakes made on the
fly from real sequences (`deepfake.fakes`, `data.fakes`) are blended in before them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from data_prep.files import atomic_write, csv_text
from data_prep.index import (
    INDEX_COLUMNS,
    SPLITS,
    FaceTrackRecord,
    IndexFileError,
    apply_groups,
    load_tracks,
    read_crop,
    read_groups,
    read_index,
)
from data_prep.untouched import UNTOUCHED_BELOW
from deepfake.augment import DEFAULT_MARGIN, AugmentConfig, FacePartCutout, build_augment
from deepfake.contract import index_extraction
from deepfake.fakes import (FakeConfig, check_fake_sources, donor_pool, fake_sequence, pick_donor, real_sequence,
                            track_crop_landmarks)
from deepfake.scoring import track_windows
from deepfake.splits import SPLIT_FILE, check_fractions, label_untouched, split_by_original  # public here too

__all__ = ["INDEX_COLUMNS", "IndexFileError", "FaceTrackRecord", "read_index", "load_tracks", "split_by_original",
           "label_untouched", "AugmentConfig", "FacePartCutout", "build_augment", "FaceSequenceDataset",
           "BalancedSampler", "FaceSequenceDataModule"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------- dataset


class FaceSequenceDataset(Dataset):
    """Windows of `seq_len` consecutive crops of one face track.

    Args:
        tracks: the face tracks (`load_tracks`).
        seq_len: T, frames per sequence.
        img_size: crops are resized to img_size x img_size when they differ.
        train: True draws one random window per track and item (use a sampler over tracks); False uses fixed
            windows (`eval_windows`).
        transform: albumentations pipeline applied as `transform(images=...)` (same parameters for every frame).
        eval_windows: "all": the windows `deepfake predict` scores (`deepfake.scoring.track_windows`:
            consecutive windows, the last one ending at the track's end); "center": the centred window of each
            track.
        fakes: the fakes made on the fly (`deepfake.fakes.FakeConfig`, as `data.fakes` configures them; its
            `kinds` are the kinds served here, so validation passes its `val_kinds` there). With a mode that
            self-blends (`FakeConfig.self_blended`) every real track also serves a fake of itself, as a track and
            video of its own (named `<video>#sbi`), label 1: in evaluation each window gets fixed parameters (the
            same every epoch), in training fresh ones each draw. Its `static_control` applies to real training
            sequences in any mode. Default (None): no fakes made on the fly.
        margin: the margin the crops were cut with (places the face inside a crop for blending).
        donors: the real tracks swaps take their donor faces from (`deepfake.fakes.donor_pool`; default: these).

    Items are dicts: `frames` (T, 3, H, W) uint8, `length` (valid frames), `label` (float), `index` (the
    item), `track` (index into `tracks`), `video` (index into `videos`).
    """

    def __init__(self, tracks: Sequence[FaceTrackRecord], seq_len: int, img_size: int, train: bool = False,
                 transform: A.Compose | None = None, eval_windows: Literal["all", "center"] = "all",
                 fakes: FakeConfig | None = None, margin: float = DEFAULT_MARGIN,
                 donors: Sequence[FaceTrackRecord] | None = None) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if eval_windows not in ("all", "center"):
            raise ValueError(f"eval_windows must be 'all' or 'center', got {eval_windows!r}")
        if not tracks:
            raise ValueError("no face tracks to make sequences from")
        self.tracks = list(tracks)
        self.donors = list(donors) if donors is not None else donor_pool(self.tracks)  # whose faces swaps borrow
        self.seq_len = int(seq_len)
        self.img_size = int(img_size)
        self.train = bool(train)
        self.transform = transform
        self.margin = float(margin)
        self.fake_config = fakes if fakes is not None else FakeConfig()
        # A self-blended copy of a real track is a track (index + len(tracks)) and a video ("<video>#sbi") of its own.
        blended = [i for i, t in enumerate(self.tracks) if t.label == 0] if self.fake_config.self_blended else []
        self.videos = sorted({t.video for t in self.tracks} | {f"{self.tracks[i].video}#sbi" for i in blended})
        video_ids = {v: i for i, v in enumerate(self.videos)}
        self._video_of_track = [video_ids[t.video] for t in self.tracks]
        self._video_of_track += [video_ids.get(f"{t.video}#sbi", -1) for t in self.tracks]
        self.items: list[tuple[int, int, bool]] = []  # (track index, window start (-1: random), self-blended)
        blend_set = set(blended)
        for i, t in enumerate(self.tracks):
            n = len(t.crops)
            for fake in (False, True) if i in blend_set else (False,):
                if self.train:
                    self.items.append((i, -1, fake))
                elif eval_windows == "center":
                    self.items.append((i, max(0, (n - self.seq_len) // 2), fake))
                else:
                    self.items.extend((i, s, fake) for s, _ in track_windows(n, self.seq_len))
        # Evaluation: one kind per self-blended track (drawn by the shares, fixed), so metrics can be told per kind.
        kinds = list(self.fake_config.kinds)
        shares = np.array([self.fake_config.kinds[k] for k in kinds]) / sum(self.fake_config.kinds.values())
        self.fake_kind_of_track = {i: kinds[int(np.random.default_rng([i, 104729]).choice(len(kinds), p=shares))]
                                   for i in blended} if not self.train and len(kinds) > 1 else {}
        self._seed: int | None = None
        self._rng = np.random.default_rng(0)

    @property
    def fake_kind_of_video(self) -> dict[int, str]:
        """Evaluation with several fake kinds: the kind of each self-blended video (by video index); else empty."""
        return {self._video_of_track[i + len(self.tracks)]: k for i, k in self.fake_kind_of_track.items()}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        """(len,) label of each item."""
        return np.array([1 if fake else self.tracks[t].label for t, _, fake in self.items], dtype=np.int64)

    @property
    def self_blended_items(self) -> np.ndarray:
        """(len,) whether each item is a self-blended fake."""
        return np.array([fake for _, _, fake in self.items], dtype=bool)

    def windows_per_item(self) -> np.ndarray:
        """(len,) how many non-overlapping windows each item's track holds (at least 1)."""
        return np.array([max(1, len(self.tracks[t].crops) // self.seq_len) for t, _, _ in self.items],
                        dtype=np.int64)

    def _random(self) -> np.random.Generator:
        # DataLoader workers are forked with copies of the same generators; reseed from the worker's own seed
        # (different per worker and epoch, reproducible under seed_everything) so they don't repeat each other.
        info = get_worker_info()
        seed = int(info.seed if info is not None else torch.initial_seed())
        if seed != self._seed:
            self._seed = seed
            self._rng = np.random.default_rng(seed)
            if self.transform is not None:
                self.transform.set_random_seed(seed % 2**32)
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        track_index, start, fake = self.items[index]
        track = self.tracks[track_index]
        n, t = len(track.crops), self.seq_len
        rng = self._random() if self.train or self.transform is not None else None
        if self.train:
            start = int(rng.integers(0, n - t + 1)) if n > t else 0
        paths = track.crops[start:start + t]
        frames = np.stack([read_crop(p, self.img_size) for p in paths])  # (L, H, W, 3)
        control = self.train and not fake and track.label == 0 and self.fake_config.static_control > 0
        if fake or control:  # before the augmentations, as a real fake would reach them
            landmarks = track_crop_landmarks(track, self.img_size, self.margin)  # None without landmarks
            landmarks = landmarks[start:start + t] if landmarks is not None else None
            if fake:
                blend_rng = rng if self.train else np.random.default_rng([index, 7919])  # evaluation: fixed per item
                kind = self.fake_kind_of_track.get(track_index)
                config = self.fake_config if kind is None else replace(self.fake_config, kinds={kind: 1.0})
                frames = fake_sequence(frames, blend_rng, self.margin, config, landmarks,
                                       donor=lambda r: pick_donor(track, self.donors, r, self.img_size,
                                                                  self.margin))
            else:  # a real training sequence: a share of them gets a static control, still labelled real
                frames = real_sequence(frames, rng, self.margin, self.fake_config, landmarks)
        if self.transform is not None:
            frames = self.transform(images=frames)["images"]  # same random parameters for every frame
        length = len(paths)
        out = torch.zeros((t, 3, self.img_size, self.img_size), dtype=torch.uint8)
        out[:length] = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        track_id = track_index + len(self.tracks) if fake else track_index
        return {"frames": out, "length": length, "label": 1.0 if fake else float(track.label), "index": index,
                "track": track_id, "video": self._video_of_track[track_id]}


class BalancedSampler(Sampler[int]):
    """Draws `num_samples` items with replacement, real and fake equally often (weights per class sum to 1/2).

    Within a class an item is drawn in proportion to `weights` (e.g. windows in its track, so an epoch covers
    long tracks more). The order depends only on `seed` and the epoch (`set_epoch`, or counted per pass when
    nobody calls it, as under Lightning's distributed wrapper), so every DDP rank sees the same sequence.
    With `balance=False` classes keep their natural proportions.
    """

    def __init__(self, labels: Sequence[int], num_samples: int, weights: Sequence[float] | None = None,
                 balance: bool = True, seed: int = 0) -> None:
        labels = np.asarray(labels)
        w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
        if balance:
            for c in (0, 1):
                members = labels == c
                if members.any():
                    w[members] = w[members] / w[members].sum()
        self.weights = torch.as_tensor(w / w.sum(), dtype=torch.float64)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch: int | None = None
        self._passes = 0

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch, which picks the order of the next pass."""
        self.epoch = int(epoch)

    def __iter__(self):
        epoch = self.epoch if self.epoch is not None else self._passes
        self._passes += 1
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


# ------------------------------------------------------------------------------------------------ datamodule


class FaceSequenceDataModule(pl.LightningDataModule):
    """Loads `index.csv` and serves train/val/test sequences of face crops.

    Args:
        index: `index.csv` or the folder holding it (`deepfake-extract` output).
        seq_len: T, frames per sequence.
        img_size: crop side fed to the model; None takes the model's (`net.img_size`, from the backbone).
        batch_size: sequences per batch (per device).
        eval_batch_size: sequences per validation/test batch; None: batch_size.
        num_workers: loader processes per device; 0 loads in the training process.
        pin_memory: page-locked host memory for faster copies to the GPU; None: on when CUDA is available.
        persistent_workers: keep workers alive between epochs (with num_workers > 0).
        augment: training augmentations.
        balance: draw real and fake sequences equally often in training (DFDC is about 84 % fake).
        epoch_size: training sequences per epoch; None: as many as the training tracks hold non-overlapping
            windows.
        val_fraction: share of source videos (`original`) held out for validation when the index gives no
            `val` split (by a hash of the original's name: stable, and never splits a fake from its source).
        test_fraction: share held out for testing the same way when the index gives no `test` split.
        split_seed: seed of that hash split.
        eval_windows: "all" (the windows `deepfake predict` scores, so validation matches it) or "center".
        margin: face box margin the crops were cut with (placing the face-part cut-out; recorded in the
            exported detector); None: from the extraction's settings beside the index, else 0.3.
        fakes: where training fakes come from (`deepfake.fakes.FakeConfig`: ``labelled``, ``sbi`` for real-only
            data, ``both``); self-blended fakes are made on the fly in the loader workers.
        stride: video frames between crops (recorded in the exported detector); None: from the extraction's
            settings, else the median frame step in the index.
        untouched_tracks: what to do with a fake's face track that the fake left as it was (a DFDC fake often
            changes one of two people; `data_prep.untouched`, measured at extraction when the fake was cropped
            with its original's boxes): ``drop`` it (the default), label it ``real``, or keep it ``fake`` (every
            track of a fake labelled fake, as before).
        untouched_below: a fake's track is untouched when its crops' median `face_change` is under this many grey
            levels.
        groups: a `groups.csv` (``video,group``: who is in each video; `data_prep.index.read_groups`) that replaces
            the index's groups for the videos it lists (a fake not listed takes its original's), so splits keep each
            person on one side; the index's groups are proxies (docs/contract.md).

    Progressive learning (`deepfake.progressive`) may change `img_size`, `train_img_size` and `augment.strength`
    between epochs: the loaders are rebuilt from them on each `train_dataloader()` call (set the Trainer's
    `reload_dataloaders_every_n_epochs=1`).
    """

    def __init__(
        self,
        index: str,
        seq_len: int = 10,
        img_size: int | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        augment: AugmentConfig | None = None,
        balance: bool = True,
        epoch_size: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        eval_windows: Literal["all", "center"] = "all",
        margin: float | None = None,
        stride: int | None = None,
        fakes: FakeConfig | None = None,
        untouched_tracks: Literal["drop", "real", "fake"] = "drop",
        untouched_below: float = UNTOUCHED_BELOW,
        groups: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(augment, dict):
            augment = AugmentConfig(**augment)
        if isinstance(fakes, dict):
            fakes = FakeConfig(**fakes)
        self.fakes = fakes if fakes is not None else FakeConfig()
        checks = [
            (seq_len >= 1, f"seq_len must be >= 1, got {seq_len}"),
            (img_size is None or 16 <= img_size <= 2048, f"img_size must be in [16, 2048] or null, got {img_size}"),
            (batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"),
            (eval_batch_size is None or eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {eval_batch_size}"),
            (num_workers >= 0, f"num_workers must be >= 0, got {num_workers}"),
            (epoch_size is None or epoch_size >= 1, f"epoch_size must be >= 1 or null, got {epoch_size}"),
            (eval_windows in ("all", "center"), f"eval_windows must be 'all' or 'center', got {eval_windows!r}"),
            (margin is None or 0 <= margin <= 2, f"margin must be in [0, 2] or null, got {margin}"),
            (stride is None or stride >= 1, f"stride must be >= 1 or null, got {stride}"),
            (untouched_tracks in ("drop", "real", "fake"),
             f"untouched_tracks must be drop, real or fake, got {untouched_tracks!r}"),
            (untouched_below >= 0, f"untouched_below must be >= 0 grey levels, got {untouched_below}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_fractions(val_fraction, test_fraction)
        self.index = str(index)
        self.seq_len = int(seq_len)
        self.img_size = img_size
        self.train_img_size: int | None = None
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.augment = augment if augment is not None else AugmentConfig()
        self.balance = bool(balance)
        self.epoch_size = epoch_size
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.eval_windows = eval_windows
        self.margin = margin
        self.stride = stride
        self.untouched_tracks = untouched_tracks
        self.untouched_below = float(untouched_below)
        self.tracks: dict[str, list[FaceTrackRecord]] = {}
        self._datasets: dict[str, FaceSequenceDataset] = {}
        self.extraction: dict[str, Any] | None = None  # the training crops' recipe, read in setup
        self.groups = groups

    # ------------------------------------------------------------------------------------------------- setup

    def setup(self, stage: str | None = None) -> None:
        """Reads the index, splits it, and resolves the image size (from the model when not given)."""
        if self.img_size is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            net = getattr(module, "net", None)
            if not getattr(net, "img_size", None):
                raise ValueError("img_size is not set and there is no model to take it from; pass img_size")
            self.img_size = int(net.img_size)
        if self.tracks:
            return
        df, root = read_index(self.index)
        tracks = label_untouched(load_tracks(df, root), self.untouched_tracks, self.untouched_below)
        if self.groups:
            kept = apply_groups(tracks, read_groups(self.groups))
            if kept:
                log.warning("%d of %d video(s) are not in %s (nor their original): they keep the index's group, e.g. "
                            "%s", len(kept), len({t.video for t in tracks}), self.groups, kept[0])
        given = {t.split for t in tracks} - {""}
        need = {"val": self.val_fraction if "val" not in given else 0.0,
                "test": self.test_fraction if "test" not in given else 0.0}
        unsplit = [t for t in tracks if t.split == "" or (t.split == "train" and (need["val"] or need["test"]))]
        if unsplit:
            key = "group"
            if (need["val"] or need["test"]) and len({t.group for t in unsplit}) < 2:
                # One group (e.g. a single DFDC part) can't give a person-disjoint split: fall back to source videos.
                log.warning("the index holds one group (%s): validation is split by source video, and may share "
                            "people with training", unsplit[0].group)
                key = "original"
            assignment = split_by_original([getattr(t, key) for t in unsplit], need["val"], need["test"],
                                           self.split_seed)
            for t in unsplit:
                t.split = assignment[getattr(t, key)]
        if stage in (None, "fit"):  # before training: a recipe the tracks can't feed stops here, in one line
            check_fake_sources(self.fakes, [t for t in tracks if t.split == "train"], self.index,
                               val_tracks=[t for t in tracks if t.split == "val"])
        if not self.fakes.labelled:  # real-only training: every fake is self-blended from a real track
            dropped = sum(t.label == 1 for t in tracks)
            if dropped:
                log.warning("data.fakes.mode sbi: %d labelled fake track(s) in the index are not used", dropped)
            tracks = [t for t in tracks if t.label == 0]
        self.tracks = {name: [t for t in tracks if t.split == name] for name in SPLITS}
        self._write_split()
        # The training crops' recipe, for the detector to carry (`deepfake.contract`); the config's margin/stride win.
        self.extraction = index_extraction(root, tracks, self.margin, self.stride)
        self.margin = float(self.extraction.setdefault("margin", DEFAULT_MARGIN))
        self.stride = int(self.extraction["stride"])
        counts = {k: (sum(t.label == 0 for t in v), sum(t.label == 1 for t in v)) for k, v in self.tracks.items()}
        log.info("face tracks (real, fake): %s", counts)
        if not self.tracks["train"] and stage in (None, "fit"):
            raise IndexFileError(f"{self.index}: no training tracks after the split")

    def _write_split(self) -> None:
        """The split this run uses, as `split.csv` (video,split,group) in the run's folder: `deepfake evaluate
        --split-file` and later runs take it, so they score exactly the videos training held out."""
        trainer = self.trainer
        if trainer is None or not trainer.loggers:
            return
        # Only into a run folder: without a logger, Lightning's log_dir is the working directory. Every rank reads
        # log_dir once (under DDP it is a broadcast, which hangs the run if one rank calls it more often).
        folder = trainer.log_dir
        if not folder or not trainer.is_global_zero:
            return
        rows = sorted({(t.video, t.split, t.group) for split in self.tracks.values() for t in split})
        atomic_write(Path(folder) / SPLIT_FILE, csv_text(rows, ["video", "split", "group"]))

    def validation_meta(self) -> dict[str, Any]:
        """What validation (the best checkpoint's choice and the calibration) is fitted on, for `detector.pt`."""
        fakes = {"labelled": "labelled fakes", "sbi": "fakes made on the fly from its reals",
                 "both": "labelled fakes and fakes made on the fly"}[self.fakes.mode]
        meta: dict[str, Any] = {"fitted_on": f"the validation split's real videos and {fakes}"}
        if self.fakes.self_blended:
            kinds = self.fakes.val_kinds or self.fakes.kinds
            meta["fake_kinds"] = kinds
            meta["kinds_unseen_in_training"] = sorted(k for k in kinds if not self.fakes.kinds.get(k))
        return meta

    def extraction_meta(self) -> dict[str, Any]:
        """What the exported detector records about the data: `seq_len`, `margin`, `stride`, `extraction`."""
        return {"seq_len": self.seq_len, "margin": self.margin, "stride": self.stride,
                "extraction": self.extraction}

    # --------------------------------------------------------------------------------------------- loaders

    def _dataset(self, split: str) -> FaceSequenceDataset:
        if not self.tracks:
            self.setup()
        tracks = self.tracks[split]
        if not tracks:
            raise IndexFileError(f"{self.index}: no face tracks in the {split} split (set val_fraction/test_fraction, "
                                 f"or give rows split={split} in the index)")
        margin = self.margin or DEFAULT_MARGIN
        if split == "train":
            size = int(self.train_img_size or self.img_size)
            return FaceSequenceDataset(tracks, self.seq_len, size, train=True, fakes=self.fakes, margin=margin,
                                       transform=build_augment(self.augment, margin))
        if split not in self._datasets or self._datasets[split].img_size != self.img_size:
            # validation may make kinds training never does (`FakeConfig.val_kinds`), swapping in training's faces too
            fakes = replace(self.fakes, kinds=self.fakes.val_kinds or self.fakes.kinds)
            self._datasets[split] = FaceSequenceDataset(tracks, self.seq_len, int(self.img_size), train=False,
                                                        eval_windows=self.eval_windows, fakes=fakes, margin=margin,
                                                        donors=donor_pool(tracks, self.tracks["train"]))
        return self._datasets[split]

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.persistent_workers, drop_last=False,
                          prefetch_factor=4 if self.num_workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        ds = self._dataset("train")
        windows = ds.windows_per_item()
        weights = windows.astype(np.float64)
        blended, labels = ds.self_blended_items, ds.labels
        labelled_fake = (labels == 1) & ~blended
        if self.fakes.mode == "both" and blended.any() and labelled_fake.any():  # the fakes' mix: sbi_share
            weights[blended] *= self.fakes.sbi_share / weights[blended].sum()
            weights[labelled_fake] *= (1 - self.fakes.sbi_share) / weights[labelled_fake].sum()
        # Self-blended copies double the real tracks' windows; an epoch keeps the size of the data it came from.
        size = self.epoch_size or int(windows[~blended].sum())
        sampler = BalancedSampler(labels, size, weights=weights, balance=self.balance,
                                  seed=torch.initial_seed() % 2**31)
        return self._loader(ds, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"), self.eval_batch_size)

    def eval_dataset(self, stage: str) -> FaceSequenceDataset:
        """The dataset behind the `val` or `test` loader (its `tracks` and `videos` name the items' indices)."""
        return self._dataset(stage)
