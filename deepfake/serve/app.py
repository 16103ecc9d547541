"""The HTTP API and the web page of `deepfake serve` (FastAPI).

    pool = JobPool(weights, PredictConfig(), workers=1, capacity=16)
    pool.start()
    app = create_app(pool, ServeConfig(token="s3cret"))     # any ASGI server; `deepfake serve` uses uvicorn

Routes: ``GET /`` (the page), ``GET /health``, ``GET /docs`` (an API reference that works offline),
``GET /docs/swagger`` (FastAPI's Swagger UI, which loads its scripts from a CDN: online only), ``GET /openapi.json``;
``POST /api/v1/videos`` -> 202 ``{"id", "status_url"}``, ``GET /api/v1/videos/{id}``, ``DELETE`` it,
``GET /api/v1/videos/{id}/plot.png``, ``GET /api/v1/videos/{id}/explain/track{k}.png``.

Every error is JSON ``{"error": "<one line>"}`` with a 4xx code (5xx only for a fault of the server, whose
traceback goes to the server's log, never to the client).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import shutil
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from deepfake import __version__
from deepfake.serve.config import ServeConfig
from deepfake.serve.jobs import Job, JobPool
from deepfake.serve.uploads import BadRequest, read_path_request, receive_upload

__all__ = ["create_app"]

log = logging.getLogger("deepfake.serve")
STATIC = Path(str(resources.files("deepfake.serve") / "static"))
# The page and the docs load nothing from elsewhere; images come as blobs (fetched with the token).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary", "description": "the video"},
                           "explain": {"type": "boolean", "default": False,
                                       "description": "explanation strips per face (Grad-CAM)"},
                           "plot": {"type": "boolean", "default": True, "description": "the timeline plot"}}}},
        "application/json": {"schema": {
            "type": "object", "required": ["path"],
            "properties": {"path": {"type": "string", "description": "a video under a --allow-dir folder"},
                           "explain": {"type": "boolean", "default": False},
                           "plot": {"type": "boolean", "default": True}}}},
    },
}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def create_app(pool: JobPool, config: ServeConfig | None = None) -> FastAPI:
    """The ASGI app serving `pool` (started by the caller, who also closes it)."""
    config = config or ServeConfig()
    app = FastAPI(title="deepfake", version=__version__, docs_url=None, redoc_url=None,
                  description="Tell whether a video of a face is real or manipulated. Post a video, poll its job, "
                              "read predict's JSON object, the timeline plot and the explanation strips.")
    bearer = HTTPBearer(auto_error=False, description="the server's --token (or $DEEPFAKE_TOKEN)")
    max_bytes = int(config.max_upload_mb * 2**20)

    # ------------------------------------------------------------------------------------------ errors

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException):
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else str(exc.detail),
                      getattr(exc, "headers", None))

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest):
        return _error(exc.status, str(exc), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # the traceback stays in the server's log
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal server error ({type(exc).__name__}); details are in the server's log")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # ------------------------------------------------------------------------------------------ auth

    async def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if config.token is None:
            return
        given = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode("utf-8"), config.token.encode("utf-8")):
            raise BadRequest(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'",
                             {"WWW-Authenticate": "Bearer"})

    # ------------------------------------------------------------------------------------------ pages

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    @app.get("/docs/swagger", include_in_schema=False)
    async def swagger():
        html = get_swagger_ui_html(openapi_url="/openapi.json", title="deepfake API (Swagger UI)")
        # Swagger UI's scripts come from a CDN: let this one page load them (it does not work offline).
        return HTMLResponse(html.body, headers={"Content-Security-Policy": "default-src 'self' https: 'unsafe-inline'"
                                                                           "; img-src 'self' https: data:"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", summary="Whether the model is loaded, on which device; the queue")
    async def health():
        stats = pool.stats()
        body = {"status": "ok" if pool.ready else "loading", "model_loaded": pool.ready, "device": pool.device,
                "version": __version__, "auth": config.token is not None, "max_upload_mb": config.max_upload_mb,
                "explain": True, "threshold": pool.config.threshold, "durable": pool.store is not None,
                "queue": stats}
        if pool.unhealthy:  # for load balancers and orchestrators: take this server out
            return JSONResponse({**body, "status": "unhealthy", "reason": pool.unhealthy}, status_code=503)
        return body

    # ------------------------------------------------------------------------------------------ the API

    def lookup(job_id: str) -> tuple[Job, int | None]:
        found = pool.get(job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id) else None
        if found is None:
            raise BadRequest(404, f"no job {job_id[:64]!r}: unknown id, or its results were deleted after "
                                  f"--retention-s {config.retention_s:g} s")
        return found

    @app.post("/api/v1/videos", status_code=202, dependencies=[Depends(authorized)],
              summary="Score a video: a multipart upload (field 'file') or JSON {'path'} under an --allow-dir",
              openapi_extra={"requestBody": UPLOAD_BODY}, responses={
                  202: {"description": "queued: poll status_url"}, 400: {"description": "not a video, empty"},
                  401: {"description": "token missing or wrong"}, 403: {"description": "path not allowed"},
                  413: {"description": "upload too large"}, 415: {"description": "wrong content type"},
                  408: {"description": "no byte for --upload-timeout-s"},
                  422: {"description": "missing or unknown field"}, 429: {"description": "queue full"},
                  503: {"description": "unhealthy: the workers cannot load the model (see /health)"}})
    async def submit(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("multipart/form-data", "application/json"):
            raise BadRequest(415, f"send multipart/form-data (field 'file') or application/json ({{\"path\"}}), "
                                  f"not {kind or 'no content type'!r}")
        if pool.unhealthy:
            raise BadRequest(503, f"this server cannot score videos: {pool.unhealthy}")
        if not pool.reserve():
            raise BadRequest(429, f"queue full ({pool.capacity} waiting): try again later",
                             {"Retry-After": "10"})
        job = None
        try:
            if kind == "application/json":
                sub = await read_path_request(request.stream(), config.allow_dirs, config.upload_timeout_s)
                job = Job.new(pool.root, sub.name, explain=sub.explain, plot=sub.plot)
            else:
                job = Job.new(pool.root, "upload")
                sub = await receive_upload(request.headers, request.stream(), job.folder, max_bytes,
                                           config.upload_timeout_s)
                job.name, job.explain, job.plot = sub.name, sub.explain, sub.plot
            if sub.size == 0:
                raise BadRequest(400, f"{sub.name}: empty file (0 bytes)")
            await asyncio.to_thread(_check_video, sub.video, sub.name)
        except BaseException:
            pool.release()
            if job is not None:
                shutil.rmtree(job.folder, ignore_errors=True)
            raise
        pool.submit(job, sub.video, owned=kind != "application/json")
        url = f"/api/v1/videos/{job.id}"
        return JSONResponse({"id": job.id, "status_url": url, "state": job.state}, status_code=202,
                            headers={"Location": url})

    @app.get("/api/v1/videos/{job_id}", dependencies=[Depends(authorized)],
             summary="A job: state (queued|running|done|failed), progress, result (predict's JSON object)")
    async def status(job_id: str):
        job, position = lookup(job_id)
        out = job.public(position)
        out["plot_url"] = f"/api/v1/videos/{job.id}/plot.png" if "plot.png" in job.files else None
        out["explain_urls"] = [f"/api/v1/videos/{job.id}/{f}" for f in job.files if f.startswith("explain/")]
        return out

    @app.delete("/api/v1/videos/{job_id}", dependencies=[Depends(authorized)],
                summary="Delete a queued or finished job and its files now")
    async def delete(job_id: str):
        lookup(job_id)
        reason = pool.delete(job_id)
        if reason:
            raise BadRequest(409, reason)
        return {"id": job_id, "deleted": True}

    def job_file(job_id: str, name: str) -> FileResponse:
        job, _ = lookup(job_id)
        if job.state in ("queued", "running"):
            raise BadRequest(409, f"not ready: the job is {job.state}")
        if name not in job.files:
            if name == "plot.png":
                why = "no plot for this job (it failed, was posted with plot=false, or the plot failed: see 'warning')"
            elif job.explain:
                why = f"no {name} for this job"
            else:
                why = "no explanations: post the video with explain=true"
            raise BadRequest(404, why)
        return FileResponse(job.folder / name, media_type="image/png")

    @app.get("/api/v1/videos/{job_id}/plot.png", dependencies=[Depends(authorized)],
             summary="p(fake) per frame and face, with crops (what `predict --plot` draws)",
             response_class=FileResponse)
    async def plot(job_id: str):
        return job_file(job_id, "plot.png")

    @app.get("/api/v1/videos/{job_id}/explain/track{track}.png", dependencies=[Depends(authorized)],
             summary="A face's crops with the Grad-CAM heat (what `predict --explain` draws)",
             response_class=FileResponse)
    async def explanation(job_id: str, track: int):
        return job_file(job_id, f"explain/track{track}.png")

    return app


def _check_video(path: Path, name: str) -> None:
    """400 with the decoder's one-line reason unless the file opens as a video with a decodable frame."""
    from data_prep.video import VideoError, probe

    try:
        probe(path)
    except VideoError as err:
        raise BadRequest(400, f"{name}: {err}") from None
