"""Every kind of fake the project makes, in one table.

Two places make fakes: `deepfake synth` writes whole clips of them to disk (`data_prep.synth_fakes`: test sets,
the demo, the generalization suite), and training makes them on the fly from real face sequences
(`deepfake.fakes`, `data.fakes.kinds`). Both read their kinds from here, so a kind has one name, one description
and one place that says where it can be made.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FakeKind", "KINDS", "SYNTH_KINDS", "TRAINING_KINDS", "DONOR_KINDS"]


@dataclass(frozen=True)
class FakeKind:
    """One kind of fake.

    Attributes:
        name: what configs and commands call it.
        synth: `deepfake synth --fake-kind NAME` writes it.
        training: `data.fakes.kinds` makes it on the fly from real sequences.
        donor: it puts another person's face (or part of one) into the clip.
        temporal: it shows mostly over time (motion, flicker, drift) rather than in one frame.
        what: what it imitates, in a few words.
    """

    name: str
    synth: bool
    training: bool
    donor: bool
    temporal: bool
    what: str


KINDS: dict[str, FakeKind] = {k.name: k for k in (
    FakeKind("sbi", True, True, False, False, "self-blend: the face blended into itself through a soft mask (SBI)"),
    FakeKind("swap", True, True, True, False, "face swap: another person's face, aligned, colour-matched, blended"),
    FakeKind("reenact", True, True, False, True, "mouth and eyes moved over time by a warp confined to them"),
    FakeKind("paste", True, False, True, False, "another person's face pasted with a hard edge"),
    FakeKind("lowres", True, False, False, False, "the inner face re-rendered at 1/4 resolution (a generator's)"),
    FakeKind("part", True, False, True, False, "face-part swap: another person's eyes or mouth only"),
    FakeKind("flicker", False, True, False, True, "a self-blend whose opacity, colour and placement jump per frame"),
    FakeKind("morph", False, True, False, True, "the lower face widening or narrowing, the face's height drifting"),
)}
SYNTH_KINDS = tuple(name for name, kind in KINDS.items() if kind.synth)
TRAINING_KINDS = tuple(name for name, kind in KINDS.items() if kind.training)
DONOR_KINDS = tuple(name for name, kind in KINDS.items() if kind.donor)
