"""Write the kept rows of each input shard, in its own format, as one or more manifests decide."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dedupkit import settings as _S
from dedupkit.errors import ManifestError, OutputError
from dedupkit.io.fs import parquet_source
from dedupkit.io.read import open_text_stream
from dedupkit.io.shards import Shard, discover, fingerprint
from dedupkit.manifest import Manifest, open_manifest, output_root
from dedupkit.manifest.read import keep_flags
from dedupkit.outdir import swap_folder
from dedupkit.spans import cut_array, merge_spans, read_spans, span_dirs
from dedupkit.ownership import check_creatable, check_separate, made_dirs, remove_made_dirs, write_error

APPLY_SUMMARY = "_dedupkit_apply.json"


@dataclass
class ApplyResult:
    """What ``apply`` wrote: the output folder and its record (``_dedupkit_apply.json``).

    ``uploaded``: files (relative paths) that tasks wrote to a remote output themselves; the
    publish step skips them (:func:`dedupkit.io.fs.remote_output`).
    """

    out: Path
    summary: dict
    uploaded: tuple[str, ...] = ()


def _out_names(shards: Sequence[Shard]) -> list[str]:
    """Output paths relative to the clean folder: shard names less their common parent folder.

    ``..`` becomes ``dotdot`` and a leading ``/`` is dropped, so ``../x/part.jsonl`` and
    ``x/part.jsonl`` get ``dotdot/x/part.jsonl`` and ``x/part.jsonl``. Any two shards that would
    still share an output path (also ignoring case, for case-insensitive file systems) are refused:
    one output file per shard, always.

    Raises:
        OutputError: two shards map to the same output path.
    """
    names = [os.path.normpath(s.name) for s in shards]
    parents = [os.path.dirname(n) for n in names]
    common = os.path.commonpath(parents) if all(parents) and len({os.path.isabs(p) for p in parents}) == 1 else ""
    out = []
    for n in names:
        rel = os.path.relpath(n, common) if common else n
        parts = ["dotdot" if p == ".." else p for p in PurePosixPath(rel.replace(os.sep, "/")).parts
                 if p not in ("/", ".")]
        out.append(os.path.join(*parts))
    seen: dict[str, int] = {}
    for i, name in enumerate(out):
        j = seen.setdefault(name.casefold(), i)
        if j != i:
            raise OutputError(f"inputs {shards[j].name} and {shards[i].name} would both be written to "
                              f"{name} in the output folder; name them so that they differ below their "
                              "common folder (e.g. pass their parent folders)")
    return out


def _entry_for(manifest: Manifest, shard: Shard, used: dict[str, str]) -> dict:
    """The summary's record of ``shard``: by its name, else by the same file (its real path).

    Never by fingerprint alone: two shards with the same bytes (a copy) would both take one
    shard's decisions. The entry's fingerprint must then equal the file's (:func:`_check_fingerprint`).
    """
    manifest_dir = str(manifest.root)
    entry = manifest.inputs.get(shard.name)  # a dict: a scan of the list per shard was quadratic
    if entry is None:
        real = os.path.realpath(shard.path)
        same = [s for s in manifest.inputs.values()
                if isinstance(s.get("path"), str) and os.path.realpath(s["path"]) == real]
        if len(same) == 1:
            entry = same[0]
    if entry is None:
        raise ManifestError(
            f"{shard.name} is not in manifest {manifest_dir} (it was made from other shards); "
            "run the stage over this input first, or name the input as it was named then"
        )
    other = used.setdefault(entry["name"], shard.name)
    if other != shard.name:
        raise ManifestError(f"inputs {other} and {shard.name} are both shard {entry['name']} of manifest "
                            f"{manifest_dir}; name each file once, as it was named for the stage")
    return entry


@dataclass(frozen=True)
class KeepSource:
    """What one manifest says about one shard, for :func:`apply_shard`: the manifest's folder, the
    shard's name and fingerprint there, the parts holding its rows, its row count and the span
    folders that cut it (none for a keep/drop manifest)."""

    manifest: str
    entry: str
    fingerprint: str | None
    parts: tuple[str, ...]
    rows: int
    span_dirs: tuple[str, ...]


def _check_fingerprint(src: KeepSource, shard: Shard, fp: str) -> None:
    if src.fingerprint != fp:
        raise ManifestError(
            f"{shard.name} changed since manifest {src.manifest} was made (fingerprint "
            f"{src.fingerprint} recorded, {fp} now); rerun the stage on the current data"
        )


def _shard_spans(src: KeepSource):
    """(row, start, end) of the spans a span manifest (or a run's span stages) cuts from the
    shard, or None if it has none."""
    if not src.span_dirs:
        return None
    tables = [read_spans(d, shard=src.entry, columns=["row", "start", "end"]) for d in src.span_dirs]
    return tuple(np.concatenate([t.column(c).to_numpy() for t in tables]) for c in ("row", "start", "end"))


@dataclass(frozen=True)
class ApplyTask:
    """One input shard to write clean (:func:`apply_shard`).

    ``dest``: the output file (in apply's temporary folder); ``upload``: a remote output folder
    the task writes its file to itself instead (at ``output``, a '/'-separated relative path).
    """

    shard: Shard
    output: str
    sources: tuple[KeepSource, ...]
    text_column: str | None
    batch_size: int
    dest: str
    upload: str | None = None


def apply_shard(task: ApplyTask, masks: Sequence[np.ndarray] | None = None) -> dict:
    """Write one shard's kept rows (spans cut) in its own format; its record and its span count.

    The shard's fingerprint is checked against every manifest first. ``masks``: the manifests'
    keep flags when the caller holds them (in-process apply); else they are read from the parts.

    Returns:
        ``{"record": {name, output, rows, kept, output_bytes, output_checksum}, "spans": n or None}``.
    """
    shard = task.shard
    fp = fingerprint(shard.path)
    for src in task.sources:
        _check_fingerprint(src, shard, fp)
    mask = None
    cuts = []
    for k, src in enumerate(task.sources):
        m = masks[k] if masks is not None else keep_flags(src.parts, src.entry, src.rows)
        mask = m if mask is None else (mask & m) if len(mask) == len(m) else _mismatch(shard)
        c = _shard_spans(src)
        if c is not None:
            cuts.append(c)
    spans = None
    if cuts:  # spans of several manifests: cut their union
        spans = merge_spans(*(np.concatenate([c[i] for c in cuts]) for i in range(3)))
    scratch = tempfile.mkdtemp(prefix="dedupkit-apply-") if task.upload else None
    try:
        # a task that uploads writes beside itself: on a cluster, the driver's folder is not here
        dest = Path(scratch) / os.path.basename(task.output) if scratch else Path(task.dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if shard.format == "jsonl":
            kept = _write_jsonl(shard, mask, dest, spans=spans, text_column=task.text_column)
        else:
            kept = _write_table(shard, mask, dest, task.batch_size, spans, task.text_column)
        record = {"name": shard.name, "output": str(Path(task.output)), "rows": int(len(mask)), "kept": kept,
                  "output_bytes": dest.stat().st_size, "output_checksum": fingerprint(str(dest))}
        if task.upload:
            from dedupkit.io import fs

            fs.RemoteFolder(task.upload).upload(dest, task.output)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return {"record": record, "spans": int(len(spans[0])) if spans is not None else None}


def _read_config(summary: dict) -> dict:
    config = summary.get("config") or {}
    read = config.get("read", config)  # a pipeline run records the read settings at the top
    return read if isinstance(read, dict) else {}


def _text_column(summaries) -> str | None:
    """The text column the span manifests were made on (they must agree)."""
    cols = {_read_config(s).get("text_column") for d, s in summaries if span_dirs(d, s)}
    cols.discard(None)
    if len(cols) > 1:
        raise ManifestError(f"the span manifests were made on different text columns ({', '.join(sorted(cols))}); "
                            "apply them one at a time")
    return cols.pop() if cols else None


def _open_out(path: Path, compression: str | None) -> IO[bytes]:
    raw = open(path, "wb")
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().stream_writer(raw, closefd=True)  # type: ignore[return-value]
    return raw


def _table_source(shard: Shard, batch_size: int):
    """(schema, a writer factory for ``dest``, batches of (row numbers, record batch), row count)
    of a table shard: Parquet, Arrow IPC (file or stream, as the input is) or CSV/TSV."""
    from dedupkit.io import read

    if shard.format == "parquet":
        pf = pq.ParquetFile(parquet_source(shard.path))
        schema = pf.schema_arrow
        return schema, lambda dest: pq.ParquetWriter(dest, schema, compression="zstd"), \
            _numbered(pf.iter_batches(batch_size=batch_size)), lambda: pf.metadata.num_rows
    if shard.format == "arrow":
        schema, batches = read.ipc_batches(shard)
        new = pa.ipc.new_stream if read.ipc_is_stream(shard.path) else pa.ipc.new_file
        return schema, lambda dest: new(str(dest), schema), \
            _numbered(read.rechunk(batches, batch_size)), None
    import pyarrow.csv as pcsv

    rows = read.CsvRows()
    # every column as text: values are written back as they were read (no "007" -> 7)
    reader = read.open_csv(shard, rows, strings=read.csv_columns(shard), nulls=True)
    schema = reader.schema
    delimiter = "\t" if shard.format == "tsv" else ","
    batches = ((rows.take(rb.num_rows), rb) for rb in read.rechunk(reader, batch_size))
    return schema, lambda dest: pcsv.CSVWriter(str(dest), schema, write_options=pcsv.WriteOptions(
        delimiter=delimiter)), batches, rows.total


def _numbered(batches):
    offset = 0
    for rb in batches:
        yield np.arange(offset, offset + rb.num_rows, dtype=np.int64), rb
        offset += rb.num_rows


def _write_table(shard: Shard, mask: np.ndarray, dest: Path, batch_size: int, spans=None,
                 text_column: str | None = None) -> int:
    """Write the kept rows of a Parquet, Arrow or CSV shard in its own format, schema and all
    columns as they were (span manifests cut the text column)."""
    schema, writer_for, batches, count = _table_source(shard, batch_size)
    written = 0
    seen = 0
    if spans is not None and text_column not in schema.names:
        raise ManifestError(f"{shard.name} has no column {text_column!r}, which the span manifest cuts; "
                            "rerun the stage on the current data")
    with writer_for(dest) as writer:
        for rows, rb in batches:
            if len(rows) and rows[-1] >= len(mask):
                raise ManifestError(f"{shard.name} has more rows than the manifest ({len(mask)}); rerun the stage")
            m = mask[rows]
            if spans is not None:
                lo, hi = np.searchsorted(spans[0], [rows[0], rows[-1] + 1]) if len(rows) else (0, 0)
                if hi > lo:  # cut the text of this batch's rows that have spans
                    ci = rb.schema.get_field_index(text_column)
                    col = cut_array(rb.column(ci), np.searchsorted(rows, spans[0][lo:hi]), spans[1][lo:hi],
                                    spans[2][lo:hi], where=shard.name)
                    rb = pa.RecordBatch.from_arrays([col if i == ci else rb.column(i) for i in range(rb.num_columns)],
                                                    schema=rb.schema)
            seen = int(rows[-1]) + 1 if len(rows) else seen
            if m.all():
                writer.write_batch(rb)
            elif m.any():
                writer.write_batch(rb.filter(pa.array(m)))
            written += int(m.sum())
    total = count() if count is not None else seen
    if max(total, seen) != len(mask):
        raise ManifestError(f"{shard.name} has {max(total, seen)} rows, the manifest {len(mask)}; rerun the stage")
    return written


def _dataset_files(shard: Shard, dest: Path, tmp: Path) -> list[str]:
    """For a data file of a Hugging Face ``save_to_disk`` folder, copy its ``state.json`` and
    ``dataset_info.json`` beside the output, so the output folder loads with ``load_from_disk``.
    Returns the files copied (relative to ``tmp``), once per folder."""
    from dedupkit.io.shards import HF_STATE, hf_data_files

    folder = os.path.dirname(shard.path)
    if shard.format != "arrow" or os.path.basename(shard.path) not in (hf_data_files(folder) or []):
        return []
    copied = []
    for name in (HF_STATE, "dataset_info.json"):
        src, out = Path(folder) / name, dest.parent / name
        if src.is_file() and not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)  # (a task that uploads wrote its file elsewhere)
            shutil.copyfile(src, out)
            copied.append(str(out.relative_to(tmp)))
    return copied


def _cut_json_line(line: bytes, text_column: str, start: np.ndarray, end: np.ndarray, where: str) -> bytes:
    """One JSONL record with its text cut: the other fields keep their values and order."""
    rec = json.loads(line)
    text = rec.get(text_column) if isinstance(rec, dict) else None
    if not isinstance(text, str):
        raise ManifestError(f"{where}: a span points to a record without a string {text_column!r}; "
                            "rerun the stage on the current data")
    rec[text_column] = cut_array(pa.array([text], pa.large_string()), np.zeros(len(start), np.int64),
                                 start, end, where=where)[0].as_py()
    return json.dumps(rec, ensure_ascii=False).encode("utf-8") + (b"\n" if line.endswith(b"\n") else b"")


def _write_jsonl(shard: Shard, mask: np.ndarray, dest: Path, chunk: int = 1 << 20, spans=None,
                 text_column: str | None = None) -> int:
    # Lines are copied in chunks of at most ``chunk`` bytes, so a huge line (say a 1 GB record
    # that the stage skipped as too long) never has to fit in memory, kept or dropped.
    written = 0
    row = -1
    at_line_start = True
    keep = False
    with open_text_stream(shard) as src, _open_out(dest, shard.compression) as dst:
        while True:
            piece = src.readline(chunk)
            if not piece:
                break
            if at_line_start:
                row += 1
                keep = row < len(mask) and bool(mask[row])
                if keep:
                    written += 1
                if keep and spans is not None:
                    lo, hi = np.searchsorted(spans[0], [row, row + 1])
                    if hi > lo:  # a record with spans is read whole (it was read whole to find them)
                        while not piece.endswith(b"\n"):
                            more = src.readline(chunk)
                            if not more:
                                break
                            piece += more
                        dst.write(_cut_json_line(piece, text_column, spans[1][lo:hi], spans[2][lo:hi],
                                                 f"{shard.name} line {row + 1}"))
                        at_line_start = piece.endswith(b"\n")
                        continue
            if keep:
                dst.write(piece)
            at_line_start = piece.endswith(b"\n")
        if keep and not at_line_start:
            dst.write(b"\n")  # the shard's last line had no newline
    if row + 1 != len(mask):
        raise ManifestError(f"{shard.name} has {row + 1} lines, the manifest {len(mask)}; rerun the stage")
    return written


def _lock_dir(path: Path, out: Path) -> int:
    """Create ``path`` and hold an exclusive lock on it; refuse if another apply holds it."""
    from dedupkit.locks import try_lock

    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = try_lock(fd)
    except BaseException:
        os.close(fd)
        raise
    if not got:
        os.close(fd)
        raise OutputError(
            f"another dedupkit apply is writing {out} right now; wait for it to finish or choose another -o"
        )
    return fd


def apply_manifests(inputs: Sequence[str], manifests: Sequence[str], out: str | os.PathLike,
                    overwrite: bool = False, batch_size: int = _S.ReadConfig.batch_size, *,
                    engine: str | None = None, workers: int = _S.RunConfig.workers,
                    ray_address: str | None = None, progress: Any = None,
                    upload_to: str | None = None) -> ApplyResult:
    """Write the rows that every manifest keeps, one output shard per input shard.

    A row is dropped if any manifest drops it. Span manifests (``OUT/spans``, see
    :mod:`dedupkit.spans`) cut their spans out of the text column of the kept rows; every other
    column (and the Parquet schema) stays as it was, and the spans of several manifests are merged.
    Parquet keeps its schema and every column; JSONL lines are copied byte for byte (and
    recompressed the same way). The output folder appears only when every shard is written, with
    ``_dedupkit_apply.json`` (rows, kept rows, size and checksum of every output file).

    On the local engine with ``workers`` 1 (or a single input shard) everything runs in this
    process. Otherwise (``workers`` above 1 and two shards or more, or ``engine="ray"``) the driver
    only plans: engine tasks check the manifests' parts (one task a part), then one task per input
    shard reads the shard and its keep flags and writes the clean shard itself (to a remote
    ``out``, it uploads it there: :func:`apply_shard`); the driver collects their small records
    and writes ``_dedupkit_apply.json`` last. The files are the same bytes either way.

    Args:
        inputs: the shards the manifests were made from (files, folders, globs).
        manifests: stage output folders (``OUT`` or ``OUT/manifest``).
        out: the clean corpus folder (a path or a store URL, ``s3://...``).
        overwrite: replace an existing ``out``.
        batch_size: rows per batch read from table shards.
        engine: ``local`` (default) or ``ray``.
        workers: tasks that run at once.
        ray_address: a Ray cluster (None: ``RAY_ADDRESS``, else a local instance).
        progress: a progress-bar factory (:class:`dedupkit.engine.ProgressFactory`).
        upload_to: set by the remote branch: the store folder engine tasks write to.

    Raises:
        ManifestError: a manifest is unfinished, does not cover a shard, or a shard changed.
        OutputError: ``out`` exists and ``overwrite`` is false.

    Example:
        >>> res = apply_manifests([str(data)], [str(tmp / "exact")], tmp / "clean", workers=2)  # doctest: +SKIP
        >>> res.summary["kept"]  # doctest: +SKIP
        3
    """
    if not manifests:
        raise ManifestError("no --manifest given; pass the -o folder of a finished stage")
    from dedupkit.io import fs

    if fs.is_remote(out):
        # the clean corpus is written in a local staging folder (engine tasks upload their shards
        # themselves), then _dedupkit_apply.json is uploaded last (never pulled back: not reused)
        return fs.remote_output(str(out), None, lambda local: apply_manifests(
            inputs, manifests, local, overwrite=True, batch_size=batch_size, engine=engine, workers=workers,
            ray_address=ray_address, progress=progress, upload_to=str(out)), pull=False, overwrite=overwrite)
    out = Path(fs.local(out))
    roots = [str(output_root(m)) for m in manifests]
    replaced = check_output(out, inputs, roots, overwrite)
    shards = discover(inputs, exclude=[str(out)] + roots)
    # local processes only pay off with two shards or more (one task would run here anyway)
    if (engine or "local") == "local" and min(workers, len(shards)) < 2:
        local_engine = sys.modules.get("dedupkit.engine.local")
        if local_engine is not None:
            local_engine.discard_prestarted()  # workers the CLI started for --workers: not needed
        return _apply(shards, roots, out, overwrite, replaced, batch_size, None, None)
    from dedupkit.engine import get_engine, no_progress

    with get_engine(engine or "local", workers, progress or no_progress, ray_address) as eng:
        return _apply(shards, roots, out, overwrite, replaced, batch_size, eng, upload_to)


def _apply(shards: list[Shard], roots: list[str], out: Path, overwrite: bool, replaced, batch_size: int,
           engine: Any, upload_to: str | None) -> ApplyResult:
    """apply_manifests on a local ``out`` that :func:`check_output` accepted; ``engine``: see there
    (None: everything here; ``upload_to`` is then left to the caller's publish step)."""
    upload_to = upload_to if engine is not None else None
    # the whole contract checked before any work (by engine tasks, one a part, when spread)
    opened = {d: open_manifest(d, engine=engine) for d in roots}
    summaries = [(d, m.summary) for d, m in opened.items()]
    used: dict[str, dict[str, str]] = {d: {} for d in roots}
    text_column = _text_column(summaries)
    # One fixed temporary folder next to OUT, locked while in use: a second apply to the same OUT
    # is refused, and the leftovers of a killed apply are removed (not piled up) by the next one.
    tmp = out.with_name(f".{out.name}.dedupkit-apply")
    old = out.with_name(f".{out.name}.dedupkit-old")
    report: dict[str, Any] = {"manifests": [d for d, _ in summaries], "shards": [], "rows": 0, "kept": 0}
    made = made_dirs(out.parent) if not out.parent.exists() else []
    try:
        lock = _lock_dir(tmp, out)
    except OSError as exc:
        remove_made_dirs(made)
        raise write_error(exc, out) from exc
    except BaseException:
        remove_made_dirs(made)
        raise
    try:
        for stale in tmp.iterdir():
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
        tasks = []
        for shard, name in zip(shards, _out_names(shards)):
            sources = []
            for d, summary in summaries:
                m = opened[d]
                entry = _entry_for(m, shard, used[d])["name"]
                sources.append(KeepSource(str(m.root), entry, m.inputs[entry].get("fingerprint"),
                                          tuple(m.parts_of(entry)), m.rows[entry], tuple(span_dirs(d, summary))))
            tasks.append(ApplyTask(shard, name.replace(os.sep, "/"), tuple(sources), text_column, batch_size,
                                   str(tmp / name), upload_to))
        if engine is None:
            results = [apply_shard(t, [opened[d].keep_mask(src.entry) for (d, _), src in zip(summaries, t.sources)])
                       for t in tasks]
        else:
            if upload_to:
                from dedupkit.io import fs

                fs.RemoteFolder(upload_to).unfinish()  # before any new shard lands there
            results = engine.map(apply_shard, tasks, desc="apply")
        for task, res in zip(tasks, results):
            if res["spans"] is not None:
                report["spans"] = report.get("spans", 0) + res["spans"]
            for extra in _dataset_files(task.shard, Path(task.dest), tmp):
                report.setdefault("files", []).append(extra)
            report["shards"].append(res["record"])
            report["rows"] += res["record"]["rows"]
            report["kept"] += res["record"]["kept"]
        (tmp / APPLY_SUMMARY).write_text(json.dumps(report, indent=2))
        if out.exists() or out.is_symlink():
            if _replaceable(out, overwrite) != replaced or replaced is None:
                raise OutputError(f"{out} appeared or changed while apply was writing; nothing was replaced: "
                                  "rerun the command")
        swap_folder(tmp, out, old, _remove_recorded, links=True)  # OUT: the old or the new corpus, never half
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_made_dirs(made)
        raise write_error(exc, out) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_made_dirs(made)
        raise
    finally:
        os.close(lock)
    uploaded = tuple(t.output for t in tasks) if upload_to else ()
    return ApplyResult(out=out, summary=report, uploaded=uploaded)


def _recorded(folder: Path) -> set[str] | None:
    """The files an earlier apply wrote into ``folder`` (relative paths), from its record."""
    from dedupkit.ownership import is_output_folder, read_json

    rec = read_json(folder / APPLY_SUMMARY)
    if not is_output_folder(folder) or not isinstance(rec, dict) or not isinstance(rec.get("shards"), list):
        return None
    files = {APPLY_SUMMARY}
    for s in rec["shards"]:
        if isinstance(s, dict) and isinstance(s.get("output"), str):
            files.add(os.path.normpath(s["output"]))
    files.update(os.path.normpath(f) for f in rec.get("files", []) if isinstance(f, str))
    return files


def check_output(out: str | os.PathLike, inputs: Sequence[str], manifests: Sequence[str], overwrite: bool,
                 manifest_option: str = "--manifest", out_option: str = "-o") -> frozenset[str] | None:
    """Refuse an apply output folder that is not ours to write (creates and deletes nothing).

    ``out`` must not be, hold or lie inside a manifest folder, nor be or hold an input; an existing
    ``out`` is replaced only with ``overwrite`` and only when apply wrote every file in it.

    Returns:
        None for a new folder, else the files the earlier apply recorded there.

    Raises:
        OutputError: saying why and what to do.
    """
    out = Path(out)
    check_separate(out, [(manifest_option, d) for d in manifests], out_option=out_option)
    check_separate(out, [("INPUT", i) for i in inputs if os.path.exists(i)], contain_ok=True, out_option=out_option)
    check_creatable(out, out_option)
    return _replaceable(out, overwrite)


def _replaceable(out: Path, overwrite: bool) -> frozenset[str] | None:
    """None when ``out`` is free; the recorded files when it is an apply output we may replace.

    Raises:
        OutputError: ``out`` exists and is not ours to replace: no ``overwrite``, not a folder,
            a link, not written by apply, or holding files apply did not write.
    """
    if not out.exists() and not out.is_symlink():
        return None
    if not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it, or choose another -o")
    if out.is_symlink() or not out.is_dir():
        what = "a symbolic link" if out.is_symlink() else "not a folder"
        raise OutputError(f"{out} is {what}; apply only replaces a folder it wrote: choose another -o")
    files = _recorded(out)
    if files is None:
        raise OutputError(f"{out} was not written by dedupkit apply (no {APPLY_SUMMARY}); it is never "
                          "replaced or deleted: choose another -o")
    for root, dirs, names in os.walk(out):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), out)
            if rel not in files:
                raise OutputError(f"{out} holds {rel}, which dedupkit apply did not write; --overwrite never "
                                  "deletes it: move it away, or choose another -o")
    return frozenset(files)


def _remove_recorded(folder: Path) -> None:
    """Delete the files an apply recorded in ``folder``, then the folders left empty."""
    files = _recorded(folder) or set()
    for rel in sorted(files, key=lambda r: r == APPLY_SUMMARY):  # the record last
        p = folder / rel
        if p.is_file() and not p.is_symlink():
            p.unlink()
    for root, _, _ in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        try:
            os.rmdir(root)
        except OSError:
            pass


def _mismatch(shard: Shard):
    raise ManifestError(f"the manifests disagree on the number of rows of {shard.name}; rerun the stages")
