"""The environment files agree with each other and with what is installed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def _name(req: str) -> str:
    return re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_pinned_in_the_lock():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = _lock()
    missing = [_name(d) for d in deps if _name(d) not in lock]
    assert not missing, f"pyproject dependencies without a version in requirements/lock.txt: {missing}"


def test_environment_yml_pins_match_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    lock = _lock()
    for req in pip_section:
        if "==" in req:
            name, version = req.split("==")
            assert lock[_name(name)] == version, f"environment.yml {req} != lock {lock[_name(name)]}"
    conda_names = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip_names = {_name(r) for r in pip_section if not r.startswith("-")}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    absent = [_name(d) for d in deps if _name(d) not in conda_names | pip_names]
    assert not absent, f"pyproject dependencies missing from environment.yml: {absent}"


def test_torch_and_torchvision_load_together():
    # A CPU-only torch next to the CUDA torchvision fails here with "operator torchvision::nms does not exist".
    import torch
    from torchvision.ops import nms

    keep = nms(torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_installed_versions_match_the_lock():
    from importlib.metadata import version

    lock = _lock()
    for name in ["torch", "torchvision", "timm", "facenet-pytorch", "albumentations", "pytorch-lightning"]:
        assert version(name).split("+")[0] == lock[name], name


def test_cli_lists_every_command(capsys):
    from deepfake.cli import COMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert main(["no-such-command"]) == 2
