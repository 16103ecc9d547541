"""Where detector weights come from: a local file, an https URL (downloaded once, hash-checked), or a default place.

`deepfake predict` and `deepfake evaluate` take `--weights`; without it they look, in order, at

1. the file named by the environment variable `DEEPFAKE_WEIGHTS`;
2. `detector.pt` in the cache folder: `$DEEPFAKE_CACHE`, else `$XDG_CACHE_HOME/deepfake`, else
   `~/.cache/deepfake` (so `~/.cache/deepfake/detector.pt` on most machines).

`--weights` may also be an `http(s)://` URL. The file is downloaded once into `<cache>/downloads/` (written to a
temporary name and renamed when complete and checked, so an interrupted download never passes for a good one)
and reused afterwards. It is checked against a SHA-256 when one is known: given with `--sha256`, or carried by
the file name in torch.hub's convention, `name-<first 8 or more hex digits of the sha256>.pt`
(e.g. `detector-3f2a9c01.pt`). A mismatch deletes the download and stops with an error.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from data_prep.files import ENV_CACHE, atomic_path, cache_folder, sha256_of

__all__ = ["WeightsError", "ENV_WEIGHTS", "ENV_CACHE", "cache_dir", "default_weights", "resolve_weights",
           "download", "install", "sha256_of", "hash_from_name", "HOW_TO_GET"]

ENV_WEIGHTS = "DEEPFAKE_WEIGHTS"
DEFAULT_NAME = "detector.pt"
# torch.hub's convention: the file name ends in -<hash prefix>.<ext>.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_HEX = re.compile(r"[0-9a-fA-F]{8,64}")
_CHUNK = 1 << 20

HOW_TO_GET = ("run `deepfake demo --install-weights` (trains a small detector on generated data, to try the tools, and "
              "copies it to {cache}/detector.pt), or train one with `deepfake fit` (writes detector.pt next to its "
              "best checkpoint) and pass --weights PATH_OR_URL, set DEEPFAKE_WEIGHTS, or copy it to "
              "{cache}/detector.pt")


class WeightsError(Exception):
    """Weights that can't be found, downloaded or verified; the message is one line a user can act on."""


def cache_dir() -> Path:
    """The cache folder: `$DEEPFAKE_CACHE`, else `$XDG_CACHE_HOME/deepfake`, else `~/.cache/deepfake`
    (`data_prep.files.cache_folder`)."""
    return cache_folder()


def default_weights() -> Path | None:
    """The weights used when none are given: `$DEEPFAKE_WEIGHTS`, else `<cache>/detector.pt`, if it exists.

    Raises:
        WeightsError: `DEEPFAKE_WEIGHTS` is set but names no file (a typo there should not silently fall back).
    """
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise WeightsError(f"{ENV_WEIGHTS}={env} is not a file; fix or unset it, or pass --weights")
        return path
    path = cache_dir() / DEFAULT_NAME
    return path if path.is_file() else None


def hash_from_name(name: str) -> str | None:
    """The SHA-256 prefix carried by a file name in torch.hub's convention (`detector-3f2a9c01.pt`), else None."""
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def _check_hash(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise WeightsError(f"{what}: SHA-256 mismatch (expected {expected.lower()}..., got {actual[:len(expected)]}"
                           f"...); the file is corrupt or not the one published")


def download(url: str, sha256: str | None = None, folder: Path | None = None, progress: bool = True) -> Path:
    """Download `url` into the cache (once) and check its hash.

    Args:
        url: an http(s) URL.
        sha256: expected SHA-256 (hex, full or a prefix of 8+ digits); None takes it from the file name when the
            name carries one.
        folder: where to keep it (default `<cache>/downloads`).
        progress: a progress bar on stderr.

    Returns:
        The local file.

    Raises:
        WeightsError: offline, server error, or hash mismatch; one line.
    """
    parsed = urllib.parse.urlparse(url)
    name = Path(urllib.parse.unquote(parsed.path)).name
    if parsed.scheme not in ("http", "https") or not name:
        raise WeightsError(f"{url}: not an http(s) URL of a file")
    expected = (sha256 or hash_from_name(name) or "").lower() or None
    folder = folder or cache_dir() / "downloads"
    dst = folder / name
    if dst.is_file():
        if expected:
            try:
                _check_hash(dst, expected, str(dst))
                return dst
            except WeightsError:
                dst.unlink()  # a different file under the same name: fetch again
        else:
            return dst
    from torch.hub import download_url_to_file  # a temporary file beside dst, hash-checked, then moved into place

    try:
        folder.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(dst), hash_prefix=expected, progress=progress)
    except urllib.error.HTTPError as err:
        raise WeightsError(f"can't download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsError(f"can't download {url} ({reason}); offline? Download it on a machine with internet "
                           f"and pass --weights FILE") from None
    except RuntimeError as err:  # torch.hub's 'invalid hash value (expected "<prefix>", got "<sha256>")'
        got = re.search(r'got "([0-9a-f]+)"', str(err))
        got = got.group(1)[:len(expected)] if got and expected else "?"
        raise WeightsError(f"{url}: SHA-256 mismatch (expected {expected}..., got {got}...); the file is corrupt or "
                           f"not the one published") from None
    except OSError as err:
        raise WeightsError(f"can't download {url} into {folder}: {err}") from None
    return dst


def resolve_weights(weights: str | os.PathLike | None, sha256: str | None = None, progress: bool = True) -> Path:
    """The local weights file to load, from `--weights` (file or URL) or the default places.

    Args:
        weights: a file, an http(s) URL, or None for the default (see the module docstring).
        sha256: expected SHA-256 (hex) of the file; checked for URLs and, when given, for local files too.
        progress: a download progress bar.

    Returns:
        An existing local file.

    Raises:
        WeightsError: nothing found, a missing file, a failed download or a hash mismatch; one line saying what
            to do.
    """
    if sha256 is not None and not _HEX.fullmatch(sha256.strip()):
        raise WeightsError(f"--sha256 {sha256!r} is not a hex SHA-256 (or a prefix of at least 8 digits)")
    sha256 = sha256.strip().lower() if sha256 else None
    if weights is None or str(weights) == "":
        path = default_weights()
        if path is None:
            raise WeightsError(f"no detector weights: none given, {ENV_WEIGHTS} unset, and no "
                               f"{cache_dir() / DEFAULT_NAME}; " + HOW_TO_GET.format(cache=cache_dir()))
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(weights)):
        return download(str(weights), sha256, progress=progress)
    else:
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsError(f"weights {weights}: no such file; " + HOW_TO_GET.format(cache=cache_dir()))
        if not path.is_file():
            raise WeightsError(f"weights {weights}: not a file (give the detector.pt or .ckpt file itself)")
    if sha256:
        _check_hash(path, sha256, str(path))
    return path


def install(path: str | os.PathLike) -> Path:
    """Copy a weights file to the default place (`<cache>/detector.pt`), atomically; returns the new path."""
    dst = cache_dir() / DEFAULT_NAME
    with atomic_path(dst) as tmp:
        shutil.copyfile(path, tmp)
    return dst
