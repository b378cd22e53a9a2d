"""Help and README stay honest: every command has help with an example and is named in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dedupkit.cli.main import COMMANDS, cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands():
    ctx = cli.make_context("dedupkit", ["--help"], resilient_parsing=True)
    return cli.list_commands(ctx)


def test_top_level_help_lists_commands_and_exit_codes():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in _commands():
        assert name in res.output
    assert "Exit codes" in res.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_example_and_is_in_readme(name):
    if name not in _commands():
        pytest.skip(f"command {name} is not built in this checkout")
    res = CliRunner().invoke(cli, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, f"{name} --help has no example"
    assert f"dedupkit {name}" in README, f"README does not name `dedupkit {name}`"


def test_readme_opens_with_the_two_setup_commands():
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "scripts/example.sh" in block and "scripts/test.sh" in block
    assert "scripts/test.sh" in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
