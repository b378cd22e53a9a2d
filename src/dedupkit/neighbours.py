"""Nearest neighbours of unit vectors over a whole corpus: exact, IVF (approximate) or per k-means cluster.

The semantic stage asks one question of its embeddings: for every document, which other documents
lie within cosine ``threshold`` of it? :func:`search` answers it with the ``k`` nearest neighbours of
each document, keeping those at or above the threshold as undirected edges ``(i, j, cosine)``:

- ``exact``: FAISS brute-force inner product (``faiss.knn``), queries in chunks of
  :data:`QUERY_CHUNK` rows, so memory is the vectors plus one chunk's ``k`` results; time grows
  with n^2 (about a minute for 100,000 x 384 on two cores).
- ``ivf``: an inverted-file index (FAISS ``IndexIVFFlat``, ``nlist`` ~ 4 sqrt(n) lists trained with
  a seeded sample); each query scans the ``nprobe`` lists nearest to it, so near neighbours that
  k-means put in another list are still found. Its recall against ``exact`` is measured on a
  seeded sample of queries every run (:func:`ann_recall`) and reported.
- ``kmeans``: SemDeDup's restriction: neighbours only inside the document's own k-means cluster
  (``groups``), exact within it.

``auto`` is exact up to :data:`EXACT_MAX_DOCS` documents, ivf beyond. Every edge's cosine is
recomputed from the vectors (not taken from the index), so the stage's decisions and the
manifest's scores are the same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from dedupkit import settings as _S
from dedupkit.embed import passive_openmp
from dedupkit.errors import ConfigError, require

SEARCH_MODES = _S.choices(_S.SemanticConfig, "search")
#: ``auto`` searches exactly up to this many documents: 100,000^2 x 384 inner products take a
#: minute or two on two cores; beyond, exact time grows with n^2 while IVF grows with n.
EXACT_MAX_DOCS = 100_000
#: Query rows per search call: bounds the (rows x k) result arrays and FAISS's own work buffers.
QUERY_CHUNK = 8192
DEFAULT_K = _S.SemanticConfig.neighbours
#: ``density`` (how typical a document is, for the keep policies) is the mean cosine to this many
#: nearest neighbours, whatever ``k``: so a larger ``k`` finds more pairs without reordering.
DENSITY_K = 10
#: Queries whose exact neighbours are computed to measure an IVF run's recall.
RECALL_SAMPLE = 1000


def ivf_lists(n: int) -> int:
    """Inverted lists for n vectors: ~4 sqrt(n) (FAISS's guideline), at most n / 39 so every list
    gets the 39 training points FAISS asks for."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query: 32 whatever their number, so a query costs 32 n / nlist ~ 8 sqrt(n)
    inner products (recall@10 0.950 and 1.000 of the pairs at the default threshold on qqp-sample
    MiniLM embeddings, see benchmarks/RESULTS.md); raise ``nprobe`` for more recall, at its cost."""
    return max(1, min(nlist, 32))


@dataclass
class Neighbours:
    """What :func:`search` found.

    Attributes:
        edges: int64 (m, 2), each undirected pair once with i < j, sorted; cosine >= threshold.
        sims: float32 (m,), the cosine of each edge, recomputed from the vectors.
        nearest: int64 (n,), each document's nearest other document found (-1: none).
        nearest_sim: float32 (n,), its cosine (-inf: none).
        density: float32 (n,), mean cosine to the :data:`DENSITY_K` nearest neighbours found (how
            typical a document is).
        method: ``exact``, ``ivf`` or ``kmeans``.
        stats: counts, timings, IVF lists / probes and measured recall.
    """

    edges: np.ndarray
    sims: np.ndarray
    nearest: np.ndarray
    nearest_sim: np.ndarray
    density: np.ndarray
    method: str
    stats: dict = field(default_factory=dict)


def resolve_method(method: str, n: int) -> str:
    """``auto`` -> ``exact`` up to :data:`EXACT_MAX_DOCS` documents, else ``ivf``."""
    if method not in SEARCH_MODES:
        raise ConfigError(f"search must be one of {', '.join(SEARCH_MODES)}, got {method!r}")
    if method == "auto":
        return "exact" if n <= EXACT_MAX_DOCS else "ivf"
    return method


def _faiss():
    passive_openmp()
    return require("faiss", "semantic")


def exact_knn(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of each query row against every base row (FAISS brute force)."""
    faiss = _faiss()
    k = min(k, len(xb))
    if k < 1 or not len(xq):
        return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
    d, i = faiss.knn(np.ascontiguousarray(xq, np.float32), np.ascontiguousarray(xb, np.float32), k,
                     metric=faiss.METRIC_INNER_PRODUCT)
    return d, i.astype(np.int64, copy=False)


def build_ivf(x: np.ndarray, nlist: int, seed: int):
    """An ``IndexIVFFlat`` (inner product) over x, trained on a seeded sample of 64 points per list."""
    faiss = _faiss()
    n, d = x.shape
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.max_points_per_centroid = 64
    m = min(n, 64 * nlist)
    rng = np.random.default_rng(seed)
    sample = x if m >= n else x[np.sort(rng.choice(n, m, replace=False))]
    index.train(np.ascontiguousarray(sample, np.float32))
    for a in range(0, n, 65536):
        index.add(np.ascontiguousarray(x[a:a + 65536], np.float32))
    return index


def ann_recall(index, x: np.ndarray, k: int, *, seed: int, sample: int = RECALL_SAMPLE,
               threshold: float | None = None) -> dict:
    """Recall of ``index`` against exact search on a seeded sample of queries from x.

    Returns ``recall_at_k`` (share of the exact top-k found in the index's top-k) and, when a
    threshold is given, ``recall_above_threshold`` (share of exact neighbours with cosine >=
    threshold that the index found: the pairs the stage acts on).
    """
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return {"queries": 0, "recall_at_k": 1.0}
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, min(sample, n), replace=False))
    de, ie = exact_knn(x[q], x, k + 1)
    da, ia = index.search(np.ascontiguousarray(x[q], np.float32), k + 1)
    hit = tot = hit_t = tot_t = 0
    for r, row in enumerate(q):
        e = [(j, s) for j, s in zip(ie[r], de[r]) if j != row][:k]
        a = {int(j) for j in ia[r] if j != row and j >= 0}
        hit += sum(int(j) in a for j, _ in e)
        tot += len(e)
        if threshold is not None:
            above = [j for j, s in e if s >= threshold]
            hit_t += sum(int(j) in a for j in above)
            tot_t += len(above)
    out = {"queries": int(len(q)), "k": int(k), "recall_at_k": round(hit / tot, 4) if tot else 1.0}
    if threshold is not None:
        out["recall_above_threshold"] = round(hit_t / tot_t, 4) if tot_t else 1.0
        out["pairs_above_threshold"] = int(tot_t)
    return out


class _Collector:
    """Gathers (query, neighbour, inner product) rows chunk by chunk, keeping only what is needed."""

    def __init__(self, n: int, k: int, threshold: float):
        self.threshold = threshold
        self.k = k
        self.nearest = np.full(n, -1, np.int64)
        self.nearest_sim = np.full(n, -np.inf, np.float32)
        self.density = np.zeros(n, np.float32)
        self.parts: list[np.ndarray] = []

    def add(self, rows: np.ndarray, d: np.ndarray, i: np.ndarray) -> None:
        if not len(rows) or not d.shape[1]:
            return
        ok = (i >= 0) & (i != rows[:, None])
        # each row's k best others (the self match, wherever ties put it, is dropped)
        keep = ok & (np.cumsum(ok, axis=1) <= self.k)
        has = keep.any(axis=1)
        first = np.argmax(keep, axis=1)
        r = np.arange(len(rows))
        self.nearest[rows[has]] = i[r[has], first[has]]
        self.nearest_sim[rows[has]] = d[r[has], first[has]]
        near = keep & (np.cumsum(keep, axis=1) <= DENSITY_K)
        cnt = near.sum(axis=1)
        self.density[rows] = np.where(near, d, 0).sum(axis=1) / np.maximum(cnt, 1)
        sel = keep & (d >= self.threshold)
        qi = np.broadcast_to(rows[:, None], i.shape)[sel]
        nj = i[sel]
        if len(qi):
            self.parts.append(np.stack([np.minimum(qi, nj), np.maximum(qi, nj)], 1))

    def edges(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = np.concatenate(self.parts) if self.parts else np.zeros((0, 2), np.int64)
        if len(e):
            e = e[np.lexsort((e[:, 1], e[:, 0]))]
            e = e[np.r_[True, np.any(e[1:] != e[:-1], axis=1)]]
        sims = pair_cosines(x, e)
        sel = sims >= self.threshold
        return e[sel], sims[sel]


def pair_cosines(x: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """float32 inner product of each (i, j) row's vectors, in chunks."""
    out = np.empty(len(pairs), np.float32)
    for a in range(0, len(pairs), chunk):
        p = pairs[a:a + chunk]
        out[a:a + chunk] = np.einsum("ij,ij->i", x[p[:, 0]], x[p[:, 1]])
    return out


def search(x: np.ndarray, k: int, threshold: float, method: str = "auto", *,
           groups: np.ndarray | None = None, nlist: int | None = None, nprobe: int | None = None,
           seed: int = _S.SemanticConfig.seed, chunk: int = QUERY_CHUNK) -> Neighbours:
    """Each document's k nearest other documents, and the pairs among them at cosine >= threshold.

    Args:
        x: (n, d) float32 unit vectors.
        k: neighbours per document; a document can be linked to more (others may list it).
        threshold: the lowest cosine kept as an edge.
        method: ``auto``, ``exact``, ``ivf`` or ``kmeans`` (see the module docs).
        groups: with ``kmeans``, each document's cluster; neighbours are searched inside it.
        nlist, nprobe: IVF lists and lists probed (defaults :func:`ivf_lists`, :func:`default_nprobe`).
        seed: IVF training sample and the recall sample.
        chunk: query rows per search call (memory bound; the result does not depend on it).

    Returns:
        :class:`Neighbours`.

    Raises:
        ConfigError: an unknown method, ``kmeans`` without groups, or k < 1.

    Example:
        >>> x = np.eye(3, dtype=np.float32)[[0, 0, 1]]
        >>> search(x, k=2, threshold=0.9, method="exact").edges.tolist()
        [[0, 1]]
    """
    if k < 1:
        raise ConfigError(f"neighbours must be at least 1, got {k}")
    n = len(x)
    method = resolve_method(method, n)
    t0 = time.perf_counter()
    col = _Collector(n, k, threshold)
    stats: dict = {"method": method, "k": int(k)}
    if method == "exact":
        for a in range(0, n, chunk):
            rows = np.arange(a, min(n, a + chunk), dtype=np.int64)
            col.add(rows, *exact_knn(x[a:a + chunk], x, k + 1))
    elif method == "ivf":
        nlist = nlist or ivf_lists(n)
        index = build_ivf(x, nlist, seed)
        index.nprobe = nprobe or default_nprobe(nlist)
        stats.update({"nlist": int(nlist), "nprobe": int(index.nprobe), "train_s": round(time.perf_counter() - t0, 3)})
        for a in range(0, n, chunk):
            rows = np.arange(a, min(n, a + chunk), dtype=np.int64)
            d, i = index.search(np.ascontiguousarray(x[a:a + chunk], np.float32), min(n, k + 1))
            col.add(rows, d, i.astype(np.int64, copy=False))
        t_r = time.perf_counter()
        stats["recall"] = ann_recall(index, x, min(k, 10), seed=seed, threshold=threshold)
        stats["recall_s"] = round(time.perf_counter() - t_r, 3)
        del index
    elif method == "kmeans":
        if groups is None:
            raise ConfigError("search = kmeans needs each document's cluster (groups)")
        groups = np.asarray(groups, np.int64)
        order = np.argsort(groups, kind="stable")
        bounds = np.flatnonzero(np.r_[True, groups[order][1:] != groups[order][:-1], True]) if n else [0]
        for s, e in zip(bounds[:-1], bounds[1:]):
            members = order[s:e]
            for a in range(0, len(members), chunk):
                rows = members[a:a + chunk]
                d, i = exact_knn(x[rows], x[members], k + 1)
                col.add(rows, d, np.where(i >= 0, members[np.maximum(i, 0)], -1))
    edges, sims = col.edges(x)
    stats.update({"pairs": int(len(edges)), "search_s": round(time.perf_counter() - t0, 3)})
    return Neighbours(edges=edges, sims=sims, nearest=col.nearest, nearest_sim=col.nearest_sim,
                      density=col.density, method=method, stats=stats)
