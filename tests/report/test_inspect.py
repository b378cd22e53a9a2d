"""``dedupkit inspect``: clusters in the terminal, with the same word diff as the report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.support import read_manifest, run_subprocess
from dedupkit import api
from dedupkit.cli.main import cli
from dedupkit.errors import ConfigError, InputError
from tests.support.report import near_corpus, run_fuzzy


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inspect")
    data, rows = near_corpus(tmp / "data")
    out = tmp / "run"
    api.exact([str(data)], str(out / "01-exact"), id_column="id")
    run_fuzzy(data, out / "02-fuzzy", skip=(str(out / "01-exact"),))
    return out, {r["id"]: r["text"] for r in rows}


def invoke(*args):
    return CliRunner().invoke(cli, ["inspect", *map(str, args)])


def test_largest_prints_plain_diff_when_not_a_terminal(run):
    out, texts = run
    r = invoke(out / "02-fuzzy", "--largest", 1)
    assert r.exit_code == 0, r.output
    assert "\x1b[" not in r.stdout
    manifest = read_manifest(out / "02-fuzzy")
    sizes = {}
    for m in manifest:
        if m["stage"] == "fuzzy" and m["cluster_id"] is not None:
            sizes[m["cluster_id"]] = sizes.get(m["cluster_id"], 0) + 1
    biggest = max(sizes, key=lambda k: (sizes[k], -k))
    assert r.stdout.startswith(f"fuzzy cluster {biggest}: {sizes[biggest]} documents")
    assert "[-" in r.stdout and "{+" in r.stdout
    assert r.stdout.count("DROPPED") == sizes[biggest] - 1


def test_color_flag_styles_the_diff(run):
    out, _ = run
    r = invoke(out / "02-fuzzy", "--largest", 1, "--color")
    assert r.exit_code == 0
    assert "\x1b[31m" in r.stdout and "\x1b[32m" in r.stdout  # red removed, green added
    assert "[-" not in r.stdout


def test_doc_shows_its_cluster_in_every_stage(run):
    out, texts = run
    manifest = read_manifest(out / "02-fuzzy")
    target = next(m for m in manifest if m["stage"] == "fuzzy" and not m["keep"])
    r = invoke(out, "--doc", target["doc_id"])
    assert r.exit_code == 0, r.output
    assert f"02-fuzzy cluster {target['cluster_id']}" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if f" {target['doc_id']} (" in ln)
    assert "<-- this document" in line and "DROPPED" in line
    assert f"{target['doc_id']}: kept: it has no duplicate in 01-exact" in r.stdout


def test_json_output_matches_the_manifest(run):
    out, texts = run
    manifest = read_manifest(out / "02-fuzzy")
    cid = next(m["cluster_id"] for m in manifest if m["stage"] == "fuzzy" and m["cluster_id"] is not None)
    r = invoke(out, "--cluster", cid, "--stage", "fuzzy", "--json")
    assert r.exit_code == 0, r.output
    (found,) = json.loads(r.stdout)
    members = [m for m in manifest if m["cluster_id"] == cid and m["stage"] == "fuzzy"]
    c = found["cluster"]
    assert found["stage"] == "02-fuzzy" and c["size"] == len(members)
    assert {c["rep"]["doc_id"], *(d["doc_id"] for d in c["dups"])} == {m["doc_id"] for m in members}
    assert c["rep"]["text"] == texts[c["rep"]["doc_id"]]
    for d in c["dups"]:
        assert "".join(t for tag, t in d["diff"] if tag != "-") == texts[d["doc_id"]]


def test_max_members_caps_the_list_and_says_so(run):
    out, _ = run
    r = invoke(out / "02-fuzzy", "--largest", 1, "--max-members", 1)
    assert r.exit_code == 0
    assert r.stdout.count("DROPPED") == 1 and "more (raise --max-members)" in r.stdout


def test_errors_name_the_fix(run, tmp_path):
    out, _ = run
    r = invoke(out, "--cluster", 987654)
    assert r.exit_code == 1 and "no cluster 987654" in r.stderr and "--largest" in r.stderr
    r = invoke(out, "--doc", "nope")
    assert r.exit_code == 1 and "doc_id 'nope' is not in" in r.stderr
    r = invoke(out, "--largest", 1, "--stage", "semantic")
    assert r.exit_code == 1 and "01-exact, 02-fuzzy" in r.stderr
    r = invoke(out)
    assert r.exit_code == 2 and "exactly one of" in r.stderr
    (tmp_path / "empty").mkdir()
    r = invoke(tmp_path / "empty", "--largest", 1)
    assert r.exit_code == 1 and "summary.json" in r.stderr
    with pytest.raises(ConfigError):
        api.inspect(str(out), cluster=1, doc="x")
    with pytest.raises(InputError):
        api.inspect(str(out), doc="nope")


def test_real_command_piped(run):
    out, _ = run
    p = run_subprocess("inspect", str(out / "02-fuzzy"), "--largest", "2")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count(" cluster ") == 2 and "\x1b[" not in p.stdout and "{+" in p.stdout


def test_identical_duplicate_is_not_printed_twice(run):
    out, texts = run
    r = invoke(out, "--largest", 1, "--stage", "01-exact")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    rep_id = lines[1].split()[1]
    assert lines[2].strip() == texts[rep_id]
    assert "same words" in lines[3] and lines[4].strip() == "(the representative's words; spacing may differ)"


def test_cutting_the_display_does_not_invent_differences(tmp_path):
    from tests.support import make_rows, write_parquet

    words = [f"word{i}" for i in range(1000)]
    other = list(words)
    other[900] = "WORD900"
    write_parquet(tmp_path / "d" / "a.parquet", make_rows([" ".join(words), " ".join(other)], prefix="L"))
    out = tmp_path / "out"
    api.exact([str(tmp_path / "d")], str(out), id_column="id", normalize="lower,whitespace")
    res = api.inspect(str(out), largest=1, max_chars=300)
    (f,) = res.findings
    (d,) = f.cluster.duplicates
    assert d.words == {"same": 999, "removed": 1, "added": 1, "same_ignoring_case": True}
    assert d.truncated and sum(len(t) for _, t in d.diff) == 300 and all(tag == "=" for tag, _ in d.diff)
    assert len(f.cluster.representative.text) == 300
    r = invoke(out, "--largest", 1, "--max-chars", 300)
    assert "-1 +1 words (same words ignoring case)" in r.stdout
