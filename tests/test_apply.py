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


# --- apply on an engine: one task per shard writes its clean shard --------------------------------

BOILER = "this licence header repeats word for word in every file of the corpus and then some more"


def every_format(d):
    """Every format apply writes back: Parquet, JSONL (plain and gzip), Arrow file and stream, CSV,
    TSV and a save_to_disk folder; exact copies across shards and a repeated passage in each."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.feather as feather

    texts = [f"{BOILER} doc {i} " + " ".join(f"w{(i * 7 + k) % 31}" for k in range(12)) for i in range(6)]

    def table(prefix):
        rows = [{"id": f"{prefix}{i}", "text": texts[i % 4] if i % 3 else f"{prefix} unique {i} {BOILER}",
                 "n": i} for i in range(8)]
        return pa.Table.from_pylist(rows)

    write_parquet(d / "a.parquet", table("a").to_pylist())
    write_jsonl(d / "sub" / "b.jsonl", table("b").to_pylist())
    with gzip.open(d / "c.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in table("c").to_pylist())
    feather.write_feather(table("e"), d / "e.feather", chunksize=3)
    with pa.OSFile(str(d / "f.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table("f").schema) as w:
        for rb in table("f").to_batches(max_chunksize=3):
            w.write_batch(rb)
    pcsv.write_csv(table("g"), d / "g.csv")
    pcsv.write_csv(table("h"), d / "h.tsv", write_options=pcsv.WriteOptions(delimiter="\t"))
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(table("k").to_pylist()).save_to_disk(str(d / "hf"), num_shards=2)
    return d


def clean_files(folder):
    """Every file below ``folder`` (relative path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_apply_on_the_local_engine_writes_the_same_bytes(tmp_path):
    d = every_format(tmp_path / "data")
    api.exact([str(d)], str(tmp_path / "ex"), id_column="id")
    api.substring([str(d)], str(tmp_path / "sub"), id_column="id", min_tokens=8)
    ms = [str(tmp_path / "ex"), str(tmp_path / "sub")]
    one = api.apply([str(d)], ms, str(tmp_path / "one"))
    two = api.apply([str(d)], ms, str(tmp_path / "two"), workers=2)
    files = clean_files(tmp_path / "one")
    assert len(files) >= 12 and files == clean_files(tmp_path / "two")
    assert one.summary == two.summary and one.summary["spans"] > 0 and 0 < one.summary["kept"] < one.summary["rows"]
    assert {s["output"] for s in one.summary["shards"]} >= {"a.parquet", "sub/b.jsonl", "c.jsonl.gz", "g.csv"}
    for s in one.summary["shards"]:  # each file's record: its size and checksum
        assert s["output_bytes"] == len(files[s["output"]]) and s["output_checksum"].startswith("xxh3_128:")


def test_apply_on_the_local_engine_refuses_a_changed_shard_or_part_and_writes_nothing(tmp_path):
    d = _corpus(tmp_path)
    api.exact([str(d)], str(tmp_path / "m"), id_column="id")
    part = next((tmp_path / "m" / "manifest").glob("*.parquet"))
    saved = part.read_bytes()
    part.write_bytes(saved[:-8] + b"\0" * 8)
    with pytest.raises(ManifestError, match="checksum differs"):
        api.apply([str(d)], [str(tmp_path / "m")], str(tmp_path / "clean"), workers=2)
    part.write_bytes(saved)
    write_jsonl(d / "b.jsonl", [{"id": "b0", "text": "changed"}, {"id": "b1", "text": "gamma"}])
    with pytest.raises(ManifestError, match="b.jsonl changed since manifest"):
        api.apply([str(d)], [str(tmp_path / "m")], str(tmp_path / "clean"), workers=2)
    assert not (tmp_path / "clean").exists()
    assert [p.name for p in tmp_path.iterdir() if "dedupkit-apply" in p.name] == []


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("change, message", [("shard", "names shard 'elsewhere.jsonl'"),
                                             ("row", "row 7 of shard .* is outside 0..1")])
def test_apply_refuses_a_part_naming_another_shard_or_row(tmp_path, workers, change, message):
    """Each part's shards and rows are checked against the summary, by the engine's checks too."""
    import pyarrow as pa

    d = _corpus(tmp_path)
    api.exact([str(d)], str(tmp_path / "m"), id_column="id")
    summary = tmp_path / "m" / "summary.json"
    s = json.loads(summary.read_text())
    del s["manifest_parts"]  # no checksums: the content checks must catch it
    summary.write_text(json.dumps(s))
    part = sorted((tmp_path / "m" / "manifest").glob("*.parquet"))[1]
    t = pq.read_table(part)
    i = t.schema.get_field_index(change)
    values = ["elsewhere.jsonl"] * len(t) if change == "shard" else [r + 6 for r in t.column("row").to_pylist()]
    pq.write_table(t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type)), part)
    with pytest.raises(ManifestError, match=message):
        api.apply([str(d)], [str(tmp_path / "m")], str(tmp_path / "clean"), workers=workers)
    assert not (tmp_path / "clean").exists()
