"""`deepfake synth OUT_DIR`: a labelled demo dataset of real face clips and self-blended fakes.

The dataset itself is `data_prep.synth.make_dataset`'s (what it writes is in that module's docstring).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

from data_prep.synth import (FAKE_KINDS, PHOTO_SETS, X264_PRESETS, SynthConfig, SynthError, make_dataset,
                             parse_resolution)
from deepfake.cli.common import OneLineParser, UsageError, fail, path_arg

__all__ = ["main"]

_fail = partial(fail, "deepfake synth")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="deepfake synth",
        description="Write a labelled demo dataset: real face clips (face photos shipped with scikit-image and "
                    "matplotlib, moving over a background) and self-blended fakes made from them.",
        epilog="Writes OUT_DIR/real/*.mp4, OUT_DIR/fake/*.mp4, OUT_DIR/labels.csv (video,label,original) and "
               "OUT_DIR/boxes.csv (video,frame,x1,y1,x2,y2).",
    )
    d = SynthConfig()
    p.add_argument("out_dir", metavar="OUT_DIR", type=path_arg,
                   help="output folder (new, empty, or an earlier synth output)")
    p.add_argument("--count", type=int, default=d.count,
                   help=f"total clips: half real, half self-blended fakes (default {d.count})")
    p.add_argument("--resolution", default=f"{d.width}x{d.height}",
                   help="WxH (portrait too, e.g. 720x1280) or 360p/480p/540p/720p/1080p (default %(default)s)")
    p.add_argument("--seconds", type=float, default=d.seconds, help="clip length (default %(default)s)")
    p.add_argument("--fps", type=float, default=d.fps, help="frames per second (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    p.add_argument("--multi-face", type=float, default=d.multi_face, metavar="FRACTION",
                   help="fraction of clips that show two faces (default %(default)s)")
    p.add_argument("--crf", type=int, default=d.crf, help="x264 quality, lower is better (default %(default)s)")
    p.add_argument("--preset", default=d.preset, choices=X264_PRESETS, metavar="PRESET",
                   help="x264 speed preset (default %(default)s)")
    p.add_argument("--fake-kind", default=d.fake_kind, choices=FAKE_KINDS,
                   help="sbi: self-blended fakes; swap: face swaps between people; reenact: mouth and eyes warped "
                        "over time, no blending; paste: a swap with a hard edge; lowres: the inner face at 1/4 "
                        "resolution; part: another person's eyes or mouth only (default %(default)s)")
    p.add_argument("--people", default=d.people, metavar="|".join(PHOTO_SETS) + "|DIR",
                   help="the photos the clips show: demo, the generalization suite's disjoint suite-train and "
                        "suite-test sets, unseen (the one person in neither: the cameraman), or a folder of your own "
                        "photos (every clear face in them is a person); join several with + (default %(default)s)")
    p.add_argument("--fake-faces", default=d.fake_faces, choices=("all", "one"),
                   help="in clips with two faces (--multi-face): manipulate both, or only one of them, as a DFDC fake "
                        "that changes one of two people (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: list[str] | None = None) -> int:
    """`deepfake synth OUT_DIR [options]`; returns the exit status (0 ok, 1 write failure, 2 usage error)."""
    try:
        ns = _parser().parse_args(args)
        width, height = parse_resolution(ns.resolution)
        cfg = SynthConfig(count=ns.count, width=width, height=height, seconds=ns.seconds, fps=ns.fps,
                          seed=ns.seed, multi_face=ns.multi_face, crf=ns.crf, preset=ns.preset, fake_kind=ns.fake_kind,
                          fake_faces=ns.fake_faces, people=ns.people, progress=not ns.no_progress)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except (UsageError, ValueError) as e:
        return _fail(e)
    start = time.perf_counter()
    try:
        out = make_dataset(ns.out_dir, cfg)
    except SynthError as e:
        return _fail(e)
    except OSError as e:
        return _fail(f"writing {ns.out_dir} failed: {e}", 1)
    elapsed = time.perf_counter() - start
    print(f"deepfake synth: {cfg.n_real} real + {cfg.n_fake} fake clips ({cfg.width}x{cfg.height}, "
          f"{cfg.n_frames} frames at {cfg.fps:g} fps) in {out} [{elapsed:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
