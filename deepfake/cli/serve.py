"""`deepfake serve`: the detector behind an HTTP API and a web page, loaded once and kept warm.

    deepfake serve --weights detector.pt [--host 127.0.0.1] [--port 8000] [--workers 1] [--max-upload-mb 500]
                   [--token T] [--allow-dir DIR ...] [--insecure] [--queue 16] [--retention-s 3600]
                   [--upload-timeout-s 30] [--max-start-failures 3] [--state-dir DIR] [--ray ADDRESS]

Open http://127.0.0.1:8000/ for the page, /docs for the API. `POST /api/v1/videos` (multipart field `file`) queues
a video and answers 202 with its job's id; `GET /api/v1/videos/{id}` gives its state and, when done, predict's
JSON object. The work is `deepfake.serve` (see its modules). Exit status: 0 after a clean stop, 2 for a usage
error (bad option, missing weights, address taken, refused host).
"""

from __future__ import annotations

import argparse
import os
import sys

from deepfake.cli.common import OneLineParser, UsageError, add_model_options, fail

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="deepfake serve", conflict_handler="resolve",
        description="Serve the detector over HTTP: an API (POST a video, poll its job, read predict's JSON object, "
                    "the plot and explanations) and a web page at /. The model loads once per worker process.",
        epilog="Without --token (or $DEEPFAKE_TOKEN) it listens only on loopback unless --insecure is given.",
    )
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s; 0: any free port)")
    # Replaces add_model_options' --workers (decode processes): a server worker decodes on a thread of its own.
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes, each with its own copy of the model and CPU-count/N torch threads; "
                        "they score N videos at once (default 1; with --ray: Ray actors, default one per GPU of the "
                        "cluster, or one per 2 CPUs without GPUs)")
    p.add_argument("--max-upload-mb", type=float, default=500.0, metavar="MB",
                   help="largest upload accepted; larger ones get 413 (default %(default)g)")
    p.add_argument("--token", default=None, metavar="T",
                   help="require 'Authorization: Bearer T' on every /api call (default $DEEPFAKE_TOKEN; none: no "
                        "authentication)")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="accept JSON {\"path\": ...} for videos inside DIR (repeatable; links and .. may not leave "
                        "it); without it, uploads only")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without a token (a trusted network only)")
    p.add_argument("--queue", type=int, default=16, metavar="N",
                   help="jobs that may wait for a worker; beyond, 429 (default %(default)s)")
    p.add_argument("--retention-s", type=float, default=3600.0, metavar="S",
                   help="seconds a finished job's result, plot and explanations are kept (default %(default)g); "
                        "an uploaded video is deleted as soon as its job ends")
    p.add_argument("--upload-timeout-s", type=float, default=30.0, metavar="S",
                   help="an upload that sends no byte for S seconds ends with 408 and frees its place in the queue "
                        "(default %(default)g)")
    p.add_argument("--max-start-failures", type=int, default=3, metavar="K",
                   help="after K failed worker starts in a row (damaged weights, device gone) /health answers 503 "
                        "with the reason, queued jobs fail with it and no worker is started again (default "
                        "%(default)s)")
    p.add_argument("--state-dir", default=None, metavar="DIR",
                   help="keep the job table (SQLite) and the jobs' files in DIR: a server stopped or killed and "
                        "started again on DIR finishes every accepted job; one server per DIR. Without it jobs live "
                        "in a temporary folder and are lost when the server stops")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="score on Ray actors (pip install 'deepfake[ray]'): 'local' starts Ray here, 'auto' joins "
                        "$RAY_ADDRESS, or a cluster's address (head:6379); videos reach the actors through Ray's "
                        "object store (see docs/serve-scale.md)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level; warning hides the access log (default %(default)s)")
    return p


def _fail(message: object, code: int = 2) -> int:
    return fail("deepfake serve", " ".join(str(message).split()), code)


def main(args: list[str] | None = None) -> int:
    """`deepfake serve [options]`; returns the exit status."""
    try:
        ns = _parser().parse_args(args)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except UsageError as err:
        return _fail(str(err))
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        return _fail(f"{err.name} is not installed: pip install 'deepfake[serve]'")

    from deepfake.inference import PredictConfig
    from deepfake.serve.config import TOKEN_ENV, ServeConfig
    from deepfake.serve.jobs import LoadError
    from deepfake.serve.server import ServeError, serve
    from deepfake.serve.ray_pool import RayError
    from deepfake.serve.store import StateError
    from deepfake.weights import WeightsError, resolve_weights

    try:
        config = ServeConfig(host=ns.host, port=ns.port, workers=ns.workers, max_upload_mb=ns.max_upload_mb,
                             token=ns.token if ns.token is not None else os.environ.get(TOKEN_ENV) or None,
                             allow_dirs=ns.allow_dir, insecure=ns.insecure, queue=ns.queue,
                             retention_s=ns.retention_s, upload_timeout_s=ns.upload_timeout_s,
                             max_start_failures=ns.max_start_failures, state_dir=ns.state_dir, ray=ns.ray)
        predict = PredictConfig(threshold=ns.threshold, batch_size=ns.batch_size, device=ns.device,
                                stride=ns.stride, precision=ns.precision, calibrated=not ns.no_calibration,
                                runtime=ns.runtime)
        weights = resolve_weights(ns.weights, sha256=ns.sha256, progress=not ns.no_progress)
    except (ValueError, WeightsError) as err:
        return _fail(str(err))

    def ready(url: str, pool) -> None:
        auth = "token required" if config.token else "no token"
        state = (f"jobs kept in {config.state_dir} ({len(pool.jobs)} taken up)" if config.state_dir is not None
                 else "jobs lost on restart (no --state-dir)")
        kind = "Ray actor(s)" if config.ray else "worker(s)"
        print(f"deepfake serve: {url} ({pool.n_workers} {kind} on {pool.device}, {pool.threads} torch thread(s) "
              f"each; queue {config.queue}; uploads up to {config.max_upload_mb:g} MB; {auth}; {state}; API docs "
              f"{url}docs)", file=sys.stderr, flush=True)
        for warning in getattr(pool, "load_warnings", ()):  # once, from the first worker that loaded the detector
            print(f"deepfake serve: warning: {warning}", file=sys.stderr, flush=True)

    try:
        serve(config, weights, predict, sha256=ns.sha256, on_ready=ready, log_level=ns.log_level)
    except (ServeError, LoadError, StateError, RayError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
