"""The fuzzy stage's global step for a distributed engine: nothing pair-sized on the driver.

:meth:`dedupkit.stages.fuzzy.FuzzyStage.identify` hands over to :func:`identify_partitioned` when
its engine is not the local one (``--engine ray``). The per-document steps are the fuzzy stage's
own functions (``bucket_task``, ``verify_task``, ``shingle_set_task``); what changes is how pairs
move between them:

1. band buckets -> candidate pairs, one task per (band, key partition) as in the local path;
2. the candidate pair files are hash-partitioned by their smaller document and made distinct per
   partition (:func:`dedupkit.engine.graph.unique_pairs`), instead of being gathered and sorted in
   the driver;
3. one verification task per partition;
4. connected components by large-star / small-star contraction over node partitions
   (:func:`dedupkit.engine.graph.connected_components`), instead of a union-find in the driver.

The driver keeps only per-document arrays (the component root of every document, the decisions),
so its memory grows with the number of documents, never with the number of pairs. The components
are the same (the root of a component is its smallest document either way), so the manifest equals
the local engine's; tests/test_ray.py checks it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dedupkit.engine import graph
from dedupkit.minhash import detection_probability
from dedupkit.stages.base import Decisions

# Candidate pairs per partition of the pair shuffle (16 bytes each, a few copies while sorting).
PAIRS_PER_PARTITION = 4_000_000


def _rows(path: str) -> int:
    arr = np.load(path, mmap_mode="r")
    return int(arr.shape[0]) if arr.ndim else 0


def identify_partitioned(stage, corpus, workdir: str, engine) -> Decisions:
    """:meth:`FuzzyStage.identify` with partitioned pair shuffles and components (see module doc)."""
    from dedupkit.stages import fuzzy as fz

    cfg = stage.config.minhash
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    n = len(corpus)
    t0 = time.perf_counter()

    paths, offsets, nparts, btasks = stage.bucket_tasks(corpus, work)
    n_empty = sum(int((np.load(p, mmap_mode="r") == 0).sum()) for p in paths("nsh"))
    cand: list[str] = []
    if n:
        counts = engine.map(fz.bucket_task, btasks, desc="fuzzy: buckets")
        pparts = graph.partitions_for(sum(counts), PAIRS_PER_PARTITION)
        cand = graph.unique_pairs([t.out for t in btasks], work, engine, pparts, name="cand")
    n_candidates = sum(_rows(f) for f in cand)
    t1 = time.perf_counter()

    verified = cand
    if stage.config.verify != "none" and n_candidates:
        set_prefixes: tuple[str, ...] = ()
        if stage.config.verify == "jaccard":
            # Only the ids of candidate documents reach the driver (at most one per document).
            docs = np.unique(np.concatenate([np.unique(np.load(f)) for f in cand]))
            set_prefixes = stage._shingle_sets(corpus, docs, work, engine)
        vtasks = [fz.VerifyTask(f, stage.config.verify, float(cfg.threshold), paths("sig"), offsets,
                                set_prefixes, str(work / f"verified-p{q:04d}.npy"))
                  for q, f in enumerate(cand)]
        engine.map(fz.verify_task, vtasks, desc="fuzzy: verify")
        verified = [t.out for t in vtasks]
    n_verified = sum(_rows(f) for f in verified)
    t2 = time.perf_counter()

    root, cc = graph.connected_components(n, verified, work / "components", engine)
    labels, rep, score = stage.clusters(corpus, root, paths, offsets)
    t3 = time.perf_counter()
    stats = {
        "bands": stage.bands, "rows": stage.rows,
        "detection_probability": {str(s): round(detection_probability(s, stage.bands, stage.rows), 4)
                                  for s in (0.5, 0.7, 0.8, 0.9)},
        "documents_without_shingles": n_empty,
        "candidate_pairs": int(n_candidates), "verified_pairs": int(n_verified),
        "partitions_per_band": nparts,
        "global_step": {"mode": "partitioned", "pair_partitions": len(cand),
                        "component_partitions": cc["partitions"], "component_rounds": cc["rounds"]},
        "timings": {"buckets_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3),
                    "components_s": round(t3 - t2, 3)},
    }
    return Decisions(representative=rep, labels=labels, score=score, stats=stats)
