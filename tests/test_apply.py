"""`apply` writes kept rows in the input's own format, refuses changed or foreign shards."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.support import make_rows, write_jsonl, write_parquet
from dedupkit import api
from dedupkit.cli.main import cli
from dedupkit.errors import ManifestError


def _corpus(tmp_path):
    d = tmp_path / "data"
    write_parquet(d / "a.parquet", [{"id": "a0", "text": "alpha", "meta": {"k": 1}, "score": 0.5},
                                   {"id": "a1", "text": "beta", "meta": {"k": 2}, "score": 0.7}])
    write_jsonl(d / "b.jsonl", [{"id": "b0", "text": "alpha", "x": [1, 2]}, {"id": "b1", "text": "gamma"}])
    with gzip.open(d / "c.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"id": "c0", "text": "beta"}) + "\n" + json.dumps({"id": "c1", "text": "delta"}) + "\n")
    return d


def test_apply_keeps_formats_schema_and_columns(tmp_path):
    d = _corpus(tmp_path)
    api.exact([str(d)], str(tmp_path / "m"), id_column="id")
    res = api.apply([str(d)], [str(tmp_path / "m")], str(tmp_path / "clean"))
    clean = tmp_path / "clean"
    t = pq.read_table(clean / "a.parquet")
    assert t.schema == pq.read_table(d / "a.parquet").schema
    assert t.to_pylist() == pq.read_table(d / "a.parquet").to_pylist()  # both first copies kept
    assert (clean / "b.jsonl").read_text() == json.dumps({"id": "b1", "text": "gamma"}) + "\n"
    with gzip.open(clean / "c.jsonl.gz", "rt") as fh:
        assert [json.loads(line)["id"] for line in fh] == ["c1"]
    assert res.summary["rows"] == 6 and res.summary["kept"] == 4


def test_apply_with_two_manifests_drops_what_either_drops(tmp_path):
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", make_rows(["x", "x", "Y", "y"]))
    api.exact([str(d)], str(tmp_path / "m1"))
    api.exact([str(d)], str(tmp_path / "m2"), normalize="lower")
    api.apply([str(d)], [str(tmp_path / "m1"), str(tmp_path / "m2")], str(tmp_path / "c"))
    assert [json.loads(x)["text"] for x in (tmp_path / "c" / "a.jsonl").read_text().splitlines()] == ["x", "Y"]


def test_apply_refuses_changed_shard_and_writes_nothing(tmp_path):
    d = _corpus(tmp_path)
    api.exact([str(d)], str(tmp_path / "m"))
    with open(d / "b.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "b2", "text": "new"}) + "\n")
    with pytest.raises(ManifestError, match="b.jsonl changed since manifest"):
        api.apply([str(d)], [str(tmp_path / "m")], str(tmp_path / "clean"))
    assert not (tmp_path / "clean").exists()
    assert not list(tmp_path.glob("clean.tmp-*"))


def test_apply_refuses_foreign_shard(tmp_path):
    d = _corpus(tmp_path)
    api.exact([str(d / "a.parquet")], str(tmp_path / "m"))
    res = CliRunner().invoke(cli, ["apply", str(d), "-m", str(tmp_path / "m"), "-o", str(tmp_path / "c")])
    assert res.exit_code == 1 and "is not in manifest" in res.stderr


def test_apply_refuses_unfinished_manifest(tmp_path):
    d = _corpus(tmp_path)
    api.exact([str(d)], str(tmp_path / "m"))
    (tmp_path / "m" / "summary.json").unlink()
    with pytest.raises(ManifestError, match="no finished run"):
        api.apply([str(d)], [str(tmp_path / "m")], str(tmp_path / "clean"))
