"""A stage's manifest parts from its decisions (per-document arrays), wherever those are.

The classic path runs it on the driver (:func:`dedupkit.runner.run_stage`); on a distributed
engine, a stage that needs every document in one process runs it in that one task
(:func:`dedupkit.engine.driver.stage_task`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedupkit.errors import GuardrailError
from dedupkit.explain import drop_reasons
from dedupkit.manifest import shard_table, write_table_atomic
from dedupkit.policy import cluster_ids
from dedupkit.scan import Corpus
from dedupkit.stages.base import Stage


def write_decisions(stage: Stage, corpus: Corpus, decisions, prior: dict, options: Any,
                    tmp: Path) -> tuple[int, int, int, int]:
    """Check ``--max-drop-rate`` and write every manifest part of ``decisions`` into ``tmp``.

    ``options``: the run's :class:`dedupkit.runner.RunOptions` (``max_drop_rate``, ``workers``).

    Runs where the per-document arrays are: the driver on the classic path, or the one task that
    identifies on a distributed engine (:func:`dedupkit.engine.driver.stage_task`). Returns
    ``(active, kept, clusters, largest_cluster)``.
    """
    n = len(corpus)
    keep = decisions.keep_mask()
    rep = decisions.representative
    labels = decisions.labels
    cid = cluster_ids(labels, corpus.global_rows)
    n_bad = corpus.n_bad
    # This stage's own input and drops (bad records included: this stage drops them); see
    # dedupkit.explain for the one meaning of each count.
    check_drop_rate(stage, options, int(n - keep.sum()) + n_bad, n + n_bad)

    doc_ids = corpus.doc_ids()
    # take() with a null index gives a null, so only dropped rows copy their representative's
    # id (3x faster than if_else over a take of every row)
    rep_or_null = pa.Array.from_buffers(pa.int64(), n, [pa.py_buffer(np.packbits(~keep, bitorder="little")),
                                                       pa.py_buffer(np.ascontiguousarray(rep, np.int64))])
    dup_of = doc_ids.take(rep_or_null)
    extra_cols = dict(decisions.extra)
    override = extra_cols.pop("duplicate_of", None)
    if override is not None:  # duplicates of documents outside this corpus (check: the index)
        dup_of = pc.if_else(pa.array(keep, pa.bool_()), pa.scalar(None, pa.string()),
                            pc.coalesce(override, dup_of))
    score = np.where(labels >= 0, decisions.score, np.nan).astype(np.float32)
    reasons = drop_reasons(stage.name, keep, dup_of, score, extra_cols, stage_kind(stage))
    extra_types = {c: a.type for c, a in extra_cols.items()}
    bounds = np.searchsorted(corpus.shard_index, np.arange(len(corpus.shards) + 1), side="left")

    def write_shard(si: int) -> None:
        info = corpus.shards[si]
        a, b = int(bounds[si]), int(bounds[si + 1])
        table = shard_table(
            shard=info.shard.name, n_rows=info.n_rows, stage=stage.name,
            active_rows=corpus.rows[a:b], doc_ids=doc_ids.slice(a, b - a),
            keep=keep[a:b], cluster_id=cid[a:b], duplicate_of=dup_of.slice(a, b - a),
            score=score[a:b], bad=info.bad_table(), bad_doc_ids=None, prior=prior.get(info.shard.name),
            extra={c: v.slice(a, b - a) for c, v in extra_cols.items()}, extra_types=extra_types,
            reason=reasons.slice(a, b - a),
        )
        write_table_atomic(table, tmp / f"part-{si:05d}.parquet")

    # Arrow builds and encodes outside the GIL, so threads (as many as --workers) overlap the
    # per-shard manifest writes; map() re-raises the first failure.
    with ThreadPoolExecutor(max(1, min(options.workers, len(corpus.shards)))) as pool:
        list(pool.map(write_shard, range(len(corpus.shards))))

    sizes = np.bincount(np.unique(labels[labels >= 0], return_inverse=True)[1]) if (labels >= 0).any() \
        else np.zeros(0, np.int64)
    return n, int(keep.sum()), int(len(sizes)), int(sizes.max()) if len(sizes) else 0


def stage_kind(stage: Stage) -> str | None:
    """What decided (exact, fuzzy, semantic): the built-in stage class, whatever the stage's name."""
    # (dedupkit.stages.KIND or a module of the package dedupkit.stages.KIND)
    return next((c.__module__.split(".")[2] for c in type(stage).__mro__
                 if c.__module__.startswith("dedupkit.stages.") and c is not Stage), None)


def check_drop_rate(stage: Stage, options: Any, dropped_here: int, considered: int) -> None:
    if options.max_drop_rate is not None and considered and dropped_here / considered > options.max_drop_rate:
        raise GuardrailError(
            f"{stage.name} would drop {dropped_here} of {considered} rows "
            f"({dropped_here / considered:.1%}), more than --max-drop-rate {options.max_drop_rate:g}; "
            "nothing was written. Check the settings (threshold, normalization) on a sample, "
            "or raise --max-drop-rate if this is expected"
        )
