"""`--ray`: `deepfake predict` and `deepfake-extract` on Ray Data give the files they give without Ray.

One local Ray instance (2 CPUs, no dashboard, its temp folder under /tmp/ray_* and removed after) serves the module:
the commands find it started in this process and use it (`data_prep.ray_extract.ray_session`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]'); CI installs it")

from data_prep.ray_extract import LOST, RayError, ray_session, stream_videos  # noqa: E402
from deepfake.cli import extract as extract_cli  # noqa: E402
from deepfake.cli import predict as predict_cli  # noqa: E402


@pytest.fixture(scope="module")
def ray_instance():
    tmp = tempfile.mkdtemp(prefix="ray_", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from tests.test_predict import make_weights

    return make_weights(tmp_path_factory.mktemp("ray_weights") / "detector.pt")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("folders", [pytest.param(False), pytest.param(True, marks=pytest.mark.slow)])
def test_predict_on_ray_gives_the_rows_of_predict_without_it(ray_instance, synth_dataset, tiny_weights, tmp_path,
                                                             capsys, folders):
    videos = [str(synth_dataset / "real" / "clip_0000.mp4"), str(tmp_path / "missing.mp4")]
    if folders:
        videos = [videos[0], str(synth_dataset / "fake"), videos[1], str(synth_dataset / "real")]
    common = ["--weights", str(tiny_weights), "--device", "cpu", "--precision", "fp32", "--no-progress"]
    assert predict_cli.main([*videos, *common, "--output", str(tmp_path / "plain.jsonl")]) == 1
    assert predict_cli.main([*videos, *common, "--output", str(tmp_path / "ray.jsonl"), "--ray", "local",
                             "--workers", "2" if folders else "1"]) == 1
    plain, on_ray = _read_jsonl(tmp_path / "plain.jsonl"), _read_jsonl(tmp_path / "ray.jsonl")
    n = 7 if folders else 2  # the real folder holds clip_0000 again: counted once
    assert [r["video"] for r in on_ray] == [r["video"] for r in plain] and len(plain) == n  # same rows, same order
    for a, b in zip(plain, on_ray):
        assert (a["status"], a["verdict"], a["error"]) == (b["status"], b["verdict"], b["error"])
        if a["p_fake"] is not None:
            assert abs(a["p_fake"] - b["p_fake"]) <= 1e-6
            assert [f["frames"] for f in a["faces"]] == [f["frames"] for f in b["faces"]]
            assert np.allclose([s for f in a["faces"] for s in f["steps"]],
                               [s for f in b["faces"] for s in f["steps"]], atol=1e-6)
    missing = next(r for r in on_ray if r["video"].endswith("missing.mp4"))
    assert missing["status"] == "error" and "no such file" in missing["error"]
    # resumable the same way: the videos in the log are not done again
    capsys.readouterr()
    assert predict_cli.main([*videos, *common, "--output", str(tmp_path / "ray.jsonl"), "--resume",
                             "--ray", "local"]) == 1
    assert f"resuming: {n} video(s)" in capsys.readouterr().err
    assert len(_read_jsonl(tmp_path / "ray.jsonl")) == n


@pytest.mark.slow
def test_extract_on_ray_writes_the_files_of_extract_without_it(ray_instance, synth_dataset, tmp_path, capsys):
    options = ["--layout", "folder", "--stride", "2", "--size", "64", "--device", "cpu", "--limit", "2",
               "--no-progress"]
    assert extract_cli.main([str(synth_dataset), str(tmp_path / "plain"), *options, "--workers", "0"]) == 0
    assert extract_cli.main([str(synth_dataset), str(tmp_path / "ray"), *options, "--ray", "local"]) == 0
    assert "on Ray (local: 2 actors" in capsys.readouterr().out
    for name in ("index.csv", "failures.csv", "extract_config.json"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
    crops = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain" / "crops").rglob("*.jpg"))
    assert crops == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray" / "crops").rglob("*.jpg"))
    assert crops
    assert all((tmp_path / "ray" / c).read_bytes() == (tmp_path / "plain" / c).read_bytes() for c in crops)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "no-port-here"])
def test_an_unreachable_address_fails_in_one_line_quickly(synth_dataset, tiny_weights, tmp_path, capsys, address):
    start = time.monotonic()
    rc = predict_cli.main([str(synth_dataset / "real"), "--weights", str(tiny_weights), "--device", "cpu",
                           "--no-progress", "--ray", address])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Ray" in err and "Traceback" not in err, err
    rc = extract_cli.main([str(synth_dataset), str(tmp_path / "out"), "--no-progress", "--ray", address])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Ray" in err, err
    assert time.monotonic() - start < 30
    with pytest.raises(RayError):
        with ray_session(address):
            pass


def _dying_actor(gpu: bool) -> type:
    class Dies:  # a worker process that crashes on one video, as a decoder's segfault would end it
        def __call__(self, batch: dict) -> dict:
            if int(batch["key"][0]) == 2:
                os._exit(3)
            return {"key": batch["key"], "out": np.array([b"\x80\x04K\x01."], dtype=object)}  # pickle of 1

    return Dies


@pytest.mark.slow
def test_a_video_whose_worker_dies_is_reported_and_the_rest_go_on(ray_instance):
    with ray_session("local") as session:
        results = dict(stream_videos(session, [{"key": k} for k in range(6)], _dying_actor, 2, "cpu"))
    assert results == {0: 1, 1: 1, 2: None, 3: 1, 4: 1, 5: 1}  # only the video that killed its worker is lost
    assert "worker died" in LOST


@pytest.mark.slow
def test_extract_on_ray_matches_a_plain_run_and_resumes(ray_instance, synth_dataset, extracted_dataset, tmp_path,
                                                        capsys):
    out = tmp_path / "ray"
    options = ["--layout", "folder", "--stride", "2", "--size", "64", "--device", "cpu", "--no-progress", "--ray"]
    assert extract_cli.main([str(synth_dataset), str(out), *options]) == 0
    assert (out / "index.csv").read_bytes() == (extracted_dataset / "index.csv").read_bytes()
    # the fakes were cropped with their originals' boxes (labels.csv's `original`), in the second wave
    fakes = [json.loads(p.read_text()) for p in (out / "parts" / "fake").glob("*.json")]
    assert fakes and all(f["status"] == "ok" and f["boxes_from"].startswith("real/") for f in fakes)
    # a run killed before clip_0000 was marked done: the next run does that video only, to the same index
    (out / "parts" / "real" / "clip_0000.mp4.json").unlink()
    capsys.readouterr()
    assert extract_cli.main([str(synth_dataset), str(out), *options]) == 0
    assert "extracted 1 now (5 already done)" in capsys.readouterr().out
    assert (out / "index.csv").read_bytes() == (extracted_dataset / "index.csv").read_bytes()


def test_ray_is_imported_only_with_the_option():
    import subprocess
    import sys

    code = ("import sys, deepfake.cli.predict, deepfake.cli.extract, data_prep.ray_extract, deepfake.raybatch; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
