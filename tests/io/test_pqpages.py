"""Row ranges of one Parquet row group read from only the pages holding them (dedupkit.io.pqpages):
the same rows as pyarrow's whole read for every writer setting, fewer bytes decoded, and the scan's
tasks of one big row group are cut at page starts."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dedupkit.errors import InputError
from dedupkit.io import pqpages
from dedupkit.io.read import ReadSpec, ShardReader
from dedupkit.io.shards import Piece, discover
from dedupkit.scan import plan_tasks
from dedupkit.stages.exact import ExactStage

N = 3000


def _table(seed: int = 1, nulls: bool = False, str_ids: bool = False) -> pa.Table:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(["a", "bb", "ccc", "dddd", "é", "zz"]) for _ in range(rng.randint(1, 40)))
             + f" {i % 700 if i < N // 3 else i}" for i in range(N)]
    if nulls:
        for i in rng.sample(range(N), 40):
            texts[i] = None
    ids = [f"doc-{i}" for i in range(N)] if str_ids else list(range(N))
    return pa.table({"id": pa.array(ids), "text": pa.array(texts, pa.string()), "n": pa.array(range(N), pa.int32())})


WRITERS = {
    # a dictionary that overflows: dictionary-encoded pages first, plain ones after
    "v1-zstd-dict": dict(compression="zstd", data_page_size=2_000, dictionary_pagesize_limit=8_000),
    "v1-snappy-nodict": dict(compression="snappy", use_dictionary=False, data_page_size=3_000),
    "v2-none": dict(compression="none", data_page_version="2.0", data_page_size=2_500, dictionary_pagesize_limit=8_000),
    "rows-per-page": dict(compression="gzip", max_rows_per_page=97),
    "page-index": dict(compression="zstd", data_page_size=2_000, write_page_index=True,
                       dictionary_pagesize_limit=8_000),
    "large-string": dict(compression="zstd", data_page_size=2_000, dictionary_pagesize_limit=8_000),
}


def _write(path, table, **kw):
    # pages end at write batches: small batches, many pages
    pq.write_table(table, path, row_group_size=N, write_batch_size=kw.pop("write_batch_size", 50), **kw)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("nulls", [False, True])
def test_ranges_equal_the_whole_read(tmp_path, writer, nulls):
    table = _table(nulls=nulls, str_ids=writer == "v2-none")
    if writer == "large-string":
        table = table.set_column(1, "text", table.column("text").cast(pa.large_string()))
    path = tmp_path / "one.parquet"
    _write(path, table, **WRITERS[writer])
    whole = pq.read_table(path, columns=["text", "id", "n"])
    leaves = [1, 0, 2]
    rng = random.Random(7)
    ranges = [(0, N), (0, 1), (N - 1, N), (1234, 1235), (0, N // 2), (N // 2, N)]
    ranges += [tuple(sorted(rng.sample(range(N + 1), 2))) for _ in range(12)]
    with open(path, "rb") as fh:
        group = pqpages.PagedGroup(fh, path.stat().st_size, 0, leaves)
        assert len([p for p in group.pages[1] if p.kind in (0, 3)]) > 5  # the text column has many pages
        for lo, hi in ranges:
            if hi == lo:
                continue
            batches = group.iter_batches(["text", "id", "n"], lo, hi, batch_size=333)
            if batches is None:  # nothing to skip: only for a range covering every page
                assert (lo, hi) == (0, N) or lo == 0 and hi > N - 200
                continue
            got = pa.Table.from_batches(list(batches))
            assert got.equals(whole.slice(lo, hi - lo)), (lo, hi)


def test_a_late_range_reads_only_its_pages(tmp_path):
    """The small file built for the last tenth holds about a tenth of the text column's bytes:
    pages before the range are neither read nor decoded."""
    path = tmp_path / "one.parquet"
    _write(path, _table(), compression="none", use_dictionary=False, data_page_size=2_000)
    col = pq.ParquetFile(path).metadata.row_group(0).column(1)
    with open(path, "rb") as fh:
        footer, _ = pqpages.read_footer(fh, path.stat().st_size)
        rng = pqpages.column_range(fh, footer, 0, 1, N - N // 10, N)
    assert rng is not None
    assert rng.first_row >= N - N // 10 - 200 and rng.first_row + rng.rows == N
    assert rng.size < 0.15 * col.total_compressed_size


def test_thrift_round_trip_of_a_real_footer(tmp_path):
    """The footer decodes and encodes back to the same bytes (fields this module does not know
    included: the key-value metadata, column orders, statistics)."""
    path = tmp_path / "one.parquet"
    _write(path, _table(nulls=True), compression="zstd", data_page_size=2_000, write_page_index=True)
    data = path.read_bytes()
    n = int.from_bytes(data[-8:-4], "little")
    raw = data[-8 - n:-8]
    fields = pqpages._read_struct(pqpages._Reader(raw))
    out = bytearray()
    pqpages._write_struct(out, fields)
    assert bytes(out) == raw


def test_reader_piece_of_one_group_uses_pages(tmp_path):
    """ShardReader with a piece of one row group gives the whole read's rows (bad records
    included) and goes through the paged path."""
    path = tmp_path / "one.parquet"
    _write(path, _table(nulls=True), compression="zstd", data_page_size=2_000)
    shard = discover([str(path)])[0]
    spec = ReadSpec(id_column="id", on_bad_record="skip", batch_size=100)
    whole = list(ShardReader(shard, spec))
    parts, bad = [], []
    for a, b in [(0, 1000), (1000, 1900), (1900, N)]:
        reader = ShardReader(shard, spec, piece=Piece(a, b))
        parts += list(reader)
        bad += [r.row for r in reader.bad]
        assert reader.n_rows == b
    assert np.concatenate([p.rows for p in parts]).tolist() == np.concatenate([p.rows for p in whole]).tolist()
    assert pa.concat_arrays([p.text for p in parts]).equals(pa.concat_arrays([p.text for p in whole]))
    assert pa.concat_arrays([p.ids for p in parts]).equals(pa.concat_arrays([p.ids for p in whole]))
    assert len(bad) == 40
    # the paged path is taken for a middle piece
    reader = ShardReader(shard, spec, piece=Piece(1000, 1900))
    assert reader._paged(pq.ParquetFile(path), 0, 1000, 1900) is not None


def test_corrupt_page_header_is_a_clear_error(tmp_path):
    path = tmp_path / "one.parquet"
    _write(path, _table(), compression="none", use_dictionary=False, data_page_size=2_000)
    with open(path, "rb") as fh:
        footer, _ = pqpages.read_footer(fh, path.stat().st_size)
        pages = pqpages.chunk_pages(fh, footer, 0, 1)
    victim = pages[len(pages) // 2]
    data = bytearray(path.read_bytes())
    data[victim.offset:victim.offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    shard = discover([str(path)])[0]
    with pytest.raises(InputError, match="one.parquet"):
        list(ShardReader(shard, ReadSpec(), piece=Piece(N // 2, N)))


def test_planner_cuts_one_group_at_page_starts_even_for_exact(tmp_path):
    """A row group whose text pages can be read alone is cut into equal ranges at page starts, for
    exact too (no range decodes the rows before it) when there are workers to run them: with one
    process, exact's pieces are at least CHEAP_MIN_PIECE_BYTES of text (cutting gains nothing)."""
    path = tmp_path / "one.parquet"
    _write(path, _table(), compression="zstd", max_rows_per_page=100)
    shards = discover([str(path)])
    size = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    assert len(plan_tasks(shards, ReadSpec(), ExactStage().mapper(), "/nonexistent", "k", split_bytes=size // 4 + 1,
                          workers=1)) == 1
    tasks = plan_tasks(shards, ReadSpec(), ExactStage().mapper(), "/nonexistent", "k", split_bytes=size // 4 + 1,
                       workers=2)
    cuts = [t.piece.start for t in tasks] + [tasks[-1].piece.stop]
    assert len(tasks) == 4 and cuts[0] == 0 and cuts[-1] == N
    assert all(c % 100 == 0 for c in cuts)  # page starts
    sizes = np.diff(cuts)
    assert sizes.max() - sizes.min() <= 100
