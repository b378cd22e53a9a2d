"""Help and README stay honest: every command has help with an example and is named in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dedupkit.cli.main import COMMANDS, cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


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
    assert "scripts/test.sh" in (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()


def _all_commands() -> list[tuple[str, ...]]:
    """Every command path: ("exact",), ("index",), ("index", "create"), ..."""
    out = []

    def walk(group, path):
        ctx = group.make_context("dedupkit", ["--help"], resilient_parsing=True) if not path else None
        names = group.list_commands(ctx)
        for name in names:
            cmd = group.get_command(ctx, name)
            out.append(path + (name,))
            if hasattr(cmd, "list_commands"):
                walk(cmd, path + (name,))

    walk(cli, ())
    return out


def _listing(output: str) -> list[str]:
    lines = output.splitlines()
    if "Commands:" not in lines:
        return []
    rest = lines[lines.index("Commands:") + 1:]
    return [ln for ln in rest[:next((i for i, ln in enumerate(rest) if not ln.strip()), len(rest))]]


@pytest.mark.parametrize("path", [()] + _all_commands(), ids=lambda p: " ".join(p) or "dedupkit")
def test_help_listings_are_complete_sentences_and_commands_are_in_readme(path):
    res = CliRunner().invoke(cli, [*path, "--help"], terminal_width=80)  # a usual terminal
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, f"dedupkit {' '.join(path)} --help has no example"
    for row in _listing(res.output):  # Click cuts a listing's descriptions with "..." (short_help)
        assert not row.rstrip().endswith("..."), f"truncated help line: {row!r}"
        name, _, desc = row.strip().partition(" ")
        assert desc.strip().endswith("."), f"`dedupkit {' '.join(path)} --help` lists {name} as {desc.strip()!r}"
    if path:
        assert f"dedupkit {' '.join(path)}" in README, f"README does not name `dedupkit {' '.join(path)}`"
