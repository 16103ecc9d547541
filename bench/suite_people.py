"""Who is in the generalization suite (`bench/generalize.py`): each side's people and the name of its data, the
check that no photo is on both sides, who each test video shows, and each test person's AUC."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO = {"width": 640, "height": 360, "fps": 10.0, "progress": False}  # every suite clip: 640x360 at 10 fps
TEST_SEED = 1000  # the test sets' synth seed


def photo_people(base: str, photos: str | None, name: str) -> tuple[str, str]:
    """A side's people (`deepfake synth --people`) and the name of its data folders: (`base`, `name`) for the
    packaged photos alone, (`base+DIR`, `name-<12 hex>`, a hash of the photos' names and bytes) with a folder."""
    if not photos:
        return base, name
    import hashlib

    from data_prep.synth_photos import check_people, image_files

    folder = Path(photos).expanduser().resolve()
    check_people(str(folder))
    digest = hashlib.sha256()
    for photo in image_files(folder):
        digest.update(photo.name.encode() + b"\0" + photo.read_bytes())
    return f"{base}+{folder}", f"{name}-{digest.hexdigest()[:12]}"


def train_people(args) -> tuple[str, str]:
    """The training clips' people and data folder name: ``train`` for the astronaut alone, ``train-<hash>`` with
    --train-photos."""
    return photo_people("suite-train", args.train_photos, "train")


def test_people(args) -> tuple[str, str]:
    """The test clips' people and data folder name: ``test`` for Grace Hopper and the cameraman, ``test-<hash>``
    with --test-photos; ValueError when a photo is in both --train-photos and --test-photos (by its bytes)."""
    photos = getattr(args, "test_photos", None)
    if photos and args.train_photos:
        from data_prep.files import sha256_of
        from data_prep.synth_photos import image_files

        train = {sha256_of(f): f.name for f in image_files(Path(args.train_photos).expanduser())}
        both = [f.name for f in image_files(Path(photos).expanduser()) if sha256_of(f) in train]
        if both:
            raise ValueError(f"--test-photos and --train-photos share {', '.join(both)}: a test person must be one "
                             f"the training never saw")
    return photo_people("suite-test", photos, "test")


def people_of(videos: list[str], per_class: int, seconds: float, people: str = "suite-test") -> list[str]:
    """Who each test video shows (`real/crf18/clip_0003.mp4`, `fake/swap_crf18/clip_0043.mp4`): the person of its
    real clip's photo in the synth plan (a fake is made on the real clip of the same pair)."""
    from data_prep.synth import SynthConfig
    from data_prep.synth_photos import face_photos
    from data_prep.synth_plan import plan_clip

    cfg = SynthConfig(count=2 * per_class, seed=TEST_SEED, fake_kind="swap", people=people, seconds=seconds,
                      **VIDEO)
    photos = face_photos(people)
    out = []
    for video in videos:
        number = int(Path(video).stem.split("_")[1])
        pair = number - per_class if video.startswith("fake/") else number
        out.append(photos[plan_clip(cfg, pair, False).faces[0].photo_index].person)
    return out


def by_person(y: np.ndarray, ps: list[np.ndarray], people: list[str]) -> dict[str, float]:
    """Each test person's AUC (their real clips against the fakes made on them), mean over the seeds' scores."""
    from ablation import auc_of  # bench/ablation.py, beside this

    who = np.asarray(people)
    out = {}
    for person in sorted(set(people)):
        keep = who == person
        out[person] = float(np.mean([auc_of(y[keep], p[keep]) for p in ps]))
    return out
