"""Run `deepfake serve`: listen first (a taken port fails before any model loads), start the worker pool (a
missing or broken model fails before anyone can connect), then serve with uvicorn until stopped."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable

from data_prep.files import OneLineError
from deepfake.inference import PredictConfig
from deepfake.serve.config import ServeConfig

__all__ = ["ServeError", "bind", "serve"]


class ServeError(OneLineError):
    """The server could not start (address taken, bad host); one line."""


class _Stopped(Exception):
    """SIGTERM after uvicorn's graceful shutdown."""


def _stopped(_signum, _frame) -> None:
    raise _Stopped


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one).

    Raises:
        ServeError: the host does not resolve, or the address is taken or not ours.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ServeError(f"--host {host}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ServeError(f"can't listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def serve(config: ServeConfig, weights: str | os.PathLike, predict: PredictConfig, sha256: str | None = None,
          on_ready: Callable[[str, object], None] | None = None, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM.

    Args:
        config: listening address, limits, token.
        weights: the detector file (resolved).
        predict: prediction settings (device, threshold, batch size, precision, calibration).
        sha256: expected hash of the weights.
        on_ready: called with the URL and the pool once the model is loaded and the socket listens.
        log_level: uvicorn's (``warning`` hides the access log).

    Raises:
        ServeError: the address can't be used.
        deepfake.serve.jobs.LoadError: the workers could not load the detector.
        deepfake.serve.store.StateError: the --state-dir can't be used (in use, not writable, another schema).
        deepfake.serve.ray_pool.RayError: --ray given and Ray missing or its cluster unreachable.
    """
    import uvicorn

    from deepfake.serve.app import create_app
    from deepfake.serve.jobs import JobPool
    from deepfake.serve.store import JobStore

    sock = bind(config.host, config.port)
    store, own_ray = None, False
    try:
        store = JobStore(config.state_dir) if config.state_dir is not None else None
        options = {"capacity": config.queue, "retention_s": config.retention_s, "sha256": sha256, "store": store,
                   "max_start_failures": config.max_start_failures}
        if config.ray is not None:
            from deepfake.serve.ray_pool import RayJobPool, ray_init

            own_ray = ray_init(config.ray)
            pool = RayJobPool(weights, predict, workers=config.workers, **options)
        else:
            pool = JobPool(weights, predict, workers=config.workers, **options)
        pool.start()
        try:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            if on_ready is not None:
                on_ready(f"http://{shown}:{port}/", pool)
            server = uvicorn.Server(uvicorn.Config(create_app(pool, config), log_level=log_level,
                                                   timeout_graceful_shutdown=5, server_header=False))
            # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again; this handler turns
            # that into a return, so the workers are stopped below and the exit status is 0.
            main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGTERM, _stopped) if main else None
            try:
                server.run(sockets=[sock])
            except (_Stopped, KeyboardInterrupt):
                pass
            finally:
                if main:
                    signal.signal(signal.SIGTERM, previous)
        finally:
            pool.close()
    finally:
        if store is not None:
            store.close()
        if own_ray:
            import ray

            ray.shutdown()
        sock.close()
