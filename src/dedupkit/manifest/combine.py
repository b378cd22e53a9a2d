"""Combining the manifests of chained stages (``dedupkit run``) into one, and its summary."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedupkit.errors import ManifestError
from dedupkit.manifest import (
    MANIFEST_DIR, PARTS_KEY, output_root, part_records, read_manifest, summary_header, write_summary,
    write_table_atomic,
)


def write_combined(od, runs: Sequence, config: dict[str, Any], t0: float) -> dict[str, Any]:
    """Combine the stage folders of a ``dedupkit run`` folder into its ``manifest/`` and write its
    ``summary.json`` (last: it marks the folder complete).

    Args:
        od: the run folder, held (a :class:`dedupkit.outdir.RunDir`).
        runs: per stage, in order: ``name``, ``dir`` (under the run folder), ``reused`` and its
            ``summary``.
        config: the resolved settings, as recorded in the summary.
        t0: when the run started (``time.perf_counter()``), for its total time.

    Returns:
        The summary written.
    """
    root = od.path
    t1 = time.perf_counter()
    tmp = od.manifest_tmp()
    counts = combine_manifests([root / r.dir for r in runs], tmp)
    last = runs[-1].summary
    first = runs[0].summary
    counts["bad_records"] = int(first["counts"].get("bad_records", 0))
    summary: dict[str, Any] = {}

    def summarise(folder: Path) -> None:
        t2 = time.perf_counter()
        summary.update({
            **summary_header("run", pipeline=True),
            "config": config,
            "inputs": last.get("inputs", []),
            "stages": [{"name": r.name, "dir": r.dir, "reused": r.reused, "counts": r.summary.get("counts", {}),
                        "timings": r.summary.get("timings", {})} for r in runs],
            "counts": counts,
            "timings": {"stages_s": {r.name: (0.0 if r.reused else r.summary.get("timings", {}).get("total_s", 0.0))
                                     for r in runs},
                        "combine_s": round(t2 - t1, 3), "total_s": round(time.perf_counter() - t0, 3)},
            PARTS_KEY: part_records(folder / MANIFEST_DIR),
        })
        write_summary(folder, summary)

    od.finish(tmp, summarise)  # the new manifest swapped in, then the summary
    return summary


def _sorted_manifest(d: Path):
    t = read_manifest(d)
    return t.sort_by([("shard", "ascending"), ("row", "ascending")])


def _np_int(col, fill: int = -1):
    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), dtype=np.int64)


def combine_manifests(stage_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Combine the manifests of chained stages into one, written as ``out_dir/part-NNNNN.parquet``.

    The stages must have run in this order, each with ``--skip`` of the one before (as
    ``dedupkit run`` and the shell chain ``dedupkit exact ... | dedupkit fuzzy ... --skip -`` do).
    Per input row: ``keep`` is true when every stage kept it. For a dropped row, ``duplicate_of``,
    ``stage``, ``score`` (and ``measure``, when the stage wrote one) come from the one comparison
    that decided it: the stage that dropped it and its similarity to the document it names. A row
    dropped as *identical* (score 1.0, e.g. by the exact stage) to a document that a later stage
    dropped takes that document's decision: A exact copy of B, B fuzzy duplicate of C, then A says
    ``stage`` fuzzy, ``duplicate_of`` C and B's score, which holds for A as it holds for B (their
    texts are the same to every later stage). Any other link is never followed: a row's
    ``duplicate_of`` names a document it was compared with, even when a later stage dropped that
    one (only when stages beyond exact + fuzzy are chained); ``kept_duplicate_of`` names the kept
    document at the end of the chain and ``direct_duplicate_of`` the match the dropping stage made.
    ``cluster_id`` joins the clusters of all stages that share a document (the smallest global row
    number of the joined cluster).

    Args:
        stage_dirs: the stages' output folders, in the order they ran.
        out_dir: an existing folder to write the parts into.

    Returns:
        Counts: rows, kept, dropped, clusters, largest_cluster, drop_rate, dropped_by_stage.

    Raises:
        ManifestError: a folder is unfinished, or the manifests do not cover the same rows.
    """
    dirs = [output_root(d) for d in stage_dirs]
    if not dirs:
        raise ManifestError("no stage output to combine")
    tables = [_sorted_manifest(d) for d in dirs]
    base = tables[-1]
    n = len(base)
    shard_col = base.column("shard")
    rows_col = base.column("row")
    for d, t in zip(dirs, tables):
        if len(t) != n or not t.column("shard").equals(shard_col) or not t.column("row").equals(rows_col):
            raise ManifestError(f"{d} does not cover the same input rows as {dirs[-1]}; the stages must run "
                                "over the same inputs, each with --skip of the stage before")
    keeps = [np.asarray(t.column("keep").to_numpy(zero_copy_only=False), dtype=bool) for t in tables]
    keep = np.logical_and.reduce(keeps)
    doc_ids = base.column("doc_id").combine_chunks()
    # The last manifest carries every earlier stage's dropped rows unchanged (--skip), so its
    # duplicate_of / score / stage / reason columns are those of the stage that dropped each row.
    direct = base.column("duplicate_of").combine_chunks()
    tgt = _np_int(pc.index_in(direct, value_set=doc_ids))
    tgt[keep] = -1
    idx = np.arange(n, dtype=np.int64)
    score_all = base.column("score").combine_chunks()
    for t in reversed(tables[:-1]):
        score_all = pc.if_else(pc.is_null(score_all), t.column("score").combine_chunks(), score_all)
    score_np = np.asarray(score_all.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))
    # The comparison that decided each dropped row: its own, or, through identity links (score 1.0)
    # to a row a later stage dropped, that row's (pointer jumping; stages form no cycles).
    safe = np.where(tgt >= 0, tgt, 0)
    decider = np.where((tgt >= 0) & ~keep[safe] & (score_np == 1.0), safe, idx)
    for _ in range(64):
        nxt = decider[decider]
        if np.array_equal(nxt, decider):
            break
        decider = nxt
    else:
        raise ManifestError(f"duplicate_of links in {', '.join(map(str, dirs))} form a cycle; rerun the stages")
    dropped = ~keep & (tgt >= 0)
    final_tgt = np.where(dropped, tgt[decider], -1)
    dup_of = pc.if_else(pa.array(final_tgt >= 0), doc_ids.take(pa.array(np.where(final_tgt >= 0, final_tgt, 0))),
                        pa.scalar(None, pa.string()))
    # kept_duplicate_of: the kept document at the end of every link (the old resolution).
    resolved = tgt.copy()
    for _ in range(len(tables) + 2):
        r = np.where(resolved >= 0, resolved, 0)
        step = (resolved >= 0) & ~keep[r] & (tgt[r] >= 0) & (tgt[r] != r)
        if not step.any():
            break
        resolved[step] = tgt[r[step]]
    else:
        raise ManifestError(f"duplicate_of links in {', '.join(map(str, dirs))} form a cycle; rerun the stages")
    kept_dup_of = pc.if_else(pa.array(resolved >= 0), doc_ids.take(pa.array(np.where(resolved >= 0, resolved, 0))),
                             pa.scalar(None, pa.string()))
    pick = pa.array(np.where(dropped, decider, idx))
    stage_col = base.column("stage").combine_chunks().take(pick)
    measure = pa.nulls(n, pa.string())
    for t in tables:
        if "measure" in t.column_names:
            measure = pc.if_else(pc.is_null(measure), t.column("measure").combine_chunks().cast(pa.string()), measure)
    measure = pc.if_else(pa.array(dropped), measure.take(pick), pa.scalar(None, pa.string()))

    # Clusters joined across stages: the connected components of each stage's clusters and the
    # duplicate_of links; a component's label is its smallest position, i.e. its smallest global row.
    from dedupkit.engine.graph import component_roots

    ea: list[np.ndarray] = []
    eb: list[np.ndarray] = []
    member = np.zeros(n, bool)
    for t in tables:
        cid = _np_int(t.column("cluster_id"))
        m = np.flatnonzero(cid >= 0)
        if len(m):
            _, first, inv = np.unique(cid[m], return_index=True, return_inverse=True)
            ea.append(m)
            eb.append(m[first][inv])
            member[m] = True
    linked = np.flatnonzero(tgt >= 0)
    if len(linked):
        ea.append(linked)
        eb.append(tgt[linked])
        member[linked] = True
        member[tgt[linked]] = True
    lab = component_roots(n, np.concatenate(ea) if ea else np.zeros(0, np.int64),
                          np.concatenate(eb) if eb else np.zeros(0, np.int64))
    cluster = np.where(member, lab, -1)
    sizes = np.bincount(lab[member]) if member.any() else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]

    score = pc.if_else(pa.array(member), score_all.take(pick), pa.scalar(None, score_all.type))

    table = pa.table({
        "shard": shard_col.combine_chunks(),
        "row": rows_col.combine_chunks(),
        "doc_id": doc_ids,
        "keep": pa.array(keep),
        "cluster_id": pa.array(cluster, pa.int64(), mask=cluster < 0),
        "duplicate_of": dup_of,
        "score": score.cast(pa.float32()),
        "stage": stage_col,
        "reason": base.column("reason").combine_chunks() if "reason" in base.column_names
        else pa.nulls(n, pa.string()),
        "direct_duplicate_of": pc.if_else(pa.array(keep), pa.scalar(None, pa.string()), direct),
        "kept_duplicate_of": kept_dup_of,
        "measure": measure,
    })
    names = shard_col.combine_chunks()
    out = Path(out_dir)
    if n:
        starts = np.flatnonzero(np.r_[True, np.asarray(pc.not_equal(names[1:], names[:-1]))]) \
            if n > 1 else np.array([0])
        ends = np.r_[starts[1:], n]
        for si, (a, b) in enumerate(zip(starts, ends)):
            write_table_atomic(table.slice(int(a), int(b - a)), out / f"part-{si:05d}.parquet")
    # counted under the stage that dropped the row (its own manifest's count), which for a row
    # decided through an identity link is not the stage named in the row's `stage` column
    dropped_stage = base.column("stage").combine_chunks().filter(pc.invert(table.column("keep")))
    vc = pc.value_counts(dropped_stage).to_pylist() if len(dropped_stage) else []
    return {
        "rows": int(n), "kept": int(keep.sum()), "dropped": int(n - keep.sum()),
        "clusters": int(len(sizes)), "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "drop_rate": float((n - keep.sum()) / n) if n else 0.0,
        # every dropped row once, under the stage that dropped it (bad records included)
        "dropped_by_stage": {v["values"]: int(v["counts"]) for v in vc},
    }
