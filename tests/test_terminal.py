"""Issue 15 item 10: data never reaches the terminal as control sequences.

Texts, doc_ids and shard names holding clear-screen (CSI), window-title, clipboard-write (OSC 52)
and hyperlink (OSC 8) sequences, 8-bit C1 introducers and bidi overrides are printed by `inspect`
(with and without colors, through CliRunner and through a real pipe) with every control character
shown as a visible escape.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from tests.support import run_subprocess, write_jsonl
from dedupkit.cli.main import cli

EVIL = {
    "clear": "\x1b[2J\x1b[H",
    "title": "\x1b]0;owned\x07",
    "osc52": "\x1b]52;c;cm0gLXJmIH4=\x07",
    "hyperlink": "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",
    "c1_csi": "\x9b2J",
    "c1_osc": "\x9d52;c;eA==\x9c",
    "bell_cr": "\x07\rOVERWRITTEN",
    "bidi": "\u202egnp.exe",
}
# anything that can start or end a control sequence, or act alone (newline and tab are fine)
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def evil_run(tmp_path):
    base = "the same words in every document of this little cluster, nearly"
    rows = [{"id": "keep-me", "text": base}]
    for name, seq in EVIL.items():
        rows.append({"id": f"{name}{seq}", "text": f"{base} {seq} end"})
    rows.append({"id": "plain-copy", "text": base})
    write_jsonl(tmp_path / "data" / f"a{EVIL['title']}.jsonl", rows)
    r = CliRunner().invoke(cli, ["fuzzy", str(tmp_path / "data"), "-o", str(tmp_path / "out"), "--id-column", "id",
                                 "--threshold", "0.3"])
    assert r.exit_code == 0, r.output
    return tmp_path / "out"


def _visible_only(text: str, allow_sgr: bool = False) -> None:
    if allow_sgr:  # our own color codes (ESC [ digits ; m) are fine
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    bad = RAW.findall(text)
    assert not bad, (bad[:5], text[:400])


@pytest.mark.parametrize("flags", [["--no-color"], ["--color"], []])
def test_inspect_escapes_control_sequences(evil_run, flags):
    r = CliRunner().invoke(cli, ["inspect", str(evil_run), "--largest", "1", "--max-members", "50", *flags])
    assert r.exit_code == 0, r.output
    _visible_only(r.stdout, allow_sgr="--color" in flags)
    _visible_only(r.stderr)
    assert "\\x1b]52;c;" in r.stdout and "\\x9b2J" in r.stdout and "\\u202e" in r.stdout


def test_inspect_doc_and_json_and_errors(evil_run):
    r = CliRunner().invoke(cli, ["inspect", str(evil_run), "--doc", "osc52" + EVIL["osc52"], "--no-color"])
    assert r.exit_code == 0, r.output
    _visible_only(r.output)
    r = CliRunner().invoke(cli, ["inspect", str(evil_run), "--largest", "1", "--json"])
    assert r.exit_code == 0
    _visible_only(r.stdout)
    ids = {m["doc_id"] for c in json.loads(r.stdout) for m in c["cluster"]["dups"]}
    assert "osc52" + EVIL["osc52"] in ids  # JSON escapes, the value is intact
    r = CliRunner().invoke(cli, ["inspect", str(evil_run), "--doc", "nope" + EVIL["clear"]])
    assert r.exit_code == 1
    _visible_only(r.output)


def test_inspect_through_a_real_pipe(evil_run):
    p = run_subprocess("inspect", str(evil_run), "--largest", "1", "--max-members", "50")
    assert p.returncode == 0, p.stderr
    _visible_only(p.stdout)
    _visible_only(p.stderr)
    assert "OVERWRITTEN" in p.stdout
