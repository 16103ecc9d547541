"""`deepfake serve`: the detector behind an HTTP API and a web page, loaded once and kept warm.

    deepfake serve --weights detector.pt [--host 127.0.0.1] [--port 8000] [--workers 1] [--token T]

- `deepfake.serve.config`: `ServeConfig` (host, port, limits, token, allowed folders), checked when made.
- `deepfake.serve.jobs`: `JobPool`, the bounded queue and the worker processes (one detector each).
- `deepfake.serve.worker`: a worker's loop; each job is `deepfake.inference.iter_predictions` (predict's JSON
  object), `deepfake.plots.plot_video` and `deepfake.explain.write_explanation`, as `deepfake predict` calls them.
- `deepfake.serve.uploads`: multipart uploads streamed to disk under a size limit; paths under `--allow-dir`.
- `deepfake.serve.app`: `create_app(pool, config)`, the FastAPI routes; `static/` the page (no CDN, no build).
- `deepfake.serve.server`: `serve(...)`: bind, start the pool, run uvicorn, stop the pool.

This package sits above the library (it imports `deepfake.inference` and friends; nothing in the library imports
it) and below the command (`deepfake.cli.serve`). Importing it imports nothing heavy: the workers import torch,
the server process only FastAPI and PyAV (to check that an upload is a video).
"""
