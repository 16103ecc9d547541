"""Which face tracks train and which validate: deterministic splits by group (a fake never straddles train and
validation with its source), and what to do with tracks a fake left untouched (`data.untouched_tracks`)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from data_prep.index import FaceTrackRecord
from data_prep.untouched import UNTOUCHED_BELOW, is_untouched

__all__ = ["SPLIT_FILE", "check_fractions", "split_by_original", "label_untouched"]

log = logging.getLogger(__name__)

# The split a training run used, written into its run folder.
SPLIT_FILE = "split.csv"


def _unit_hash(text: str, seed: int) -> float:
    """A stable number in [0, 1) for a string (the same on every machine and Python run)."""
    digest = hashlib.sha1(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) "
                         f"and sum to < 1")


def split_by_original(originals: Sequence[str], val_fraction: float, test_fraction: float = 0.0,
                      seed: int = 0) -> dict[str, str]:
    """Deterministic split of groups of videos (their `group`: a proxy for the people in them, or a user's
    groups.csv; an index without groups uses each source video, `original`): {group: "train" | "val" | "test"}.

    Each group goes by a hash of its name, so everything of one group (a fake and the real video it was made from)
    lands in one split, and adding videos to a dataset never moves the ones already there. Small sets are kept
    usable: when the hash leaves a requested split empty, the original with the lowest hash moves into it.
    """
    check_fractions(val_fraction, test_fraction)
    unique = sorted(set(originals))
    h = {o: _unit_hash(o, seed) for o in unique}
    out = {o: "val" if h[o] < val_fraction else "test" if h[o] < val_fraction + test_fraction else "train"
           for o in unique}
    for name, fraction in (("val", val_fraction), ("test", test_fraction)):
        members = [o for o in unique if out[o] == "train"]
        if fraction > 0 and name not in out.values() and len(members) > 1:
            out[min(members, key=lambda o: h[o])] = name
    return out


def label_untouched(tracks: list[FaceTrackRecord], rule: str, below: float = UNTOUCHED_BELOW) -> list[FaceTrackRecord]:
    """Applies `data.untouched_tracks` to the face tracks of fakes that the fake left as it was.

    Args:
        tracks: the index's tracks.
        rule: ``drop`` (leave them out), ``real`` (label them real) or ``fake`` (leave them as they are).
        below: the `data_prep.untouched.is_untouched` threshold, in grey levels.

    Returns:
        The tracks to train on (the same objects; ``real`` changes their label).
    """
    fakes = [t for t in tracks if t.label == 1]
    if rule == "fake" or not fakes:
        return tracks
    if all(t.face_change is None for t in fakes):
        log.info("data.untouched_tracks %s: the index measures no fake's face against its original's (fakes not "
                 "cropped with their original's boxes, or an index from before face_change was kept): every track "
                 "of a fake stays labelled fake", rule)
        return tracks
    untouched = {id(t) for t in fakes if is_untouched(t.face_change, below)}
    if untouched:
        log.info("data.untouched_tracks %s: %d of %d fake face track(s) are unchanged from their original's",
                 rule, len(untouched), len(fakes))
    if rule == "drop":
        return [t for t in tracks if id(t) not in untouched]
    for t in tracks:
        if id(t) in untouched:
            t.label = 0
    return tracks
