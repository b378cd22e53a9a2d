"""More input formats: Arrow IPC (file/Feather v2 and stream), CSV/TSV, and Hugging Face
``save_to_disk`` folders, read by every stage and written back by ``apply`` in their own format."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from dedupkit.apply import apply_manifests
from dedupkit.errors import InputError
from dedupkit.io.read import ReadSpec
from dedupkit.io.shards import discover
from dedupkit.runner import RunOptions, run_stage
from dedupkit.stages.exact import ExactStage
from dedupkit.stages.fuzzy import FuzzyConfig, FuzzyStage

BASE = ["the quick brown fox jumps over the lazy dog near the river bank today and again",
        "a different sentence about databases, indexes and query planners in production",
        "Zürich naïve café, déjà vu: a text with accents that stays unique here",
        "rain is expected tomorrow across the northern region with strong winds later on"]


def _table(n: int = 40) -> pa.Table:
    texts = []
    for i in range(n):
        t = BASE[i % len(BASE)]
        texts.append(t if i % 3 else t + f" variant {i}")
    return pa.table({"id": [f"d{i:03d}" for i in range(n)], "text": texts,
                     "score": [i / 7 for i in range(n)], "tag": [None if i % 5 == 0 else f"t{i % 4}" for i in range(n)]})


def _write(fmt: str, table: pa.Table, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        path = folder / "c.parquet"
        pq.write_table(table, path)
    elif fmt == "feather":
        path = folder / "c.feather"
        feather.write_feather(table, path, chunksize=7)
    elif fmt == "arrow-stream":
        path = folder / "c.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            for rb in table.to_batches(max_chunksize=9):
                w.write_batch(rb)
    elif fmt in ("csv", "tsv"):
        path = folder / f"c.{fmt}"
        pcsv.write_csv(table, path, write_options=pcsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ","))
    elif fmt in ("hf", "hf-dict"):
        datasets = pytest.importorskip("datasets")
        dset = datasets.Dataset.from_dict(table.to_pydict())
        path = folder / "hf"
        if fmt == "hf":
            dset.save_to_disk(str(path), num_shards=2)
        else:
            datasets.DatasetDict({"train": dset, "test": dset.select(range(5))}).save_to_disk(str(path))
    else:
        raise AssertionError(fmt)
    return path


def _decisions(out: Path) -> list[tuple]:
    t = ds.dataset(str(out / "manifest")).to_table().sort_by([("doc_id", "ascending")])
    return list(zip(*(t.column(c).to_pylist() for c in ("doc_id", "keep", "duplicate_of", "score"))))


FORMATS = ["feather", "arrow-stream", "csv", "tsv", "hf"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_stage_decisions_equal_parquet_and_apply_writes_the_same_format(tmp_path, fmt, stage):
    table = _table()
    ref_in = _write("parquet", table, tmp_path / "pq")
    path = _write(fmt, table, tmp_path / "in")
    spec = ReadSpec(text_column="text", id_column="id", batch_size=5)
    make = ExactStage if stage == "exact" else (lambda: FuzzyStage(FuzzyConfig()))
    ref = run_stage(make(), [str(ref_in)], tmp_path / "ref", spec)
    got = run_stage(make(), [str(path)], tmp_path / "out", spec, RunOptions(split_bytes=600))
    assert got.summary["counts"]["rows"] == len(table)
    assert got.summary["counts"]["dropped"] > 0
    assert _decisions(got.out) == _decisions(ref.out)
    if fmt in ("feather", "arrow-stream", "hf"):
        assert got.summary["timings"]["scan_tasks"] > 1  # split by record batches

    clean = apply_manifests([str(path)], [str(got.out)], tmp_path / "clean")
    kept = {r[0] for r in _decisions(got.out) if r[1]}
    files = sorted(p for p in (tmp_path / "clean").rglob("*") if p.is_file() and not p.name.startswith("_"))
    if fmt == "hf":
        datasets = pytest.importorskip("datasets")
        back = pa.Table.from_pylist(datasets.load_from_disk(str(tmp_path / "clean")).to_list())
        assert {p.name for p in files} >= {"state.json", "dataset_info.json"}
    elif fmt in ("csv", "tsv"):
        (f,) = files
        assert f.suffix == "." + fmt
        back = pcsv.read_csv(f, parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ","))
    else:
        (f,) = files
        assert f.name == path.name
        with pa.memory_map(str(f)) as src:
            if fmt == "feather":
                back = pa.ipc.open_file(src).read_all()
            else:
                back = pa.ipc.open_stream(src).read_all()
        assert back.schema == table.schema
    assert back.column_names == table.column_names
    assert clean.summary["kept"] == len(kept) == back.num_rows
    if fmt in ("csv", "tsv"):  # what the input reads as, with the same options
        table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ","))
    expect = table.filter(pa.array([i in kept for i in table.column("id").to_pylist()]))
    assert back.to_pylist() == expect.to_pylist()


def test_hf_folders_read_their_data_files_only(tmp_path):
    _write("hf-dict", _table(), tmp_path)
    names = [s.name for s in discover([str(tmp_path / "hf")])]
    assert names == [f"{tmp_path}/hf/test/data-00000-of-00001.arrow", f"{tmp_path}/hf/train/data-00000-of-00001.arrow"]
    assert all(s.format == "arrow" for s in discover([str(tmp_path / "hf")]))


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_csv_bad_rows_name_their_row_and_skip_keeps_one_row_each(tmp_path, fmt):
    sep = "\t" if fmt == "tsv" else ","
    lines = ["id" + sep + "text"]
    for i in range(12):
        lines.append(f"d{i}{sep}\"body number {i % 4} with words\nand a second line\"")
    lines[5] = f"d4{sep}too{sep}many{sep}fields"  # row 4
    lines[9] = ""  # row 8: a blank line is a row of empty fields (as pyarrow and Python's csv read it)
    path = tmp_path / f"c.{fmt}"
    path.write_text("\n".join(lines) + "\n")
    spec = ReadSpec(text_column="text", id_column="id")
    with pytest.raises(InputError, match=rf"c\.{fmt}: row 4: 4 fields where the header has 2"):
        run_stage(ExactStage(), [str(path)], tmp_path / "fail", spec)
    res = run_stage(ExactStage(), [str(path)], tmp_path / "skip", ReadSpec(text_column="text", id_column="id",
                                                                         on_bad_record="skip"))
    assert [(b["row"], b["reason"]) for b in res.summary["bad_records"]] == [(4, "4 fields where the header has 2")]
    t = ds.dataset(str(res.out / "manifest")).to_table().sort_by("row")
    assert t.column("row").to_pylist() == list(range(12))
    ids = t.column("doc_id").to_pylist()
    assert ids[5] == "d5" and ids[8] == "" and ids[9] == "d9"  # rows after a bad one keep their numbers
    clean = apply_manifests([str(path)], [str(res.out)], tmp_path / "clean")
    back = pcsv.read_csv(tmp_path / "clean" / path.name, parse_options=pcsv.ParseOptions(
        delimiter=sep, newlines_in_values=True))
    assert back.column("id").to_pylist() == ["d0", "d1", "d2", "d3", ""]  # the rest: copies, bad
    assert clean.summary["rows"] == 12


def test_arrow_null_text_and_missing_column_name_the_fix(tmp_path):
    t = pa.table({"text": ["a b c", None, "d e f"]})
    path = tmp_path / "n.feather"
    feather.write_feather(t, path)
    with pytest.raises(InputError, match=r"n\.feather: row 1: null text in column 'text'"):
        run_stage(ExactStage(), [str(path)], tmp_path / "o", ReadSpec())
    with pytest.raises(InputError, match=r"column 'body' not found in .*n\.feather; columns are: text"):
        run_stage(ExactStage(), [str(path)], tmp_path / "o2", ReadSpec(text_column="body"))
    csv = tmp_path / "x.csv"
    csv.write_text("id,content\n1,hello\n")
    with pytest.raises(InputError, match=r"column 'text' not found in .*x\.csv; columns are: id, content; pass "
                                         r"--text-column"):
        run_stage(ExactStage(), [str(csv)], tmp_path / "o3", ReadSpec())


def test_a_parquet_file_named_arrow_is_refused(tmp_path):
    path = tmp_path / "wrong.arrow"
    pq.write_table(_table(4), path)
    with pytest.raises(InputError, match=r"wrong\.arrow: named as Arrow/Feather but it is a Parquet file; rename it "
                                         r"to end in \.parquet"):
        discover([str(path)])
    json_path = tmp_path / "state.json"
    json_path.write_text(json.dumps({"x": 1}) + "\n")  # a lone state.json is just JSON Lines
    assert discover([str(json_path)])[0].format == "jsonl"
