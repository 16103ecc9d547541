"""`deepfake export --weights W --format onnx|exported [-o OUT]`: a self-contained model that predicts without timm.

    deepfake export --weights detector.pt --format onnx              # -> detector.onnx (ONNX Runtime)
    deepfake export --weights detector.pt --format exported -o m.pt2  # a torch.export program
    deepfake predict clip.mp4 --weights detector.onnx                 # loaded by its suffix

The work is `deepfake.export` (what the files hold, how they are checked). Exit status: 0 written, 1 the export
failed or did not match PyTorch (nothing written), 2 usage error (bad option, missing or unreadable weights).
"""

from __future__ import annotations

import sys
from functools import partial

from deepfake.cli.common import OneLineParser, UsageError, fail, path_arg

__all__ = ["main"]

FORMATS = ("onnx", "exported")  # deepfake.runtime.FORMATS, without importing torch for --help


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="deepfake export",
        description="Write the detector as one self-contained file: ONNX (run by ONNX Runtime) or a torch.export "
                    "program (.pt2), holding the backbone, the LSTM and the detector's settings (crop size, "
                    "normalisation, seq_len, extraction settings, calibration). predict, evaluate and serve load it "
                    "by its suffix without importing timm; the export is checked against PyTorch before it is kept.",
        epilog="An exported model runs in float32 and can't explain its scores (--explain) or be recalibrated "
               "(deepfake calibrate): keep the .pt file for those.",
    )
    p.add_argument("--weights", required=True, metavar="CKPT", type=path_arg,
                   help="the detector to export (detector.pt or a "
                                                                     "Lightning .ckpt from deepfake fit)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="onnx: a .onnx file for ONNX Runtime (dynamic batch and window length); exported: a "
                        "torch.export .pt2 program (dynamic batch, windows of seq_len)")
    p.add_argument("--output", "-o", metavar="OUT", type=path_arg, default=None,
                   help="the file to write (default: the weights' name with .onnx or .pt2)")
    return p


_fail = partial(fail, "deepfake export")


def main(args: list[str] | None = None) -> int:
    """`deepfake export --weights W --format F [-o OUT]`; returns the exit status (0 ok, 1 failed, 2 usage)."""
    try:
        ns = _parser().parse_args(args)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except UsageError as err:
        return _fail(str(err))

    from deepfake.checkpoint import CheckpointError
    from deepfake.export import export_detector
    from deepfake.runtime import ExportError

    try:
        result = export_detector(ns.weights, ns.format, ns.output)
    except (FileNotFoundError, CheckpointError) as err:
        return _fail(str(err))
    except ExportError as err:
        return _fail(str(err), 1)
    except OSError as err:
        return _fail(f"can't write {ns.output or 'the export'}: {err}", 1)
    meta = result.meta
    print(f"deepfake export: wrote {result.path} ({result.format}, {meta['model'].get('backbone')} + LSTM, "
          f"{meta['img_size']} px, seq_len {meta['seq_len']}"
          + (", calibrated" if (meta.get("calibration") or {}).get("temperature") is not None else "")
          + f"); logits within {result.max_error:.1e} of PyTorch's", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
