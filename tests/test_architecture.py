"""The layers run one way: data_prep (videos -> faces) <- the deepfake library <- the commands (deepfake.cli).

Every import in every module is read from its source (ast), including imports inside functions, so a lazy import
against the direction fails here as surely as a top-level one. `test_a_reversed_edge_is_caught` proves the check
is not vacuous.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def layer_of(module: str) -> str | None:
    """``faces`` (data_prep), ``library`` (deepfake), ``server`` (deepfake.serve), ``commands`` (deepfake.cli), or
    None (third party)."""
    top = module.split(".")[0]
    if top == "data_prep":
        return "faces"
    if module == "deepfake.cli" or module.startswith("deepfake.cli."):
        return "commands"
    if module == "deepfake.serve" or module.startswith("deepfake.serve."):
        return "server"  # `deepfake serve`'s app: above the library, below the command
    if top == "deepfake":
        return "library"
    return None


# What each layer may import from the project's own layers.
ALLOWED = {"faces": {"faces"}, "library": {"faces", "library"}, "server": {"faces", "library", "server"},
           "commands": {"faces", "library", "server", "commands"}}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from deepfake import cli` imports the module deepfake.cli
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names
                      if layer_of(f"{target}.{alias.name}") != layer_of(target)]
    return found


def edges_against_direction(root: Path) -> list[str]:
    """Every import from a lower layer to a higher one under `root`, as 'file:line: a -> b'."""
    bad = []
    for package in ("data_prep", "deepfake"):
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            layer = layer_of(module)
            for line, target in imports_of(path, module):
                other = layer_of(target)
                if other is not None and other not in ALLOWED[layer]:
                    bad.append(f"{path.relative_to(root)}:{line}: {module} ({layer}) imports {target} ({other})")
    return bad


def test_imports_run_one_way():
    assert edges_against_direction(ROOT) == []


def test_every_command_lives_in_the_commands_layer():
    from deepfake.cli import COMMANDS

    assert all(layer_of(module) == "commands" for module, _ in COMMANDS.values())
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'deepfake = "deepfake.cli:main"' in scripts and 'deepfake-extract = "deepfake.cli.extract:main"' in scripts


@pytest.mark.parametrize("source, edge", [
    ("from deepfake.inference import Detector\n", "data_prep/video.py"),          # faces -> library
    ("def f():\n    import deepfake.cli.predict\n", "deepfake/scoring.py"),     # library -> command, lazily
    ("from deepfake import cli\n", "deepfake/model.py"),                         # library -> command package
    ("from .cli import common\n", "deepfake/metrics.py"),                        # relative
    ("from deepfake.serve.app import create_app\n", "deepfake/inference.py"),    # library -> server
])
def test_a_reversed_edge_is_caught(tmp_path, source, edge):
    for package in ("data_prep", "deepfake", "deepfake/cli"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "deepfake/cli/predict.py").write_text("from deepfake.inference import Detector\n")  # allowed
    (tmp_path / edge).write_text(source)
    bad = edges_against_direction(tmp_path)
    assert len(bad) == 1 and bad[0].startswith(edge), bad


def test_library_modules_stay_small():
    """One idea a module: none over 600 lines unless its first lines say why."""
    long = []
    for path in sorted([*(ROOT / "deepfake").rglob("*.py"), *(ROOT / "data_prep").rglob("*.py")]):
        lines = path.read_text().splitlines()
        if len(lines) > 600 and "longer than 600 lines" not in "\n".join(lines[:40]):
            long.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert long == []
