"""Reading a row range of one Parquet column chunk by decoding only the pages that hold it.

pyarrow reads a row group's column chunk from its first page: a reader of rows ``[lo, hi)`` of one
big row group decodes every row before ``lo`` too, so splitting a file written as ONE row group
(as many writers do) into scan tasks gave no parallelism. pyarrow exposes no page-level row
selection (no RowRanges API in Python), so this module does it with the file's own bytes:

1. walk the chunk's page headers (Thrift compact protocol; only the few fields needed are
   looked at) to find each data page's byte offset and first row;
2. describe a small Parquet file: the dictionary page (if any), the data pages that hold
   ``[lo, hi)``, and the original footer with that one column chunk rewritten to point at them
   (offsets, sizes, value counts; statistics and page-index pointers dropped); the pages are not
   copied: the small file is read through the original one (:class:`ChunkRange`);
3. let pyarrow decode that file (every encoding, compression and null handling stays Arrow's),
   and drop the leading rows of the first page.

Every page decodes independently given the dictionary page, which is what makes a subset of
pages a valid column chunk. Only flat (non-repeated) columns of unencrypted files qualify; for
anything else, :func:`column_range` returns None and the caller decodes the group from its start.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import IO, Any, Iterator

_BUFFER = 1 << 20  # bytes the reader of a page range reads at a time

# Thrift compact protocol type codes
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)


class ThriftError(ValueError):
    """Bytes that are not the Thrift compact encoding expected (or end too early)."""


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ThriftError("truncated")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = out = 0
        while True:
            b = self.byte()
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7
            if shift > 70:
                raise ThriftError("varint too long")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ThriftError("truncated")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)


# A decoded struct: a list of [field id, type code, value]; kept generic so that fields this
# module does not know are written back unchanged.
Struct = list


def _read_value(r: _Reader, t: int, depth: int = 0) -> Any:
    if depth > 64:
        raise ThriftError("nesting too deep")
    if t in (_TRUE, _FALSE):
        return None  # a struct field's bool lives in its type code
    if t == _BYTE:
        return r.byte()
    if t in (_I16, _I32, _I64):
        return r.zigzag()
    if t == _DOUBLE:
        return r.take(8)
    if t == _BINARY:
        return r.take(r.varint())
    if t in (_LIST, _SET):
        head = r.byte()
        n, et = head >> 4, head & 0x0F
        if n == 15:
            n = r.varint()
        if et in (_TRUE, _FALSE):  # bools in a collection: one byte each
            return (et, [r.byte() for _ in range(n)])
        return (et, [_read_value(r, et, depth + 1) for _ in range(n)])
    if t == _MAP:
        n = r.varint()
        if not n:
            return (0, 0, [])
        kv = r.byte()
        kt, vt = kv >> 4, kv & 0x0F
        return (kt, vt, [(_read_value(r, kt, depth + 1), _read_value(r, vt, depth + 1)) for _ in range(n)])
    if t == _STRUCT:
        return _read_struct(r, depth + 1)
    raise ThriftError(f"unknown type code {t}")


def _read_struct(r: _Reader, depth: int = 0) -> Struct:
    fields: Struct = []
    last = 0
    while True:
        head = r.byte()
        if head == _STOP:
            return fields
        t, delta = head & 0x0F, head >> 4
        fid = last + delta if delta else r.zigzag()
        fields.append([fid, t, _read_value(r, t, depth)])
        last = fid


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7


def _zigzag(v: int) -> bytes:
    return _varint((v << 1) ^ (v >> 63))


def _write_value(out: bytearray, t: int, v: Any) -> None:
    if t in (_TRUE, _FALSE):
        return
    if t == _BYTE:
        out.append(v & 0xFF)
    elif t in (_I16, _I32, _I64):
        out += _zigzag(v)
    elif t == _DOUBLE:
        out += v
    elif t == _BINARY:
        out += _varint(len(v)) + v
    elif t in (_LIST, _SET):
        et, items = v
        out.append((len(items) << 4 | et) if len(items) < 15 else (0xF0 | et))
        if len(items) >= 15:
            out += _varint(len(items))
        for item in items:
            if et in (_TRUE, _FALSE):
                out.append(item)
            else:
                _write_value(out, et, item)
    elif t == _MAP:
        kt, vt, items = v
        out += _varint(len(items))
        if items:
            out.append(kt << 4 | vt)
            for k, val in items:
                _write_value(out, kt, k)
                _write_value(out, vt, val)
    elif t == _STRUCT:
        _write_struct(out, v)
    else:
        raise ThriftError(f"unknown type code {t}")


def _write_struct(out: bytearray, fields: Struct) -> None:
    last = 0
    for fid, t, v in sorted(fields, key=lambda f: f[0]):
        delta = fid - last
        if 0 < delta <= 15:
            out.append(delta << 4 | t)
        else:
            out.append(t)
            out += _zigzag(fid)
        _write_value(out, t, v)
        last = fid
    out.append(_STOP)


def _get(fields: Struct, fid: int, default: Any = None) -> Any:
    for f in fields:
        if f[0] == fid:
            return f[2]
    return default


def _set(fields: Struct, fid: int, t: int, v: Any) -> None:
    for f in fields:
        if f[0] == fid:
            f[1], f[2] = t, v
            return
    fields.append([fid, t, v])


def _drop(fields: Struct, *fids: int) -> None:
    fields[:] = [f for f in fields if f[0] not in fids]


# -- Parquet structures (parquet.thrift field ids) ------------------------------------------------
_DATA_PAGE, _INDEX_PAGE, _DICT_PAGE, _DATA_PAGE_V2 = 0, 1, 2, 3


@dataclass(frozen=True)
class Page:
    """One page of a column chunk: where it starts (file offset), its total bytes (header
    included), and for a data page its first row (relative to the row group) and row count."""

    offset: int
    nbytes: int
    kind: int
    first_row: int = 0
    rows: int = 0
    uncompressed: int = 0


def read_footer(fh: IO[bytes], size: int) -> tuple[Struct, int]:
    """The decoded FileMetaData of a Parquet file, and its length in bytes."""
    if size < 12:
        raise ThriftError("too small for a Parquet file")
    fh.seek(size - 8)
    tail = fh.read(8)
    if tail[4:] != b"PAR1":
        raise ThriftError("not a plain Parquet file (encrypted or not Parquet)")
    n = struct.unpack("<I", tail[:4])[0]
    if n + 12 > size:
        raise ThriftError("footer length out of range")
    fh.seek(size - 8 - n)
    return _read_struct(_Reader(fh.read(n))), n


def walk_pages(fh: IO[bytes], start: int, length: int) -> list[Page]:
    """Every page of the column chunk at ``[start, start + length)``, reading only page headers."""
    pages: list[Page] = []
    pos, end, row = start, start + length, 0
    while pos < end:
        want = 256
        while True:
            fh.seek(pos)
            buf = fh.read(min(want, end - pos))
            try:
                r = _Reader(buf)
                header = _read_struct(r)
                break
            except ThriftError:
                if want >= end - pos or want >= 1 << 26:
                    raise
                want *= 8  # a header with long min/max statistics
        kind = _get(header, 1)
        usize, csize = _get(header, 2), _get(header, 3)
        if kind is None or csize is None or csize < 0:
            raise ThriftError("page header without type or size")
        rows = 0
        if kind == _DATA_PAGE:
            rows = _get(_get(header, 5) or [], 1)  # num_values: rows for a flat column
        elif kind == _DATA_PAGE_V2:
            rows = _get(_get(header, 8) or [], 3)  # num_rows
        if rows is None:
            raise ThriftError("data page header without a value count")
        nbytes = r.pos + csize
        pages.append(Page(pos, nbytes, kind, row, rows, r.pos + (usize or 0)))
        row += rows
        pos += nbytes
    if pos != end:
        raise ThriftError("pages overrun the column chunk")
    return pages


@dataclass(frozen=True)
class ChunkRange:
    """A small Parquet file holding the pages of one column chunk that cover a row range, and how
    many leading rows of it come before that range.

    The file is "PAR1", the pages (``segments``: byte ranges of the original file), then ``tail``
    (the rewritten footer, its length, "PAR1"). :meth:`open` reads it through the original file,
    so the pages are never copied into one buffer: a buffer of tens of MB per task was memory the
    process touched for the first time (each page faulted in and zeroed by the kernel), while the
    reader streams them through its own small, reused buffer."""

    segments: tuple[tuple[int, int], ...]  # (offset in the original file, bytes)
    tail: bytes
    first_row: int  # the row (of the row group) its first row is
    rows: int

    @property
    def size(self) -> int:
        """The small file's size in bytes."""
        return 4 + sum(n for _, n in self.segments) + len(self.tail)

    def open(self, fh: IO[bytes]) -> Any:
        """The small file as a pyarrow input file, read from ``fh`` (the original file)."""
        import pyarrow as pa

        return pa.PythonFile(_Spliced(fh, self), mode="r")


class _Spliced(io.RawIOBase):
    """A read-only file made of byte strings and byte ranges of another file (see ChunkRange)."""

    def __init__(self, fh: IO[bytes], rng: ChunkRange) -> None:
        super().__init__()
        self.fh = fh
        # (start in this file, length, bytes or None, offset in fh)
        self.parts: list[tuple[int, int, bytes | None, int]] = []
        at = 0
        for data, off, n in [(b"PAR1", 0, 4)] + [(None, o, n) for o, n in rng.segments] + \
                [(rng.tail, 0, len(rng.tail))]:
            self.parts.append((at, n, data, off))
            at += n
        self.size = at
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.size + pos
        return self.pos

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        want = min(len(view), max(0, self.size - self.pos))
        done = 0
        for start, n, data, off in self.parts:
            if done == want:
                break
            if start + n <= self.pos + done:
                continue
            skip = self.pos + done - start
            k = min(n - skip, want - done)
            if data is not None:
                view[done:done + k] = data[skip:skip + k]
            else:
                self.fh.seek(off + skip)
                got = 0
                while got < k:
                    r = self.fh.readinto(view[done + got:done + k])
                    if not r:
                        raise ThriftError("file shorter than its metadata says")
                    got += r
            done += k
        self.pos += done
        return done


def _chunk_meta(footer: Struct, group: int, column: int) -> tuple[Struct, Struct, Struct]:
    groups = _get(footer, 4)
    if not groups or group >= len(groups[1]):
        raise ThriftError("no such row group")
    rg = groups[1][group]
    cols = _get(rg, 1)
    if not cols or column >= len(cols[1]):
        raise ThriftError("no such column")
    cc = cols[1][column]
    if _get(cc, 1) is not None or _get(cc, 8) is not None:  # another file's data, or encrypted
        raise ThriftError("column chunk in another file or encrypted")
    md = _get(cc, 3)
    if md is None:
        raise ThriftError("column chunk without metadata")
    return rg, cc, md


def chunk_pages(fh: IO[bytes], footer: Struct, group: int, column: int) -> list[Page]:
    """The pages of column ``column`` (leaf index) of row group ``group``."""
    _, _, md = _chunk_meta(footer, group, column)
    data_off, dict_off = _get(md, 9), _get(md, 11)
    start = dict_off if dict_off is not None and 0 < dict_off < data_off else data_off
    return walk_pages(fh, start, _get(md, 7))


def column_range(fh: IO[bytes], footer: Struct, group: int, column: int, lo: int, hi: int,
                 pages: list[Page] | None = None) -> ChunkRange | None:
    """The pages of one column chunk holding rows ``[lo, hi)`` of row group ``group`` (rows counted
    from the group's start) as a small Parquet file, or None when they are (nearly) the whole chunk
    and reading the original is as cheap."""
    rg, cc, md = _chunk_meta(footer, group, column)
    if pages is None:
        pages = chunk_pages(fh, footer, group, column)
    data = [p for p in pages if p.kind in (_DATA_PAGE, _DATA_PAGE_V2)]
    dicts = [p for p in pages if p.kind == _DICT_PAGE]
    keep = [p for p in data if p.first_row < hi and p.first_row + p.rows > lo]
    if not keep or (keep[0] is data[0] and keep[-1] is data[-1]):
        return None
    n_rows = sum(p.rows for p in keep)
    span = keep[-1].offset + keep[-1].nbytes - keep[0].offset
    segments = [(p.offset, p.nbytes) for p in dicts] + [(keep[0].offset, span)]
    pages_bytes = sum(n for _, n in segments)
    # the footer: this row group only, holding this column's pages; other columns keep their
    # (now meaningless) metadata, which a reader of this one column never looks at
    dict_at = 4 if dicts else None
    data_at = 4 + sum(p.nbytes for p in dicts)
    md = [list(f) for f in md]
    _set(md, 5, _I64, n_rows)  # num_values (flat column: one per row)
    _set(md, 6, _I64, sum(p.uncompressed for p in dicts) + sum(p.uncompressed for p in keep))
    _set(md, 7, _I64, pages_bytes)
    _set(md, 9, _I64, data_at)
    if dict_at is not None:
        _set(md, 11, _I64, dict_at)
    _drop(md, 10, 12, 13, 14, 15, 16, 17)  # index page, statistics, encoding stats, bloom, size/geo stats
    if dict_at is None:
        _drop(md, 11)
    cc = [list(f) for f in cc]
    _set(cc, 2, _I64, dict_at if dict_at is not None else data_at)
    _set(cc, 3, _STRUCT, md)
    _drop(cc, 4, 5, 6, 7)  # page index pointers
    rg = [list(f) for f in rg]
    cols = list(_get(rg, 1)[1])
    cols[column] = cc
    _set(rg, 1, _LIST, (_STRUCT, cols))
    _set(rg, 3, _I64, n_rows)
    _drop(rg, 4, 5, 6, 7)  # sorting columns, offsets, ordinal: of the original file
    meta = [list(f) for f in footer]
    _set(meta, 3, _I64, n_rows)
    _set(meta, 4, _LIST, (_STRUCT, [rg]))
    out = bytearray()
    _write_struct(out, meta)
    return ChunkRange(tuple(segments), bytes(out) + struct.pack("<I", len(out)) + b"PAR1", keep[0].first_row,
                      n_rows)


class PagedGroup:
    """Row ranges of one row group of a Parquet file, read column by column from only the pages
    that hold them (see the module docstring).

    Args:
        fh: the file, open for binary reading (local or an fsspec file object).
        size: its size in bytes.
        group: the row group.
        leaves: leaf column index of each column to read (flat columns only).
    """

    def __init__(self, fh: IO[bytes], size: int, group: int, leaves: list[int]) -> None:
        self.fh = fh
        self.footer, _ = read_footer(fh, size)
        self.group = group
        self.leaves = leaves
        self.pages = {c: chunk_pages(fh, self.footer, group, c) for c in leaves}

    def iter_batches(self, names: list[str], lo: int, hi: int, batch_size: int) -> Iterator[Any] | None:
        """Record batches of rows ``[lo, hi)`` of the group (``names``: the column names, one per
        leaf), or None when no column can skip pages for that range."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        ranges = [column_range(self.fh, self.footer, self.group, c, lo, hi, self.pages[c]) for c in self.leaves]
        if all(r is None for r in ranges):
            return None

        def column(name: str, leaf: int, rng: ChunkRange | None) -> Iterator[Any]:
            if rng is None:
                self.fh.seek(0)
                pf = pq.ParquetFile(self.fh)
                it = pf.iter_batches(batch_size=batch_size, row_groups=[self.group], columns=[name],
                                     use_threads=False)
                first = 0
            else:
                pf = pq.ParquetFile(rng.open(self.fh), pre_buffer=False, buffer_size=_BUFFER)
                it = pf.iter_batches(batch_size=batch_size, columns=[name], use_threads=False)
                first = rng.first_row
            for rb in it:
                arr = rb.column(0)
                a, b = max(lo, first), min(hi, first + len(arr))
                if b > a:
                    yield arr.slice(a - first, b - a)
                first += len(arr)
                if first >= hi:
                    return

        streams = [column(n, c, r) for n, c, r in zip(names, self.leaves, ranges)]
        # the batches follow the biggest column's (the text), which is then never copied
        sizes = [_get(_chunk_meta(self.footer, self.group, c)[2], 6, 0) for c in self.leaves]
        return _aligned(streams, names, hi - lo, sizes.index(max(sizes)))


def _aligned(streams: list[Iterator[Any]], names: list[str], total: int, lead: int = 0) -> Iterator[Any]:
    """Record batches zipping per-column array streams that are cut at different rows.

    Each batch holds one array of the ``lead`` stream (the text column) as it came, and the rows of
    the other streams cut and joined to match: only those (ids, a ``--keep-by`` column: a few bytes
    a row) are copied. Cutting every stream at the rows where any of them ends instead joined pieces
    of the text column at almost every batch, a copy of nearly every text byte (~0.05 CPU s for
    half of a 100,000-document file).
    """
    import pyarrow as pa

    bufs: list[list[Any]] = [[] for _ in streams]
    have = [0] * len(streams)
    done = 0
    while done < total:
        arr = next(streams[lead], None)
        if arr is None:
            raise ThriftError("a column ended before the row range")
        n = len(arr)
        if not n:
            continue
        cols = []
        for i, s in enumerate(streams):
            if i == lead:
                cols.append(arr)
                continue
            while have[i] < n:
                more = next(s, None)
                if more is None:
                    raise ThriftError("a column ended before the row range")
                if len(more):
                    bufs[i].append(more)
                    have[i] += len(more)
            taken, need = [], n
            while need:
                head = bufs[i][0]
                if len(head) <= need:
                    taken.append(bufs[i].pop(0))
                    need -= len(head)
                else:
                    taken.append(head.slice(0, need))
                    bufs[i][0] = head.slice(need)
                    need = 0
            have[i] -= n
            cols.append(taken[0] if len(taken) == 1 else pa.concat_arrays(taken))
        done += n
        yield pa.record_batch(cols, names=names)


def open_paged(fh: IO[bytes], size: int, group: int, leaves: list[int]) -> PagedGroup | None:
    """A :class:`PagedGroup`, or None when the file's layout does not allow reading pages alone."""
    try:
        return PagedGroup(fh, size, group, leaves)
    except (ThriftError, OSError, struct.error, TypeError, IndexError):
        return None


def data_page_starts(path_or_fh: Any, size: int, group: int, leaf: int) -> list[int] | None:
    """First rows (within the group) of the data pages of one column chunk, or None when its
    pages cannot be read alone. The scan planner uses it to know a row group splits cheaply."""
    own = isinstance(path_or_fh, (str, bytes))
    fh = open(path_or_fh, "rb") if own else path_or_fh
    try:
        footer, _ = read_footer(fh, size)
        return [p.first_row for p in chunk_pages(fh, footer, group, leaf) if p.kind in (_DATA_PAGE, _DATA_PAGE_V2)]
    except (ThriftError, OSError, struct.error, TypeError, IndexError):
        return None
    finally:
        if own:
            fh.close()


__all__ = ["PagedGroup", "open_paged", "data_page_starts", "column_range", "walk_pages", "read_footer"]
