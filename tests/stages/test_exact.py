"""The exact stage through the library and the CLI, on Parquet and JSONL."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.support import BASE_DOCS, make_rows, read_manifest, run_subprocess, write_jsonl, write_parquet
from tests.support.invariants import check_manifest
from dedupkit import api
from dedupkit.cli.main import cli
from dedupkit.errors import InputError, OutputError


def test_exact_finds_copies_and_whitespace_variants(corpus, tmp_path):
    out = tmp_path / "out"
    res = api.exact([str(corpus)], str(out), id_column="id")
    rows = read_manifest(out)
    assert len(rows) == len(BASE_DOCS)
    by_id = {r["doc_id"]: r for r in rows}
    # docs 0, 2 and 4 (whitespace/case... 4 differs in case, so only 0 and 2 match by default)
    assert by_id["s0-0"]["keep"] and not by_id["s0-2"]["keep"]
    assert by_id["s0-2"]["duplicate_of"] == "s0-0"
    assert not by_id["s1-0"]["keep"], "a case/whitespace variant is an exact duplicate by default"
    assert not by_id["s1-1"]["keep"] and by_id["s1-1"]["duplicate_of"] == "s0-1"
    assert not by_id["s1-3"]["keep"] and by_id["s1-3"]["duplicate_of"] == "s0-3"
    assert res.summary["counts"] == {**res.summary["counts"], "rows": 8, "kept": 4, "dropped": 4}
    check_manifest(rows, len(BASE_DOCS))
    assert {r["stage"] for r in rows} == {"exact"}


def test_whitespace_only_normalization_keeps_case_variants(corpus, tmp_path):
    out = tmp_path / "out"
    api.exact([str(corpus)], str(out), id_column="id", normalize="whitespace")
    by_id = {r["doc_id"]: r for r in read_manifest(out)}
    assert by_id["s1-0"]["keep"]
    api.exact([str(corpus)], str(tmp_path / "none"), id_column="id", normalize="none")
    by_id = {r["doc_id"]: r for r in read_manifest(tmp_path / "none")}
    assert by_id["s0-2"]["duplicate_of"] == "s0-0" and by_id["s1-0"]["keep"]


@pytest.mark.parametrize("keep,expected", [("first", "a"), ("last", "c"), ("longest", "b"), ("shortest", "a")])
def test_keep_policies(tmp_path, keep, expected):
    rows = [{"id": "a", "text": "same text", "q": 1}, {"id": "b", "text": "Same   text", "q": 3},
            {"id": "c", "text": "same text", "q": 2}]
    write_parquet(tmp_path / "d.parquet", rows)
    out = tmp_path / "o"
    api.exact([str(tmp_path / "d.parquet")], str(out), id_column="id", keep=keep)
    kept = [r["doc_id"] for r in read_manifest(out) if r["keep"]]
    # "longest" compares the raw text (b has extra spaces); a and c tie on length: lowest row wins
    assert kept == [expected]


def test_keep_by_column_both_orders(tmp_path):
    rows = [{"id": "a", "text": "x y", "q": 1}, {"id": "b", "text": "x y", "q": 3},
            {"id": "c", "text": "x y", "q": None}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    for order, want in [("desc", "b"), ("asc", "a")]:
        out = tmp_path / f"o-{order}"
        api.exact([str(tmp_path / "d.jsonl")], str(out), id_column="id", keep_by="q", keep_order=order)
        assert [r["doc_id"] for r in read_manifest(out) if r["keep"]] == [want]


def test_default_doc_ids_and_existing_output(corpus, tmp_path):
    out = tmp_path / "out"
    api.exact([str(corpus)], str(out))
    rows = read_manifest(out)
    assert rows[0]["doc_id"] == f"{rows[0]['shard']}:0"
    mtime = (out / "summary.json").stat().st_mtime_ns
    again = api.exact([str(corpus)], str(out))  # same command, same inputs: the finished run is reused
    assert again.reused and (out / "summary.json").stat().st_mtime_ns == mtime
    with pytest.raises(OutputError, match="other settings.*--overwrite"):
        api.exact([str(corpus)], str(out), keep="longest")
    assert not api.exact([str(corpus)], str(out), keep="longest", overwrite=True).reused


def test_duplicate_ids_are_an_error_naming_both_places(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", make_rows(["one", "two"]))
    write_parquet(tmp_path / "b.parquet", make_rows(["three"]))
    with pytest.raises(InputError, match=r"'d0'.*a.jsonl row 0 and .*b.parquet row 0"):
        api.exact([str(tmp_path)], str(tmp_path / "o"), id_column="id")
    assert not (tmp_path / "o" / "summary.json").exists()


def test_cli_prints_only_the_output_path(corpus, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["exact", str(corpus), "-o", str(out), "--id-column", "id"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    res = CliRunner().invoke(cli, ["exact", str(corpus), "-o", str(out), "--overwrite", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["counts"]["rows"] == 8


def test_cli_missing_text_column_lists_columns(corpus, tmp_path):
    res = CliRunner().invoke(cli, ["exact", str(corpus), "-o", str(tmp_path / "o"), "--text-column", "body"])
    assert res.exit_code == 1
    assert "column 'body' not found" in res.stderr and "id, text, n" in res.stderr.replace("'", "")
    assert "--text-column" in res.stderr


def test_real_subprocess_run(corpus, tmp_path):
    out = tmp_path / "out"
    p = run_subprocess("exact", str(corpus), "-o", str(out), "--id-column", "id", "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(out)
    assert len(read_manifest(out)) == len(BASE_DOCS)


def test_split_parquet_shard_gives_same_manifest(tmp_path):
    texts = [f"doc {i % 37} body" for i in range(500)]
    write_parquet(tmp_path / "big.parquet", make_rows(texts), row_group_size=50)
    from dedupkit.io.read import ReadSpec
    from dedupkit.runner import RunOptions, run_stage
    from dedupkit.stages.exact import ExactStage

    spec = ReadSpec(id_column="id", batch_size=16)
    a = run_stage(ExactStage(), [str(tmp_path / "big.parquet")], tmp_path / "a", spec, RunOptions())
    b = run_stage(ExactStage(), [str(tmp_path / "big.parquet")], tmp_path / "b", spec,
                  RunOptions(split_rows=120, workers=2))
    assert read_manifest(a.out) == read_manifest(b.out)
    assert pq.ParquetFile(tmp_path / "big.parquet").metadata.num_row_groups == 10


def _reference_groups(keys) -> list[set[int]]:
    groups: dict[tuple, set[int]] = {}
    for i, k in enumerate(map(tuple, keys.tolist())):
        groups.setdefault(k, set()).add(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=min)


@pytest.mark.parametrize("seed", range(5))
def test_group_labels_equal_a_dictionary_even_when_first_words_collide(seed):
    """Rows sharing the first hash word but not the second are interleaved by the one-word sort;
    grouping must still follow the whole key."""
    import numpy as np

    from dedupkit.stages.exact import group_labels

    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 4, size=(300, 2)).astype(np.uint64)  # many first-word collisions
    if seed == 0:
        keys[:, 1] = np.arange(300)  # first words collide, no full duplicate at all
    labels = group_labels(keys)
    got: dict[int, set[int]] = {}
    for i, lab in enumerate(labels.tolist()):
        if lab >= 0:
            got.setdefault(lab, set()).add(i)
    assert sorted(got.values(), key=min) == _reference_groups(keys)
    wide = rng.integers(0, 2**63, size=(5000, 2), dtype=np.uint64)
    wide[4000:] = wide[:1000]
    labels = group_labels(wide)
    assert (labels[:1000] == labels[4000:]).all() and (labels[1000:4000] == -1).all()
