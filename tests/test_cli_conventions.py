"""One command convention: every command parses with `cli.common.OneLineParser` (a usage error is one line on
stderr and exit status 2, never a usage dump or a traceback), and `deepfake-extract`'s settings come from
`ExtractConfig` (one place for their defaults and help)."""
from __future__ import annotations

import dataclasses

import pytest

from data_prep.faces import ExtractConfig
from deepfake.cli import COMMANDS
from deepfake.cli import extract as extract_cli
from deepfake.cli import main as deepfake_main
from deepfake.cli.common import attribute_docs


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"fit", "validate", "test", "demo", "serve"}))
def test_a_usage_error_is_one_line(name, capsys):
    status = deepfake_main([name, "--no-such-option"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith(f"deepfake {name}") or err[0].startswith("deepfake-extract"), err
    assert "Traceback" not in "\n".join(err)


def test_extract_options_are_extract_config():
    parser = extract_cli._parser()
    defaults = ExtractConfig()
    docs = attribute_docs(ExtractConfig)
    actions = {a.dest: a for a in parser._actions}
    for name in extract_cli.CONFIG_OPTIONS:
        assert actions[name].default == getattr(defaults, name), name
        first_words = " ".join(docs[name].replace("`", "").rstrip(".").split()[:3])
        assert first_words in " ".join(actions[name].help.split()), name
    assert set(extract_cli.CONFIG_OPTIONS) <= {f.name for f in dataclasses.fields(ExtractConfig)}
