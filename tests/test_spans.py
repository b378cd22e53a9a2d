"""The span manifest: schema and validation, merging, cutting, the runner's spans/ and apply."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import write_jsonl, write_parquet
from dedupkit import api
from dedupkit.errors import ManifestError
from dedupkit.io.read import Batch, ReadSpec
from dedupkit.runner import run_stage
from dedupkit.spans import (
    SPAN_SCHEMA, SpanWriter, corpus_span_table, cut_array, cut_text, merge_spans, read_spans, span_table,
)
from dedupkit.stages.base import Decisions, Mapper, Stage

TEXT_ALPHABET = st.sampled_from(list("ab \n") + ["日", "本", "😀", "\u0301", "ß"])


def test_span_table_sorts_and_rejects_overlap():
    t = span_table("s", [1, 0, 0], ["s:1", "s:0", "s:0"], [0, 10, 0], [4, 12, 5], "substring",
                   duplicate_start=[-1, 3, 0])
    assert t.schema == SPAN_SCHEMA
    assert t.column("row").to_pylist() == [0, 0, 1] and t.column("start").to_pylist() == [0, 10, 0]
    assert t.column("duplicate_start").to_pylist() == [0, 3, None]
    with pytest.raises(ManifestError, match="overlaps"):
        span_table("s", [0, 0], ["s:0", "s:0"], [0, 3], [4, 6], "x")
    with pytest.raises(ManifestError, match="empty or negative"):
        span_table("s", [0], ["s:0"], [3], [3], "x")
    # touching spans are fine
    assert len(span_table("s", [0, 0], ["s:0", "s:0"], [0, 4], [4, 6], "x")) == 2


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30), st.integers(1, 8)), max_size=30))
@settings(max_examples=200, deadline=None)
def test_merge_spans_equals_union(items):
    rows = [r for r, _, _ in items]
    starts = [s for _, s, _ in items]
    ends = [s + n for _, s, n in items]
    r, s, e = merge_spans(rows, starts, ends)
    covered = {(a, p) for a, b, n in items for p in range(b, b + n)}
    assert {(a, p) for a, b, c in zip(r, s, e) for p in range(b, c)} == covered
    # sorted, and neither overlapping nor touching within a row
    for i in range(1, len(r)):
        assert (r[i], s[i]) > (r[i - 1], s[i - 1])
        if r[i] == r[i - 1]:
            assert s[i] > e[i - 1]


def _char_spans(text: str, cuts: list[tuple[int, int]]) -> tuple[list[int], list[int], str]:
    """Byte spans for character spans, and the expected text (reference cut on characters)."""
    off = [0]
    for ch in text:
        off.append(off[-1] + len(ch.encode()))
    merged = []
    for a, b in sorted(cuts):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    expected = "".join(ch for i, ch in enumerate(text) if not any(a <= i < b for a, b in merged))
    return [off[a] for a, _ in merged], [off[b] for _, b in merged], expected


@given(st.lists(st.tuples(st.text(TEXT_ALPHABET, max_size=12), st.lists(st.tuples(st.integers(0, 12), st.integers(1, 4)),
                                                                         max_size=3)), min_size=1, max_size=6),
       st.booleans(), st.integers(0, 2))
@settings(max_examples=200, deadline=None)
def test_cut_array_matches_reference(docs, large, slice_from):
    texts = [t for t, _ in docs]
    idx, starts, ends, expected = [], [], [], []
    for i, (t, cuts) in enumerate(docs):
        cuts = [(a, min(a + n, len(t))) for a, n in cuts if a < len(t)]
        s, e, exp = _char_spans(t, cuts)
        idx += [i] * len(s)
        starts += s
        ends += e
        expected.append(exp)
    arr = pa.array(["pad"] * slice_from + texts, pa.large_string() if large else pa.string()).slice(slice_from)
    out = cut_array(arr, idx, starts, ends)
    assert out.type == arr.type
    assert out.to_pylist() == expected


def test_cut_text_and_boundaries():
    assert cut_text("keep THIS keep", [5], [10]) == "keep keep"
    assert cut_text("日本語テキスト", [3], [9]) == "日テキスト"
    assert cut_text(b"abcdef", [0, 4], [2, 6]) == b"cd"
    with pytest.raises(ManifestError, match="splits a UTF-8 character"):
        cut_text("日本語", [1], [3])
    with pytest.raises(ManifestError, match="splits a UTF-8 character"):
        cut_text("a😀b", [0], [2])
    with pytest.raises(ManifestError, match="runs past"):
        cut_text("abc", [1], [9])


def test_cut_array_keeps_nulls_and_refuses_span_on_null():
    arr = pa.array(["abc", None, "defg"])
    assert cut_array(arr, [2], [1], [3]).to_pylist() == ["abc", None, "dg"]
    with pytest.raises(ManifestError, match="null"):
        cut_array(arr, [1], [0], [1])


class FirstWordMapper(Mapper):
    def map_batch(self, batch: Batch) -> dict[str, np.ndarray]:
        texts = batch.text.to_pylist()
        return {"first": np.array([len(t.split(" ")[0].encode()) for t in texts], np.int64),
                "nbytes": np.array([len(t.encode()) for t in texts], np.int64)}

    def empty(self):
        return {"first": np.zeros(0, np.int64), "nbytes": np.zeros(0, np.int64)}


class CutFirstWord(Stage):
    """A real (tiny) span stage: cuts each document's first word; drops documents of one word."""

    name = "cutfirst"

    def mapper(self):
        return FirstWordMapper()

    def identify(self, corpus, workdir: str) -> Decisions:
        first = corpus.feature("first").astype(np.int64)
        n = len(corpus)
        has = np.flatnonzero(first > 0)
        writer = SpanWriter(f"{workdir}/spans")
        half = len(has) // 2  # two parts, as two tasks would write
        for part, sel in enumerate((has[:half], has[half:])):
            writer.write(corpus_span_table(corpus, sel, np.zeros(len(sel), np.int64), first[sel], self.name,
                                           duplicate_index=np.where(sel > 0, 0, -1),
                                           duplicate_start=np.where(sel > 0, 0, -1)), part)
        idx = np.arange(n, dtype=np.int64)
        keep = corpus.feature("nbytes").astype(np.int64) > first  # a one-word document is cut to nothing: dropped
        return Decisions(representative=idx, labels=np.full(n, -1, np.int64), score=np.full(n, np.nan),
                         keep=keep, spans=str(writer.directory))


def _docs():
    return ["alpha beta gamma", "日本語 テキスト", "😀 emoji e\u0301 marks", "single", "ßtraße weg"]


def test_runner_writes_spans_and_apply_cuts_parquet_and_jsonl(tmp_path):
    d = tmp_path / "data"
    rows = [{"id": f"p{i}", "text": t, "n": i, "meta": {"k": [i]}} for i, t in enumerate(_docs())]
    write_parquet(d / "a.parquet", rows)
    write_jsonl(d / "b.jsonl", [{"id": f"j{i}", "text": t, "x": 1.5, "u": "ü"} for i, t in enumerate(_docs())])
    with gzip.open(d / "c.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "g0", "text": "zip me"}) + "\n")
    out = tmp_path / "out"
    res = run_stage(CutFirstWord(), [str(d)], out, ReadSpec(id_column="id"))
    spans = read_spans(out)
    assert len(spans) == 11 and res.summary["counts"]["spans"] == 11
    first_bytes = sum(len(t.split(" ")[0].encode()) for t in _docs()) * 2 + 3
    assert res.summary["counts"]["bytes_cut"] == first_bytes
    assert res.summary["counts"]["documents_cut"] == 11
    assert spans.column("duplicate_of").to_pylist()[0] is None  # global index 0 keeps none
    assert set(spans.column("duplicate_of").to_pylist()[1:]) == {"p0"}
    assert not (out / ".work").exists()
    clean = tmp_path / "clean"
    res = api.apply([str(d)], [str(out)], str(clean))
    t = pq.read_table(clean / "a.parquet")
    assert t.schema == pq.read_table(d / "a.parquet").schema
    want = [" beta gamma", " テキスト", " emoji e\u0301 marks", " weg"]
    assert t.column("text").to_pylist() == want
    assert t.column("meta").to_pylist() == [{"k": [i]} for i in (0, 1, 2, 4)]
    lines = (clean / "b.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [{"id": f"j{i}", "text": w, "x": 1.5, "u": "ü"}
                                              for i, w in zip((0, 1, 2, 4), want)]
    with gzip.open(clean / "c.jsonl.gz", "rt") as fh:
        assert json.loads(fh.read()) == {"id": "g0", "text": " me"}


def test_apply_merges_spans_of_two_manifests_with_a_plain_one(tmp_path):
    d = tmp_path / "data"
    write_jsonl(d / "b.jsonl", [{"text": t} for t in ["one two three", "one two three", "four five"]])
    run_stage(CutFirstWord(), [str(d)], tmp_path / "c1", ReadSpec())
    run_stage(CutFirstWord(), [str(d)], tmp_path / "c2", ReadSpec())
    api.exact([str(d)], str(tmp_path / "ex"))
    api.apply([str(d)], [str(tmp_path / "c1"), str(tmp_path / "c2"), str(tmp_path / "ex")], str(tmp_path / "clean"))
    out = [json.loads(x)["text"] for x in (tmp_path / "clean" / "b.jsonl").read_text().splitlines()]
    assert out == [" two three", " five"]


def test_read_spans_rejects_broken_parts(tmp_path):
    bad = pa.table({"shard": ["s", "s"], "row": [0, 0], "doc_id": ["s:0", "s:0"], "start": [0, 2], "end": [5, 6],
                    "stage": ["x", "x"], "duplicate_of": pa.nulls(2, pa.string()),
                    "duplicate_start": pa.nulls(2, pa.int64()), "source": pa.nulls(2, pa.string())})
    (tmp_path / "spans").mkdir()
    pq.write_table(bad, tmp_path / "spans" / "part-00000.parquet")
    with pytest.raises(ManifestError, match="overlaps"):
        read_spans(tmp_path / "spans")
    assert len(read_spans(tmp_path / "spans", validate=False)) == 2
    assert len(read_spans(tmp_path / "nothing")) == 0
