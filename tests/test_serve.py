"""`deepfake serve` through the ASGI test client: an upload gives exactly predict's JSON object for the same video and
weights, with its plot and explanations; every bad request gets its 4xx code and a one-line JSON reason (never a
traceback); a full queue answers 429; the token; the refusal to listen beyond loopback without one; retention."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from deepfake.cli import predict as predict_cli  # noqa: E402
from deepfake.cli import serve as serve_cli  # noqa: E402
from deepfake.inference import PredictConfig  # noqa: E402
from deepfake.serve.app import create_app  # noqa: E402
from deepfake.serve.config import ServeConfig, is_loopback  # noqa: E402
from deepfake.serve.jobs import JobPool  # noqa: E402
from tests.test_predict import make_weights  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("serve_weights") / "detector.pt")


@pytest.fixture(scope="module")
def videos(synth_dataset, tmp_path_factory) -> Path:
    """An allowed folder with a real and a fake clip, a file that is not a video, and an empty one."""
    d = tmp_path_factory.mktemp("serve_videos")
    shutil.copy(synth_dataset / "real" / "clip_0000.mp4", d / "real.mp4")
    shutil.copy(synth_dataset / "fake" / "clip_0003.mp4", d / "fake.mp4")
    (d / "notes.mp4").write_text("a text file with a video's name\n")
    (d / "empty.mp4").write_bytes(b"")
    return d


@pytest.fixture(scope="module")
def server(weights, videos, tmp_path_factory):
    """A started pool (one worker process, the tiny detector on CPU) behind the app; paths allowed under `videos`."""
    pool = JobPool(weights, PredictConfig(device="cpu"), workers=1, capacity=4, retention_s=3600,
                   root=tmp_path_factory.mktemp("serve_jobs"))
    pool.start(timeout=120)
    with TestClient(create_app(pool, ServeConfig(allow_dirs=[videos]))) as client:
        yield client, pool
    pool.close()


def idle_app(tmp_path, capacity: int = 4, **config):
    """An app whose pool has no worker started: jobs queue and stay queued (the API's checks need no model)."""
    pool = JobPool(tmp_path / "detector.pt", PredictConfig(device="cpu"), workers=1, capacity=capacity,
                   root=tmp_path / "jobs")
    return TestClient(create_app(pool, ServeConfig(**config)), raise_server_exceptions=False), pool


def wait_done(client, job_id: str, timeout: float = 120.0, headers=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/videos/{job_id}", headers=headers).json()
        assert job["state"] in ("queued", "running", "done", "failed")
        assert 0.0 <= job["progress"] <= 1.0
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished in {timeout} s: {job}")


def predict_json(path: Path, weights: Path, capsys) -> dict:
    # The server's workers keep PyTorch under --runtime auto for a detector.pt (jobs may ask for explanations;
    # docs/speed.md); an exported file (.onnx, .pt2) runs on its own runtime, which auto picks.
    runtime = "torch" if Path(weights).suffix == ".pt" else "auto"
    assert predict_cli.main([str(path), "--weights", str(weights), "--device", "cpu", "--format", "json",
                             "--no-progress", "--runtime", runtime]) == 0
    return json.loads(capsys.readouterr().out)[0]


def assert_one_line_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert message and "\n" not in message and "Traceback" not in message and 'File "' not in message
    for word in words:
        assert word in message, (word, message)
    return message


# --------------------------------------------------------------------------------------------- with a model


def test_upload_gives_predicts_json_plot_and_is_deleted_after_retention(server, videos, weights, capsys):
    client, pool = server
    with open(videos / "real.mp4", "rb") as f:
        r = client.post("/api/v1/videos", files={"file": ("my clip.mp4", f, "video/mp4")})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["status_url"] == f"/api/v1/videos/{job_id}" == r.headers["location"]
    job = wait_done(client, job_id)
    assert job["state"] == "done" and job["progress"] == 1.0 and job["error"] is None

    expected = predict_json(videos / "real.mp4", weights, capsys)
    assert job["result"]["video"] == "my clip.mp4"  # the uploaded file's name, as predict names a file
    assert {**job["result"], "video": expected["video"]} == expected
    assert job["result"]["extraction"]["quality"] == 90  # what the crops were made with, as predict says it

    plot = client.get(job["plot_url"])
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png" and plot.content[:8] == PNG
    assert_one_line_error(client.get(f"/api/v1/videos/{job_id}/explain/track0.png"), 404, "explain=true")
    folder = pool.root / job_id
    assert not (folder / "upload").exists(), "the uploaded video is deleted when its job ends"

    pool.retention_s = 0.05  # the results go too, once the retention time has passed
    deadline = time.monotonic() + 10
    while client.get(f"/api/v1/videos/{job_id}").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    pool.retention_s = 3600
    assert_one_line_error(client.get(f"/api/v1/videos/{job_id}"), 404, "retention")
    assert not folder.exists()


def test_path_under_allow_dir_with_explanations(server, videos, weights, capsys):
    client, pool = server
    r = client.post("/api/v1/videos", json={"path": str(videos / "fake.mp4"), "explain": True})
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["id"])
    assert job["state"] == "done", job
    assert job["result"] == predict_json(videos / "fake.mp4", weights, capsys)  # exactly, the name included
    assert job["explain_urls"] and all(u.endswith(".png") for u in job["explain_urls"])
    for url in job["explain_urls"]:
        strip = client.get(url)
        assert strip.status_code == 200 and strip.content[:8] == PNG
    assert (videos / "fake.mp4").is_file(), "a video named by path is the user's: never deleted"
    assert client.get("/health").json()["model_loaded"] is True


# ------------------------------------------------------------------------------------------ without a model


def test_every_bad_request_gets_its_code_and_one_line(tmp_path, videos):
    outside = tmp_path / "outside.mp4"
    shutil.copy(videos / "real.mp4", outside)
    os.symlink(outside, videos / "link.mp4")
    try:
        client, pool = idle_app(tmp_path, allow_dirs=[videos], max_upload_mb=0.05)
        post = client.post
        assert_one_line_error(post("/api/v1/videos", files={"file": ("e.mp4", b"")}), 400, "empty")
        assert_one_line_error(post("/api/v1/videos", files={"file": ("n.mp4", b"not a video at all")}), 400,
                              "n.mp4", "not a video")
        assert_one_line_error(post("/api/v1/videos", files={"video": ("c.mp4", b"x")}), 422, "'file'")
        assert_one_line_error(post("/api/v1/videos", data={"explain": "true"}, files={"upload": ("c", b"x")}), 422,
                              "unknown field 'upload'")
        too_big = (videos / "real.mp4").read_bytes() + bytes(60 * 1024)
        assert_one_line_error(post("/api/v1/videos", files={"file": ("big.mp4", too_big)}), 413, "--max-upload-mb")
        chunks = (bytes(16 * 1024) for _ in range(8))  # no Content-Length: the limit holds while streaming
        r = post("/api/v1/videos", content=chunks, headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code in (400, 413)  # zeros are no multipart part: refused either way, as one line
        assert_one_line_error(r, r.status_code)
        assert_one_line_error(post("/api/v1/videos", content=b"x", headers={"content-type": "text/plain"}), 415)
        assert_one_line_error(post("/api/v1/videos", json={"path": "../outside.mp4"}), 403, "outside")
        assert_one_line_error(post("/api/v1/videos", json={"path": str(videos / "link.mp4")}), 403, "outside")
        assert_one_line_error(post("/api/v1/videos", json={"path": str(videos / ".." / outside.name)}), 403)
        assert_one_line_error(post("/api/v1/videos", json={"path": "missing.mp4"}), 400, "no such file")
        assert_one_line_error(post("/api/v1/videos", json={"path": "notes.mp4"}), 400, "not a video")
        assert_one_line_error(post("/api/v1/videos", json={"path": "empty.mp4"}), 400, "empty")
        assert_one_line_error(post("/api/v1/videos", json={"path": 3}), 422, "'path'")
        assert_one_line_error(post("/api/v1/videos", json={"path": "real.mp4", "explain": "maybe"}), 422)
        assert_one_line_error(post("/api/v1/videos", json={"path": "real.mp4", "x": 1}), 422, "unknown field 'x'")
        assert_one_line_error(post("/api/v1/videos", content=b"{nope", headers={"content-type": "application/json"}),
                              400, "JSON")
        assert_one_line_error(client.get("/api/v1/videos/" + "0" * 32), 404, "no job")
        assert_one_line_error(client.get("/api/v1/videos/../../etc/passwd"), 404)
        assert_one_line_error(client.get("/nowhere"), 404)
        assert pool.stats()["receiving"] == 0 and pool.stats()["queued"] == 0, "refused requests free their place"
        assert not list((tmp_path / "jobs").iterdir()), "refused uploads leave no file behind"

        ok = post("/api/v1/videos", json={"path": "real.mp4"})  # inside: accepted, waits (no worker started)
        assert ok.status_code == 202, ok.text
        job = client.get(ok.json()["status_url"]).json()
        assert job["state"] == "queued" and job["queue_position"] == 1 and job["result"] is None
        assert_one_line_error(client.get(ok.json()["status_url"] + "/plot.png"), 409, "queued")
        paths_off, _ = idle_app(tmp_path / "b")
        assert_one_line_error(paths_off.post("/api/v1/videos", json={"path": str(videos / "real.mp4")}), 403,
                              "--allow-dir")
    finally:
        (videos / "link.mp4").unlink()


def test_a_full_queue_answers_429_and_frees_places(tmp_path, videos):
    client, pool = idle_app(tmp_path, capacity=2, allow_dirs=[videos])
    data = (videos / "real.mp4").read_bytes()
    first = [client.post("/api/v1/videos", files={"file": (f"c{i}.mp4", data)}) for i in range(2)]
    assert [r.status_code for r in first] == [202, 202]
    full = client.post("/api/v1/videos", files={"file": ("c2.mp4", data)})
    assert_one_line_error(full, 429, "queue full")
    assert full.headers["retry-after"]
    assert client.get("/health").json()["queue"]["queued"] == 2
    assert client.delete(first[0].json()["status_url"]).json() == {"id": first[0].json()["id"], "deleted": True}
    assert client.post("/api/v1/videos", json={"path": "real.mp4"}).status_code == 202  # a place came free


def test_token_on_every_api_call_and_the_page_asks_for_it(tmp_path, videos):
    client, _ = idle_app(tmp_path, token="s3cret", allow_dirs=[videos])
    body = {"path": "real.mp4"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        r = client.post("/api/v1/videos", json=body, headers=headers)
        assert_one_line_error(r, 401, "token")
        assert r.headers["www-authenticate"] == "Bearer"
    assert_one_line_error(client.get("/api/v1/videos/" + "0" * 32), 401)  # auth before lookups: ids don't leak
    good = {"Authorization": "Bearer s3cret"}
    r = client.post("/api/v1/videos", json=body, headers=good)
    assert r.status_code == 202
    assert client.get(r.json()["status_url"], headers=good).json()["state"] == "queued"
    assert client.get("/health").json()["auth"] is True  # the page reads this and asks for the token
    assert client.get("/").status_code == 200

    open_client, _ = idle_app(tmp_path / "open", allow_dirs=[videos])
    assert open_client.post("/api/v1/videos", json=body).status_code == 202
    assert open_client.get("/health").json()["auth"] is False


def test_a_server_fault_is_json_without_traceback(tmp_path, monkeypatch):
    client, pool = idle_app(tmp_path)

    def broken(_job_id):
        raise RuntimeError("secret internal detail\nTraceback (most recent call last)")

    monkeypatch.setattr(pool, "get", broken)
    message = assert_one_line_error(client.get("/api/v1/videos/" + "a" * 32), 500, "RuntimeError")
    assert "secret" not in message


def test_health_docs_and_page_work_offline(tmp_path):
    client, _ = idle_app(tmp_path)
    health = client.get("/health").json()
    assert health["model_loaded"] is False and health["status"] == "loading" and health["version"]
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/videos", "/api/v1/videos/{job_id}", "/api/v1/videos/{job_id}/plot.png"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/v1/videos"]["post"]["requestBody"]["content"]
    for url in ("/", "/docs", "/static/app.js", "/static/style.css", "/static/docs.js"):
        r = client.get(url)
        assert r.status_code == 200, url
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", r.text), url  # nothing from elsewhere
        assert not re.search(r"""fetch\(\s*["'`]https?:""", r.text), url
    assert "default-src 'self'" in client.get("/").headers["content-security-policy"]


# --------------------------------------------------------------------------------------------- the command


def test_the_command_refuses_a_public_host_without_a_token(weights, capsys, monkeypatch):
    monkeypatch.delenv("DEEPFAKE_TOKEN", raising=False)
    assert serve_cli.main(["--host", "0.0.0.0", "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without a token" in err and err.count("\n") == 1
    assert serve_cli.main(["--weights", str(weights.with_name("nope.pt"))]) == 2
    assert "no such file" in capsys.readouterr().err
    assert serve_cli.main(["--queue", "0", "--weights", str(weights)]) == 2
    assert "--queue" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    ServeConfig(host="0.0.0.0", token="t")  # a token, or --insecure, allows it
    ServeConfig(host="0.0.0.0", insecure=True)


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_job_and_is_replaced(weights, videos, tmp_path):
    """A worker killed mid-job (what the kernel's OOM killer does): that job fails with a reason, a new worker
    loads the model, the next job is scored, and the server never stops answering."""
    pool = JobPool(weights, PredictConfig(device="cpu"), workers=1, capacity=4, root=tmp_path / "jobs")
    pool.start(timeout=120)
    try:
        client = TestClient(create_app(pool, ServeConfig(allow_dirs=[videos])))
        job_id = client.post("/api/v1/videos", json={"path": "real.mp4"}).json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/v1/videos/{job_id}").json()["state"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.01)
        pool._workers[0].process.kill()
        job = wait_done(client, job_id)
        assert job["state"] == "failed" and "stopped" in job["error"] and job["result"]["status"] == "error"
        assert client.get("/health").status_code == 200
        again = wait_done(client, client.post("/api/v1/videos", json={"path": "real.mp4"}).json()["id"])
        assert again["state"] == "done" and pool.stats()["restarts"] == 1
    finally:
        pool.close()
