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
    """One idea a module: none over 500 lines unless its first lines say why."""
    long = []
    for path in sorted([*(ROOT / "deepfake").rglob("*.py"), *(ROOT / "data_prep").rglob("*.py")]):
        lines = path.read_text().splitlines()
        if len(lines) > 500 and "longer than 500 lines" not in "\n".join(lines[:40]):
            long.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert long == []


# ------------------------------------------------------------------------------- private names and cycles


def _library_files(root: Path) -> list[Path]:
    return sorted([*(root / "data_prep").rglob("*.py"), *(root / "deepfake").rglob("*.py")])


def _is_module(root: Path, module: str) -> bool:
    base = root.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file()


def private_imports(root: Path) -> list[str]:
    """Every private name (`_x`, not dunder) that a module of the project takes from another module of the project:
    `from m import _x`, or `m._x` on a name bound by `import m` / `from pkg import m`."""
    bad = []
    for path in _library_files(root):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases: dict[str, str] = {}  # local name -> project module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module and layer_of(node.module):
                for alias in node.names:
                    name = alias.name
                    if _is_module(root, f"{node.module}.{name}"):
                        aliases[alias.asname or name] = f"{node.module}.{name}"
                    elif name.startswith("_") and not name.startswith("__") and node.module != module:
                        bad.append(f"{path.relative_to(root)}:{node.lineno}: {module} imports {node.module}.{name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if layer_of(alias.name) and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and aliases[node.value.id] != module):
                bad.append(f"{path.relative_to(root)}:{node.lineno}: {module} uses "
                           f"{aliases[node.value.id]}.{node.attr}")
    return bad


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles between modules of the project (imports inside functions count: a lazy import hides a cycle from
    Python, not from the design). Edges go to modules (files), not to the packages they sit in."""
    graph: dict[str, set[str]] = {}
    for path in _library_files(root):
        module = module_name(path, root)
        targets = set()
        for _, target in imports_of(path, module):
            if layer_of(target) and target != module and _is_module(root, target):
                targets.add(target)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):  # `from deepfake import scoring` imports the module deepfake.scoring
            if isinstance(node, ast.ImportFrom) and not node.level and node.module and layer_of(node.module):
                names = (f"{node.module}.{a.name}" for a in node.names)
                targets |= {name for name in names if _is_module(root, name)}
        graph[module] = targets - {module}
    # Tarjan's strongly connected components; a component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_private_name_crosses_modules():
    assert private_imports(ROOT) == []


def test_no_import_cycle_between_modules():
    assert import_cycles(ROOT) == []


def _tiny_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in ("data_prep", "deepfake"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    return tmp_path


@pytest.mark.parametrize("source", [
    "from data_prep.a import _helper\n",
    "def f():\n    from data_prep.a import _helper\n",
    "from data_prep import a\nx = a._helper\n",
    "import data_prep.a as a\nx = a._helper\n",
])
def test_a_private_import_is_caught(tmp_path, source):
    root = _tiny_tree(tmp_path, {"data_prep/a.py": "def _helper(): pass\nx = _helper\n", "deepfake/b.py": source})
    bad = private_imports(root)
    assert len(bad) == 1 and bad[0].startswith("deepfake/b.py"), bad


def test_a_cycle_is_caught_even_when_lazy(tmp_path):
    root = _tiny_tree(tmp_path, {"deepfake/a.py": "from deepfake.b import y\nx = 1\n",
                                 "deepfake/b.py": "def y():\n    from deepfake import a\n",
                                 "deepfake/c.py": "from deepfake.a import x\n"})
    assert import_cycles(root) == [["deepfake.a", "deepfake.b"]]


# ------------------------------------------------------------------------------------- only commands print

# `deepfake demo`'s stages and report live in the library (the demo runs library calls, not subprocesses), and
# printing them is what the command is for.
PRINTING_ALLOWED = {"deepfake/demo.py", "deepfake/demo_report.py", "deepfake/demo_stages.py"}


def prints_in_library(root: Path) -> list[str]:
    """Every `print(...)` or `sys.stdout/stderr.write(...)` in the library (data_prep/, deepfake/ but its commands
    and its server), by file and line: the library reports through logging, warnings or what it returns."""
    bad = []
    for path in _library_files(root):
        rel = path.relative_to(root).as_posix()
        if layer_of(module_name(path, root)) not in ("faces", "library") or rel in PRINTING_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "print") or (
                    isinstance(f, ast.Attribute) and f.attr == "write" and isinstance(f.value, ast.Attribute)
                    and isinstance(f.value.value, ast.Name) and f.value.value.id == "sys"
                    and f.value.attr in ("stdout", "stderr")):
                bad.append(f"{rel}:{node.lineno}")
    return bad


def test_only_commands_print():
    assert prints_in_library(ROOT) == []


def test_a_print_in_the_library_is_caught(tmp_path):
    root = _tiny_tree(tmp_path, {"deepfake/a.py": "import sys\ndef f(m):\n    sys.stderr.write(m)\n",
                                 "data_prep/b.py": "def g():\n    print('x')\n",
                                 "deepfake/c.py": "import logging\nlogging.getLogger(__name__).warning('ok')\n"})
    assert prints_in_library(root) == ["data_prep/b.py:2", "deepfake/a.py:3"]
