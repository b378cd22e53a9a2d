"""The per-shard scan every stage starts with, and the corpus view the global step works on.

A scan task reads one shard (or a range of a Parquet shard's row groups), validates its records,
runs the stage's :class:`~dedupkit.stages.base.Mapper` on every batch, and writes what it computed to
``WORK/scan/task-NNNNN.*`` files with a completion marker. A rerun finds the marker (same stage key,
same shard fingerprint) and reuses the files, so a crashed run resumes where it stopped.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dedupkit.atomic import atomic_open, atomic_write
from dedupkit.engine.base import report_progress
from dedupkit.errors import InputError
from dedupkit.io.fs import abspath, change_token, open_input, parquet_source
from dedupkit.io.npy import load_npy
from dedupkit.io.read import ReadSpec, ShardReader
from dedupkit.io.shards import Piece, Shard, fingerprint
from dedupkit.normalize import char_lengths

# Shards are split into scan tasks of bounded size, so that --workers helps when the corpus is one
# big file and a task's memory stays bounded: a task holds at most SPLIT_BYTES of text (Parquet:
# uncompressed row-group bytes; JSON Lines: file bytes) and SPLIT_ROWS rows. Consecutive Parquet
# row groups are read by one task only while together below MERGE_BYTES (files written with many
# tiny row groups); a row group above SPLIT_BYTES is split into row ranges. When the whole input
# makes fewer tasks than workers, the pieces shrink (down to MIN_PIECE_BYTES) until it makes
# PIECES_PER_WORKER per worker: with one each, the worker whose piece costs more (the first one also
# fingerprints the file) finished alone (c100k's fuzzy scan: 2.62 against 2.44 CPU s), with two
# each the one that finishes first takes the next. The manifest does not depend on the split (rows
# keep their whole-file numbers).
SPLIT_ROWS = 1_000_000
SPLIT_BYTES = 256 * 2**20
MERGE_BYTES = 32 * 2**20
MIN_PIECE_BYTES = 4 * 2**20
PIECES_PER_WORKER = 2
# A stage whose scan costs less than decoding (``decode_weight >= 1``: exact, ~350 MB of text a CPU
# second) cuts a row group only where the pieces read their own pages (dedupkit.io.pqpages: no row
# decoded twice, and the pages are streamed from the file, not copied: c100k's four quarters
# scan in 0.65 CPU s against 0.58 for the whole file). With --workers 1 (one process, nothing to gain) such a
# piece holds at least this much text; with more, the workers are forked from a server that the CLI
# starts before its own imports (dedupkit.engine.local.prestart), so a piece needs only to outweigh
# its reading, and the row group is cut like any other.
CHEAP_MIN_PIECE_BYTES = 512 * 2**20
# Decoding a Parquet row against a stage's work on it, for cutting one row group into tasks of
# equal cost; a Mapper may say its own (``decode_weight``: fuzzy's MinHash work is ~7x the decode,
# exact's hashing less than the decode).
DECODE_WEIGHT = 0.5
# Bad records listed by name in summary.json (all of them are in the manifest and counted).
MAX_LISTED_BAD = 1000


@dataclass(frozen=True)
class ScanTask:
    index: int
    shard_index: int
    shard: Shard
    spec: ReadSpec
    mapper: Any  # a picklable Mapper or None
    workdir: str
    key: str  # stage key: changes when anything that affects the scan output changes
    skip_rows: Any = None  # np.ndarray of rows dropped by earlier stages
    piece: Piece | None = None  # the rows of a split shard this task reads; None: all of them
    part: int = 0  # 0 for the first (or only) task of a shard: it also fingerprints the file

    def reader(self, batch_rows: int | None = None, **kwargs) -> ShardReader:
        """A reader of this task's rows, in batches of at most ``batch_rows`` rows when that is below
        the spec's batch size (``kwargs``: more ShardReader arguments)."""
        spec = self.spec
        if batch_rows is not None and batch_rows < spec.batch_size:
            spec = replace(spec, batch_size=batch_rows)
        return ShardReader(self.shard, spec, skip_rows=self.skip_rows, piece=self.piece, **kwargs)

    def good_texts(self) -> Iterable[pa.Array]:
        """The texts of this task's good rows (see :func:`good_texts`)."""
        return good_texts(self)


@dataclass
class ScanResult:
    index: int
    shard_index: int
    n_rows: int  # rows of the shard up to the end of this task's range
    n_good: int
    bad: list[dict]  # the first MAX_LISTED_BAD bad records; all of them are in the task's .bad.arrow
    fingerprint: str | None
    size: int
    features: list[str] = field(default_factory=list)
    reused: bool = False
    n_bad: int = 0


def plan_tasks(shards: list[Shard], spec: ReadSpec, mapper, workdir: str, key: str,
               skip: dict[str, np.ndarray] | None = None, split_rows: int = SPLIT_ROWS,
               split_bytes: int = SPLIT_BYTES, *, workers: int) -> list[ScanTask]:
    """Scan tasks of bounded size: one per shard, big shards split into pieces (see SPLIT_BYTES).

    Parquet splits by row groups (Arrow files by record batches), and a row group too big for one
    task by row ranges; uncompressed JSON Lines by byte ranges that start at line starts (found by
    one pass counting the lines); compressed JSON Lines and CSV are one task each. Tasks follow
    shard order, then row order.
    """
    groups = [_groups(s) for s in shards]  # read each file's metadata once
    sizes = [sum(b for _, b in g) if g is not None else s.size for g, s in zip(groups, shards)]
    total = sum(sizes)
    target = split_bytes
    if workers > 1 and total < target * workers:
        target = max(MIN_PIECE_BYTES, -(-total // (workers * PIECES_PER_WORKER)))
    tasks: list[ScanTask] = []
    for si, shard in enumerate(shards):
        pieces: list[Piece | None] = [None]
        if groups[si] is not None:
            weight = getattr(mapper, "decode_weight", DECODE_WEIGHT) if shard.format == "parquet" else 0.0
            pages = _page_starts(shard, groups[si], spec.text_column, target, split_rows) \
                if shard.format == "parquet" else None
            pieces = _row_pieces(groups[si], target, split_rows, weight, pages,
                                 CHEAP_MIN_PIECE_BYTES if workers == 1 else 0, workers=workers)
        elif sizes[si] > target and shard.format == "jsonl" and shard.compression is None:
            pieces = _jsonl_pieces(shard, target) or [None]  # compressed JSON Lines and CSV: one task
        for part, piece in enumerate(pieces):
            tasks.append(ScanTask(
                index=len(tasks), shard_index=si, shard=shard, spec=spec, mapper=mapper,
                workdir=workdir, key=key, skip_rows=(skip or {}).get(shard.name), piece=piece,
                part=part,
            ))
    return tasks


def task_rows(task: ScanTask) -> int | None:
    """Rows a scan task reads, when known before reading it (a piece of a split shard, an empty
    file), else None (a whole JSON Lines file): the scan's progress bar counts documents."""
    if task.piece is not None:
        return task.piece.stop - task.piece.start
    return 0 if task.shard.size == 0 else None


def _parquet_metadata(shard: Shard):
    try:
        return pq.ParquetFile(parquet_source(shard.path)).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"{shard.name}: not a readable Parquet file ({exc}); the file may be truncated or "
            "corrupt: regenerate it or remove it from the input"
        ) from exc


def _groups(shard: Shard) -> list[tuple[int, int]] | None:
    """(rows, bytes) of a Parquet file's row groups (uncompressed bytes: what its tasks decode) or
    an Arrow file's record batches; None for other formats and empty files."""
    if shard.size == 0:
        return None
    if shard.format == "parquet":
        md = _parquet_metadata(shard)
        return [(md.row_group(g).num_rows, md.row_group(g).total_byte_size) for g in range(md.num_row_groups)]
    if shard.format == "arrow":
        from dedupkit.io.read import ipc_groups

        try:
            return ipc_groups(shard)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{shard.name}: not a readable Arrow file ({exc}); regenerate it or remove it "
                             "from the input") from exc
    return None


def _page_starts(shard: Shard, groups: list[tuple[int, int]], text_column: str, target: int,
                 split_rows: int) -> list[list[int] | None]:
    """For each row group of a Parquet shard that will be cut into row ranges: the first rows of
    its text column's data pages, when a range can be read from its own pages alone
    (:mod:`dedupkit.io.pqpages`); None for the others (whole groups, or no page skipping)."""
    from dedupkit.io.pqpages import data_page_starts

    out: list[list[int] | None] = [None] * len(groups)
    if not any(rows > 1 and (nbytes > min(target, MIN_PIECE_BYTES) or rows > split_rows) for rows, nbytes in groups):
        return out
    md = _parquet_metadata(shard)
    schema = md.schema
    leaf = next((i for i in range(len(schema)) if schema.column(i).path == text_column
                 and schema.column(i).max_repetition_level == 0), None)
    if leaf is None:
        return out
    with open_input(shard.path) as fh:
        for g, (rows, nbytes) in enumerate(groups):
            if rows > 1 and (nbytes > min(target, MIN_PIECE_BYTES) or rows > split_rows):
                starts = data_page_starts(fh, shard.size, g, leaf)
                out[g] = starts if starts is not None and len(starts) > 1 else None
    return out


def _cuts(k: int, r: float) -> list[float]:
    """Where to cut one row group into ``k`` row ranges (fractions, 0 to 1) so the tasks cost alike.

    A range's reader decodes the group from its start (Parquet decodes a column chunk's pages in
    order), so the range ending at fraction ``s`` with ``n`` of the rows costs about ``r * s + n``
    (``r``: decoding a row against the stage's work on it). Equal costs give the cuts
    ``(1 - a**i) / (1 - a**k)`` with ``a = 1 / (1 + r)``: longer ranges first (r = 0: equal ones),
    ``r`` lowered so that no range holds more than 1.5x an equal share.
    """
    def first(r: float) -> float:
        a = 1.0 / (1.0 + r)
        return (1 - a) / (1 - a ** k)

    # no range more than 1.5x an equal share: tasks stay bounded in size (memory) when decoding
    # dominates, which would otherwise give the first range nearly all the rows
    if k > 1 and r > 0 and first(r) > 1.5 / k:
        lo, hi = 0.0, r
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if first(mid) <= 1.5 / k else (lo, mid)
        r = lo
    if r <= 0 or k == 1:
        return [i / k for i in range(k + 1)]
    a = 1.0 / (1.0 + r)
    return [0.0] + [(1 - a ** i) / (1 - a ** k) for i in range(1, k)] + [1.0]


def _row_pieces(groups: list[tuple[int, int]], target: int, split_rows: int,
                decode_weight: float = 0.0, pages: list[list[int] | None] | None = None,
                cheap_min: int = CHEAP_MIN_PIECE_BYTES, *, workers: int) -> list[Piece]:
    """Row ranges over groups of (rows, bytes): small neighbours merged, big ones cut.

    ``pages[g]``: the first rows of group ``g``'s data pages when a range of it is read from its
    own pages alone (:mod:`dedupkit.io.pqpages`): such a group is cut into equal ranges of about
    ``target`` bytes (for a cheap stage, ``decode_weight >= 1``, at least ``cheap_min``),
    each cut moved to the nearest page start (no page decoded twice), into a multiple of ``workers``
    ranges (c200k's one group: 4 ranges for 2 workers, not 3, of which one worker ran two).

    Otherwise a range's reader decodes the group from its start, so the cuts follow :func:`_cuts`,
    and a group is cut by bytes only when the stage's work outweighs decoding
    (``decode_weight < 1``): for a stage whose work costs less than the decode (exact) more ranges
    only add decoding, and the reader streams a group in batches, so its text never sits in memory
    at once. Such a group is cut by ``split_rows`` alone (which bounds a task's features).
    """
    pieces: list[Piece] = []
    start = 0
    merged_rows = merged_bytes = 0
    for g, (rows, nbytes) in enumerate(groups):
        starts = pages[g] if pages is not None else None
        cut_target = target if decode_weight < 1 else (max(target, cheap_min) if starts else 2**62)
        if merged_rows and (merged_bytes + nbytes > min(target, MERGE_BYTES) or merged_rows + rows > split_rows):
            pieces.append(Piece(start, start + merged_rows))
            start += merged_rows
            merged_rows = merged_bytes = 0
        if merged_rows == 0 and (nbytes > cut_target or rows > split_rows):
            k = max(-(-nbytes // cut_target), -(-rows // split_rows))
            if starts:
                k = -(-k // workers) * workers
                at = np.asarray(starts + [rows], np.int64)
                cuts = sorted({0, rows} | {int(at[np.abs(at - rows * i / k).argmin()]) for i in range(1, k)})
                cuts = [start + c for c in cuts]
            else:
                cuts = [start + int(rows * f) for f in _cuts(k, decode_weight)]
            pieces += [Piece(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
            start += rows
            continue
        merged_rows += rows
        merged_bytes += nbytes
    if merged_rows or not pieces:
        pieces.append(Piece(start, start + merged_rows))
    return pieces


def _jsonl_pieces(shard: Shard, target: int, block: int = 1 << 24) -> list[Piece]:
    """Byte ranges of about ``target`` bytes starting at line starts, with their line numbers.

    One pass over the file counts the lines (bytes.count runs at memory speed); each cut moves
    forward to the first line start at or after it.
    """
    size = shard.size
    k = -(-size // target)
    if k <= 1:
        return []
    wanted = iter([size * i // k for i in range(1, k)])
    cut = next(wanted, None)
    starts, lines_at = [0], [0]  # byte offset of each piece's first line, and that line's number
    lines = pos = 0
    last = b"\n"
    try:
        with open_input(shard.path) as fh:
            while True:
                data = fh.read(block)
                if not data:
                    break
                while cut is not None:
                    nl = data.find(b"\n", max(cut - 1, pos) - pos)
                    if nl < 0:
                        break  # that newline is in a later block
                    start = pos + nl + 1
                    if start < size and start > starts[-1]:
                        starts.append(start)
                        lines_at.append(lines + data.count(b"\n", 0, nl + 1))
                    cut = next(wanted, None)
                lines += data.count(b"\n")
                pos += len(data)
                last = data[-1:]
    except OSError as exc:
        raise InputError(f"{shard.name}: cannot read ({exc.strerror})") from exc
    rows = lines_at + [lines + (0 if last == b"\n" else 1)]
    bounds = starts + [pos]
    return [Piece(rows[i], rows[i + 1], bounds[i], bounds[i + 1]) for i in range(len(starts))]


def _paths(task: ScanTask) -> tuple[Path, Path]:
    base = Path(task.workdir) / f"task-{task.index:05d}"
    return base.with_suffix(".done.json"), base.with_suffix(".arrow")


def _bad_path(task: ScanTask) -> Path:
    return Path(task.workdir) / f"task-{task.index:05d}.bad.arrow"


def _text_path(task: ScanTask) -> Path:
    return Path(task.workdir) / f"task-{task.index:05d}.text.arrow"


def good_texts(task: ScanTask) -> Iterable[pa.Array]:
    """The texts of a scan task's good rows in order, as arrays: from the copy the scan kept when
    its mapper asked for one (``keep_text``: an Arrow file, no Parquet decoding again), else read
    from the shard again.

    The Arrow file is read batch by batch, not memory-mapped: a map keeps every page a reader
    touched resident (counted in its RSS) until it is closed, and a reader that takes documents
    spread over the whole file (fuzzy's char n-gram pass) touches nearly all of it (~360 MB a
    task at 1M documents)."""
    path = _text_path(task)
    if path.exists():
        with pa.OSFile(str(path), "r") as src:
            reader = pa.ipc.open_file(src)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i).column(0)
        return
    for batch in task.reader():
        yield batch.text


def _write_ipc_atomic(table: pa.Table, path: Path) -> None:
    with atomic_open(path, sync=False) as fh, pa.ipc.new_file(fh, table.schema) as writer:
        writer.write_table(table)


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    # The completion marker is written after every feature file, so a half-written .npy is never
    # trusted; the temporary name keeps a failed write (disk full) from leaving a truncated file.
    with atomic_open(path, sync=False) as fh:
        np.save(fh, arr)


def _piece_dict(piece: Piece | None) -> dict | None:
    return asdict(piece) if piece is not None else None


def run_scan_task(task: ScanTask) -> ScanResult:
    """Worker entry point: scan one task's rows, write its artifacts, return a small result."""
    done_path, table_path = _paths(task)
    fp = fingerprint(task.shard.path) if task.part == 0 else None
    size = task.shard.size
    # Only part 0 of a split shard fingerprints the file (reading it once); the other parts check
    # size and modification time, so a shard rewritten between a killed run and its rerun is
    # rescanned rather than mixed with results from its old content.
    mtime = change_token(task.shard.path)
    if done_path.exists():
        try:
            meta = json.loads(done_path.read_text())
            if meta.get("key") == task.key and meta.get("size") == size and meta.get("mtime_ns") == mtime and \
                    meta.get("piece") == _piece_dict(task.piece) and (
                task.part != 0 or meta.get("fingerprint") == fp
            ) and table_path.exists() and "n_bad" in meta["result"] and (
                not meta["result"]["n_bad"] or _bad_path(task).exists()
            ) and all(
                (Path(task.workdir) / f"task-{task.index:05d}.{name}.npy").exists()
                for name in meta["result"].get("features", [])
            ) and (not getattr(task.mapper, "keep_text", False) or not meta["result"]["n_good"]
                   or _text_path(task).exists()):
                res = ScanResult(**meta["result"])
                res.reused = True
                return res
        except (ValueError, KeyError, TypeError):
            pass  # a damaged marker: redo the task
    reader = task.reader(getattr(task.mapper, "batch_rows", None))
    rows, lengths, ids, extras = [], [], [], {c: [] for c in task.spec.extra_columns}
    feats: dict[str, list[np.ndarray]] = {}
    # a mapper with keep_text (fuzzy's char n-grams read candidate texts again) gets the texts of
    # the good rows written as they are read: an Arrow file read back by memory map, instead of
    # decoding the shard (and, for a piece of one big row group, the rows before it) once more
    keep_text = bool(getattr(task.mapper, "keep_text", False))
    text_path = _text_path(task)
    text_path.unlink(missing_ok=True)
    with ExitStack() as done:  # on leaving: the text file closed, then renamed into place (or removed)
        writer = None
        for batch in reader:
            rows.append(batch.rows)
            lengths.append(char_lengths(batch.text))
            if batch.ids is not None:
                ids.append(batch.ids)
            for c in extras:
                extras[c].append(batch.extra[c])
            if task.mapper is not None:
                for name, arr in task.mapper.map_batch(batch).items():
                    feats.setdefault(name, []).append(arr)
            if keep_text:
                text = batch.text if pa.types.is_large_string(batch.text.type) else batch.text.cast(pa.large_string())
                if writer is None:
                    sink = done.enter_context(atomic_open(text_path, sync=False))
                    writer = done.enter_context(pa.ipc.new_file(sink, pa.schema([("text", pa.large_string())])))
                writer.write_batch(pa.record_batch([text], ["text"]))
            report_progress(len(batch.rows))
    cols: dict[str, pa.Array] = {
        "row": pa.array(np.concatenate(rows) if rows else np.zeros(0, np.int64)),
        "length": pa.array(np.concatenate(lengths) if lengths else np.zeros(0, np.int64)),
    }
    if task.spec.id_column:
        cols["id"] = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    for c, parts in extras.items():
        cols["x_" + c] = pa.chunked_array(parts).combine_chunks() if parts else pa.array([])
    table = pa.table(cols)
    _write_ipc_atomic(table, table_path)
    if len(reader.bad):
        # Every bad record goes to a file (row, dictionary-encoded reason), not through the
        # completion marker and the result pickles: five million blank lines stay ~60 MB.
        _write_ipc_atomic(reader.bad.table(), _bad_path(task))
    names = []
    for name, parts in feats.items():
        _save_npy_atomic(Path(task.workdir) / f"task-{task.index:05d}.{name}.npy",
                         np.concatenate(parts) if parts else np.zeros(0))
        names.append(name)
    if task.mapper is not None and not feats:
        # No good rows: still record empty features so the corpus knows their shape.
        for name, arr in task.mapper.empty().items():
            _save_npy_atomic(Path(task.workdir) / f"task-{task.index:05d}.{name}.npy", arr)
            names.append(name)
    result = ScanResult(
        index=task.index, shard_index=task.shard_index, n_rows=reader.n_rows,
        n_good=int(len(table)), bad=reader.bad.listed(MAX_LISTED_BAD), fingerprint=fp, size=size,
        features=sorted(names), n_bad=len(reader.bad),
    )
    # the piece too: a rerun with other --workers may plan other pieces under the same task number
    meta = {"key": task.key, "size": size, "mtime_ns": mtime, "fingerprint": fp, "piece": _piece_dict(task.piece),
            "result": asdict(result)}
    atomic_write(done_path, json.dumps(meta).encode())
    return result


@dataclass
class ShardInfo:
    shard: Shard
    n_rows: int
    fingerprint: str
    size: int
    bad: list[dict]  # the first MAX_LISTED_BAD bad records
    n_bad: int = 0
    bad_files: list[str] = field(default_factory=list)

    def bad_table(self) -> pa.Table:
        """Every bad record of the shard: ``row`` (int64) and ``reason`` (string, dictionary-encoded)."""
        tables = []
        for path in self.bad_files:
            with pa.memory_map(path, "r") as src:
                tables.append(pa.ipc.open_file(src).read_all())
        if not tables:
            return pa.table({"row": pa.array([], pa.int64()), "reason": pa.array([], pa.string())})
        return pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()

    def to_dict(self) -> dict:
        return {"name": self.shard.name, "path": abspath(self.shard.path),
                "format": self.shard.format, "compression": self.shard.compression,
                "size": self.size, "fingerprint": self.fingerprint, "rows": self.n_rows}


def shard_infos(tasks: list[ScanTask], results: list[ScanResult], shards: list[Shard]
                ) -> tuple[list[ShardInfo], np.ndarray]:
    """Per-shard info from the scan results (rows, fingerprint, bad records), and every shard's
    first global row number (plus the total rows at the end)."""
    per_shard_rows = [0] * len(shards)
    fps: list[str | None] = [None] * len(shards)
    sizes = [s.size for s in shards]
    bad: list[list[dict]] = [[] for _ in shards]
    n_bad = [0] * len(shards)
    bad_files: list[list[str]] = [[] for _ in shards]
    for t, r in zip(tasks, results):
        per_shard_rows[t.shard_index] = max(per_shard_rows[t.shard_index], r.n_rows)
        if t.part == 0:
            fps[t.shard_index] = r.fingerprint
            sizes[t.shard_index] = r.size
        if len(bad[t.shard_index]) < MAX_LISTED_BAD:
            bad[t.shard_index].extend(r.bad[:MAX_LISTED_BAD - len(bad[t.shard_index])])
        if r.n_bad:
            n_bad[t.shard_index] += r.n_bad
            bad_files[t.shard_index].append(str(_bad_path(t)))
    infos = [ShardInfo(s, per_shard_rows[i], fps[i] or "", sizes[i], bad[i], n_bad[i], bad_files[i])
             for i, s in enumerate(shards)]
    return infos, np.cumsum([0] + per_shard_rows)


def _surely_unique(ids: pa.ChunkedArray) -> bool:
    """True when no two ids share the first 64 bits of their xxh3-128 hash (so no two are equal);
    False when two might be equal (or without the C kernels), for the exact check to decide.

    Hashing (the C kernel) and sorting 64-bit words is ~5x cheaper than counting the strings
    (``pc.value_counts``: 0.16-0.36 s for 1M ids, in the driver after the scan, every run)."""
    from dedupkit import kernels

    if kernels.speedups is None:
        return False
    from dedupkit.stages.exact import hash128

    words = np.sort(np.concatenate([hash128(c)[:, 0] for c in ids.chunks if len(c)]))
    return not bool((words[1:] == words[:-1]).any())


class Corpus:
    """The scanned corpus as flat arrays over its *active* documents, in (shard, row) order.

    Active documents are those that were read, are not bad records and were not dropped by an
    earlier stage (``--skip``). Index ``i`` of every array is the document's global index.

    Attributes:
        shards: per-shard info (rows, fingerprint, bad records).
        shard_index: int32 shard number of each active document.
        rows: int64 row number in its shard.
        global_rows: int64 row number across all shards (stable cluster ids use it).
        lengths: int64 text length in characters.
        ids: the ``--id-column`` values (pa.ChunkedArray of strings) or None.
        extra: other columns read (``--keep-by``), as pa.ChunkedArray.
    """

    def __init__(self, tasks: list[ScanTask], results: list[ScanResult], shards: list[Shard]):
        self.tasks = tasks
        self.results = results
        self.shards, offsets = shard_infos(tasks, results, shards)
        self.shard_offsets = offsets
        tables = [self._table(t) for t in tasks]
        self.task_sizes = [len(tb) for tb in tables]
        self.task_offsets = np.cumsum([0] + self.task_sizes)
        self.shard_index = np.concatenate(
            [np.full(len(tb), t.shard_index, np.int32) for t, tb in zip(tasks, tables)]
        ) if tables else np.zeros(0, np.int32)
        self.rows = np.concatenate([tb.column("row").to_numpy() for tb in tables]) if tables else np.zeros(0, np.int64)
        self.rows = self.rows.astype(np.int64, copy=False)
        self.global_rows = offsets[self.shard_index] + self.rows if len(self.rows) else np.zeros(0, np.int64)
        self.lengths = np.concatenate([tb.column("length").to_numpy() for tb in tables]).astype(np.int64) \
            if tables else np.zeros(0, np.int64)
        spec = tasks[0].spec if tasks else None
        self.ids = None
        if spec is not None and spec.id_column:
            self.ids = pa.chunked_array([c for tb in tables for c in tb.column("id").chunks], pa.string())
        self.extra: dict[str, pa.ChunkedArray] = {}
        if spec is not None:
            for c in spec.extra_columns:
                chunks = [ch for tb in tables for ch in tb.column("x_" + c).chunks if len(ch)]
                if chunks:
                    types = {ch.type for ch in chunks}
                    if len(types) > 1:
                        try:
                            chunks = [ch.cast(chunks[0].type) for ch in chunks]
                        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                            raise InputError(f"column {c!r} has different types in different shards "
                                             f"({', '.join(map(str, types))}); use one type") from exc
                    self.extra[c] = pa.chunked_array(chunks)
                else:
                    self.extra[c] = pa.chunked_array([], pa.null())

    @staticmethod
    def _table(task: ScanTask) -> pa.Table:
        _, path = _paths(task)
        with pa.memory_map(str(path), "r") as src:
            return pa.ipc.open_file(src).read_all()

    def __len__(self) -> int:
        return len(self.rows)

    def feature_parts(self, name: str, mmap: bool = True) -> Iterable[np.ndarray]:
        """Yield a mapper feature task by task (memory-mapped), in global order."""
        for t in self.tasks:
            path = Path(t.workdir) / f"task-{t.index:05d}.{name}.npy"
            yield load_npy(path, mmap=mmap)

    def feature(self, name: str) -> np.ndarray:
        """A mapper feature for all active documents, concatenated in global order."""
        parts = list(self.feature_parts(name))
        return np.concatenate(parts) if parts else np.zeros(0)

    def doc_ids(self, index: np.ndarray | None = None) -> pa.Array:
        """doc_id strings of active documents (all, or those at ``index``)."""
        idx = np.arange(len(self), dtype=np.int64) if index is None else np.asarray(index, np.int64)
        if self.ids is not None:
            return self.ids.take(pa.array(idx)).combine_chunks() if len(idx) else pa.array([], pa.string())
        if not len(idx):
            return pa.array([], pa.string())
        names = pa.array([s.shard.name + ":" for s in self.shards], pa.string())
        prefixes = names.take(pa.array(self.shard_index[idx]))
        return pc.binary_join_element_wise(prefixes, pc.cast(pa.array(self.rows[idx]), pa.string()), "")

    def check_unique_ids(self) -> None:
        """Raise InputError naming both places when an ``--id-column`` value occurs twice."""
        if self.ids is None or len(self.ids) < 2 or _surely_unique(self.ids):
            return
        counts = pc.value_counts(self.ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))
        if len(dup) == 0:
            return
        value = dup.field("values")[0].as_py()
        where = np.flatnonzero(np.asarray(pc.equal(self.ids, value).combine_chunks(), dtype=bool))[:2]
        places = [f"{self.shards[self.shard_index[i]].shard.name} row {self.rows[i]}" for i in where]
        raise InputError(
            f"id {value!r} in column {self.tasks[0].spec.id_column!r} occurs more than once "
            f"({' and '.join(places)}; {len(dup)} duplicated id value(s) in all); ids must be unique: "
            "fix the data, or drop --id-column to use \"{shard}:{row}\" ids"
        )

    @property
    def bad_records(self) -> list[dict]:
        """The first MAX_LISTED_BAD bad records of the corpus, in shard order (for the summary)."""
        out: list[dict] = []
        for s in self.shards:
            out.extend(s.bad[:MAX_LISTED_BAD - len(out)])
        return out

    @property
    def n_bad(self) -> int:
        """How many bad records the corpus holds (all of them, listed or not)."""
        return sum(s.n_bad for s in self.shards)
