"""Writing manifests: one shard's rows, the part files and the summary (the completion mark)."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dedupkit.atomic import atomic_open, atomic_write
from dedupkit.errors import ManifestError
from dedupkit.manifest import SUMMARY

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
    bad: pa.Table | Iterable[dict],
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
    if not isinstance(bad, pa.Table):
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
    if isinstance(bad, pa.Table):
        bad_rows, reasons = bad.column("row").combine_chunks(), bad.column("reason").combine_chunks()
    else:  # a list of {"row", "reason"} dicts
        bad_rows = pa.array([b["row"] for b in bad], pa.int64())
        reasons = pa.array([b["reason"] for b in bad], pa.string())
    nb = len(bad_rows)
    if nb:
        if pa.types.is_dictionary(reasons.type):
            # prefix each distinct reason once, not once per record
            reasons = pa.DictionaryArray.from_arrays(
                reasons.indices, pc.binary_join_element_wise("bad record: ", reasons.dictionary, ""))
            reasons = reasons.cast(pa.string())
        else:
            reasons = pc.binary_join_element_wise("bad record: ", reasons, "")
        if bad_doc_ids is None:
            bad_doc_ids = pc.binary_join_element_wise(_repeat(shard + ":", nb), pc.cast(bad_rows, pa.string()), "")
        bt = {
            "shard": _repeat(shard, nb),
            "row": bad_rows,
            "doc_id": bad_doc_ids,
            "keep": pa.array(np.zeros(nb, bool)),
            "cluster_id": pa.nulls(nb, pa.int64()),
            "duplicate_of": pa.nulls(nb, pa.string()),
            "score": pa.nulls(nb, pa.float32()),
            "stage": _repeat(stage, nb),
            "reason": reasons,
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
    parts = [p for p in parts if len(p)] or parts[:1]
    table = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    rows = table.column("row").to_numpy()
    if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):
        table = table.sort_by("row")  # (a shard of bad records only is already in order: no copy)
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
    dictionary = [c for c in LOW_CARDINALITY if c in table.column_names] or False
    with atomic_open(path) as fh:
        pq.write_table(table, fh, compression="zstd", use_dictionary=dictionary)


def summary_header(stage: str, pipeline: bool = False) -> dict[str, Any]:
    """The fields every ``summary.json`` starts with, in this order.

    ``dedupkit`` (the version that wrote it), ``complete`` (true: :func:`write_summary` is the last
    write of a run), ``pipeline`` (only for a ``dedupkit run`` folder), ``stage`` (``run`` for one),
    ``created`` (UTC), ``versions`` (Python and the dependencies that decide results) and
    ``kernels`` (C or Python, :mod:`dedupkit.kernels`).
    """
    from dedupkit import __version__, kernels

    head: dict[str, Any] = {"dedupkit": __version__, "complete": True}
    if pipeline:
        head["pipeline"] = True
    head.update({"stage": stage, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "versions": versions(), "kernels": kernels.describe()})
    return head


def versions() -> dict[str, str]:
    """Versions of dedupkit, Python and the installed dependencies that decide results."""
    from dedupkit import __version__

    out = {"dedupkit": __version__, "python": platform.python_version()}
    for pkg in ("pyarrow", "numpy", "xxhash", "datasketch", "sentence-transformers", "faiss-cpu", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_summary(root: Path, summary: dict) -> None:
    from dedupkit.redact import redact_obj

    # No secret (an index URL's password) is ever written into a summary.
    data = json.dumps(redact_obj(summary), indent=2, sort_keys=False, default=_json_default).encode()
    atomic_write(root / SUMMARY, data)


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
