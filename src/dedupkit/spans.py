"""The span manifest: passages cut out of documents (substring dedup, decontamination ``--mode cut``).

A stage that removes part of a document writes, besides ``OUT/manifest/``, the folder
``OUT/spans/``: Parquet parts holding one row per cut span (see ``STYLE.md``)::

    shard, row, doc_id     the document the span is cut from (as in the manifest)
    start, end             half-open UTF-8 byte offsets into the text, on character boundaries
    stage                  the stage that cut it
    duplicate_of           doc_id holding the occurrence that is kept (null when none is kept)
    duplicate_start        byte offset of that occurrence (null when none is kept)
    source                 what it matched when not this corpus (an eval set and item id), else null

Spans of one document are sorted by ``start`` and never overlap (touching is allowed).

How a stage uses this module: build tables with :func:`span_table` (or :func:`corpus_span_table`
from global document indices), write them with a :class:`SpanWriter` into a folder under its work
folder, and return that folder as ``Decisions.spans``; :func:`dedupkit.runner.run_stage` validates
the spans, moves them to ``OUT/spans`` and counts spans and bytes cut in ``summary.json``.
``apply`` (:mod:`dedupkit.apply`) cuts them with :func:`cut_array` / :func:`cut_text`.

Example:
    >>> cut_text("keep THIS keep", [5], [10])
    'keep keep'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedupkit.errors import ManifestError

SPANS_DIR = "spans"
SPAN_COLUMNS = ("shard", "row", "doc_id", "start", "end", "stage", "duplicate_of", "duplicate_start", "source")
SPAN_SCHEMA = pa.schema([
    ("shard", pa.string()),
    ("row", pa.int64()),
    ("doc_id", pa.string()),
    ("start", pa.int64()),
    ("end", pa.int64()),
    ("stage", pa.string()),
    ("duplicate_of", pa.string()),
    ("duplicate_start", pa.int64()),
    ("source", pa.string()),
])


def _str_array(values, n: int, name: str) -> pa.Array:
    if values is None:
        return pa.nulls(n, pa.string())
    if isinstance(values, str):
        return pa.array([values], pa.string()).take(pa.array(np.zeros(n, np.int32)))
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) != n:
        raise ValueError(f"span column {name} has {len(arr)} values for {n} spans")
    return arr.cast(pa.string())


def _int_array(values, n: int, name: str, nullable: bool = False) -> pa.Array:
    if values is None:
        if nullable:
            return pa.nulls(n, pa.int64())
        raise ValueError(f"span column {name} is required")
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if len(arr) != n:
            raise ValueError(f"span column {name} has {len(arr)} values for {n} spans")
        return arr.cast(pa.int64())
    a = np.asarray(values)
    if a.ndim != 1 or len(a) != n:
        raise ValueError(f"span column {name} has {len(a)} values for {n} spans")
    if nullable and a.dtype.kind == "i":
        return pa.array(a.astype(np.int64), pa.int64(), mask=a < 0)  # -1 = none
    return pa.array(a, pa.int64())


def span_table(shard, row, doc_id, start, end, stage: str, duplicate_of=None, duplicate_start=None,
               source=None, validate: bool = True) -> pa.Table:
    """Build a span table (schema :data:`SPAN_SCHEMA`) from columns.

    Args:
        shard: shard name per span, or one string for all.
        row: row number per span.
        doc_id: doc_id per span.
        start, end: UTF-8 byte offsets per span (half-open).
        stage: the stage name.
        duplicate_of: doc_id of the kept occurrence per span (None: all null).
        duplicate_start: byte offset of the kept occurrence; a negative int means null.
        source: what the span matched outside this corpus (None: all null).
        validate: check the ordering rules (see :func:`validate_spans`).

    Returns:
        The table, sorted by (shard, row, start) when ``validate`` is true.

    Raises:
        ManifestError: spans overlap, are empty or have negative offsets.
    """
    n = len(np.asarray(start)) if not isinstance(start, (pa.Array, pa.ChunkedArray)) else len(start)
    table = pa.table({
        "shard": _str_array(shard, n, "shard"),
        "row": _int_array(row, n, "row"),
        "doc_id": _str_array(doc_id, n, "doc_id"),
        "start": _int_array(start, n, "start"),
        "end": _int_array(end, n, "end"),
        "stage": _str_array(stage, n, "stage"),
        "duplicate_of": _str_array(duplicate_of, n, "duplicate_of"),
        "duplicate_start": _int_array(duplicate_start, n, "duplicate_start", nullable=True),
        "source": _str_array(source, n, "source"),
    }, schema=SPAN_SCHEMA)
    if validate:
        table = table.sort_by([("shard", "ascending"), ("row", "ascending"), ("start", "ascending")])
        validate_spans(table)
    return table


def corpus_span_table(corpus, doc_index, start, end, stage: str, duplicate_index=None,
                      duplicate_start=None, source=None) -> pa.Table:
    """:func:`span_table` from global document indices of a :class:`dedupkit.scan.Corpus`.

    Args:
        corpus: the scanned corpus (gives shard names, rows and doc_ids).
        doc_index: global index of the document each span is cut from.
        duplicate_index: global index of the document holding the kept occurrence (-1: none).
    """
    idx = np.asarray(doc_index, np.int64)
    names = pa.array([s.shard.name for s in corpus.shards], pa.string())
    shard = names.take(pa.array(corpus.shard_index[idx])) if len(idx) else pa.array([], pa.string())
    dup = None
    if duplicate_index is not None:
        d = np.asarray(duplicate_index, np.int64)
        ids = corpus.doc_ids(np.where(d >= 0, d, 0)) if len(d) else pa.array([], pa.string())
        dup = pc.if_else(pa.array(d >= 0), ids, pa.scalar(None, pa.string())) if len(d) else ids
    return span_table(shard, corpus.rows[idx], corpus.doc_ids(idx), start, end, stage,
                      duplicate_of=dup, duplicate_start=duplicate_start, source=source)


def validate_spans(table: pa.Table, where: str = "span table") -> None:
    """Check the span rules: ``0 <= start < end``; per document sorted and non-overlapping.

    The table must be sorted by (shard, row, start) already.

    Raises:
        ManifestError: naming the first offending span.
    """
    missing = [c for c in SPAN_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"{where}: missing span column(s) {', '.join(missing)}; rerun the stage with --overwrite")
    n = len(table)
    if n == 0:
        return
    start = table.column("start").to_numpy()
    end = table.column("end").to_numpy()
    row = table.column("row").to_numpy()
    bad = np.flatnonzero((start < 0) | (end <= start))
    if len(bad):
        i = int(bad[0])
        raise ManifestError(f"{where}: span {start[i]}..{end[i]} of row {row[i]} is empty or negative; "
                            "rerun the stage with --overwrite")
    if n > 1:
        shard = table.column("shard")
        same_shard = np.asarray(pc.equal(shard.slice(1), shard.slice(0, n - 1)).to_numpy(zero_copy_only=False), bool)
        same_doc = same_shard & (row[1:] == row[:-1])
        overlap = same_doc & (start[1:] < end[:-1])
        unsorted = same_shard & ((row[1:] < row[:-1]) | (same_doc & (start[1:] < start[:-1])))
        bad = np.flatnonzero(overlap | unsorted)
        if len(bad):
            i = int(bad[0]) + 1
            raise ManifestError(
                f"{where}: span {start[i]}..{end[i]} of {shard[i].as_py()} row {row[i]} overlaps or precedes "
                f"the span before it ({start[i - 1]}..{end[i - 1]}); spans of a document must be sorted and "
                "must not overlap (merge them with dedupkit.spans.merge_spans)")


def merge_spans(row, start, end) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of byte intervals per row: sorted, non-overlapping, touching intervals joined.

    Returns:
        (row, start, end) arrays of the merged spans, sorted by (row, start).

    Example:
        >>> [a.tolist() for a in merge_spans([0, 0, 1], [5, 0, 2], [9, 6, 3])]
        [[0, 1], [0, 2], [9, 3]]
    """
    row = np.asarray(row, np.int64)
    start = np.asarray(start, np.int64)
    end = np.asarray(end, np.int64)
    if len(row) == 0:
        return row, start, end
    order = np.lexsort((start, row))
    row, start, end = row[order], start[order], end[order]
    # running max of end within each row: a new span starts where start > max end so far
    same = np.r_[False, row[1:] == row[:-1]]
    seg = np.cumsum(~same) - 1
    # offset ends per row so one global maximum.accumulate works per row
    big = (end.max() + 1) if len(end) else 1
    reach = np.maximum.accumulate(end + seg * big) - seg * big
    new = np.r_[True, ~same[1:] | (start[1:] > reach[:-1])]
    out_end = np.maximum.reduceat(end, np.flatnonzero(new))
    return row[new], start[new], out_end


class SpanWriter:
    """Write span tables as Parquet parts into one folder (atomically per part).

    Each call of :meth:`write` adds one part; parts are named by the ``part`` number so that a stage
    running tasks in workers (each with its own writer on the same folder) never collides.

    Example:
        >>> from dedupkit.spans import SpanWriter, span_table
        >>> w = SpanWriter(tmp / "work" / "spans")
        >>> w.write(span_table("a.jsonl", [0], ["a.jsonl:0"], [0], [10], "substring"), part=3).name
        'part-00003.parquet'
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table, part: int) -> Path:
        """Write one part (also when empty, so every task leaves a part); returns its path."""
        from dedupkit.manifest import write_table_atomic

        table = table.select(list(SPAN_COLUMNS)).cast(SPAN_SCHEMA)
        path = self.directory / f"part-{part:05d}.parquet"
        write_table_atomic(table, path)
        return path


def _dataset(directory: Path):
    import pyarrow.dataset as ds

    return ds.dataset(str(directory), format="parquet", schema=SPAN_SCHEMA)


def spans_dir(path: str | os.PathLike) -> Path:
    """``OUT/spans`` for ``OUT`` (or ``OUT/manifest``)."""
    from dedupkit.manifest import output_root

    return output_root(path) / SPANS_DIR


def has_spans(path: str | os.PathLike) -> bool:
    """True when the stage output ``path`` holds a span manifest."""
    return spans_dir(path).is_dir()


def span_dirs(path: str | os.PathLike, summary: dict | None = None) -> list[Path]:
    """The stage output folders holding spans: ``path`` itself, or the stages of a ``dedupkit run``.

    Example:
        >>> import dedupkit
        >>> from dedupkit.spans import span_dirs
        >>> res = dedupkit.run([str(data)], str(tmp / "run"), stages="exact,substring")
        >>> [p.name for p in span_dirs(res.out)]
        ['02-substring']
    """
    from dedupkit.manifest import output_root

    root = output_root(path)
    if has_spans(root):
        return [root]
    if summary is None:
        import json

        try:
            summary = json.loads((root / "summary.json").read_text())
        except (OSError, ValueError):
            return []
    return [root / st["dir"] for st in summary.get("stages", []) or []
            if isinstance(st, dict) and st.get("dir") and has_spans(root / st["dir"])]


def read_spans(path: str | os.PathLike, shard: str | None = None, validate: bool = True,
               columns: Sequence[str] | None = None) -> pa.Table:
    """Read a span manifest (``OUT``, ``OUT/manifest`` or the spans folder itself) as one table.

    Args:
        path: a finished stage output folder, or a folder of span parts.
        shard: only the spans of this shard.
        validate: check the ordering rules (:func:`validate_spans`).
        columns: columns to return (all are read when validating).

    Returns:
        The spans sorted by (shard, row, start); an empty table when the output has no spans.

    Raises:
        ManifestError: unreadable parts or spans that break the rules.
    """
    p = Path(path)
    d = p if p.name == SPANS_DIR or (p.is_dir() and any(p.glob("part-*.parquet")) and not (p / "summary.json").exists()) \
        else spans_dir(p)
    if not d.is_dir():
        table = SPAN_SCHEMA.empty_table()
    else:
        import pyarrow.dataset as ds

        flt = ds.field("shard") == shard if shard is not None else None
        try:
            table = _dataset(d).to_table(filter=flt)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ManifestError(f"{d}: span manifest unreadable ({exc}); rerun the stage with --overwrite") from exc
    if len(table):
        table = table.sort_by([("shard", "ascending"), ("row", "ascending"), ("start", "ascending")])
    if validate:
        validate_spans(table, str(d))
    if columns is not None:
        table = table.select(list(columns))
    return table


def span_counts(table: pa.Table) -> dict[str, int]:
    """Counts for ``summary.json``: spans, bytes cut and documents with at least one span."""
    if len(table) == 0:
        return {"spans": 0, "bytes_cut": 0, "documents_cut": 0}
    nbytes = int(pc.sum(pc.subtract(table.column("end"), table.column("start"))).as_py())
    docs = pa.table({"s": table.column("shard"), "r": table.column("row")}).group_by(["s", "r"]).aggregate([])
    return {"spans": len(table), "bytes_cut": nbytes, "documents_cut": len(docs)}


# --- cutting ---------------------------------------------------------------------------------------

def _check_boundaries(data: np.ndarray, lengths: np.ndarray, base: np.ndarray, start: np.ndarray,
                      end: np.ndarray, where: str, rows: np.ndarray) -> None:
    over = np.flatnonzero(end > lengths)
    if len(over):
        i = int(over[0])
        raise ManifestError(f"{where} row {rows[i]}: span {start[i]}..{end[i]} runs past the text "
                            f"({lengths[i]} bytes); the manifest was made from other text: rerun the stage")
    inner = end < lengths
    cont_start = (data[base + start] & 0xC0) == 0x80 if len(start) else np.zeros(0, bool)
    cont_end = np.zeros(len(end), bool)
    if inner.any():
        cont_end[inner] = (data[base[inner] + end[inner]] & 0xC0) == 0x80
    bad = np.flatnonzero(cont_start | cont_end)
    if len(bad):
        i = int(bad[0])
        raise ManifestError(f"{where} row {rows[i]}: span {start[i]}..{end[i]} splits a UTF-8 character; "
                            "offsets must be on character boundaries: rerun the stage")


def cut_array(text: pa.Array, index, start, end, where: str = "text") -> pa.Array:
    """Remove byte spans from some strings of an Arrow string array, in one vectorised pass.

    Args:
        text: a string or large_string array.
        index: position in ``text`` of each span's string.
        start, end: the spans (sorted and non-overlapping per string).
        where: a name for error messages (the shard).

    Returns:
        An array of the same type and length with the spans removed (other strings unchanged).

    Raises:
        ManifestError: a span runs past its string, splits a UTF-8 character or hits a null.
    """
    index = np.asarray(index, np.int64)
    start = np.asarray(start, np.int64)
    end = np.asarray(end, np.int64)
    if len(index) == 0:
        return text
    typ = text.type
    large = pa.types.is_large_string(typ) or pa.types.is_large_binary(typ)
    if text.null_count and not np.asarray(text.is_valid().to_numpy(zero_copy_only=False))[index].all():
        raise ManifestError(f"{where}: a span points to a row whose text is null; rerun the stage")
    bufs = text.buffers()
    offsets = np.frombuffer(bufs[1], np.int64 if large else np.int32)[text.offset: text.offset + len(text) + 1]
    offsets = offsets.astype(np.int64)
    o0, o1 = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(bufs[2], np.uint8)[o0:o1] if bufs[2] is not None else np.zeros(0, np.uint8)
    rel = offsets - o0
    base = rel[index]
    lengths = rel[index + 1] - base
    _check_boundaries(data, lengths, base, start, end, where, index)
    delta = np.bincount(base + start, minlength=len(data) + 1) - np.bincount(base + end, minlength=len(data) + 1)
    removed = np.cumsum(delta[:-1]) > 0
    kept = data[~removed]
    removed_before = np.concatenate([[0], np.cumsum(removed, dtype=np.int64)])
    new_offsets = rel - removed_before[rel]
    off_type = np.int64 if large else np.int32
    validity = bufs[0]
    if validity is not None and text.offset:
        validity = pa.py_buffer(np.packbits(text.is_valid().to_numpy(zero_copy_only=False), bitorder="little"))
    return pa.Array.from_buffers(typ, len(text), [validity, pa.py_buffer(new_offsets.astype(off_type)),
                                                  pa.py_buffer(kept.tobytes())], null_count=text.null_count)


def cut_text(text: str | bytes, start: Sequence[int], end: Sequence[int]) -> str | bytes:
    """Remove byte spans (UTF-8 offsets) from one text; returns the same type as given.

    Raises:
        ManifestError: a span runs past the text or splits a UTF-8 character.

    Example:
        >>> cut_text("日本語テキスト", [3], [9])
        '日テキスト'
    """
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    out = cut_array(pa.array([raw], pa.large_binary()), np.zeros(len(start), np.int64), start, end).to_pylist()[0]
    return out.decode("utf-8") if isinstance(text, str) else out
