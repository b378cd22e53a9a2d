"""Help and README stay honest: every command has help with an example and is named in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dedupkit.cli.main import COMMANDS, cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_top_level_help_lists_commands_and_exit_codes():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in res.output
    assert "Exit codes" in res.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_example_and_is_in_readme(name):
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


OUTSIDE = ("../shared", "shared/eval", "shared/bench", "shared/data")


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_help_cites_no_path_outside_the_project(path):
    """The evaluation suites and their scorer live outside the repository: help must not send a
    user to them."""
    out = CliRunner().invoke(cli, [*path, "--help"]).output
    assert not [s for s in OUTSIDE if s in out], f"`dedupkit {' '.join(path)} --help` cites a path outside the project"


def test_user_docs_cite_no_path_outside_the_project():
    root = Path(__file__).resolve().parents[2]
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    bad = [f"{p.relative_to(root)}:{i}" for p in docs for i, line in enumerate(p.read_text().splitlines(), 1)
           if any(s in line for s in OUTSIDE)]
    assert not bad, f"user docs cite paths outside the project (benchmarks/ may): {bad}"


def test_test_files_the_docs_cite_exist():
    """Docs point readers at the test that checks a claim; after a move the pointer must follow."""
    import re

    root = Path(__file__).resolve().parents[2]
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    cited = {(p.name, m) for p in docs for m in re.findall(r"tests/[a-z0-9_/]+\.py", p.read_text())}
    missing = sorted(f"{doc}: {path}" for doc, path in cited if not (root / path).exists())
    assert not missing, f"docs cite test files that do not exist: {missing}"
