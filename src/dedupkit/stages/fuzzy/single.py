"""The fuzzy stage's global step in one process: the candidate pairs are gathered on the driver.

Used on an engine that is not distributed (the local process pool): the bucket tasks write
candidate pair files, the driver makes them distinct and cuts them into verification chunks, and
greedy centre clustering (:func:`dedupkit.engine.graph.centre_clusters`) runs on the verified
pairs in keep-priority order. ``cluster = "split"`` (components, the measured alternative) runs
here only.
"""

from __future__ import annotations

import time

import numpy as np

from dedupkit.engine.graph import centre_clusters, component_roots
from dedupkit.policy import choose_representatives
from dedupkit.stages.base import Decisions
from dedupkit.stages.fuzzy.tasks import bucket_bytes, save_npy

# Candidate pairs per verification task (at least one task per worker, never tiny ones).
PAIRS_PER_TASK = 500_000
MIN_PAIRS_PER_TASK = 2_048


def identify_single(stage, corpus, workdir: str, engine) -> Decisions:
    """:meth:`FuzzyStage.identify` with the pairs gathered in this process (see module doc)."""
    n = len(corpus)
    t0 = time.perf_counter()
    work, keys, rank, (paths, offsets, nparts, btasks) = stage.prepare_buckets(corpus, workdir)
    nsh = np.concatenate([np.load(p) for p in paths("nsh")]) if n else np.zeros(0, np.int32)
    pairs = np.zeros((0, 2), np.int64)
    bres: list[dict] = []
    if n:
        bres = stage.candidate_buckets(engine, btasks)
        pairs = _unique_pairs([t.out for t in btasks[1]], n)
    t1 = time.perf_counter()
    n_candidates = len(pairs)

    vres: list[dict] = []
    edges = np.zeros((0, 3), np.int64)
    if len(pairs):
        # At least one chunk per worker (set verification is worth spreading), never tiny ones;
        # the decisions do not depend on the chunking.
        per = max(MIN_PAIRS_PER_TASK, min(PAIRS_PER_TASK, -(-len(pairs) // max(1, engine.workers))))
        files = []
        for k, s in enumerate(range(0, len(pairs), per)):
            p = str(work / f"cand-{k:05d}.npy")
            save_npy(p, pairs[s:s + per])
            files.append(p)
        outs, vres = stage.verify(corpus, files, paths, offsets, work, engine, "")
        parts = [np.load(f).reshape(-1, 3) for f in outs]
        edges = np.concatenate(parts) if parts else edges
    t2 = time.perf_counter()

    if stage.config.cluster == "split":
        docs, centre, payload = split_clusters(n, edges, keys)
    else:
        docs, centre, payload = centre_clusters(edges, rank)
    t3 = time.perf_counter()
    stats = stage.base_stats(int((nsh == 0).sum()), nparts, n_candidates, vres)
    stats["bucket_bytes_read_per_task"] = bucket_bytes(bres)
    stats["timings"] = {"buckets_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3),
                        "clusters_s": round(t3 - t2, 3)}
    return stage.decisions(n, docs, centre, payload, stats)


def split_clusters(n: int, edges: np.ndarray, keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The measured alternative to greedy centres: connected components, the keep policy's
    representative per component, and only members with a verified pair *to the representative*
    dropped (the others are kept). Returns (dropped docs, their representative, pair payload)."""
    root = component_roots(n, edges[:, 0], edges[:, 1])
    sizes = np.bincount(root, minlength=n)
    labels = np.where(sizes[root] > 1, root, -1).astype(np.int64)
    rep = choose_representatives(labels, keys)
    a, b, pay = edges[:, 0], edges[:, 1], edges[:, 2]
    to_a = (rep[b] == a) & (a != b)
    to_b = (rep[a] == b) & (a != b)
    docs = np.concatenate([b[to_a], a[to_b]])
    pay = np.concatenate([pay[to_a], pay[to_b]])
    order = np.argsort(docs, kind="stable")
    return docs[order], rep[docs[order]], pay[order]


def _unique_pairs(files: list[str], n: int) -> np.ndarray:
    """Union of the pair files, each pair once, sorted (deterministic for any worker count)."""
    codes = [np.load(f) for f in files]
    codes = [p[:, 0] * np.int64(n) + p[:, 1] for p in codes if len(p)]
    if not codes:
        return np.zeros((0, 2), np.int64)
    u = np.unique(np.concatenate(codes))
    return np.stack([u // n, u % n], 1)
