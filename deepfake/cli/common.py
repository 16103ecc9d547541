"""What the `deepfake` commands share: errors as one line a user can act on (never a usage dump), and the options
of every command that loads a detector."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from deepfake.inference import PRECISIONS


class UsageError(Exception):
    """A mistake in the command line; the command prints it as one line and exits with status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser that raises `UsageError` instead of printing the usage and exiting."""

    def error(self, message: str) -> None:
        raise UsageError(message)


def attribute_docs(cls: type) -> dict[str, str]:
    """The `Attributes:` section of a (Google-style) class docstring: field name -> its text on one line."""
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return docs
    indent, name = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth == indent and ":" in line:
            name, _, text = line.strip().partition(":")
            docs[name] = text.strip()
        elif depth > indent and name:
            docs[name] += " " + line.strip()
        else:
            break
    return docs


def add_config_options(p: argparse.ArgumentParser, cls: type, names: list[str], **special: dict) -> None:
    """`--NAME` options for fields of a settings dataclass, with its defaults and its docstring's words as help:
    the dataclass stays the one place that says what a setting is and what it defaults to. `special` overrides
    argparse keywords per field (e.g. ``max_pixels={"metavar": "N"}``)."""
    docs, defaults = attribute_docs(cls), cls()
    for name in names:
        default = getattr(defaults, name)
        text = docs.get(name, "").replace("``", "").replace("`", "").replace("%", "%%").rstrip(".")
        kw: dict = {"default": default, "dest": name,
                    "help": f"{text} (default %(default)s)" if not isinstance(default, bool) else
                    f"{text} (default {'on' if default else 'off'})"}
        if isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = type(default)
        kw.update(special.get(name, {}))
        p.add_argument(f"--{name.replace('_', '-')}", **kw)


def path_arg(value: str) -> str:
    """An argparse `type` for a path: an empty one is a usage error (`Path("")` would mean the current folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path was given; name a file or folder")
    return value


def add_max_pixels(p: argparse.ArgumentParser) -> None:
    """`--max-pixels`: the frame size over which a video is refused before decoding."""
    from data_prep.video import MAX_PIXELS

    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help="refuse videos whose frames have more pixels (width x height) than this, before decoding "
                        "(default %(default)s: 8K, 8192x4320)")


def fail(prog: str, message: object, code: int = 2) -> int:
    """Print ``PROG: error: MESSAGE`` on stderr and return `code`, the command's exit status (2: a usage error)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def stderr_line(prog: str) -> Callable[[str], None]:
    """How a command says a library's `warn(message)`: one line ``PROG: message`` on stderr."""
    return lambda message: print(f"{prog}: {message}", file=sys.stderr, flush=True)


@contextmanager
def library_warnings(prog: str) -> Iterator[None]:
    """Inside the block, what the library logs at WARNING or above (`logging`, loggers ``deepfake.*`` and
    ``data_prep.*``) is printed as ``PROG: warning: MESSAGE`` on stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"{prog}: warning: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("deepfake", "data_prep")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@contextmanager
def printed_warnings(prog: str) -> Iterator[None]:
    """Inside the block, the library's one-line warnings (`deepfake.contract.ExtractionWarning`: what the model sees
    differs from, or is assumed to be, its training's) are printed as ``PROG: warning: MESSAGE`` on stderr, each
    time one is issued; other warnings are shown as usual; what the library logs at WARNING too
    (`library_warnings`)."""
    from deepfake.contract import ExtractionWarning

    with warnings.catch_warnings(), library_warnings(prog):
        warnings.simplefilter("always", ExtractionWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ExtractionWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `deepfake predict` and `deepfake evaluate`."""
    p.add_argument("--weights", metavar="CKPT", type=path_arg,
                   help="detector weights: a file (detector.pt or a Lightning .ckpt) or an https URL; default "
                        "$DEEPFAKE_WEIGHTS, else ~/.cache/deepfake/detector.pt")
    p.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the weights (checked; URL downloads also "
                                                   "take it from a name like detector-<hash>.pt)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="p(fake) at or above which a video is called fake (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="windows of seq_len face crops per forward pass (default: 1 on a CPU, 8 on a GPU)")
    p.add_argument("--stride", type=int, default=None, metavar="N",
                   help="keep every N-th frame (default: the checkpoint's training stride)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bfloat16 where the hardware has it (Ampere+ GPUs, CPUs with AVX512-BF16/AMX), "
                        "float16 on older GPUs, else float32; fp32 for scores that are the same on every machine "
                        "(default auto)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto",
                   help="what runs the detector: auto (default: ONNX Runtime on the CPU when installed, from "
                        "detector.onnx beside the weights or an ONNX copy exported once into the cache; PyTorch on a "
                        "GPU, for bf16/fp16 and for --explain), torch, or onnx")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="decode processes for many files (default 0: decode on a thread, overlapped with detection)")
    p.add_argument("--no-calibration", action="store_true",
                   help="raw scores: ignore the calibration (temperature) stored in the weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
