"""``dedupkit index create|add|info`` and ``dedupkit check`` on the command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.support import read_manifest, run_subprocess, write_jsonl, write_parquet
from dedupkit.cli.main import cli

HELD = [f"held document number {i} about topic {i * 7} with some words" for i in range(12)]


def _setup(tmp_path):
    write_parquet(tmp_path / "held" / "p0.parquet", [{"id": f"h{i}", "text": t} for i, t in enumerate(HELD[:6])])
    write_jsonl(tmp_path / "held" / "p1.jsonl", [{"id": f"h{i + 6}", "text": t} for i, t in enumerate(HELD[6:])])
    rows = [{"id": "d0", "text": HELD[1]}, {"id": "d1", "text": "brand new text one"},
            {"id": "d2", "text": HELD[8] + "\n"}, {"id": "d3", "text": "brand new text two"}]
    write_jsonl(tmp_path / "drop" / "new.jsonl", rows)
    return tmp_path / "held", tmp_path / "drop"


def test_cli_create_info_check_pass_and_fail(tmp_path):
    held, drop = _setup(tmp_path)
    idx = tmp_path / "corpus.idx"
    r = CliRunner().invoke(cli, ["index", "create", str(idx), "--from", str(held / "p0.parquet"),
                                 str(held / "p1.jsonl"), "--id-column", "id", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(idx)
    assert "indexed 12 documents from 2 shards" in r.stderr

    r = CliRunner().invoke(cli, ["index", "info", str(idx), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["documents"] == 12 and info["shards"] == 2 and info["settings"]["stages"] == ["exact"]
    assert info["bytes"] > 0

    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["check", str(drop), "--against", str(idx), "-o", str(out), "--id-column", "id",
                                 "--max-dup-rate", "0.5", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    assert "2 exact and 0 near copies of indexed documents" in r.stderr and "PASSED" in r.stderr
    m = {x["doc_id"]: x for x in read_manifest(out)}
    assert m["d0"]["matched_doc_id"] == "h1" and m["d0"]["matched_shard"].endswith("p0.parquet")
    assert m["d2"]["matched_doc_id"] == "h8" and m["d2"]["matched_shard"].endswith("p1.jsonl")
    assert m["d1"]["keep"] and m["d3"]["keep"]
    assert all(x["stage"] == "check" for x in m.values())

    r = CliRunner().invoke(cli, ["check", str(drop), "--against", str(idx), "-o", str(tmp_path / "out2"),
                                 "--id-column", "id", "--max-dup-rate", "0.25", "--update", "--json", "-q"])
    assert r.exit_code == 3, r.output
    summary = json.loads(r.stdout)
    assert summary["check"]["passed"] is False and summary["check"]["added_to_index"] == 0
    assert "above --max-dup-rate 0.25" in r.stderr and "FAILED" in r.stderr
    r = CliRunner().invoke(cli, ["index", "info", str(idx), "--json"])
    assert json.loads(r.stdout)["documents"] == 12


def test_cli_add_and_update(tmp_path):
    held, drop = _setup(tmp_path)
    idx = tmp_path / "i"
    assert CliRunner().invoke(cli, ["index", "create", str(idx), "-q"]).exit_code == 0
    r = CliRunner().invoke(cli, ["index", "add", str(idx), str(held), "--id-column", "id", "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["check", str(drop), "--against", str(idx), "-o", str(tmp_path / "o"),
                                 "--id-column", "id", "--update", "-q"])
    assert r.exit_code == 0, r.output
    assert "added 2 documents to the index (14 now)" in r.stderr


def test_cli_errors(tmp_path):
    held, drop = _setup(tmp_path)
    r = CliRunner().invoke(cli, ["check", str(drop), "--against", str(tmp_path / "missing.idx"), "-o",
                                 str(tmp_path / "o")])
    assert r.exit_code == 1 and "no such index" in r.stderr and "dedupkit index create" in r.stderr
    idx = tmp_path / "i"
    CliRunner().invoke(cli, ["index", "create", str(idx), "--from", str(held), "--id-column", "id", "-q"])
    r = CliRunner().invoke(cli, ["check", str(drop), "--against", str(idx), "-o", str(tmp_path / "o"),
                                 "--normalize", "nfkc"])
    assert r.exit_code == 1 and "other settings" in r.stderr
    r = CliRunner().invoke(cli, ["index", "create", str(idx), "--from", str(held)])
    assert r.exit_code == 1 and "--overwrite" in r.stderr
    r = CliRunner().invoke(cli, ["check", str(drop), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2
    r = CliRunner().invoke(cli, ["index", "add", str(idx), str(tmp_path / "nothing.jsonl")])
    assert r.exit_code == 1 and "nothing.jsonl" in r.stderr


def test_real_command_exit_code_3(tmp_path):
    held, drop = _setup(tmp_path)
    idx = tmp_path / "i"
    p = run_subprocess("index", "create", str(idx), "--from", str(held), "--id-column", "id")
    assert p.returncode == 0, p.stderr
    p = run_subprocess("check", str(drop), "--against", str(idx), "-o", str(tmp_path / "o"), "--id-column", "id",
                       "--max-dup-rate", "0.1")
    assert p.returncode == 3, p.stderr
    assert p.stdout.strip() == str(tmp_path / "o")
    assert len(read_manifest(tmp_path / "o")) == 4


# -- property: the check equals a plain oracle for exact keys -----------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from dedupkit import api  # noqa: E402

POOL = [f"text number {i} " + "word " * (i % 5) for i in range(8)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=st.lists(st.integers(0, 7), max_size=6), drop=st.lists(st.integers(0, 7), min_size=1, max_size=12),
       batch=st.integers(1, 5))
def test_check_matches_an_oracle(tmp_path_factory, held, drop, batch):
    d = tmp_path_factory.mktemp("p")
    idx = str(d / "i")
    write_jsonl(d / "held.jsonl", [{"id": f"h{i}", "text": POOL[t]} for i, t in enumerate(held)])
    api.index_create(idx, [str(d / "held.jsonl")] if held else [], id_column="id")
    # Split the drop over two shards to cross shard boundaries.
    half = len(drop) // 2
    if half:
        write_jsonl(d / "drop" / "a.jsonl", [{"id": f"d{i}", "text": POOL[t]} for i, t in enumerate(drop[:half])])
    write_jsonl(d / "drop" / "b.jsonl", [{"id": f"d{i + half}", "text": POOL[t]} for i, t in enumerate(drop[half:])])
    res = api.check([str(d / "drop")], str(d / "out"), idx, id_column="id", batch_size=batch)
    rows = read_manifest(d / "out")
    assert len(rows) == len(drop)
    by_id = {r["doc_id"]: r for r in rows}
    seen: dict[int, str] = {}
    for i, t in enumerate(drop):
        r = by_id[f"d{i}"]
        if t in held:
            assert not r["keep"] and r["matched_doc_id"] == f"h{held.index(t)}" == r["duplicate_of"]
        elif t in seen:
            assert not r["keep"] and r["duplicate_of"] == seen[t] and r["matched_doc_id"] is None
            assert by_id[seen[t]]["keep"]
        else:
            assert r["keep"]
            seen[t] = f"d{i}"
    assert res.summary["stats"]["duplicates"] == sum(not r["keep"] for r in rows)


def test_concurrent_appends_from_two_processes(tmp_path):
    import subprocess
    import sys

    from tests.support import SRC

    idx = tmp_path / "i"
    assert CliRunner().invoke(cli, ["index", "create", str(idx), "-q"]).exit_code == 0
    procs = []
    for k in range(2):
        write_jsonl(tmp_path / f"in{k}.jsonl", [{"text": f"doc {k} {i}"} for i in range(50)])
        procs.append(subprocess.Popen([sys.executable, "-m", "dedupkit", "index", "add", str(idx),
                                       str(tmp_path / f"in{k}.jsonl"), "-q"],
                                      env={**__import__("os").environ, "PYTHONPATH": SRC},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    info = json.loads(CliRunner().invoke(cli, ["index", "info", str(idx), "--json"]).stdout)
    assert info["documents"] == 100 and info["segments"] == 2 and info["shards"] == 2
