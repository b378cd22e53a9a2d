"""Write the kept rows of each input shard, in its own format, as one or more manifests decide."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dedupkit.errors import ManifestError, OutputError
from dedupkit.io.read import _open_text_stream
from dedupkit.io.shards import Shard, discover, fingerprint
from dedupkit.manifest import load_summary, output_root, read_manifest
from dedupkit.outdir import write_error
from dedupkit.spans import cut_array, has_spans, merge_spans, read_spans

APPLY_SUMMARY = "_dedupkit_apply.json"


@dataclass
class ApplyResult:
    out: Path
    summary: dict


def _out_names(shards: Sequence[Shard]) -> list[str]:
    """Output paths relative to the clean folder: shard names less their common parent folder."""
    names = [os.path.normpath(s.name) for s in shards]
    parents = [os.path.dirname(n) for n in names]
    common = os.path.commonpath(parents) if all(parents) and len({os.path.isabs(p) for p in parents}) == 1 else ""
    out = []
    for n in names:
        rel = os.path.relpath(n, common) if common else n
        parts = [p for p in PurePosixPath(rel.replace(os.sep, "/")).parts if p not in ("/", "..", ".")]
        out.append(os.path.join(*parts))
    return out


def _keep_mask(manifest_dir: str, summary: dict, shard: Shard, fp: str) -> np.ndarray:
    entries = {s["name"]: s for s in summary.get("inputs", [])}
    entry = entries.get(shard.name)
    if entry is None:
        by_fp = [s for s in summary.get("inputs", []) if s.get("fingerprint") == fp]
        if not by_fp:
            raise ManifestError(
                f"{shard.name} is not in manifest {manifest_dir} (it was made from other shards); "
                "run the stage over this input first, or name the input as it was named then"
            )
        entry = by_fp[0]
    if entry.get("fingerprint") != fp:
        raise ManifestError(
            f"{shard.name} changed since manifest {manifest_dir} was made (fingerprint "
            f"{entry.get('fingerprint')} recorded, {fp} now); rerun the stage on the current data"
        )
    t = read_manifest(manifest_dir, columns=["row", "keep"], shard=entry["name"])
    n = int(entry["rows"])
    rows = t.column("row").to_numpy()
    if len(rows) != n or len(np.unique(rows)) != n:
        raise ManifestError(f"manifest {manifest_dir} holds {len(rows)} rows for {shard.name}, "
                            f"which has {n}; rerun the stage with --overwrite")
    mask = np.zeros(n, dtype=bool)
    mask[rows] = t.column("keep").to_numpy(zero_copy_only=False)
    return mask


def _shard_spans(manifest_dir: str, summary: dict, shard: Shard, fp: str):
    """(row, start, end) of the spans a span manifest cuts from ``shard``, or None if it has none."""
    if not has_spans(manifest_dir):
        return None
    entries = {s["name"]: s for s in summary.get("inputs", [])}
    entry = entries.get(shard.name) or next(s for s in summary.get("inputs", []) if s.get("fingerprint") == fp)
    t = read_spans(manifest_dir, shard=entry["name"], columns=["row", "start", "end"])
    return (t.column("row").to_numpy(), t.column("start").to_numpy(), t.column("end").to_numpy())


def _text_column(summaries) -> str | None:
    """The text column the span manifests were made on (they must agree)."""
    cols = {s.get("config", {}).get("read", {}).get("text_column") for d, s in summaries if has_spans(d)}
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


def _write_parquet(shard: Shard, mask: np.ndarray, dest: Path, batch_size: int, spans=None,
                   text_column: str | None = None) -> int:
    pf = pq.ParquetFile(shard.path)
    schema = pf.schema_arrow
    written = 0
    offset = 0
    if spans is not None and text_column not in schema.names:
        raise ManifestError(f"{shard.name} has no column {text_column!r}, which the span manifest cuts; "
                            "rerun the stage on the current data")
    with pq.ParquetWriter(dest, schema, compression="zstd") as writer:
        for rb in pf.iter_batches(batch_size=batch_size):
            m = mask[offset: offset + rb.num_rows]
            if spans is not None:
                lo, hi = np.searchsorted(spans[0], [offset, offset + rb.num_rows])
                if hi > lo:  # cut the text of this batch's rows that have spans
                    ci = rb.schema.get_field_index(text_column)
                    col = cut_array(rb.column(ci), spans[0][lo:hi] - offset, spans[1][lo:hi], spans[2][lo:hi],
                                    where=shard.name)
                    rb = pa.RecordBatch.from_arrays([col if i == ci else rb.column(i) for i in range(rb.num_columns)],
                                                    schema=rb.schema)
            offset += rb.num_rows
            if m.all():
                writer.write_batch(rb)
            elif m.any():
                writer.write_batch(rb.filter(pa.array(m)))
            written += int(m.sum())
    if offset != len(mask):
        raise ManifestError(f"{shard.name} has {offset} rows, the manifest {len(mask)}; rerun the stage")
    return written


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
    with _open_text_stream(shard) as src, _open_out(dest, shard.compression) as dst:
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
    """Create ``path`` and hold an exclusive flock on it; refuse if another apply holds it."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(
            f"another dedupkit apply is writing {out} right now; wait for it to finish or choose another -o"
        ) from None
    return fd


def apply_manifests(inputs: Sequence[str], manifests: Sequence[str], out: str | os.PathLike,
                    overwrite: bool = False, batch_size: int = 8192) -> ApplyResult:
    """Write the rows that every manifest keeps, one output shard per input shard.

    A row is dropped if any manifest drops it. Span manifests (``OUT/spans``, see
    :mod:`dedupkit.spans`) cut their spans out of the text column of the kept rows; every other
    column (and the Parquet schema) stays as it was, and the spans of several manifests are merged. Parquet keeps its schema and every column; JSONL
    lines are copied byte for byte (and recompressed the same way). The output folder appears only
    when every shard is written.

    Args:
        inputs: the shards the manifests were made from (files, folders, globs).
        manifests: stage output folders (``OUT`` or ``OUT/manifest``).
        out: the clean corpus folder.
        overwrite: replace an existing ``out``.

    Raises:
        ManifestError: a manifest is unfinished, does not cover a shard, or a shard changed.
        OutputError: ``out`` exists and ``overwrite`` is false.
    """
    if not manifests:
        raise ManifestError("no --manifest given; pass the -o folder of a finished stage")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it, or choose another -o")
    summaries = [(str(output_root(m)), load_summary(m)) for m in manifests]
    shards = discover(inputs, exclude=[str(out)] + [d for d, _ in summaries])
    text_column = _text_column(summaries)
    # One fixed temporary folder next to OUT, locked while in use: a second apply to the same OUT
    # is refused, and the leftovers of a killed apply are removed (not piled up) by the next one.
    tmp = out.with_name(f".{out.name}.dedupkit-apply")
    old = out.with_name(f".{out.name}.dedupkit-old")
    report = {"manifests": [d for d, _ in summaries], "shards": [], "rows": 0, "kept": 0}
    try:
        lock = _lock_dir(tmp, out)
    except OSError as exc:
        raise write_error(exc, out) from exc
    try:
        for stale in tmp.iterdir():
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
        if old.exists():
            shutil.rmtree(old)
        for shard, name in zip(shards, _out_names(shards)):
            fp = fingerprint(shard.path)
            mask = None
            cuts = []
            for d, summary in summaries:
                m = _keep_mask(d, summary, shard, fp)
                mask = m if mask is None else (mask & m) if len(mask) == len(m) else _mismatch(shard)
                c = _shard_spans(d, summary, shard, fp)
                if c is not None:
                    cuts.append(c)
            spans = None
            if cuts:  # spans of several manifests: cut their union
                spans = merge_spans(*(np.concatenate([c[i] for c in cuts]) for i in range(3)))
                report["spans"] = report.get("spans", 0) + int(len(spans[0]))
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if shard.format == "parquet":
                kept = _write_parquet(shard, mask, dest, batch_size, spans, text_column)
            else:
                kept = _write_jsonl(shard, mask, dest, spans=spans, text_column=text_column)
            report["shards"].append({"name": shard.name, "output": str(dest.relative_to(tmp)),
                                     "rows": int(len(mask)), "kept": kept})
            report["rows"] += int(len(mask))
            report["kept"] += kept
        (tmp / APPLY_SUMMARY).write_text(json.dumps(report, indent=2))
        if out.exists():
            if not overwrite:
                raise OutputError(f"{out} appeared while apply was writing; pass --overwrite to replace "
                                  "it, or choose another -o")
            # Move the old folder aside in one step: OUT is always either the old or the new
            # corpus, never a half-deleted one.
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(exc, out) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    return ApplyResult(out=out, summary=report)


def _mismatch(shard: Shard):
    raise ManifestError(f"the manifests disagree on the number of rows of {shard.name}; rerun the stages")
