"""Settings of `deepfake serve`, checked where they are made (one line a user can act on for each mistake)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServeConfig", "is_loopback", "TOKEN_ENV"]

TOKEN_ENV = "DEEPFAKE_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


@dataclass
class ServeConfig:
    """How the server listens and what it accepts.

    Attributes:
        host: address to bind; anything but loopback needs a token or `insecure`.
        port: TCP port (0: any free one).
        workers: worker processes, one detector each (with `ray`: Ray actors; None there: one per GPU or CPU slot
            of the cluster).
        max_upload_mb: largest upload accepted (413 above).
        token: the bearer token every /api call must carry; None: no authentication.
        allow_dirs: folders whose videos may be named by path (JSON ``{"path"}``); empty: uploads only.
        insecure: allow a non-loopback host without a token.
        queue: jobs that may wait for a worker (429 beyond).
        retention_s: seconds a finished job's results are kept.
        upload_timeout_s: an upload (or a JSON body) that sends no byte for this long ends with 408 and frees its
            place in the queue.
        max_start_failures: workers that fail to start this many times in a row make the server unhealthy
            (/health 503 with the reason, queued jobs failed, no more restarts).
        state_dir: folder for the job table (SQLite) and the jobs' files, so accepted jobs survive a restart;
            None: a temporary folder (jobs are lost when the server stops).
        ray: score on Ray actors: ``local``, ``auto`` or a cluster's address; None: worker processes here.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = 1
    max_upload_mb: float = 500.0
    token: str | None = None
    allow_dirs: list[Path] = field(default_factory=list)
    insecure: bool = False
    queue: int = 16
    retention_s: float = 3600.0
    upload_timeout_s: float = 30.0
    max_start_failures: int = 3
    state_dir: Path | None = None
    ray: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise ValueError(f"--port must be 0..65535, got {self.port}")
        if self.ray is not None and not self.ray.strip():
            raise ValueError("--ray is empty: give local, auto or the cluster's address (head:6379)")
        if self.workers is None and self.ray is None:
            self.workers = 1
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers >= 1):
            raise ValueError(f"--workers must be an integer >= 1, got {self.workers}")
        if not self.max_upload_mb > 0:
            raise ValueError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        if not (isinstance(self.queue, int) and self.queue >= 1):
            raise ValueError(f"--queue must be an integer >= 1, got {self.queue}")
        if not self.retention_s > 0:
            raise ValueError(f"--retention-s must be > 0, got {self.retention_s}")
        if not self.upload_timeout_s > 0:
            raise ValueError(f"--upload-timeout-s must be > 0, got {self.upload_timeout_s}")
        if not (isinstance(self.max_start_failures, int) and self.max_start_failures >= 1):
            raise ValueError(f"--max-start-failures must be an integer >= 1, got {self.max_start_failures}")
        if self.state_dir is not None:
            if not str(self.state_dir).strip():
                raise ValueError("--state-dir is empty")
            self.state_dir = Path(os.path.expanduser(self.state_dir))
        if self.token is not None and not self.token.strip():
            raise ValueError("--token is empty")
        dirs = []
        for d in self.allow_dirs:
            path = Path(os.path.expanduser(d))
            if not path.is_dir():
                raise ValueError(f"--allow-dir {d}: not a folder")
            dirs.append(Path(os.path.realpath(path)))
        self.allow_dirs = dirs
        if self.token is None and not self.insecure and not is_loopback(self.host):
            raise ValueError(f"refusing to listen on {self.host} without a token: anyone who can reach it could use "
                             f"it; give --token T (or set {TOKEN_ENV}), or --insecure if the network is trusted")
