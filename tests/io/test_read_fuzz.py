"""Fuzzing the shard readers with hypothesis: whatever the bytes, a reader either raises InputError
(naming the shard) or accounts for every line exactly once (a good record or a counted bad one).

The run is bounded by ``max_examples`` (``DEDUPKIT_FUZZ_EXAMPLES``, default 150 per test), so it
fits in CI; raise it locally for a longer hunt.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupkit.errors import InputError
from dedupkit.io.read import ReadSpec, ShardReader, count_rows
from dedupkit.io.shards import Shard

pytestmark = pytest.mark.slow  # hypothesis fuzzing of both readers

EXAMPLES = int(os.environ.get("DEDUPKIT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

texts = st.text(max_size=40)
good_record = st.builds(lambda t, i: json.dumps({"text": t, "id": i}, ensure_ascii=bool(i % 2)).encode(),
                        texts, st.integers(0, 10**6))
hostile_record = st.one_of(
    st.binary(max_size=60),  # random bytes, often invalid UTF-8, may hold newlines
    st.just(b""), st.just(b"   "), st.just(b"\xef\xbb\xbf{\"text\": \"bom\"}"),
    st.builds(lambda v: json.dumps(v).encode(), st.one_of(
        st.none(), st.integers(), st.lists(st.integers(), max_size=3), st.text(max_size=10),
        st.fixed_dictionaries({"text": st.one_of(st.none(), st.integers(), st.floats(allow_nan=False),
                                                 st.lists(st.text(max_size=3), max_size=2))}),
        st.fixed_dictionaries({"body": texts}),
        st.fixed_dictionaries({"text": texts, "id": st.one_of(st.none(), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))}),
    )),
    st.builds(lambda t, cut: json.dumps({"text": t}).encode()[:cut], texts, st.integers(0, 30)),  # truncated
    st.builds(lambda n: b'{"text": "' + b"x" * n + b'"}', st.integers(1000, 3000)),  # over the 1 KiB limit
    st.builds(lambda t: json.dumps({"text": t}).encode("utf-8").replace(b"\\u00e9", "\u00e9".encode("latin-1")),
              texts),
)
lines_st = st.lists(st.one_of(good_record, hostile_record), max_size=25)


def _write(tmp: Path, name: str, data: bytes) -> Shard:
    p = tmp / name
    p.write_bytes(data)
    fmt = "parquet" if name.endswith(".parquet") else "jsonl"
    comp = "gzip" if name.endswith(".gz") else None
    return Shard(name=name, path=str(p), format=fmt, compression=comp)


def _read_all(shard: Shard, spec: ReadSpec, skip_rows=None):
    reader = ShardReader(shard, spec, skip_rows=skip_rows)
    rows, n_text = [], 0
    for b in reader:
        assert len(b.rows) == len(b.text) and (b.ids is None or len(b.ids) == len(b.rows))
        assert b.text.null_count == 0
        b.text.validate(full=True)  # every yielded text is valid UTF-8
        rows.extend(b.rows.tolist())
        n_text += len(b.text)
    return reader, rows


def _check_accounting(reader: ShardReader, rows: list[int], skip: set[int]) -> None:
    bad = [b.row for b in reader.bad]
    assert rows == sorted(set(rows)), "rows must be strictly increasing"
    assert not set(rows) & set(bad), "a row was both good and bad"
    assert not (set(rows) | set(bad)) & skip, "a skipped row was read"
    assert set(rows) | set(bad) | skip == set(range(reader.n_rows)), "a line was lost"
    for b in reader.bad:
        assert b.reason and 0 <= b.row < reader.n_rows


@FUZZ
@given(lines=lines_st, sep=st.sampled_from([b"\n", b"\r\n"]), trailing=st.booleans(),
       gz=st.booleans(), batch=st.integers(1, 5), id_col=st.booleans(), data=st.data())
def test_fuzz_jsonl(tmp_path_factory, lines, sep, trailing, gz, batch, id_col, data):
    tmp = tmp_path_factory.mktemp("fz")
    raw = sep.join(lines) + (sep if trailing and lines else b"")
    shard = _write(tmp, "s.jsonl.gz" if gz else "s.jsonl", gzip.compress(raw, mtime=0) if gz else raw)
    n_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
    skip = set(data.draw(st.sets(st.integers(0, max(n_lines - 1, 0)), max_size=3))) if n_lines else set()
    spec = ReadSpec(text_column="text", id_column="id" if id_col else None, batch_size=batch,
                    on_bad_record="skip", max_record_bytes=1024)
    try:
        reader, rows = _read_all(shard, spec, np.array(sorted(skip), np.int64))
    except InputError as exc:
        # In skip mode only file-level problems fail: an empty file, or a first JSON object
        # without the text field (a wrong --text-column, not a bad record).
        msg = str(exc)
        assert (len(raw) == 0 and msg.startswith("s.jsonl")) or \
            msg.startswith(f"column 'text' not found in {shard.name} (line "), msg
        return
    assert reader.n_rows == n_lines == count_rows(shard)
    _check_accounting(reader, rows, skip)
    # fail mode: the same good rows, or an InputError naming the shard and the first bad line
    strict = ReadSpec(**{**spec.__dict__, "on_bad_record": "fail"})
    try:
        _, rows2 = _read_all(shard, strict, np.array(sorted(skip), np.int64))
        assert rows2 == rows and not reader.bad
    except InputError as exc:
        first = min(b.row for b in reader.bad)
        assert str(exc).startswith(f"{shard.name}: line {first + 1}: ") or \
            str(exc).startswith(f"column 'text' not found in {shard.name} (line "), exc


def _parquet_bytes(texts_: list[str | None], row_group_size: int, compression: str) -> bytes:
    sink = pa.BufferOutputStream()
    t = pa.table({"text": pa.array(texts_, pa.string()), "id": pa.array(range(len(texts_)), pa.int64())})
    pq.write_table(t, sink, row_group_size=row_group_size, compression=compression)
    return sink.getvalue().to_pybytes()


@FUZZ
@given(texts_=st.lists(st.one_of(st.none(), texts), min_size=1, max_size=30),
       rg=st.integers(1, 10), compression=st.sampled_from(["none", "snappy", "zstd"]),
       mutation=st.sampled_from(["none", "truncate", "flip", "zero"]), data=st.data())
def test_fuzz_parquet(tmp_path_factory, texts_, rg, compression, mutation, data):
    tmp = tmp_path_factory.mktemp("fp")
    raw = bytearray(_parquet_bytes(texts_, rg, compression))
    if mutation == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif mutation == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[pos] ^= data.draw(st.integers(1, 255))
    elif mutation == "zero":
        a = data.draw(st.integers(0, len(raw) - 1))
        raw[a: a + data.draw(st.integers(1, 64))] = b"\0" * len(raw[a: a + 64])
    shard = _write(tmp, "s.parquet", bytes(raw))
    spec = ReadSpec(text_column="text", id_column="id", batch_size=data.draw(st.integers(1, 8)),
                    on_bad_record="skip")
    try:
        reader, rows = _read_all(shard, spec)
    except InputError as exc:
        assert str(exc).startswith("s.parquet") or "in s.parquet" in str(exc), exc
        assert mutation != "none", f"an intact file failed: {exc}"
        return
    if mutation == "none":
        assert reader.n_rows == len(texts_)
        assert [b.row for b in reader.bad] == [i for i, t in enumerate(texts_) if t is None]
    _check_accounting(reader, rows, set())
