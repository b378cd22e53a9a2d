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
from dedupkit.manifest import Manifest, open_manifest
from dedupkit.outdir import write_error

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


def _keep_mask(manifest: Manifest, shard: Shard, fp: str) -> np.ndarray:
    """The keep flags ``manifest`` records for ``shard`` (validated when the manifest was opened)."""
    manifest_dir = manifest.root
    entry = manifest.inputs.get(shard.name)  # a dict: a scan of the list per shard was quadratic
    if entry is None:
        by_fp = [s for s in manifest.inputs.values() if s.get("fingerprint") == fp]
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
    # Only this shard's parts are read: apply reads each part once, so its time grows with the
    # number of rows, not with rows x shards (it used to scan the whole manifest per shard).
    mask = manifest.keep_mask(entry["name"])
    if len(mask) != int(entry["rows"]):  # pragma: no cover - open_manifest checked the row counts
        raise ManifestError(f"manifest {manifest_dir} holds {len(mask)} rows for {shard.name}, "
                            f"which has {entry['rows']}; rerun the stage with --overwrite")
    return mask


def _open_out(path: Path, compression: str | None) -> IO[bytes]:
    raw = open(path, "wb")
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().stream_writer(raw, closefd=True)  # type: ignore[return-value]
    return raw


def _write_parquet(shard: Shard, mask: np.ndarray, dest: Path, batch_size: int) -> int:
    pf = pq.ParquetFile(shard.path)
    schema = pf.schema_arrow
    written = 0
    offset = 0
    with pq.ParquetWriter(dest, schema, compression="zstd") as writer:
        for rb in pf.iter_batches(batch_size=batch_size):
            m = mask[offset: offset + rb.num_rows]
            offset += rb.num_rows
            if m.all():
                writer.write_batch(rb)
            elif m.any():
                writer.write_batch(rb.filter(pa.array(m)))
            written += int(m.sum())
    if offset != len(mask):
        raise ManifestError(f"{shard.name} has {offset} rows, the manifest {len(mask)}; rerun the stage")
    return written


def _write_jsonl(shard: Shard, mask: np.ndarray, dest: Path, chunk: int = 1 << 20) -> int:
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

    A row is dropped if any manifest drops it. Parquet keeps its schema and every column; JSONL
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
    opened = [open_manifest(m) for m in manifests]
    shards = discover(inputs, exclude=[str(out)] + [str(m.root) for m in opened])
    # One fixed temporary folder next to OUT, locked while in use: a second apply to the same OUT
    # is refused, and the leftovers of a killed apply are removed (not piled up) by the next one.
    tmp = out.with_name(f".{out.name}.dedupkit-apply")
    old = out.with_name(f".{out.name}.dedupkit-old")
    report = {"manifests": [str(m.root) for m in opened], "shards": [], "rows": 0, "kept": 0}
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
            for manifest in opened:
                m = _keep_mask(manifest, shard, fp)
                mask = m if mask is None else (mask & m) if len(mask) == len(m) else _mismatch(shard)
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if shard.format == "parquet":
                kept = _write_parquet(shard, mask, dest, batch_size)
            else:
                kept = _write_jsonl(shard, mask, dest)
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
