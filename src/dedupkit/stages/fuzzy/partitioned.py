"""The fuzzy stage's global step for a distributed engine: nothing pair-sized on the driver.

:meth:`dedupkit.stages.fuzzy.FuzzyStage.identify` hands over to :func:`identify_partitioned` when
its engine is distributed (``--engine ray``). The per-document steps are the task functions of
:mod:`dedupkit.stages.fuzzy.tasks` (``bucket_task``, ``verify_task``, ``shingle_set_task``), as in
the single-process step (:mod:`dedupkit.stages.fuzzy.single`); what changes is how pairs move
between them:

1. band buckets -> candidate pairs, one task per (band, key partition) as in the local path;
2. the candidate pair files are hash-partitioned by their smaller document and made distinct per
   partition (:func:`dedupkit.engine.graph.unique_pairs`), instead of being gathered and sorted in
   the driver;
3. one verification task per partition;
4. connected components by large-star / small-star contraction over node partitions
   (:func:`dedupkit.engine.graph.connected_components`), then the verified pairs are shuffled by
   component and each partition runs the greedy centre step on whole components
   (:func:`dedupkit.engine.graph.centre_clusters_partitioned`). Greedy centres never cross a
   component, so this is the local engine's answer.

The driver keeps only per-document arrays (the component root of every document, the decisions),
so its memory grows with the number of documents, never with the number of pairs. The manifest
equals the local engine's; tests/test_ray.py checks it.
"""

from __future__ import annotations

import time

import numpy as np

from dedupkit.engine import graph
from dedupkit.errors import ConfigError
from dedupkit.stages.base import Decisions
from dedupkit.stages.fuzzy.tasks import bucket_bytes

# Candidate pairs per partition of the pair shuffle (16 bytes each, a few copies while sorting).
PAIRS_PER_PARTITION = 4_000_000
MIN_PAIRS_PER_TASK = 10_000


def _rows(path: str) -> int:
    arr = np.load(path, mmap_mode="r")
    return int(arr.shape[0]) if arr.ndim else 0


def candidate_pairs(stage, n: int, paths, btasks, work, engine) -> tuple[int, list[dict], list[str], int]:
    """Buckets to unique candidate pairs, partitioned (shared by this step and the Ray driver).

    Returns ``(n_empty, bres, cand, n_candidates)``: documents without shingles, the bucket tasks'
    results, the candidate pair files and their number of pairs.
    """
    n_empty = sum(int((np.load(p, mmap_mode="r") == 0).sum()) for p in paths("nsh"))
    cand: list[str] = []
    bres: list[dict] = []
    if n:
        bres = stage.candidate_buckets(engine, btasks)
        pairs = sum(r["pairs"] for r in bres)
        # at least one verify task per worker once there is enough to split (each task's cost is
        # a few ms of set-up, the pairs' verification ~10 us each)
        pparts = max(graph.partitions_for(pairs, PAIRS_PER_PARTITION),
                     min(getattr(engine, "workers", 1), pairs // MIN_PAIRS_PER_TASK))
        cand = graph.unique_pairs([t.out for t in btasks[1]], work, engine, pparts, name="cand")
    return n_empty, bres, cand, sum(_rows(f) for f in cand)


def identify_partitioned(stage, corpus, workdir: str, engine) -> Decisions:
    """:meth:`FuzzyStage.identify` with partitioned pair shuffles and clusters (see module doc)."""
    if stage.config.cluster != "centre":
        raise ConfigError(f"cluster = {stage.config.cluster!r} runs on the local engine only; use "
                          "--engine local or cluster = \"centre\"")
    n = len(corpus)
    t0 = time.perf_counter()
    work, keys, rank, (paths, offsets, nparts, btasks) = stage.prepare_buckets(corpus, workdir)
    n_empty, bres, cand, n_candidates = candidate_pairs(stage, n, paths, btasks, work, engine)
    t1 = time.perf_counter()

    verified: list[str] = []
    vres: list[dict] = []
    if n_candidates:
        verified, vres = stage.verify(corpus, cand, paths, offsets, work, engine, "p")
    t2 = time.perf_counter()

    root, cc = graph.connected_components(n, verified, work / "components", engine)
    docs, centre, payload = graph.centre_clusters_partitioned(verified, root, rank, work / "centres", engine)
    t3 = time.perf_counter()
    stats = stage.base_stats(n_empty, nparts, n_candidates, vres)
    stats["bucket_bytes_read_per_task"] = bucket_bytes(bres)
    stats["global_step"] = {"mode": "partitioned", "pair_partitions": len(cand),
                            "component_partitions": cc["partitions"], "component_rounds": cc["rounds"]}
    stats["timings"] = {"buckets_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3),
                        "clusters_s": round(t3 - t2, 3)}
    return stage.decisions(n, docs, centre, payload, stats)
