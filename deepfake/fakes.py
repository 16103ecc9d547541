"""Fakes made on the fly from real face sequences, for training that generalises to manipulations never seen.

Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): a colour- and geometry-jittered copy of a real face is
blended back into itself through a soft, deformed mask (`data_prep.sbi`). The fake carries what face swaps share
(a blending boundary, a colour or sharpness mismatch between the inner face and its surroundings) without any one
generator's fingerprint, so a detector trained on it learns those traces instead.

Temporal fakes (`data_prep.temporal`) carry traces that show only over time: `reenact` (the mouth and/or eyes warped
by a signal of their own, no blending edge, no colour change), `flicker` (a self-blend whose opacity, colour and
placement jump between frames) and `morph` (the face's shape drifting over the sequence). `data.fakes.kinds` gives
the shares of each kind among the fakes made on the fly (default: self-blends only); one kind and one parameter set
per sequence, drawn from the loader's per-worker generator. Landmarks come from the track when the index has them
(`FaceTrackRecord.crop_landmarks`), else from the face box (`data_prep.temporal.canonical_landmarks`).

Here a whole sequence of crops is blended with ONE set of parameters (`data_prep.sbi.sample_blend_params`),
drifting smoothly over the T frames when `drift` is on, so the LSTM sees a temporally consistent fake. The face
box inside a crop follows from the crop's geometry (extraction centres the face box with `margin` of its side on
every side); the mask is drawn around it. Blending runs before the usual augmentations.

`data.fakes.static_control` (default 0: off) is a share of the REAL training sequences that get a static control
(`static_control_sequence`): the reenact warp (same regions, magnitudes and resampling) frozen at one random time of
the sequence, so every frame carries the same warp, and the sequence stays labelled real. Per-frame warp traces then
appear in both classes, and only their change over time tells a reenacted face from a real one.

Self-blend masks (`data.fakes.masks`, shares of shapes drawn per sequence; default: the box ellipse only, as before):
``box`` (an upright ellipse at the nominal face box), ``landmarks`` (an ellipse that follows the track's landmarks:
position, size and roll), ``deformed`` (the landmark ellipse with a strongly deformed outline), ``small`` (the inner
face only, 55-80 % of the landmark ellipse) and ``large`` (110-120 %, reaching the jaw and brow). A probe on unseen
people found one shape (landmarks instead of box) worse on three kinds of four: the lever is the mix, not one shape.

`data.fakes.recompress` (default 0: off): a JPEG quality; every fake frame made on the fly is JPEG-encoded at it and
decoded again, as its real crop was by `deepfake-extract`, so both classes carry one compression history (use the
crops' quality, `extract_config.json`'s `quality`, 90 by default).

`data.fakes.val_kinds` (default: none, the validation fakes are made like the training ones) gives the kinds of the
validation fakes made on the fly in real-only training: the best checkpoint (`val/balanced_logloss`) and the shipped
calibration are then chosen on fakes of kinds the training does not make (e.g. train on sbi + reenact, validate on
flicker + morph), which a recipe that overfits its own generator cannot game. `detector.pt`'s meta says what the
checkpoint and calibration were fitted on (`validation`, `FaceSequenceDataModule.validation_meta`).

`swap` (a face swap made on the fly): another real track's face (a crop of another person, `Donor`: the dataset
draws it from a track of another group, else of another video) aligned onto this sequence by the landmarks,
colour-matched and blended through a self-blend mask (`data_prep.sbi.swap_face`, as `deepfake synth --fake-kind
swap` makes them). It is the held-out kind of the real-only recipes: `val_kinds: {swap: 1}` chooses the checkpoint
and fits the calibration on swaps between the validation split's people, a manipulation training never makes.

`data.fakes` selects where the training fakes come from:
- ``labelled``: the index's fakes only (the default, as before);
- ``sbi``: self-blended copies of the real tracks only, for real-only data (labelled fakes in the index are left
  out of training and validation, so the run measures what it trains);
- ``both``: labelled fakes plus self-blended ones, `sbi_share` of the fake draws being self-blended.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Literal, NamedTuple

import numpy as np

import cv2

from data_prep.index import IndexFileError, read_crop
from data_prep.sbi import sample_blend_params, self_blend, swap_face
from data_prep.temporal import (
    canonical_landmarks,
    flicker_params,
    morph_warp,
    reenact_warp,
    sample_morph_params,
    sample_reenact_params,
)
from data_prep.fake_kinds import TRAINING_KINDS
from data_prep import track

__all__ = ["FakeConfig", "FAKE_KINDS", "MASK_SHAPES", "check_fake_sources", "recompressed", "face_box_in_crop",
           "self_blend_sequence", "temporal_fake_sequence", "swap_sequence", "Donor",
           "canonical_face_landmarks", "track_crop_landmarks", "pick_donor", "donor_pool",
           "fake_sequence", "static_control_sequence", "real_sequence"]

MODES = ("labelled", "sbi", "both")
# The kinds of fakes made on the fly: self-blends and the temporal ones (data_prep.fake_kinds, the one table).
FAKE_KINDS = TRAINING_KINDS
# Self-blend mask shapes (`FakeConfig.masks`): (use the landmarks, size range, outline harmonics' amplitude range).
MASK_SHAPES = {"box": (False, (1.0, 1.0), None), "landmarks": (True, (1.0, 1.0), None),
               "deformed": (True, (0.9, 1.05), (0.06, 0.14)), "small": (True, (0.55, 0.8), None),
               "large": (True, (1.1, 1.2), None)}


@dataclass
class FakeConfig:
    """Where training fakes come from (module docstring).

    Attributes:
        mode: ``labelled``, ``sbi`` or ``both``.
        sbi_share: with ``both``, the share of fake draws that are self-blended (the rest are labelled fakes).
        drift: let the blend parameters drift smoothly over a sequence (False: the same on every frame).
        kinds: shares of the kinds of fakes made on the fly (`FAKE_KINDS`: sbi, swap, reenact, flicker, morph), e.g.
            ``{sbi: 0.5, reenact: 0.25, flicker: 0.125, morph: 0.125}``; normalised to sum to 1. Default: sbi only.
        static_control: share of the real training sequences given a static control (`static_control_sequence`),
            in [0, 1); 0 (the default) leaves real sequences untouched.
        masks: shares of the self-blend mask shapes (`MASK_SHAPES`); default the box ellipse only.
        recompress: JPEG quality every fake frame made on the fly is re-encoded at (0: off).
        val_kinds: shares of the kinds of the validation fakes made on the fly; None: those of `kinds`.
        colour_free: share of self-blends whose copy gets no colour change, only its resampling (resize blur) and
            geometry: they differ from the real face by texture and boundary alone (0: off).
        hard_edges: share of self-blends with a nearly hard mask edge (blur 0.3-1.5 % of the face) (0: off).
    """

    mode: Literal["labelled", "sbi", "both"] = "labelled"
    sbi_share: float = 0.5
    drift: bool = True
    kinds: dict[str, float] = field(default_factory=lambda: {"sbi": 1.0})
    static_control: float = 0.0
    masks: dict[str, float] = field(default_factory=lambda: {"box": 1.0})
    recompress: int = 0
    val_kinds: dict[str, float] | None = None
    colour_free: float = 0.0
    hard_edges: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"data.fakes.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 < self.sbi_share < 1.0:
            raise ValueError(f"data.fakes.sbi_share must be in (0, 1), got {self.sbi_share}")
        if not isinstance(self.kinds, dict) or not self.kinds:
            raise ValueError(f"data.fakes.kinds must map kinds ({', '.join(FAKE_KINDS)}) to shares, got {self.kinds!r}")
        unknown = sorted(set(self.kinds) - set(FAKE_KINDS))
        if unknown:
            raise ValueError(f"data.fakes.kinds: unknown kind(s) {', '.join(unknown)}; use {', '.join(FAKE_KINDS)}")
        try:
            shares = {k: float(v) for k, v in self.kinds.items()}
        except (TypeError, ValueError):
            raise ValueError(f"data.fakes.kinds: shares must be numbers, got {self.kinds!r}") from None
        if any(not np.isfinite(v) or v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
            raise ValueError(f"data.fakes.kinds: shares must be >= 0 and not all 0, got {self.kinds!r}")
        self.kinds = shares
        self.masks = _shares(self.masks, MASK_SHAPES, "data.fakes.masks")
        if self.val_kinds is not None:
            self.val_kinds = _shares(self.val_kinds, FAKE_KINDS, "data.fakes.val_kinds")
        for name in ("colour_free", "hard_edges"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"data.fakes.{name} must be a share in [0, 1], got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.recompress, int) or not 0 <= self.recompress <= 100:
            raise ValueError(f"data.fakes.recompress must be 0 (off) or a JPEG quality in [1, 100], got "
                             f"{self.recompress!r}")
        try:
            self.static_control = float(self.static_control)
        except (TypeError, ValueError):
            raise ValueError(f"data.fakes.static_control must be a number in [0, 1), got {self.static_control!r}") \
                from None
        if not 0.0 <= self.static_control < 1.0:
            raise ValueError(f"data.fakes.static_control must be in [0, 1), got {self.static_control}")

    @property
    def self_blended(self) -> bool:
        return self.mode in ("sbi", "both")

    @property
    def labelled(self) -> bool:
        return self.mode in ("labelled", "both")


class Donor(NamedTuple):
    """Another person's face for a ``swap`` made on the fly: one (S, S, 3) uint8 RGB crop and its (5, 2) landmarks in
    crop pixels."""

    image: np.ndarray
    landmarks: np.ndarray


def _shares(given, names, what: str) -> dict[str, float]:
    if not isinstance(given, dict) or not given:
        raise ValueError(f"{what} must map {', '.join(names)} to shares, got {given!r}")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{what}: unknown name(s) {', '.join(unknown)}; use {', '.join(names)}")
    try:
        shares = {k: float(v) for k, v in given.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{what}: shares must be numbers, got {given!r}") from None
    if any(not np.isfinite(v) or v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError(f"{what}: shares must be >= 0 and not all 0, got {given!r}")
    return shares


def _draw(shares: dict[str, float], rng: np.random.Generator) -> str:
    names = list(shares)
    if len(names) == 1:
        return names[0]
    p = np.array([shares[k] for k in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def recompressed(frames: np.ndarray, quality: int) -> np.ndarray:
    """(T, S, S, 3) uint8 RGB frames JPEG-encoded at `quality` and decoded (OpenCV, as the crops were written)."""
    out = [cv2.imdecode(cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]),
                                     [cv2.IMWRITE_JPEG_QUALITY, int(quality)])[1], cv2.IMREAD_COLOR)[..., ::-1]
           for f in frames]
    return np.ascontiguousarray(np.stack(out))


def check_fake_sources(config: FakeConfig, tracks, where, val_tracks=None) -> None:
    """Refuses, before training, a fake recipe that the training tracks cannot feed, in one line naming what is
    missing: fakes made on the fly need real tracks, swaps need two real videos to take donors from (`donor_pool`:
    the validation split's, checked when `val_tracks` is given, may borrow the training split's), and
    landmark-following masks need the index's landmarks.

    Raises:
        IndexFileError: the recipe can't be made from `tracks` (`where` names the index).
    """
    if not config.self_blended:
        return
    reals = [t for t in tracks if t.label == 0]
    if not reals:
        raise IndexFileError(f"{where}: no real face track in the training split, and data.fakes.mode {config.mode} "
                         f"makes its fakes from real tracks")
    for split, given, kinds in (("training", tracks, config.kinds),
                                ("validation", val_tracks, config.val_kinds or config.kinds)):
        videos = {t.video for t in donor_pool(given or (), tracks if split == "validation" else ())}
        if kinds.get("swap") and given and len(videos) < 2:
            raise IndexFileError(f"{where}: data.fakes.{'kinds' if split == 'training' else 'val_kinds'} makes swaps, "
                                 f"which take their donor face from another real video, and the {split} split"
                                 f"{' with the training split' if split == 'validation' else ''} holds {len(videos)}")
    needs = sorted(k for k, share in config.masks.items() if share > 0 and MASK_SHAPES[k][0])
    if needs and all(getattr(t, "landmarks", None) is None for t in reals):
        raise IndexFileError(f"{where}: no landmarks in the index (extracted before they were kept), and "
                             f"data.fakes.masks {', '.join(needs)} follow them; re-extract, or use masks: {{box: 1}}")


def face_box_in_crop(size: int, margin: float) -> np.ndarray:
    """The face box (x1, y1, x2, y2) inside a square crop of side `size` cut with `margin` per side
    (`data_prep.track.face_box_in_crop`), as float32: where the fakes place their masks and landmarks."""
    return track.face_box_in_crop(size, margin).astype(np.float32)


def canonical_face_landmarks(size: int, margin: float) -> np.ndarray:
    """(5, 2) float32 landmarks at their canonical places in the face box of a crop of side `size` cut with `margin`
    (`data_prep.temporal.canonical_landmarks`): where a crop without recorded landmarks has its eyes, nose, mouth."""
    return np.asarray(canonical_landmarks(face_box_in_crop(size, margin)), np.float32)


def _landmarks(frames: np.ndarray, margin: float, landmarks: np.ndarray | None) -> np.ndarray:
    """(T, 5, 2) landmarks in crop pixels: the given ones, else the canonical ones in the face box."""
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float32)
        if lm.shape == (len(frames), 5, 2) and np.isfinite(lm).all():
            return lm
    return np.broadcast_to(canonical_landmarks(face_box_in_crop(frames.shape[1], margin)), (len(frames), 5, 2))


def temporal_fake_sequence(frames: np.ndarray, kind: str, rng: np.random.Generator, margin: float,
                           landmarks: np.ndarray | None = None) -> np.ndarray:
    """A temporal fake of a real crop sequence (`data_prep.temporal`), one parameter set for all its frames.

    Args:
        frames: (T, S, S, 3) uint8 RGB crops of one face track.
        kind: ``reenact``, ``flicker`` or ``morph``.
        rng: the random generator (the data loader's, per worker and seed).
        margin: the margin the crops were cut with.
        landmarks: optional (T, 5, 2) landmarks per frame in crop pixels; None (or unusable): canonical positions
            in the face box.

    Returns:
        (T, S, S, 3) uint8: the fake sequence.
    """
    box = face_box_in_crop(frames.shape[1], margin)
    lm = _landmarks(frames, margin, landmarks)
    if kind == "reenact":
        params = sample_reenact_params(rng)
        return np.stack([reenact_warp(f, lm[t], params, t) for t, f in enumerate(frames)])
    if kind == "morph":
        morph = sample_morph_params(rng, len(frames))
        return np.stack([morph_warp(f, box, lm[t], morph, t) for t, f in enumerate(frames)])
    if kind == "flicker":
        per_frame = flicker_params(sample_blend_params(rng, drift=False), rng, len(frames))
        return np.stack([self_blend(f, box, p, landmarks=lm[t], frame_index=t)
                         for t, (f, p) in enumerate(zip(frames, per_frame))])
    raise ValueError(f"unknown temporal fake kind {kind!r}; use reenact, flicker or morph")


def track_crop_landmarks(track, size: int, margin: float) -> np.ndarray | None:
    """A track's (N, 5, 2) landmarks in the pixels of its crops resized to `size` (`FaceTrackRecord.crop_landmarks`),
    or None when the index (or the track type) has none."""
    crop_landmarks = getattr(track, "crop_landmarks", None)
    return crop_landmarks(size, margin) if callable(crop_landmarks) else None


def pick_donor(track, pool, rng: np.random.Generator, size: int, margin: float) -> Donor:
    """A donor face for a swap of `track`: one crop (read at `size`) of a real track in `pool` of another group
    (person), or of another video when every real track there shares its group, with its landmarks (canonical ones
    when the index has none).

    Raises:
        ValueError: no other real video in `pool`.
    """
    reals = [t for t in pool if t.label == 0 and t.video != track.video]
    others = [t for t in reals if t.group != track.group] or reals
    if not others:
        raise ValueError(f"a swap of {track.video} needs a donor face from another real video; there is none")
    donor = others[int(rng.integers(len(others)))]
    j = int(rng.integers(len(donor.crops)))
    landmarks = track_crop_landmarks(donor, size, margin)
    points = (landmarks[j] if landmarks is not None and np.isfinite(landmarks[j]).all()
              else canonical_face_landmarks(size, margin))
    return Donor(read_crop(donor.crops[j], size), points)


def donor_pool(tracks, fallback=()) -> list:
    """The real tracks swaps of `tracks` take their donors from: their own when they hold two real videos (people
    of the same split), else those and `fallback`'s (e.g. a small validation split borrows the training split's)."""
    reals = [t for t in tracks if t.label == 0]
    if len({t.video for t in reals}) >= 2:
        return reals
    return reals + [t for t in fallback if t.label == 0]


def swap_sequence(frames: np.ndarray, rng: np.random.Generator, margin: float, donor: Donor, drift: bool = True,
                  landmarks: np.ndarray | None = None) -> np.ndarray:
    """A face swap of a real crop sequence: the donor's face aligned onto every frame by the landmarks,
    colour-matched and blended through one self-blend mask drifting over the sequence (`data_prep.sbi.swap_face`).

    Args:
        frames: (T, S, S, 3) uint8 RGB crops of one face track.
        rng: the random generator (the data loader's, per worker and seed).
        margin: the margin the crops were cut with.
        donor: another person's crop and landmarks (`Donor`).
        drift: smooth drift of the mask and blend ratio over the frames.
        landmarks: optional (T, 5, 2) landmarks in crop pixels (canonical positions in the box when missing).

    Returns:
        (T, S, S, 3) uint8: the fake sequence.
    """
    params = sample_blend_params(rng, drift=drift)
    box = face_box_in_crop(frames.shape[1], margin)
    lm = _landmarks(frames, margin, landmarks)
    image, donor_lm = np.ascontiguousarray(donor.image), np.asarray(donor.landmarks, np.float32).reshape(5, 2)
    return np.stack([swap_face(f, box, lm[t], image, donor_lm, params, frame_index=t) for t, f in enumerate(frames)])


def fake_sequence(frames: np.ndarray, rng: np.random.Generator, margin: float, config: FakeConfig,
                  landmarks: np.ndarray | None = None,
                  donor: Callable[[np.random.Generator], Donor] | None = None) -> np.ndarray:
    """A fake made on the fly from a real crop sequence: its kind drawn from `config.kinds`, then made with one
    parameter set (`self_blend_sequence`, `swap_sequence` or `temporal_fake_sequence`). Deterministic given the
    generator's state. `donor(rng)` gives a ``swap`` its donor face (called only for that kind)."""
    kind = _draw(config.kinds, rng)
    if kind == "swap":
        if donor is None:
            raise ValueError("a swap made on the fly needs a donor face (another real track); none was given")
        fake = swap_sequence(frames, rng, margin, donor(rng), config.drift, landmarks)
    elif kind == "sbi":
        shape = _draw(config.masks, rng)
        fake = self_blend_sequence(frames, rng, margin, config.drift, landmarks=landmarks, shape=shape,
                                   colour_free=config.colour_free, hard_edges=config.hard_edges)
    else:
        fake = temporal_fake_sequence(frames, kind, rng, margin, landmarks)
    return recompressed(fake, config.recompress) if config.recompress else fake


def static_control_sequence(frames: np.ndarray, rng: np.random.Generator, margin: float,
                            landmarks: np.ndarray | None = None) -> np.ndarray:
    """A static control of a real crop sequence: a reenact warp (`sample_reenact_params`, `reenact_warp`) whose
    signals are frozen at one time drawn uniformly over the sequence's frames, so each frame's warp is one a reenacted
    frame could carry (the same regions, magnitudes and resampling) and it does not change over time. Label it real.

    Args:
        frames: (T, S, S, 3) uint8 RGB crops of one real face track.
        rng: the random generator (the data loader's, per worker and seed).
        margin: the margin the crops were cut with.
        landmarks: optional (T, 5, 2) landmarks per frame in crop pixels (the warp follows the face as it moves).

    Returns:
        (T, S, S, 3) uint8.
    """
    lm = _landmarks(frames, margin, landmarks)
    params = replace(sample_reenact_params(rng), frozen_at=float(rng.uniform(0, max(1, len(frames) - 1))))
    return np.stack([reenact_warp(f, lm[t], params, t) for t, f in enumerate(frames)])


def real_sequence(frames: np.ndarray, rng: np.random.Generator | None, margin: float, config: FakeConfig,
                  landmarks: np.ndarray | None = None) -> np.ndarray:
    """A real training sequence as served: with probability `config.static_control` its static control
    (`static_control_sequence`), else `frames` themselves. Draws nothing from `rng` when the share is 0 (or `rng` is
    None, as in evaluation), so the default leaves the real sequences and the generator's stream as they were."""
    if rng is None or config.static_control <= 0 or rng.random() >= config.static_control:
        return frames
    return static_control_sequence(frames, rng, margin, landmarks)


def self_blend_sequence(frames: np.ndarray, rng: np.random.Generator, margin: float, drift: bool = True,
                        landmarks: np.ndarray | None = None, shape: str = "box", colour_free: float = 0.0,
                        hard_edges: float = 0.0) -> np.ndarray:
    """A self-blended fake of a real crop sequence: one set of blend parameters for all its frames.

    Args:
        frames: (T, S, S, 3) uint8 RGB crops of one face track.
        rng: the random generator (the data loader's, per worker and seed).
        margin: the margin the crops were cut with.
        drift: smooth drift of the parameters over the frames.
        landmarks: optional (T, 5, 2) landmarks in crop pixels (canonical positions in the box when missing), used
            by every mask shape but ``box``.
        shape: the mask shape (`MASK_SHAPES`); ``box`` (the default) draws nothing more from `rng`.
        colour_free, hard_edges: shares of copies without colour change and of nearly hard mask edges
            (`FakeConfig`); at 0 (the default) they draw nothing from `rng`.

    Returns:
        (T, S, S, 3) uint8: the fake sequence.
    """
    params = sample_blend_params(rng, drift=drift)
    if colour_free > 0 and rng.random() < colour_free:  # texture and boundary alone: the copy is only resampled
        params = replace(params, hue=0.0, saturation=1.0, brightness=0.0, contrast=1.0, rgb_shift=(0.0, 0.0, 0.0),
                         resize=float(rng.uniform(0.35, 0.8)))
    if hard_edges > 0 and rng.random() < hard_edges:
        params = replace(params, mask_blur=float(rng.uniform(0.003, 0.015)))
    box = face_box_in_crop(frames.shape[1], margin)
    follow, (lo, hi), deform = MASK_SHAPES[shape]
    if shape != "box":
        size = float(rng.uniform(lo, hi))
        axes = tuple(min(1.2, a * size) for a in params.mask_axes)
        harmonics = params.mask_harmonics if deform is None else tuple(
            (float(rng.uniform(*deform)) / 3, float(rng.uniform(0, 2 * np.pi))) for _ in range(3))
        params = replace(params, mask_axes=axes, mask_harmonics=harmonics)
    lm = _landmarks(frames, margin, landmarks) if follow else [None] * len(frames)
    return np.stack([self_blend(f, box, params, landmarks=lm[t], frame_index=t) for t, f in enumerate(frames)])
