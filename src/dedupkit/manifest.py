"""The manifest: one row per input row saying keep or drop, and why.

Layout of a finished stage output folder ``OUT/``::

    OUT/manifest/part-00000.parquet ...   one file per input shard, rows in row order
    OUT/summary.json                      written last: its presence marks the run complete

Columns (see README, "The manifest contract"): shard, row, doc_id, keep, cluster_id,
duplicate_of, score, stage, plus ``reason`` (why a bad record was dropped) and any stage extras.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dedupkit.errors import ManifestError

CORE_COLUMNS = ("shard", "row", "doc_id", "keep", "cluster_id", "duplicate_of", "score", "stage")
SCHEMA = pa.schema([
    ("shard", pa.string()),
    ("row", pa.int64()),
    ("doc_id", pa.string()),
    ("keep", pa.bool_()),
    ("cluster_id", pa.int64()),
    ("duplicate_of", pa.string()),
    ("score", pa.float32()),
    ("stage", pa.string()),
    ("reason", pa.string()),
])
SUMMARY = "summary.json"
MANIFEST_DIR = "manifest"


def output_root(path: str | os.PathLike) -> Path:
    """Accept ``OUT`` or ``OUT/manifest`` and return ``OUT``."""
    p = Path(path)
    if p.name == MANIFEST_DIR and (p.parent / SUMMARY).exists():
        return p.parent
    return p


def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``OUT/summary.json`` of a finished run.

    Raises:
        ManifestError: the folder is not a finished dedupkit output (no summary: the run was
            interrupted, or the path is wrong).
    """
    root = output_root(path)
    sp = root / SUMMARY
    if not root.exists():
        raise ManifestError(f"{root}: no such manifest folder; pass the -o folder of a finished stage run")
    if not sp.exists():
        raise ManifestError(
            f"{root} holds no finished run (no {SUMMARY}): the run was interrupted or is still going; "
            "rerun the stage with the same -o to finish it"
        )
    try:
        summary = json.loads(sp.read_text())
    except ValueError as exc:
        raise ManifestError(f"{sp} is not valid JSON ({exc}); rerun the stage with --overwrite") from exc
    if not (root / MANIFEST_DIR).is_dir():
        raise ManifestError(f"{root} has a summary but no {MANIFEST_DIR}/ folder; rerun the stage with --overwrite")
    return summary


def read_manifest(path: str | os.PathLike, columns: Sequence[str] | None = None,
                  shard: str | None = None) -> pa.Table:
    """Read a finished manifest as one table (optionally only one shard's rows), sorted by shard order.

    Args:
        path: ``OUT`` or ``OUT/manifest``.
        columns: columns to read (default all).
        shard: only rows of this shard name.

    Raises:
        ManifestError: see :func:`load_summary`.
    """
    root = output_root(path)
    load_summary(root)
    dataset = ds.dataset(str(root / MANIFEST_DIR), format="parquet")
    flt = ds.field("shard") == shard if shard is not None else None
    try:
        table = dataset.to_table(columns=list(columns) if columns else None, filter=flt)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{root}: manifest unreadable ({exc}); rerun the stage with --overwrite") from exc
    return table


def shard_table(
    shard: str,
    n_rows: int,
    stage: str,
    active_rows: np.ndarray,
    doc_ids: pa.Array,
    keep: np.ndarray,
    cluster_id: np.ndarray,
    duplicate_of: pa.Array,
    score: np.ndarray,
    bad: Iterable[dict],
    bad_doc_ids: pa.Array | None,
    prior: pa.Table | None,
    extra: dict[str, pa.Array] | None = None,
    extra_types: dict[str, pa.DataType] | None = None,
    reason: pa.Array | None = None,
) -> pa.Table:
    """Assemble one shard's manifest rows from active decisions, bad records and carried rows.

    Every row number 0..n_rows-1 must appear exactly once; anything else is a bug and raises
    rather than write a manifest that loses or duplicates rows. ``reason`` holds the active rows'
    reasons (:func:`dedupkit.explain.drop_reasons`); bad records get ``bad record: ...``.
    """
    extra = extra or {}
    extra_types = extra_types or {}
    bad = list(bad)
    n_act = len(active_rows)
    parts: list[pa.Table] = []
    act = {
        "shard": _repeat(shard, n_act),
        "row": pa.array(active_rows, pa.int64()),
        "doc_id": doc_ids,
        "keep": pa.array(keep, pa.bool_()),
        "cluster_id": pa.array(cluster_id, pa.int64(), mask=cluster_id < 0),
        "duplicate_of": duplicate_of,
        "score": pa.array(score.astype(np.float32), pa.float32(), mask=np.isnan(score)),
        "stage": _repeat(stage, n_act),
        "reason": reason if reason is not None else pa.nulls(n_act, pa.string()),
    }
    for c, t in extra_types.items():
        act[c] = extra[c] if c in extra else pa.nulls(n_act, t)
    parts.append(pa.table(act))
    if bad:
        nb = len(bad)
        bt = {
            "shard": pa.array([shard] * nb, pa.string()),
            "row": pa.array([b["row"] for b in bad], pa.int64()),
            "doc_id": bad_doc_ids if bad_doc_ids is not None else pa.array(
                [f"{shard}:{b['row']}" for b in bad], pa.string()),
            "keep": pa.array([False] * nb),
            "cluster_id": pa.nulls(nb, pa.int64()),
            "duplicate_of": pa.nulls(nb, pa.string()),
            "score": pa.nulls(nb, pa.float32()),
            "stage": pa.array([stage] * nb, pa.string()),
            "reason": pa.array(["bad record: " + b["reason"] for b in bad], pa.string()),
        }
        for c, t in extra_types.items():
            bt[c] = pa.nulls(nb, t)
        parts.append(pa.table(bt))
    if prior is not None and len(prior):
        cols = {}
        for f in parts[0].schema:
            if f.name in prior.column_names:
                cols[f.name] = prior.column(f.name).cast(f.type)
            else:
                cols[f.name] = pa.nulls(len(prior), f.type)
        parts.append(pa.table(cols))
    table = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    if len(parts) > 1 or (n_act > 1 and not bool(np.all(active_rows[1:] > active_rows[:-1]))):
        table = table.sort_by("row")
    rows = table.column("row").to_numpy()
    if len(rows) != n_rows or (n_rows and (rows[0] != 0 or rows[-1] != n_rows - 1 or np.any(np.diff(rows) != 1))):
        raise ManifestError(
            f"internal error: manifest for {shard} would hold {len(rows)} rows for {n_rows} input rows; "
            "nothing was written. Please report this with the command you ran."
        )
    return table


def _repeat(value: str, n: int) -> pa.Array:
    """``n`` copies of one string, without a Python list of ``n`` items."""
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int32)))


# Columns with a handful of distinct values; dictionary-encoding the unique ones (doc_id,
# duplicate_of) only costs time and space.
LOW_CARDINALITY = ("shard", "stage", "reason")


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file under a temporary name and rename it into place (never half a file)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.{threading.get_ident()}")
    dictionary = [c for c in LOW_CARDINALITY if c in table.column_names] or False
    try:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=dictionary)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_prior(dirs: Sequence[str], shard_names: Sequence[str]) -> tuple[dict[str, pa.Table], list[dict]]:
    """Rows dropped by earlier stages (``--skip``), per shard name, and those stages' summaries.

    Raises:
        ManifestError: a folder is not a finished run, or does not cover an input shard.
    """
    prior: dict[str, list[pa.Table]] = {}
    summaries = []
    for d in dirs:
        summary = load_summary(d)
        summaries.append({"path": str(output_root(d)), "summary": summary})
        covered = {s["name"] for s in summary.get("inputs", [])}
        missing = [n for n in shard_names if n not in covered]
        if missing:
            raise ManifestError(
                f"--skip {d}: that manifest does not cover input shard {missing[0]!r}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; run every stage over "
                "the same inputs, named the same way"
            )
        table = read_manifest(d)
        dropped = table.filter(pc.invert(table.column("keep")))
        for name in shard_names:
            t = dropped.filter(pc.equal(dropped.column("shard"), name))
            if len(t):
                prior.setdefault(name, []).append(t)
    out: dict[str, pa.Table] = {}
    for name, tables in prior.items():
        t = pa.concat_tables(tables, promote_options="permissive")
        # A row dropped by several earlier stages keeps the first stage's record.
        rows = t.column("row").to_numpy()
        _, first = np.unique(rows, return_index=True)
        out[name] = t.take(pa.array(np.sort(first)))
    return out, summaries


def check_prior_fingerprints(summaries: list[dict], shards: list[dict]) -> None:
    """Refuse ``--skip`` manifests made from other versions of the input shards."""
    current = {s["name"]: s["fingerprint"] for s in shards}
    for entry in summaries:
        for s in entry["summary"].get("inputs", []):
            fp = current.get(s["name"])
            if fp is not None and s.get("fingerprint") != fp:
                raise ManifestError(
                    f"--skip {entry['path']}: shard {s['name']} changed since that manifest was made "
                    "(fingerprint differs); rerun the earlier stage on the current data"
                )


def write_summary(root: Path, summary: dict) -> None:
    data = json.dumps(summary, indent=2, sort_keys=False, default=_json_default).encode()
    tmp = root / (SUMMARY + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, root / SUMMARY)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
