"""What a client sends to `POST /api/v1/videos`, read safely: a multipart upload streamed to disk, or a path under an
allowed folder.

An upload is parsed as it arrives (python-multipart's streaming parser) and written to the job's folder in chunks:
it is never held whole in memory, and one byte over the limit ends it with 413 (a Content-Length over the limit
is refused before anything is read). A path is resolved (`..` and symbolic links followed) and must land inside a
`--allow-dir`; anything else is 403.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from data_prep.files import OneLineError

__all__ = ["BadRequest", "Submission", "receive_upload", "read_path_request", "resolve_allowed", "with_deadline",
           "FIELDS"]

FIELDS = {"file": "the video", "explain": "true/false: explanation strips per face",
          "plot": "true/false: the timeline plot (default true)"}
MAX_FIELD_BYTES = 1024      # a text field (explain, plot) is a word
MAX_JSON_BYTES = 64 * 1024  # a {"path": ...} request
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


class BadRequest(OneLineError):
    """A request the API refuses; `status` is the HTTP code, the message one line for the client."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass
class Submission:
    """What a request asked for: the video (the upload written to disk, or the allowed path) and the options."""

    video: Path
    name: str
    explain: bool = False
    plot: bool = True
    size: int = 0


def _flag(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequest(422, f"field {name!r} must be true or false, got {str(value)[:40]!r}")


async def with_deadline(stream: AsyncIterator[bytes], idle_s: float | None) -> AsyncIterator[bytes]:
    """`stream`'s chunks, ending with 408 when no chunk comes for `idle_s` seconds (None: wait for ever).

    A client that stops sending mid-upload would otherwise hold its place in the queue for as long as it keeps the
    connection open (16 such clients: every other one gets 429).
    """
    chunks = stream.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BadRequest(408, f"no data for {idle_s:g} s: upload abandoned (--upload-timeout-s)",
                             {"Connection": "close"}) from None
        yield chunk


def safe_name(filename: str) -> str:
    """The uploaded file's name without any folder part or control characters (what the result reports)."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name.encode("utf-8")[:200].decode("utf-8", "ignore").strip() or "upload"  # a file name's 255-byte limit


async def receive_upload(headers, stream: AsyncIterator[bytes], folder: Path, max_bytes: int,
                         idle_s: float | None = None) -> Submission:
    """Read a multipart/form-data body into `folder` as it arrives.

    Args:
        headers: the request's headers (Content-Type with the boundary, Content-Length if sent).
        stream: the body's chunks.
        folder: where the video goes (as ``upload/<the file's name>``).
        max_bytes: the largest video accepted.
        idle_s: seconds without a byte after which the upload ends (408); None: no deadline.

    Returns:
        The `Submission` (fields ``explain`` and ``plot`` read too).

    Raises:
        BadRequest: 413 over `max_bytes`, 422 a missing, repeated or unknown field, 400 a malformed body, 408 no
            byte for `idle_s` seconds.
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest(400, "multipart/form-data without a boundary")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise BadRequest(413, f"upload of {int(declared) / 2**20:.1f} MB is over the limit of "
                              f"{max_bytes / 2**20:.4g} MB (--max-upload-mb)")

    state = {"name": None, "filename": None, "header": b"", "value": b"", "headers": {}, "size": 0, "out": None}
    fields: dict[str, bytes] = {}
    video: dict = {}

    def on_header_field(data, start, end):
        state["header"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["header"].decode("latin-1").lower()] = state["value"]
        state["header"], state["value"] = b"", b""

    def on_headers_finished():
        _, disposition = parse_options_header(state["headers"].get("content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise BadRequest(422, f"unknown field {name!r}: send the video as multipart field 'file' "
                                  f"(fields: {', '.join(FIELDS)})")
        if name in fields or (name == "file" and video):
            raise BadRequest(422, f"field {name!r} given twice")
        state["name"] = name
        if name == "file":
            filename = disposition.get(b"filename", b"video").decode("utf-8", "replace")
            video["name"] = safe_name(filename)
            # Stored under its own name (explanation strips title it), in a folder of its own.
            disk_name = video["name"] if not video["name"].startswith(".") else f"_{video['name']}"
            (folder / "upload").mkdir(exist_ok=True)
            video["path"] = folder / "upload" / disk_name
            state["out"] = open(video["path"], "wb")  # noqa: SIM115 - closed in on_part_end / finally
        else:
            fields[name] = b""

    def on_part_data(data, start, end):
        chunk = data[start:end]
        if state["name"] == "file":
            state["size"] += len(chunk)
            if state["size"] > max_bytes:
                raise BadRequest(413, f"upload is over the limit of {max_bytes / 2**20:.4g} MB (--max-upload-mb)")
            state["out"].write(chunk)
        else:
            fields[state["name"]] += chunk
            if len(fields[state["name"]]) > MAX_FIELD_BYTES:
                raise BadRequest(422, f"field {state['name']!r} is too long")

    def on_part_end():
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None
        state["headers"], state["name"] = {}, None

    parser = MultipartParser(boundary, {"on_header_field": on_header_field, "on_header_value": on_header_value,
                                        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in with_deadline(stream, idle_s):
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError as err:
        raise BadRequest(400, f"malformed multipart body: {err}") from None
    finally:
        if state["out"] is not None:
            state["out"].close()
    if not video:
        got = f" (got {', '.join(repr(k) for k in fields)})" if fields else ""
        raise BadRequest(422, f"no video: send it as multipart field 'file'{got}, e.g. curl -F file=@clip.mp4")
    return Submission(video["path"], video["name"], explain=_flag("explain", fields.get("explain", b"").decode()),
                      plot=_flag("plot", fields.get("plot", b"true").decode() or "true"), size=state["size"])


async def read_path_request(stream: AsyncIterator[bytes], allow_dirs: Sequence[Path],
                            idle_s: float | None = None) -> Submission:
    """A JSON body ``{"path": ..., "explain": false, "plot": true}`` naming a video under an allowed folder.

    Raises:
        BadRequest: 403 paths not enabled or outside the allowed folders, 400 bad JSON or no such file, 422 a
            missing, mistyped or unknown field, 413 a body over 64 KB, 408 no byte for `idle_s` seconds.
    """
    body = b""
    async for chunk in with_deadline(stream, idle_s):
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise BadRequest(413, f"JSON body over {MAX_JSON_BYTES // 1024} KB")
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(400, f"body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, 'JSON body must be an object: {"path": "/videos/clip.mp4"}')
    unknown = sorted(set(data) - {"path", "explain", "plot"})
    if unknown:
        raise BadRequest(422, f"unknown field {unknown[0]!r} (fields: path, explain, plot)")
    if not isinstance(data.get("path"), str) or not data["path"].strip():
        raise BadRequest(422, "field 'path' (a string) is required")
    for key in ("explain", "plot"):
        if key in data and not isinstance(data[key], bool):
            raise BadRequest(422, f"field {key!r} must be true or false")
    path = resolve_allowed(data["path"], allow_dirs)
    return Submission(path, data["path"], explain=data.get("explain", False), plot=data.get("plot", True),
                      size=path.stat().st_size)


def resolve_allowed(path: str, allow_dirs: Sequence[Path]) -> Path:
    """The real file a client's path names, if it lies inside an allowed folder (after `..` and links).

    A relative path is taken relative to the first allowed folder.

    Raises:
        BadRequest: 403 when paths are not enabled (no `--allow-dir`) or the file is outside every allowed folder;
            400 when it does not exist or is not a file.
    """
    if not allow_dirs:
        raise BadRequest(403, "this server takes uploads only: start it with --allow-dir DIR to accept paths")
    if "\x00" in path:
        raise BadRequest(400, "path contains a NUL character")
    candidate = Path(os.path.expanduser(path))
    if not candidate.is_absolute():
        candidate = allow_dirs[0] / candidate
    real = Path(os.path.realpath(candidate))
    roots = [Path(os.path.realpath(d)) for d in allow_dirs]
    if not any(real == root or root in real.parents for root in roots):
        raise BadRequest(403, f"{path}: outside the allowed folders (--allow-dir)")
    if not real.exists():
        raise BadRequest(400, f"{path}: missing: no such file")
    if not real.is_file():
        raise BadRequest(400, f"{path}: not a file")
    return real
