"""`deepfake serve --ray`: the same API on Ray actors (a local Ray with 2 CPUs): an upload gives exactly predict's
JSON object with its plot and explanations, a lost actor's job runs again on a new one, an actor that cannot load the
model counts as a failed start, and an unreachable address fails in one line. Skipped where Ray is not installed
(`pip install -e '.[ray]'`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
from fastapi.testclient import TestClient  # noqa: E402

from deepfake.cli import serve as serve_cli  # noqa: E402
from deepfake.inference import PredictConfig  # noqa: E402
from deepfake.serve.app import create_app  # noqa: E402
from deepfake.serve.config import ServeConfig  # noqa: E402
from deepfake.serve.ray_pool import RayJobPool, ray_init  # noqa: E402
from tests.test_predict import make_weights  # noqa: E402
from tests.test_serve import PNG, predict_json, wait_done  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("ray_weights") / "detector.pt")


@pytest.fixture(scope="module")
def videos(synth_dataset, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ray_videos")
    shutil.copy(synth_dataset / "real" / "clip_0000.mp4", d / "real.mp4")
    shutil.copy(synth_dataset / "fake" / "clip_0003.mp4", d / "fake.mp4")
    return d


@pytest.fixture(scope="module")
def local_ray():
    started = ray_init("local", num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_serve_on_ray_actors_gives_predicts_json_and_fails_over(local_ray, weights, videos, tmp_path, capsys):
    pool = RayJobPool(weights, PredictConfig(device="cpu"), workers=1, threads=1, capacity=4, root=tmp_path / "jobs")
    assert pool.n_workers == 1 and pool.threads == 1
    pool.start(timeout=180)
    try:
        client = TestClient(create_app(pool, ServeConfig(allow_dirs=[videos])))
        with open(videos / "fake.mp4", "rb") as f:
            r = client.post("/api/v1/videos", files={"file": ("fake.mp4", f, "video/mp4")}, data={"explain": "true"})
        assert r.status_code == 202, r.text
        job = wait_done(client, r.json()["id"], timeout=180)
        assert job["state"] == "done", job
        expected = predict_json(videos / "fake.mp4", weights, capsys)
        assert job["result"]["video"] == "fake.mp4"  # the uploaded file's name; the rest exactly predict's object
        assert {**job["result"], "video": expected["video"]} == expected
        assert client.get(job["plot_url"]).content[:8] == PNG
        assert job["explain_urls"] and all(client.get(u).content[:8] == PNG for u in job["explain_urls"])
        assert client.get("/health").json()["model_loaded"] is True

        # The actor dies mid-job (what a lost node does to it): the job runs again on a new actor.
        job_id = client.post("/api/v1/videos", json={"path": "real.mp4"}).json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/api/v1/videos/{job_id}").json()["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        ray.kill(pool._workers[0].handle, no_restart=True)
        job = wait_done(client, job_id, timeout=180)
        assert job["state"] == "done" and job["result"]["status"] == "ok", job
        assert pool.stats()["restarts"] == 1
    finally:
        pool.close()


@pytest.mark.slow
def test_ray_actors_that_cannot_load_the_model_are_refused_in_one_line(local_ray, weights, tmp_path, capsys):
    from deepfake.serve.jobs import LoadError

    bad = tmp_path / "detector.pt"
    bad.write_bytes(b"not a checkpoint")
    pool = RayJobPool(bad, PredictConfig(device="cpu"), workers=1, threads=1, root=tmp_path / "jobs")
    with pytest.raises(LoadError, match="detector.pt"):
        pool.start(timeout=180)


@pytest.mark.slow
def test_an_unreachable_ray_address_fails_in_one_line(weights, capsys):
    if ray.is_initialized():  # the other tests' local Ray: the server would use it instead of connecting
        ray.shutdown()
    start = time.monotonic()
    assert serve_cli.main(["--weights", str(weights), "--port", "0", "--ray", "127.0.0.1:1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--ray 127.0.0.1:1" in err and err.strip().count("\n") == 0, err
    assert time.monotonic() - start < 45
