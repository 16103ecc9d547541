"""More people for the generalization suite's training: face photos from a package on PyPI, into a folder.

    python bench/photos.py bench_output/photos                     # fetches insightface 0.7.3's source from PyPI
    python bench/photos.py bench_output/photos --sdist FILE.tar.gz # offline: a copy of that file you brought
    python bench/generalize.py --train-photos bench_output/photos --name six-more

The source distribution of insightface 0.7.3 (439 kB, checked against the SHA-256 PyPI publishes) ships a group
photo, `insightface/data/images/t1.jpg` (1280x886): six people round a table, faces 95-111 px wide. Only that file
is written to OUT; nothing is installed. `deepfake synth --people OUT` (`data_prep.synth_photos.folder_photos`) makes
each of the six faces a person of its own, with its mirror image. None of them is in the suite's test sets (Grace
Hopper, the cameraman) or the demo (the astronaut, Grace Hopper).

Any folder of your own photos does the same (`--train-photos DIR`); this script only saves looking for one.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

URL = ("https://files.pythonhosted.org/packages/0b/8d/0f4af90999ca96cf8cb846eb5ae27c5ef5b390f9c090dd19e4fa76364c13/"
       "insightface-0.7.3.tar.gz")
SHA256 = "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7"
MEMBERS = {"insightface-0.7.3/insightface/data/images/t1.jpg": "insightface_t1.jpg"}


def fetch(out: Path, sdist: Path | None = None) -> list[Path]:
    """The photos of `MEMBERS` written into `out` from the source distribution (downloaded into `out/.download`
    when `sdist` is None); RuntimeError (one line) when it can't be had or is not the published file."""
    from data_prep.files import atomic_write, sha256_of
    from deepfake.weights import WeightsError, download

    if sdist is None:
        try:
            sdist = download(URL, SHA256, folder=out / ".download", progress=False)
        except WeightsError as err:
            raise RuntimeError(f"{err} (or fetch {URL} elsewhere and pass --sdist FILE)") from None
    elif not sdist.is_file():
        raise RuntimeError(f"--sdist {sdist}: no such file")
    elif sha256_of(sdist) != SHA256:
        raise RuntimeError(f"--sdist {sdist} is not insightface-0.7.3.tar.gz as published (SHA-256 {SHA256[:12]}...)")
    written = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member, name in MEMBERS.items():
            data = tar.extractfile(member)
            if data is None:
                raise RuntimeError(f"{sdist} holds no {member}")
            atomic_write(out / name, data.read())
            written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the folder to write the photos into")
    p.add_argument("--sdist", type=Path, help="a local copy of insightface-0.7.3.tar.gz (no download)")
    args = p.parse_args(argv)
    try:
        written = fetch(args.out, args.sdist)
    except RuntimeError as err:
        print(f"bench/photos.py: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
