"""`deepfake serve` hardened and durable: a stalled upload ends with 408 and frees its place; workers that cannot
start make the server unhealthy (503, queued jobs failed, no more restarts); temporary job folders of a killed
server are removed by the next start; `--state-dir` keeps every accepted job across a restart (kill -9 included),
refuses a second server, a folder it cannot write and another schema version, each in one line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from deepfake.cli import serve as serve_cli  # noqa: E402
from deepfake.inference import PredictConfig  # noqa: E402
from deepfake.serve.app import create_app  # noqa: E402
from deepfake.serve.config import ServeConfig  # noqa: E402
from deepfake.serve.jobs import Job, JobPool  # noqa: E402
from deepfake.serve.store import JobStore, StateError, remove_abandoned_roots  # noqa: E402
from tests.test_predict import make_weights  # noqa: E402
from tests.test_serve import assert_one_line_error, wait_done  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("state_weights") / "detector.pt")


@pytest.fixture(scope="module")
def videos(synth_dataset, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("state_videos")
    shutil.copy(synth_dataset / "real" / "clip_0000.mp4", d / "real.mp4")
    return d


# ------------------------------------------------------------------------------------------ upload deadline


def asgi_post(app, body_start: bytes, content_type: str, wait: float) -> dict:
    """POST /api/v1/videos straight to the ASGI app: the body's first bytes, then a client that sends nothing more
    (but stays connected). Returns the response's status and JSON body, or raises TimeoutError after `wait` s."""
    sent: list[dict] = []

    async def receive():
        if not sent and not getattr(receive, "started", False):
            receive.started = True
            return {"type": "http.request", "body": body_start, "more_body": True}
        await asyncio.sleep(3600)  # a stalled client: no byte, no disconnect

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/v1/videos", "raw_path": b"/api/v1/videos", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", content_type.encode()), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), wait))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": start["status"], "json": json.loads(body)}


def test_a_stalled_upload_ends_with_408_and_frees_its_place(tmp_path, videos):
    pool = JobPool(tmp_path / "detector.pt", PredictConfig(device="cpu"), capacity=1, root=tmp_path / "jobs")
    app = create_app(pool, ServeConfig(upload_timeout_s=0.3, allow_dirs=[videos]))
    head = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.mp4\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n" + (videos / "real.mp4").read_bytes()[:1000])
    t0 = time.monotonic()
    r = asgi_post(app, head, "multipart/form-data; boundary=xyz", wait=10)
    assert r["status"] == 408 and "--upload-timeout-s" in r["json"]["error"], r
    assert time.monotonic() - t0 < 5
    assert pool.stats()["receiving"] == 0 and not list((tmp_path / "jobs").iterdir()), "its place and file are freed"
    r = asgi_post(app, b'{"path": "re', "application/json", wait=10)  # a JSON body that stops half way: the same
    assert r["status"] == 408, r
    client = TestClient(create_app(pool, ServeConfig(allow_dirs=[videos])))  # the one place is free again
    assert client.post("/api/v1/videos", json={"path": "real.mp4"}).status_code == 202


# ------------------------------------------------------------------------------------------ unhealthy


def check_unhealthy_after_failed_starts(weights: Path, videos: Path, tmp_path: Path, damage) -> None:
    """The weights file is damaged while the server runs and its worker dies: after 3 failed starts in a row,
    /health is 503 with the reason, the jobs waiting fail with it, new ones get 503 and no worker starts again."""
    damaged = shutil.copy(weights, tmp_path / "detector.pt")
    pool = JobPool(damaged, PredictConfig(device="cpu"), workers=1, capacity=4, root=tmp_path / "jobs",
                   max_start_failures=3)
    pool.start(timeout=120)
    try:
        client = TestClient(create_app(pool, ServeConfig(allow_dirs=[videos])))
        damage(Path(damaged))
        pool._workers[0].process.kill()
        pool._workers[0].process.join(10)
        waiting = [client.post("/api/v1/videos", json={"path": "real.mp4"}).json()["id"] for _ in range(2)]
        deadline = time.monotonic() + 120
        while client.get("/health").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        health = client.get("/health")
        assert health.status_code == 503, health.text
        assert health.json()["status"] == "unhealthy" and "3 times in a row" in health.json()["reason"]
        assert "detector.pt" in health.json()["reason"], health.json()["reason"]  # the loader's own reason
        for job_id in waiting:
            job = wait_done(client, job_id, timeout=10)
            assert job["state"] == "failed" and "3 times in a row" in job["error"], job
        assert_one_line_error(client.post("/api/v1/videos", json={"path": "real.mp4"}), 503, "cannot score")
        restarts = pool.stats()["restarts"]
        time.sleep(2.5)
        assert pool.stats()["restarts"] == restarts == 3 and not any(w.process.is_alive() for w in pool._workers)
    finally:
        pool.close()


def test_workers_that_cannot_start_make_the_server_unhealthy(weights, videos, tmp_path):
    check_unhealthy_after_failed_starts(weights, videos, tmp_path, Path.unlink)  # the file deleted: fails fast


@pytest.mark.slow
def test_workers_that_cannot_load_a_damaged_file_make_the_server_unhealthy(weights, videos, tmp_path):
    check_unhealthy_after_failed_starts(weights, videos, tmp_path, lambda p: p.write_bytes(b"not a checkpoint"))


# ------------------------------------------------------------------------------------------ temporary folders


def test_the_job_folder_of_a_killed_server_is_removed_at_the_next_start(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = ("import sys, time; from deepfake.serve.store import make_temp_root; root, lock = make_temp_root(); "
            "(root / 'video.mp4').write_bytes(b'x'); print(root, flush=True); time.sleep(120)")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    servers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
               for _ in range(2)]
    try:
        killed, alive = (Path(p.stdout.readline().strip()) for p in servers)
        servers[0].send_signal(signal.SIGKILL)
        servers[0].wait(10)
        assert (killed / "video.mp4").is_file()  # what a server killed with -9 leaves behind
        pool = JobPool(tmp_path / "detector.pt", PredictConfig(device="cpu"))  # a new server's start
        try:
            assert not killed.exists(), "the killed server's folder is removed"
            assert (alive / "video.mp4").is_file(), "a running server's folder is left alone"
            assert pool.root.is_dir() and remove_abandoned_roots(tmp_path) == []  # nor is ours taken for abandoned
        finally:
            pool.close()
        assert not pool.root.exists()
    finally:
        for p in servers:
            p.kill()
            p.wait(10)


def test_the_folder_of_a_killed_ray_actor_is_removed_when_the_next_one_starts(tmp_path, monkeypatch):
    from deepfake.serve.ray_pool import ACTOR_PREFIX, ScoringActor

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = ("import time; from deepfake.serve.store import make_temp_root; "
            "from deepfake.serve.ray_pool import ACTOR_PREFIX; root, lock = make_temp_root(ACTOR_PREFIX); "
            "(root / 'detector.pt').write_bytes(b'x'); print(root, flush=True); time.sleep(120)")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    actor_process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        killed = Path(actor_process.stdout.readline().strip())
        actor_process.send_signal(signal.SIGKILL)
        actor_process.wait(10)
        assert killed.name.startswith(ACTOR_PREFIX) and (killed / "detector.pt").is_file()
        actor = ScoringActor(b"not a checkpoint", "detector.pt", PredictConfig(device="cpu"), None, 1)  # in-process
        assert actor.load_error and actor.folder.is_dir() and actor.folder.parent == tmp_path
        assert not killed.exists(), "the killed actor's folder is removed"
        assert remove_abandoned_roots(tmp_path, ACTOR_PREFIX) == [] and actor.folder.is_dir()  # a live one stays
    finally:
        actor_process.kill()
        actor_process.wait(10)


# ------------------------------------------------------------------------------------------ the state folder


def test_a_state_dir_keeps_every_accepted_job_across_a_restart(tmp_path, videos):
    """At the job-store level: what a killed server left in its table (a running job, waiting ones, a finished one,
    a half-received upload) is taken up by the next: the running and waiting jobs queue again in their order."""
    state = tmp_path / "state"
    store = JobStore(state)
    pool = JobPool(tmp_path / "detector.pt", PredictConfig(device="cpu"), store=store)
    jobs = []
    for i in range(4):
        job = Job.new(pool.root, f"clip{i}.mp4")
        upload = job.folder / "upload" / f"clip{i}.mp4"
        upload.parent.mkdir()
        shutil.copy(videos / "real.mp4", upload)
        assert pool.reserve()
        jobs.append(pool.submit(job, upload, owned=True))
    with pool._lock:  # what the dispatcher and a worker would have recorded: job 0 done, job 1 running
        pool._waiting.popleft()
        pool._finish(jobs[0], {"result": {"video": "clip0.mp4", "status": "ok", "p_fake": 0.25}, "seconds": 1.0})
        pool._waiting.popleft()
        jobs[1].state = "running"
        pool._save(jobs[1])
    (pool.root / ("0" * 32) / "upload").mkdir(parents=True)  # an upload still being received when it was killed
    # Killed here: nothing closed, no clean-up ran. The lock goes with the process; here, by hand.
    store._lock.release()

    again = JobPool(tmp_path / "detector.pt", PredictConfig(device="cpu"), store=JobStore(state))
    try:
        assert list(again._waiting) == [jobs[1].id, jobs[2].id, jobs[3].id], "running and waiting jobs run again"
        assert again.get(jobs[1].id)[0].state == "queued" and again.get(jobs[1].id)[1] == 1
        done, _ = again.get(jobs[0].id)
        assert done.state == "done" and done.result["p_fake"] == 0.25, "a finished job still answers"
        assert again.get(jobs[2].id)[0].video.read_bytes() == (videos / "real.mp4").read_bytes()
        assert not (again.root / ("0" * 32)).exists(), "a half-received upload is removed"
        client = TestClient(create_app(again, ServeConfig()))
        assert client.get(f"/api/v1/videos/{jobs[0].id}").json()["result"]["p_fake"] == 0.25
        assert client.get("/health").json()["durable"] is True

        with pytest.raises(StateError, match=r"in use by another deepfake serve \(pid \d+\)"):
            JobStore(state)
    finally:
        again.close()
        again.store.close()
    assert (state / "jobs" / jobs[2].id).is_dir(), "closing a durable pool keeps its jobs"


def test_a_state_dir_refuses_another_schema_a_folder_it_cannot_write_and_a_second_server(tmp_path, weights,
                                                                                           capsys):
    state = tmp_path / "state"
    JobStore(state).close()
    with sqlite3.connect(state / "jobs.db") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StateError, match="schema version 99; this deepfake reads version 1"):
        JobStore(state)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "jobs.db").write_bytes(b"not sqlite" * 100)
    with pytest.raises(StateError, match="not a job table"):
        JobStore(tmp_path / "garbage")

    (tmp_path / "a-file").write_text("x")
    base = ["--weights", str(weights), "--port", "0", "--no-progress"]
    assert serve_cli.main([*base, "--state-dir", str(tmp_path / "a-file" / "state")]) == 2
    err = capsys.readouterr().err
    assert "can't use --state-dir" in err and "Not a directory" in err and err.count("\n") == 1, err
    held = JobStore(tmp_path / "held")
    try:
        assert serve_cli.main([*base, "--state-dir", str(tmp_path / "held")]) == 2
        err = capsys.readouterr().err
        assert f"in use by another deepfake serve (pid {os.getpid()})" in err and err.count("\n") == 1, err
    finally:
        held.close()


# ------------------------------------------------------------------------------------------ a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def start_server(weights: Path, state: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from deepfake.cli import main; sys.exit(main())", "serve",
           "--weights", str(weights), "--device", "cpu", "--port", str(port), "--state-dir", str(state),
           "--log-level", "warning", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT,
                            env={**os.environ, "DEEPFAKE_TOKEN": "", "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if http("GET", f"http://127.0.0.1:{port}/health")[1]["model_loaded"]:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the server did not start: {log.read_text()}")


def upload(port: int, clip: Path, name: str) -> str:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, out = http("POST", f"http://127.0.0.1:{port}/api/v1/videos", body,
                       {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 202, out
    return out["id"]


def states(port: int, ids: list[str]) -> list[str]:
    return [http("GET", f"http://127.0.0.1:{port}/api/v1/videos/{i}")[1].get("state", "unknown") for i in ids]


@pytest.mark.slow
def test_a_server_killed_with_sigkill_finishes_every_accepted_job_after_a_restart(weights, videos, tmp_path):
    state, log, port = tmp_path / "state", tmp_path / "server.log", free_port()
    server = start_server(weights, state, port, log)
    try:
        first = upload(port, videos / "real.mp4", "first.mp4")
        while states(port, [first]) != ["done"]:
            time.sleep(0.1)
        result = http("GET", f"http://127.0.0.1:{port}/api/v1/videos/{first}")[1]["result"]
        ids = [upload(port, videos / "real.mp4", f"clip{i}.mp4") for i in range(4)]
        deadline = time.monotonic() + 60
        while "running" not in (now := states(port, ids)) and time.monotonic() < deadline:
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        assert "running" in now and "queued" in now, now  # killed while one ran and others waited
    finally:
        server.kill()
        server.wait(10)

    server = start_server(weights, state, port, log)
    try:
        deadline = time.monotonic() + 120
        while any(s not in ("done", "failed") for s in states(port, ids)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert states(port, ids) == ["done"] * 4, log.read_text()
        again = http("GET", f"http://127.0.0.1:{port}/api/v1/videos/{first}")[1]
        assert again["state"] == "done" and again["result"] == result, "a finished job answers after the restart"
        assert not any((state / "jobs" / i / "upload").exists() for i in ids), "uploads deleted once scored"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert "Traceback" not in log.read_text()
