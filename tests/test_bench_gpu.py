"""bench/gpu.sh's plumbing on the CPU (`--dry-run`: every step with tiny settings, the report written to a copy of
bench/README.md): the script that measures the GPU figures runs end to end and fails loudly when a step fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run_writes_the_report(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# bench\n")
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", "bench/gpu.sh", "--dry-run", "--readme", str(readme)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = readme.read_text()
    assert text.startswith("# bench\n") and "## GPU figures: dry run on the CPU" in text
    for what in ("extraction, 10-s 1080p", "predict, one 10-s 1080p clip", "training, B1 + LSTM", "test_efficientnet"):
        assert what in text


def test_gpu_script_fails_loudly_without_a_gpu_or_on_a_bad_option(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", "bench/gpu.sh", "--bogus"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr
    if subprocess.run(["bash", "-c", "command -v nvidia-smi"], env=env, capture_output=True).returncode == 0:
        pytest.skip("this machine has nvidia-smi")
    done = subprocess.run(["bash", "bench/gpu.sh", "--readme", str(tmp_path / "R.md")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "bench/gpu.sh: FAILED: setup: nvidia-smi not found" in done.stderr
    assert not (tmp_path / "R.md").exists()
