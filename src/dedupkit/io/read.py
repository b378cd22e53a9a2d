"""Streaming readers: record batches of (row, text, id, extra columns) from one shard.

Memory stays bounded by ``batch_size`` records (and ``max_record_bytes`` for one JSON line),
whatever the size of the shard.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field, replace
from typing import IO, Iterator, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dedupkit import settings as _S
from dedupkit.errors import ConfigError, InputError
from dedupkit.io.fs import is_remote, open_input, parquet_source
from dedupkit.io.pqpages import ThriftError as PageError
from dedupkit.io.shards import Piece, Shard

BAD_RECORD_MODES = _S.choices(_S.ReadConfig, "on_bad_record")
# Bytes a Parquet reader buffers of a column chunk (ShardReader._open_parquet).
PARQUET_BUFFER = 1 << 20
_FIX = "fix the record or pass --on-bad-record skip to skip and count such records"


@dataclass(frozen=True)
class ReadSpec:
    """What to read from every shard.

    Attributes:
        text_column: the column (JSON key) holding the text.
        id_column: optional unique id column; when None, ``doc_id = "{shard}:{row}"``.
        extra_columns: more columns to carry along (e.g. the ``--keep-by`` column).
        batch_size: records per batch.
        on_bad_record: ``"fail"`` raises on the first bad record; ``"skip"`` records and skips it.
        max_record_bytes: a JSON line longer than this is a bad record (bounds memory).
    """

    text_column: str = _S.ReadConfig.text_column
    id_column: str | None = None
    extra_columns: tuple[str, ...] = ()
    batch_size: int = _S.ReadConfig.batch_size
    on_bad_record: str = _S.ReadConfig.on_bad_record
    max_record_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.text_column:
            raise ConfigError("text_column must not be empty; pass --text-column NAME")
        if self.on_bad_record not in BAD_RECORD_MODES:
            raise ConfigError(
                f"on_bad_record must be one of {', '.join(BAD_RECORD_MODES)}, got {self.on_bad_record!r}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_record_bytes < 1024:
            raise ConfigError("max_record_bytes must be at least 1024")

    @property
    def columns(self) -> list[str]:
        cols = [self.text_column]
        for c in (self.id_column, *self.extra_columns):
            if c and c not in cols:
                cols.append(c)
        return cols


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be used: its shard, 0-based row (line) and why."""

    shard: str
    row: int
    reason: str

    def to_dict(self) -> dict:
        return {"shard": self.shard, "row": self.row, "line": self.row + 1, "reason": self.reason}


class BadRecords:
    """The bad records of one shard, stored compactly: 12 bytes a record plus each distinct reason.

    A shard of five million blank lines must cost about what five million good records cost, so
    nothing here holds a Python object per record: rows and reason codes live in typed arrays and
    each distinct reason string is kept once. Iterating yields :class:`BadRecord` objects.
    """

    def __init__(self, shard: str):
        from array import array

        self.shard = shard
        self.rows = array("q")
        self.codes = array("i")
        self.reasons: list[str] = []
        self._code: dict[str, int] = {}

    def add(self, row: int, reason: str) -> None:
        code = self._code.get(reason)
        if code is None:
            code = self._code[reason] = len(self.reasons)
            self.reasons.append(reason)
        self.rows.append(row)
        self.codes.append(code)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[BadRecord]:
        for row, code in zip(self.rows, self.codes):
            yield BadRecord(self.shard, row, self.reasons[code])

    def listed(self, limit: int) -> list[dict]:
        """The first ``limit`` records as summary dicts (shard, row, line, reason)."""
        return [BadRecord(self.shard, self.rows[i], self.reasons[self.codes[i]]).to_dict()
                for i in range(min(limit, len(self.rows)))]

    def table(self) -> pa.Table:
        """``row`` (int64) and ``reason`` (dictionary-encoded string) of every record."""
        rows = np.frombuffer(self.rows, dtype=np.int64) if len(self.rows) else np.zeros(0, np.int64)
        codes = np.frombuffer(self.codes, dtype=np.int32) if len(self.codes) else np.zeros(0, np.int32)
        reason = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(self.reasons, pa.string()))
        return pa.table({"row": pa.array(rows, pa.int64()), "reason": reason})


@dataclass
class Batch:
    """Good records of one shard: ``rows`` are 0-based row/line numbers, aligned with the arrays."""

    rows: np.ndarray
    text: pa.Array
    ids: pa.Array | None = None
    extra: dict[str, pa.Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


def _why(exc: BaseException) -> str:
    """An exception's text on one line (pyarrow's carry newlines), for error messages."""
    return " ".join(str(exc).split()) or type(exc).__name__


def open_text_stream(shard: Shard) -> IO[bytes]:
    """The bytes of a JSONL shard, decompressed (gzip, zstd) as they are read."""
    raw = open_input(shard.path)
    if shard.compression == "gzip":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if shard.compression == "zstd":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


class ShardReader:
    """Iterate one shard as :class:`Batch` objects, validating every record.

    After iteration, ``n_rows`` holds the number of rows (lines) seen and ``bad`` the bad records
    skipped (only with ``on_bad_record="skip"``; with ``"fail"`` the first one raises InputError).

    Args:
        shard: the shard to read.
        spec: columns and bad-record policy.
        skip_rows: rows to leave out silently (dropped by an earlier stage); they are neither
            yielded nor validated.
        row_groups: for Parquet, a ``(first, stop)`` range of row groups to read (row numbers stay
            those of the whole file).
        piece: the rows ``[piece.start, piece.stop)`` to read (a split shard's part; JSON Lines
            seeks to ``piece.byte_start``); row numbers stay those of the whole file. With
            ``row_groups`` too, the rows of both.
    """

    def __init__(
        self,
        shard: Shard,
        spec: ReadSpec,
        skip_rows: np.ndarray | None = None,
        row_groups: tuple[int, int] | None = None,
        piece: Piece | None = None,
    ) -> None:
        self.shard = shard
        self.spec = spec
        self.skip_rows = None if skip_rows is None or len(skip_rows) == 0 else np.asarray(skip_rows, np.int64)
        self.row_groups = row_groups
        self.piece = piece
        self.n_rows = 0
        self.bad = BadRecords(shard.name)

    # -- shared helpers -------------------------------------------------------------------------
    def _bad(self, row: int, reason: str) -> None:
        if self.spec.on_bad_record == "fail":
            where = f"line {row + 1}" if self.shard.format == "jsonl" else f"row {row}"
            raise InputError(f"{self.shard.name}: {where}: {reason}; {_FIX}")
        self.bad.add(row, reason)

    def _active(self, rows: np.ndarray) -> np.ndarray:
        if self.skip_rows is None:
            return np.ones(len(rows), dtype=bool)
        return ~np.isin(rows, self.skip_rows, assume_unique=False)

    def __iter__(self) -> Iterator[Batch]:
        if self.shard.format == "parquet":
            return self._parquet()
        if self.shard.format == "arrow":
            return self._arrow()
        if self.shard.format in CSV_FORMATS:
            return self._csv()
        return self._jsonl()

    def _bounds(self) -> tuple[int, int]:
        return (self.piece.start, self.piece.stop) if self.piece is not None else (0, 2**62)

    # -- Arrow IPC (Feather v2, Hugging Face save_to_disk) --------------------------------------
    def _arrow(self) -> Iterator[Batch]:
        if self.shard.size == 0:
            raise InputError(f"{self.shard.name}: the file is empty (0 bytes), not an Arrow file; remove it "
                             "from the input or regenerate it")
        lo, hi = self._bounds()
        self.n_rows = lo
        try:
            schema, batches = ipc_batches(self.shard)
            self._check_schema(schema)
            cols = self.spec.columns
            sel = (rb.select(cols) for rb in batches)
            yield from self._ranged(rechunk(sel, self.spec.batch_size), 0, lo, hi)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(
                f"{self.shard.name}: Arrow data unreadable near row {self.n_rows} ({_why(exc)}); the file may be "
                "truncated or corrupt: regenerate it"
            ) from exc

    # -- CSV / TSV ------------------------------------------------------------------------------
    def _csv(self) -> Iterator[Batch]:
        if self.shard.size == 0:
            raise InputError(f"{self.shard.name}: the file is empty (0 bytes); remove it from the input")
        spec = self.spec
        lo, hi = self._bounds()
        self.n_rows = lo
        strings = [c for c in (spec.text_column, spec.id_column) if c]
        try:
            names = csv_columns(self.shard)
            missing = [c for c in spec.columns if c not in names]
            if missing:  # the same message as a Parquet file's
                self._check_schema(pa.schema([(n, pa.string()) for n in names]))
            rows = CsvRows()
            reader = open_csv(self.shard, rows, spec.columns, strings)
            skip = self.skip_rows
            for rb in rechunk(reader, spec.batch_size):
                numbers = rows.take(rb.num_rows)
                for r, reason in rows.pop_bad():
                    if lo <= r < hi and (skip is None or not np.isin(r, skip)):
                        self._bad(r, reason)
                keep = (numbers >= lo) & (numbers < hi)
                if not keep.all():
                    rb, numbers = rb.filter(pa.array(keep)), numbers[keep]
                if len(numbers):
                    self.n_rows = int(numbers[-1]) + 1
                    out = self._parquet_batch(rb, numbers)
                    if out is not None:
                        yield out
                if rows.next >= hi:
                    break
            for r, reason in rows.pop_bad():
                if lo <= r < hi and (skip is None or not np.isin(r, skip)):
                    self._bad(r, reason)
            self.n_rows = max(self.n_rows, min(hi, rows.total()))
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(
                f"{self.shard.name}: CSV data unreadable near row {self.n_rows} ({_why(exc)}); fix the file "
                "(quotes must be closed; every row needs the header's columns)"
            ) from exc

    # -- Parquet ------------------------------------------------------------------------------
    def _open_parquet(self) -> pq.ParquetFile:
        try:
            if self.shard.size == 0:
                raise InputError(
                    f"{self.shard.name}: the file is empty (0 bytes), not a Parquet file; remove it "
                    "from the input or regenerate it"
                )
            # Stream each column chunk through a 1 MiB buffer: pyarrow's defaults (pre_buffer, no
            # buffer_size) read a whole chunk into memory first, 1.4 GB for the text of a 1M-row group.
            return pq.ParquetFile(parquet_source(self.shard.path), pre_buffer=False, buffer_size=PARQUET_BUFFER)
        except InputError:
            raise
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(
                f"{self.shard.name}: not a readable Parquet file ({_why(exc)}); the file may be truncated "
                "or corrupt: regenerate it or remove it from the input"
            ) from exc

    def _check_schema(self, schema: pa.Schema) -> None:
        names = schema.names
        for col in self.spec.columns:
            if col not in names:
                flag = "--text-column" if col == self.spec.text_column else (
                    "--id-column" if col == self.spec.id_column else "--keep-by")
                raise InputError(
                    f"column {col!r} not found in {self.shard.name}; columns are: {', '.join(names)}; "
                    f"pass {flag} with one of them"
                )
        if self.spec.id_column:
            itype = schema.field(self.spec.id_column).type
            if pa.types.is_dictionary(itype):
                itype = itype.value_type
            if not (pa.types.is_string(itype) or pa.types.is_large_string(itype) or pa.types.is_integer(itype)):
                # refused here, before the scan, rather than as a cast failure in the middle of it
                raise InputError(
                    f"column {self.spec.id_column!r} in {self.shard.name} has type {itype}; ids must be strings "
                    "or integers: pass --id-column naming such a column, or drop --id-column"
                )
        ttype = schema.field(self.spec.text_column).type
        if pa.types.is_dictionary(ttype):
            ttype = ttype.value_type
        if not (pa.types.is_string(ttype) or pa.types.is_large_string(ttype)):
            raise InputError(
                f"column {self.spec.text_column!r} in {self.shard.name} has type {ttype}, not a string; "
                "pass --text-column naming a string column"
            )

    def _parquet(self) -> Iterator[Batch]:
        pf = self._open_parquet()
        schema = pf.schema_arrow
        self._check_schema(schema)
        md = pf.metadata
        first, stop = self.row_groups if self.row_groups else (0, md.num_row_groups)
        ends = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        lo, hi = int(ends[first]), int(ends[stop])
        if self.piece is not None:
            # a row range: the row groups holding it
            lo, hi = max(lo, self.piece.start), min(hi, self.piece.stop)
            first = max(first, int(np.searchsorted(ends, lo, side="right")) - 1)
            stop = min(stop, int(np.searchsorted(ends, hi, side="left")))
        offset = int(ends[first])
        groups = list(range(first, stop)) if hi > lo else []
        self.n_rows = lo
        if not groups:
            return
        if len(groups) == 1 and (lo > offset or hi < int(ends[first + 1])):
            # part of one row group: decode only the pages holding it (Parquet decodes a column
            # chunk's pages in order, so a plain reader would decode every row before lo too)
            paged = self._paged(pf, first, lo - offset, hi - offset)
            if paged is not None:
                try:
                    yield from self._ranged(paged, lo, lo, hi)
                except (pa.ArrowInvalid, OSError, PageError) as exc:
                    raise InputError(
                        f"{self.shard.name}: Parquet data unreadable near row {self.n_rows} ({_why(exc)}); the "
                        "file may be truncated or corrupt: regenerate it"
                    ) from exc
                return
        try:
            # One thread per reader: dedupkit parallelises over shards with processes, and Arrow's
            # per-column threads only add hand-offs for the one to three columns read here
            # (measured: 15% slower on a 250,000-row text shard, on an idle machine).
            batches = pf.iter_batches(
                batch_size=self.spec.batch_size, row_groups=groups, columns=self.spec.columns,
                use_threads=False,
            )
            yield from self._ranged(batches, offset, lo, hi)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(
                f"{self.shard.name}: Parquet data unreadable near row {self.n_rows} ({_why(exc)}); the file may "
                "be truncated or corrupt: regenerate it"
            ) from exc

    def _paged(self, pf: pq.ParquetFile, group: int, lo: int, hi: int) -> Iterator[pa.RecordBatch] | None:
        """Record batches of rows ``[lo, hi)`` of one row group read from only the pages holding
        them (:mod:`dedupkit.io.pqpages`), or None when the file does not allow it (a nested
        column, an encrypted file, pages too big to skip any)."""
        from dedupkit.io import pqpages

        names = self.spec.columns
        leaves = []
        schema = pf.schema
        paths = {schema.column(i).path: i for i in range(len(schema))}
        for name in names:
            leaf = paths.get(name)
            if leaf is None or schema.column(leaf).max_repetition_level != 0:
                return None
            leaves.append(leaf)
        fh = open_input(self.shard.path)
        group_reader = pqpages.open_paged(fh, self.shard.size, group, leaves)
        batches = group_reader.iter_batches(names, lo, hi, self.spec.batch_size) if group_reader else None
        if batches is None:
            fh.close()
            return None

        def closing() -> Iterator[pa.RecordBatch]:
            with fh:
                yield from batches

        return closing()

    def _ranged(self, batches: Iterator[pa.RecordBatch], offset: int, lo: int, hi: int) -> Iterator[Batch]:
        """Validated batches of the rows ``[lo, hi)`` of record batches whose first row is ``offset``."""
        for rb in batches:
            n = rb.num_rows
            a, b = max(lo, offset), min(hi, offset + n)
            if b > a:
                if b - a < n:
                    rb = rb.slice(a - offset, b - a)
                self.n_rows = b
                out = self._parquet_batch(rb, np.arange(a, b, dtype=np.int64))
                if out is not None:
                    yield out
            offset += n
            if offset >= hi:
                break

    def _parquet_batch(self, rb: pa.RecordBatch, rows: np.ndarray) -> Batch | None:
        spec = self.spec
        text = rb.column(spec.text_column)
        if pa.types.is_dictionary(text.type):
            text = text.dictionary_decode()
        keep = self._active(rows)
        if text.null_count:
            nulls = np.asarray(text.is_null(), dtype=bool) & keep
            for r in rows[nulls]:
                self._bad(int(r), f"null text in column {spec.text_column!r}")
            keep &= ~np.asarray(text.is_null(), dtype=bool)
        try:
            text.validate(full=True)
        except pa.ArrowInvalid:
            for i, v in enumerate(text):
                if keep[i] and v.is_valid:
                    try:
                        v.as_py()
                    except UnicodeDecodeError:
                        self._bad(int(rows[i]), "text is not valid UTF-8")
                        keep[i] = False
        ids = None
        if spec.id_column:
            ids = rb.column(spec.id_column)
            if ids.null_count:
                nulls = np.asarray(ids.is_null(), dtype=bool) & keep
                for r in rows[nulls]:
                    self._bad(int(r), f"null id in column {spec.id_column!r}")
                keep &= ~np.asarray(ids.is_null(), dtype=bool)
            if not pa.types.is_string(ids.type):
                ids = ids.cast(pa.string())
        extra = {c: rb.column(c) for c in spec.extra_columns}
        if not keep.all():
            if not keep.any():
                return None
            mask = pa.array(keep)
            rows = rows[keep]
            text = text.filter(mask)
            ids = ids.filter(mask) if ids is not None else None
            extra = {c: a.filter(mask) for c, a in extra.items()}
        return Batch(rows=rows, text=text, ids=ids, extra=extra)

    # -- JSONL --------------------------------------------------------------------------------
    def _jsonl(self) -> Iterator[Batch]:
        spec = self.spec
        if self.shard.size == 0:
            raise InputError(
                f"{self.shard.name}: the file is empty (0 bytes); remove it from the input"
            )
        text_col, id_col = spec.text_column, spec.id_column
        extra_cols = spec.extra_columns
        skip = set(self.skip_rows.tolist()) if self.skip_rows is not None else None
        rows: list[int] = []
        texts: list[str] = []
        ids: list[str] = []
        extra: dict[str, list] = {c: [] for c in extra_cols}
        limit = spec.max_record_bytes
        piece = self.piece
        row = piece.start - 1 if piece is not None else -1
        seen_text = False
        # a piece reads the lines in its bytes [pos, end): it starts at a line start
        pos = (piece.byte_start or 0) if piece is not None else 0
        end = piece.byte_stop if piece is not None else None
        if piece is not None and piece.byte_start is None:
            raise ValueError("a JSON Lines piece needs its byte range (dedupkit.scan.plan_tasks makes them)")
        try:
            fh = open_text_stream(self.shard)
            if pos:
                fh.seek(pos)
        except OSError as exc:
            raise InputError(f"{self.shard.name}: cannot open ({_why(exc)})") from exc
        with fh:
            while end is None or pos < end:
                try:
                    line = fh.readline(limit + 1)
                except (OSError, EOFError, ValueError) as exc:
                    raise InputError(
                        f"{self.shard.name}: cannot decompress after line {row + 1} ({_why(exc)}); the file "
                        "is truncated or corrupt: regenerate it"
                    ) from exc
                except Exception as exc:  # zstandard raises its own ZstdError
                    raise InputError(
                        f"{self.shard.name}: cannot decompress after line {row + 1} ({_why(exc)}); the file "
                        "is truncated or corrupt: regenerate it"
                    ) from exc
                if not line:
                    break
                pos += len(line)
                row += 1
                if len(line) > limit and not line.endswith(b"\n"):
                    if spec.on_bad_record == "fail" and (skip is None or row not in skip):
                        # fail now, not after reading the rest of a line that may be gigabytes long
                        self._bad(row, f"record longer than {limit} bytes (max_record_bytes)")
                    # Drain the rest of an overlong line without holding it in memory.
                    while True:
                        more = fh.readline(1 << 20)
                        pos += len(more)
                        if not more or more.endswith(b"\n"):
                            break
                    if skip is None or row not in skip:
                        self._bad(row, f"record longer than {limit} bytes (max_record_bytes)")
                    continue
                if skip is not None and row in skip:
                    continue
                if row == 0 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]  # a UTF-8 byte order mark, as Windows tools write it
                stripped = line.strip()
                if not stripped:
                    self._bad(row, "blank line")
                    continue
                try:
                    obj = orjson.loads(stripped)
                except orjson.JSONDecodeError as exc:
                    try:
                        stripped.decode("utf-8")
                        reason = f"malformed JSON ({_why(exc)})"
                    except UnicodeDecodeError:
                        reason = "line is not valid UTF-8"
                    self._bad(row, reason)
                    continue
                if not isinstance(obj, dict):
                    self._bad(row, f"expected a JSON object, got {type(obj).__name__}")
                    continue
                t = obj.get(text_col)
                if not isinstance(t, str):
                    if text_col not in obj and not seen_text:
                        # The first object lacks the column: a wrong --text-column, not a bad record.
                        raise InputError(
                            f"column {text_col!r} not found in {self.shard.name} (line {row + 1}); "
                            f"columns are: {', '.join(map(str, obj))}; pass --text-column with one of them"
                        )
                    if text_col not in obj:
                        reason = (f"no {text_col!r} field; fields are: {', '.join(map(str, obj)) or '(none)'}"
                                  f"; pass --text-column with one of them")
                    elif t is None:
                        reason = f"null text in field {text_col!r}"
                    else:
                        reason = f"field {text_col!r} is a {type(t).__name__}, not a string"
                    self._bad(row, reason)
                    continue
                seen_text = True
                if id_col:
                    i = obj.get(id_col)
                    if i is None or isinstance(i, (dict, list)):
                        self._bad(row, f"missing or null id in field {id_col!r}" if i is None
                                  else f"id field {id_col!r} is not a scalar")
                        continue
                    ids.append(i if isinstance(i, str) else str(i))
                for c in extra_cols:
                    extra[c].append(obj.get(c))
                rows.append(row)
                texts.append(t)
                if len(rows) >= spec.batch_size:
                    self.n_rows = row + 1
                    yield self._jsonl_batch(rows, texts, ids, extra)
                    rows, texts, ids = [], [], []
                    extra = {c: [] for c in extra_cols}
        self.n_rows = row + 1
        if rows:
            yield self._jsonl_batch(rows, texts, ids, extra)

    def _jsonl_batch(self, rows, texts, ids, extra) -> Batch:
        ex = {}
        for c, vals in extra.items():
            try:
                ex[c] = pa.array(vals)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InputError(
                    f"{self.shard.name}: field {c!r} mixes value types near line {rows[0] + 1} ({_why(exc)}); "
                    "use a column of one type"
                ) from exc
        return Batch(
            rows=np.asarray(rows, dtype=np.int64),
            text=pa.array(texts, type=pa.large_string()),
            ids=pa.array(ids, type=pa.string()) if self.spec.id_column else None,
            extra=ex,
        )


CSV_FORMATS = ("csv", "tsv")


def rechunk(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``size`` rows (zero-copy slices of bigger ones)."""
    for rb in batches:
        if rb.num_rows <= size:
            yield rb
            continue
        for s in range(0, rb.num_rows, size):
            yield rb.slice(s, size)


def ipc_batches(shard: Shard) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The schema and record batches of an Arrow IPC file (Feather v2) or stream (Hugging Face's
    ``save_to_disk`` writes streams), memory-mapped."""
    source = pa.PythonFile(open_input(shard.path), mode="r") if is_remote(shard.path) else pa.memory_map(shard.path, "r")
    try:
        reader = pa.ipc.open_file(source)

        def batches():
            with source:
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)

        return reader.schema, batches()
    except pa.ArrowInvalid:
        source.seek(0)
        stream = pa.ipc.open_stream(source)

        def streamed():
            with source:
                yield from stream

        return stream.schema, streamed()


def ipc_is_stream(path: str) -> bool:
    """Whether an Arrow file holds the IPC stream format (no ``ARROW1`` magic at its start)."""
    with open_input(path) as fh:
        return fh.read(6) != b"ARROW1"


def ipc_groups(shard: Shard) -> list[tuple[int, int]]:
    """(rows, bytes) of each record batch of an Arrow file (memory-mapped: nothing is copied)."""
    _, batches = ipc_batches(shard)
    return [(rb.num_rows, rb.nbytes) for rb in batches]


def csv_columns(shard: Shard) -> list[str]:
    """The header of a CSV/TSV shard."""
    import csv

    with io.TextIOWrapper(open_input(shard.path), newline="", encoding="utf-8-sig", errors="replace") as fh:
        header = next(csv.reader(fh, delimiter="\t" if shard.format == "tsv" else ","), [])
    return header


class CsvRows:
    """Row numbers of the records a CSV reader returns: 0-based record numbers after the header,
    skipping the records that its ``invalid_row_handler`` (``self.handler``) left out (a wrong
    number of fields): those are rows too, reported by :meth:`pop_bad`. A blank line is a row of
    empty fields, as pyarrow and Python's csv module read it."""

    def __init__(self) -> None:
        self.next = 0  # the first row not returned yet
        self.bad: list[int] = []  # rows left out, ascending
        self.reasons: list[tuple[int, str]] = []
        self._done = 0

    def handler(self, row) -> str:
        number = row.number
        if number is None:  # pragma: no cover - known with one parsing thread
            return "error"
        r = int(number) - 2  # InvalidRow.number counts records from 1, the header first
        self.bad.append(r)
        self.reasons.append((r, f"{row.actual_columns} fields where the header has {row.expected_columns}"))
        return "skip"

    def take(self, n: int) -> np.ndarray:
        """The row numbers of the next ``n`` records returned."""
        bad = np.asarray(self.bad[self._done:], np.int64)
        bad = bad[bad >= self.next]
        cand = np.arange(self.next, self.next + n + len(bad), dtype=np.int64)
        rows = cand[~np.isin(cand, bad)][:n]
        if len(rows):
            self.next = int(rows[-1]) + 1
        return rows

    def pop_bad(self) -> list[tuple[int, str]]:
        """The left-out rows below the next row to return, once each."""
        out = [(r, w) for r, w in self.reasons if r < self.next]
        self.reasons = [(r, w) for r, w in self.reasons if r >= self.next]
        return out

    def total(self) -> int:
        """Rows seen so far (returned and left out), once the reader is exhausted."""
        return max([self.next] + [r + 1 for r in self.bad])


def open_csv(shard: Shard, rows: CsvRows, columns: list[str] | None = None, strings: list[str] = (),
             nulls: bool = False):
    """A streaming pyarrow CSV reader of ``shard`` (one thread: records come in file order, and
    ``rows.handler`` numbers the invalid ones), ``strings`` columns read as text, others inferred.
    ``nulls``: an empty unquoted field is null (so a writer writes it back the same way)."""
    import pyarrow.csv as pcsv

    return pcsv.open_csv(
        open_input(shard.path) if is_remote(shard.path) else shard.path,
        read_options=pcsv.ReadOptions(use_threads=False, block_size=1 << 22),
        parse_options=pcsv.ParseOptions(delimiter="\t" if shard.format == "tsv" else ",", newlines_in_values=True,
                                        ignore_empty_lines=False, invalid_row_handler=rows.handler),
        convert_options=pcsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in strings},
                                            strings_can_be_null=nulls, quoted_strings_can_be_null=False),
    )


def count_rows(shard: Shard) -> int:
    """Number of rows (Parquet, Arrow, CSV records) or lines (JSONL) in a shard, read cheaply."""
    if shard.format == "arrow":
        return sum(r for r, _ in ipc_groups(shard))
    if shard.format in CSV_FORMATS:
        rows = CsvRows()
        for rb in open_csv(shard, rows):
            rows.take(rb.num_rows)
        return rows.total()
    if shard.format == "parquet":
        try:
            return pq.ParquetFile(parquet_source(shard.path)).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{shard.name}: not a readable Parquet file ({_why(exc)})") from exc
    n = 0
    last = b"\n"
    with open_text_stream(shard) as fh:
        while True:
            block = fh.read(1 << 22)
            if not block:
                break
            n += block.count(b"\n")
            last = block[-1:]
    return n + (0 if last == b"\n" else 1)


def read_rows(shard: Shard, spec: ReadSpec, rows: Sequence[int] | np.ndarray,
              n_rows: int) -> tuple[np.ndarray, list[str]]:
    """The texts of some rows of a shard, read by the validating :class:`ShardReader`.

    Every other row is skipped unread (never validated); only the Parquet row groups that hold
    wanted rows are decoded, and a JSONL shard is read only up to the last wanted line it finds.

    Args:
        shard: the shard.
        spec: its columns and bad-record policy (``"skip"``: a wanted row that is a bad record is
            left out of the result; ``"fail"``: it raises).
        rows: the 0-based row numbers wanted.
        n_rows: the shard's row count (rows at or beyond it are never found).

    Returns:
        ``(found, texts)``: the wanted rows found, sorted, and their texts.

    Raises:
        InputError: the shard is unreadable (or a wanted row is bad, with ``"fail"``).

    Example:
        >>> from dedupkit.io.read import ReadSpec, read_rows
        >>> from dedupkit.io.shards import Shard
        >>> shard = Shard("a.jsonl", str(data / "a.jsonl"), "jsonl")
        >>> found, texts = read_rows(shard, ReadSpec(), [3, 0, 9], n_rows=4)
        >>> found.tolist(), [t[:14] for t in texts]
        ([0, 3], ['The quick brow', 'Yet another un'])
    """
    want = np.unique(np.asarray(rows, dtype=np.int64))
    want = want[(want >= 0) & (want < n_rows)]
    got: list[np.ndarray] = []
    texts: list[str] = []
    if not len(want):
        return np.zeros(0, np.int64), texts
    skip = np.setdiff1d(np.arange(n_rows, dtype=np.int64), want, assume_unique=True)
    last = int(want[-1])
    if shard.format == "parquet":
        readers = [ShardReader(shard, spec, skip_rows=skip, row_groups=g) for g in _groups_holding(shard, want)]
    else:
        # a batch as large as the wanted rows: it is complete (and reading stops) at the last of them
        readers = [ShardReader(shard, replace(spec, batch_size=min(spec.batch_size, len(want))), skip_rows=skip)]
    for reader in readers:
        for batch in reader:
            got.append(batch.rows)
            texts.extend(batch.text.to_pylist())
            if batch.rows[-1] >= last:
                break
    found = np.concatenate(got).astype(np.int64) if got else np.zeros(0, np.int64)
    return found, texts


def _groups_holding(shard: Shard, want: np.ndarray) -> list[tuple[int, int]]:
    """The runs ``(first, stop)`` of consecutive Parquet row groups that hold rows of ``want`` (sorted)."""
    try:
        md = pq.ParquetFile(parquet_source(shard.path)).metadata
    except (pa.ArrowInvalid, OSError):
        return [(0, 0)]  # the reader itself says what is wrong with the file
    runs: list[tuple[int, int]] = []
    start = 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        lo, hi = np.searchsorted(want, [start, start + n])
        if hi > lo:
            if runs and runs[-1][1] == g:
                runs[-1] = (runs[-1][0], g + 1)
            else:
                runs.append((g, g + 1))
        start += n
    return runs

