"""Shard discovery, readers and the bad-input messages of the foundation."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner

from tests.support import make_rows, read_manifest, write_jsonl, write_parquet
from dedupkit import api
from dedupkit.cli.main import cli
from dedupkit.errors import InputError
from dedupkit.io import ReadSpec, ShardReader, discover


def test_discover_files_folders_globs_sorted(tmp_path):
    write_jsonl(tmp_path / "d" / "b.jsonl", make_rows(["x"]))
    write_parquet(tmp_path / "d" / "sub" / "a.parquet", make_rows(["y"]))
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    (tmp_path / "d" / ".hidden.jsonl").write_text("{}")
    names = [s.name for s in discover([str(tmp_path / "d")])]
    assert names == [str(tmp_path / "d" / "b.jsonl"), str(tmp_path / "d" / "sub" / "a.parquet")]
    assert [s.name for s in discover([str(tmp_path / "d" / "**" / "*.parquet")])] == names[1:]
    # the same file named twice is read once; order of INPUT does not matter
    assert discover([names[1], names[0], names[0]]) == discover([names[0], names[1]])


def test_discover_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        discover([str(tmp_path / "missing.parquet")])
    (tmp_path / "x.xlsx").write_text("a,b")
    with pytest.raises(InputError, match="unknown format.*supported suffixes"):
        discover([str(tmp_path / "x.xlsx")])
    with pytest.raises(InputError, match="matches no supported shard"):
        discover([str(tmp_path / "*.jsonl")])


def test_symlink_loop_is_not_followed_forever(tmp_path):
    d = tmp_path / "d"
    write_jsonl(d / "a.jsonl", make_rows(["x"]))
    (d / "loop").symlink_to(d)
    assert len(discover([str(d)])) == 1


def test_compressed_jsonl(tmp_path):
    raw = "".join(json.dumps(r) + "\n" for r in make_rows(["a", "b", "a"]))
    (tmp_path / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw.encode()))
    out = tmp_path / "o"
    api.exact([str(tmp_path / "z.jsonl.zst")], str(out), id_column="id")
    assert [r["keep"] for r in read_manifest(out)] == [True, True, False]


def test_parquet_and_jsonl_give_the_same_decisions(tmp_path):
    rows = make_rows(["a b", "c", "a  b", "c", "d"])
    write_jsonl(tmp_path / "j" / "docs.jsonl", rows)
    write_parquet(tmp_path / "p" / "docs.parquet", rows)
    api.exact([str(tmp_path / "j")], str(tmp_path / "oj"), id_column="id")
    api.exact([str(tmp_path / "p")], str(tmp_path / "op"), id_column="id")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "shard"} for r in rs]  # noqa: E731
    assert strip(read_manifest(tmp_path / "oj")) == strip(read_manifest(tmp_path / "op"))


def _bad_jsonl(tmp_path):
    p = tmp_path / "bad.jsonl"
    lines = [json.dumps({"id": "a", "text": "fine"}).encode(), b'{"id": "b", "text": broken',
             json.dumps({"id": "c", "text": None}).encode(), b'{"id": "d", "text": "caf\xe9"}',
             json.dumps({"id": "e", "text": 5}).encode(), b"", json.dumps({"id": "f", "text": "fine"}).encode()]
    p.write_bytes(b"\n".join(lines) + b"\n")
    return p


@pytest.mark.parametrize("line,needle", [(2, "malformed JSON")])
def test_bad_jsonl_fails_naming_file_and_line(tmp_path, line, needle):
    p = _bad_jsonl(tmp_path)
    res = CliRunner().invoke(cli, ["exact", str(p), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert f"bad.jsonl: line {line}: {needle}" in res.stderr and "--on-bad-record skip" in res.stderr
    assert not (tmp_path / "o" / "summary.json").exists() and not (tmp_path / "o" / "manifest").exists()


def test_bad_jsonl_skip_counts_and_accounts_for_every_line(tmp_path):
    p = _bad_jsonl(tmp_path)
    res = api.exact([str(p)], str(tmp_path / "o"), id_column="id", on_bad_record="skip")
    rows = read_manifest(tmp_path / "o")
    assert [r["row"] for r in rows] == list(range(7))
    reasons = {r["row"]: r["reason"] for r in rows if (r["reason"] or "").startswith("bad record")}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "malformed JSON" in reasons[1] and "null text" in reasons[2] and "UTF-8" in reasons[3]
    assert "int, not a string" in reasons[4] and "blank line" in reasons[5]
    assert res.summary["counts"]["bad_records"] == 5
    assert {b["line"] for b in res.summary["bad_records"]} == {2, 3, 4, 5, 6}
    assert [r["doc_id"] for r in rows if r["keep"]] == ["a"]  # f duplicates a
    api.apply([str(p)], [str(tmp_path / "o")], str(tmp_path / "c"))
    assert (tmp_path / "c" / "bad.jsonl").read_text().splitlines() == [json.dumps({"id": "a", "text": "fine"})]


def test_parquet_null_text_and_wrong_type(tmp_path):
    write_parquet(tmp_path / "n.parquet", [{"text": "x"}, {"text": None}, {"text": "x"}])
    with pytest.raises(InputError, match=r"n.parquet: row 1: null text"):
        api.exact([str(tmp_path / "n.parquet")], str(tmp_path / "o"))
    res = api.exact([str(tmp_path / "n.parquet")], str(tmp_path / "o2"), on_bad_record="skip")
    assert res.summary["counts"] == {**res.summary["counts"], "rows": 3, "kept": 1, "bad_records": 1}
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "i.parquet")
    with pytest.raises(InputError, match="has type int64, not a string"):
        api.exact([str(tmp_path / "i.parquet")], str(tmp_path / "o3"))


def test_empty_and_corrupt_files(tmp_path):
    (tmp_path / "e.jsonl").write_bytes(b"")
    with pytest.raises(InputError, match="e.jsonl: the file is empty"):
        api.exact([str(tmp_path / "e.jsonl")], str(tmp_path / "o"))
    write_parquet(tmp_path / "t.parquet", make_rows(["a"] * 100))
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.parquet: not a readable Parquet file.*truncated"):
        api.exact([str(tmp_path / "t.parquet")], str(tmp_path / "o"))


def test_reader_bounds_batches(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", make_rows([f"t{i}" for i in range(25)]))
    from dedupkit.io.shards import Shard

    r = ShardReader(Shard("a", str(tmp_path / "a.jsonl"), "jsonl"), ReadSpec(batch_size=10))
    assert [len(b) for b in r] == [10, 10, 5] and r.n_rows == 25
