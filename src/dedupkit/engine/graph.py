"""Pair files to components without gathering the pairs anywhere: hash-partitioned shuffles.

Fuzzy dedup ends with a graph: documents are nodes, verified near-duplicate pairs are edges, and a
cluster is a connected component. Gathering all pairs in one process (a driver-side group-by, a
single union-find) is what makes peers' clusters fall over at scale. Here every step is a task over
one hash partition of the nodes, run through the engine's ``map`` (local processes or Ray); tasks
exchange edges through files ``WORK/<step>-s<src>-d<dst>.npy`` (each task writes one file per
destination partition), and return only counts to the caller. Memory per task is bounded by the
edges of one partition; pick ``nparts`` with :func:`partitions_for`.

Connected components use alternating *large-star* and *small-star* contractions (Kiveris et al.,
"Connected Components in MapReduce and Beyond", SoCC 2014): each step is one shuffle, the number of
rounds grows with the log of the component size, and the result is a star per component centred
on its smallest node, so the root of every node is its component's minimum: the same answer as a
single-process union-find, whatever the number of partitions or workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dedupkit import kernels
from dedupkit.atomic import atomic_open
from dedupkit.errors import DedupkitError

# Edges per partition: ~16 bytes each, times a few copies while sorting -> a few hundred MB a task.
EDGES_PER_PARTITION = 8_000_000
MAX_ROUNDS = 64

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def partitions_for(n_edges: int, per_partition: int | None = None) -> int:
    """How many hash partitions keep each task near ``per_partition`` (default
    ``EDGES_PER_PARTITION``) edges."""
    per = per_partition or EDGES_PER_PARTITION
    return max(1, -(-int(n_edges) // per))


def component_roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (the smallest member) of every node's connected component, in one process.

    The graph has nodes ``0..n-1`` and undirected edges ``a[k]-b[k]``; a node without an edge is its
    own root. The single-process twin of :func:`connected_components` (which never gathers the
    edges): the fuzzy stage's ``cluster = "split"``, the index check and ``run``'s combined clusters
    use it.

    Example:
        >>> component_roots(5, np.array([3, 1]), np.array([4, 3])).tolist()
        [0, 1, 2, 1, 1]
    """
    if n == 0 or len(a) == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    a = np.asarray(a, np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, np.asarray(b, np.int64))), shape=(n, n))
    _, labels = scipy_components(graph, directed=False)
    # the first occurrence of each label is its smallest member
    _, first = np.unique(labels, return_index=True)
    return first[labels].astype(np.int64)


def part_of(nodes: np.ndarray, nparts: int) -> np.ndarray:
    """Hash partition (0..nparts-1) of each node id (Fibonacci hashing: consecutive ids spread)."""
    if nparts == 1:
        return np.zeros(len(nodes), np.int64)
    with np.errstate(over="ignore"):
        h = nodes.astype(np.uint64) * _GOLDEN
    return ((h >> np.uint64(32)) % np.uint64(nparts)).astype(np.int64)


def _save(path: str, arr: np.ndarray) -> None:
    with atomic_open(path, sync=False) as fh:
        np.save(fh, arr)


def _load_pairs(paths: Sequence[str]) -> np.ndarray:
    """The (i, j) columns of pair files; files may carry more columns (a payload), dropped here."""
    parts = [np.load(p) for p in paths]
    parts = [(p[:, :2] if p.ndim == 2 else p.reshape(-1, 2)) for p in parts if len(p)]
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros((0, 2), np.int64)


def _unique_rows(e: np.ndarray) -> np.ndarray:
    """Distinct (key, other) rows, sorted by key then other."""
    if len(e) < 2:
        return e
    order = np.lexsort((e[:, 1], e[:, 0]))
    e = e[order]
    keep = np.r_[True, np.any(e[1:] != e[:-1], axis=1)]
    return e[keep]


def _scatter(edges: np.ndarray, key_col: int, prefix: str, nparts: int) -> list[str]:
    """Write ``edges`` to one file per destination partition of column ``key_col``."""
    dest = part_of(edges[:, key_col], nparts) if len(edges) else np.zeros(0, np.int64)
    out = []
    for q in range(nparts):
        path = f"{prefix}-d{q:04d}.npy"
        _save(path, edges[dest == q] if nparts > 1 else edges)
        out.append(path)
    return out


@dataclass(frozen=True)
class SplitTask:
    """Scatter one pair file into partitions: by the smaller node (``by="min"``) or, as a pair of
    directed edges, by both nodes (``by="both"``)."""

    src: str
    prefix: str
    nparts: int
    by: str = "min"


def split_task(task: SplitTask) -> int:
    e = _load_pairs([task.src])
    if len(e):
        e = np.sort(e, axis=1)  # (small, large)
        e = e[e[:, 0] != e[:, 1]]
    if task.by == "both":
        e = np.concatenate([e, e[:, ::-1]])
    _scatter(e, 0, task.prefix, task.nparts)
    return int(len(e))


@dataclass(frozen=True)
class UniqueTask:
    srcs: tuple[str, ...]
    out: str


def unique_task(task: UniqueTask) -> int:
    """The distinct pairs of one partition, sorted, written to ``task.out``."""
    e = _unique_rows(_load_pairs(task.srcs))
    _save(task.out, e)
    return int(len(e))


@dataclass(frozen=True)
class StarTask:
    kind: str  # "large" | "small"
    srcs: tuple[str, ...]  # (key, neighbour) edges of this partition's keys
    prefix: str
    nparts: int


@dataclass
class StarResult:
    edges_in: int
    edges_out: int
    unsettled: int  # large: keys with a smaller neighbour and more than one neighbour


def _groups(e: np.ndarray):
    starts = np.flatnonzero(np.r_[True, e[1:, 0] != e[:-1, 0]]) if len(e) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(e)])
    return starts, sizes


def star_task(task: StarTask) -> StarResult:
    """One large-star or small-star step for the keys of one partition.

    large-star: key u with neighbours G(u) (both directions), m = min(G(u) + {u}); every
    neighbour v > u is re-linked to m. Output edges (v, m), v > m, keyed by v for the small step.
    small-star: key u with its smaller neighbours N, m = min(N); u and every v in N other than m
    are linked to m. Output edges keyed by both ends for the next large step.
    """
    e = _unique_rows(_load_pairs(task.srcs))
    starts, sizes = _groups(e)
    key = e[starts, 0] if len(e) else np.zeros(0, np.int64)
    gmin = np.minimum.reduceat(e[:, 1], starts) if len(e) else np.zeros(0, np.int64)
    if task.kind == "large":
        unsettled = int(((gmin < key) & (sizes > 1)).sum())
        m = np.minimum(gmin, key)
        m_row = np.repeat(m, sizes)
        sel = e[:, 1] > e[:, 0]
        out = np.stack([e[sel, 1], m_row[sel]], 1)
        _scatter(out, 0, task.prefix, task.nparts)
        return StarResult(len(e), len(out), unsettled)
    if task.kind == "small":
        m_row = np.repeat(gmin, sizes)
        nbr = e[:, 1]
        links = np.stack([nbr[nbr != m_row], m_row[nbr != m_row]], 1)
        links = np.concatenate([links, np.stack([key, gmin], 1)])
        out = np.concatenate([links, links[:, ::-1]])
        _scatter(out, 0, task.prefix, task.nparts)
        return StarResult(len(e), len(out), 0)
    raise ValueError(f"unknown star step {task.kind!r}")  # pragma: no cover - internal


@dataclass(frozen=True)
class RootTask:
    srcs: tuple[str, ...]
    out: str


def root_task(task: RootTask) -> int:
    """In a star forest: (node, root) for every non-root node of this partition."""
    e = _unique_rows(_load_pairs(task.srcs))
    starts, _ = _groups(e)
    if not len(e):
        _save(task.out, np.zeros((0, 2), np.int64))
        return 0
    key = e[starts, 0]
    gmin = np.minimum.reduceat(e[:, 1], starts)
    leaf = gmin < key
    _save(task.out, np.stack([key[leaf], gmin[leaf]], 1))
    return int(leaf.sum())


class ComponentsError(DedupkitError):
    """Components did not settle within MAX_ROUNDS (a bug: the algorithm converges in O(log^2 n))."""


def unique_pairs(files: Sequence[str], work: str | Path, engine: Any, nparts: int,
                 name: str = "cand") -> list[str]:
    """Distinct undirected pairs of ``files``, as ``nparts`` files partitioned by the smaller node.

    Returns:
        Paths of the partition files, each holding sorted (small, large) int64 pairs.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    split = [SplitTask(f, str(work / f"{name}split-s{i:05d}"), nparts, "min") for i, f in enumerate(files)]
    engine.map(split_task, split, desc=f"{name}: partition pairs")
    uniq = [UniqueTask(tuple(f"{t.prefix}-d{q:04d}.npy" for t in split), str(work / f"{name}-p{q:04d}.npy"))
            for q in range(nparts)]
    engine.map(unique_task, uniq, desc=f"{name}: distinct pairs")
    for t in split:
        for q in range(nparts):
            _unlink(f"{t.prefix}-d{q:04d}.npy")
    return [t.out for t in uniq]


def connected_components(n: int, files: Sequence[str], work: str | Path, engine: Any,
                         nparts: int | None = None, assemble: bool = True) -> tuple[Any, dict]:
    """Root (smallest member) of every node 0..n-1's component, over the pairs in ``files``.

    Args:
        n: number of nodes.
        files: .npy files of (m, 2) int64 pairs (any order, duplicates allowed).
        work: a folder for the shuffle files.
        engine: anything with ``map(fn, tasks, desc)`` (LocalEngine, RayEngine).
        nparts: hash partitions; default from the number of pairs (:func:`partitions_for`).
        assemble: False keeps the roots in files (no array of n on the caller): ``root`` is then
            the list of ``nparts`` .npy files of (node, root) rows for the non-root nodes whose
            partition (:func:`part_of`) is q, sorted by node.

    Returns:
        ``(root, stats)``: int64 array of length n (a node without edges is its own root), and
        rounds / partitions / edges per round for the summary.

    Raises:
        ComponentsError: no convergence within MAX_ROUNDS rounds.

    Example:
        >>> from dedupkit.engine.local import LocalEngine  # doctest: +SKIP
        >>> root, _ = connected_components(4, ["pairs.npy"], "work", LocalEngine())  # doctest: +SKIP
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if nparts is None:
        total = sum(_n_rows(f) for f in files)
        nparts = partitions_for(2 * total)
    split = [SplitTask(f, str(work / f"cc-r000-init-s{i:05d}"), nparts, "both") for i, f in enumerate(files)]
    engine.map(split_task, split, desc="components: partition")
    srcs = [tuple(f"{t.prefix}-d{q:04d}.npy" for t in split) for q in range(nparts)]
    garbage = [p for s in srcs for p in s]
    history = []
    for r in range(1, MAX_ROUNDS + 1):
        large = [StarTask("large", srcs[q], str(work / f"cc-r{r:03d}-large-s{q:04d}"), nparts)
                 for q in range(nparts)]
        res = engine.map(star_task, large, desc=f"components: round {r} large-star")
        unsettled = sum(x.unsettled for x in res)
        history.append({"round": r, "edges": int(sum(x.edges_in for x in res)), "unsettled": unsettled})
        if unsettled == 0:
            break
        _unlink_all(garbage)
        lsrcs = [tuple(f"{t.prefix}-d{q:04d}.npy" for t in large) for q in range(nparts)]
        small = [StarTask("small", lsrcs[q], str(work / f"cc-r{r:03d}-small-s{q:04d}"), nparts)
                 for q in range(nparts)]
        engine.map(star_task, small, desc=f"components: round {r} small-star")
        _unlink_all([p for s in lsrcs for p in s])
        srcs = [tuple(f"{t.prefix}-d{q:04d}.npy" for t in small) for q in range(nparts)]
        garbage = [p for s in srcs for p in s]
    else:
        raise ComponentsError(f"connected components did not settle in {MAX_ROUNDS} rounds; "
                              "please report this with the summary.json of the run")
    # The last large step read a star forest; its own output is not needed.
    for t in large:
        _unlink_all([f"{t.prefix}-d{q:04d}.npy" for q in range(nparts)])
    roots = [RootTask(srcs[q], str(work / f"cc-roots-p{q:04d}.npy")) for q in range(nparts)]
    engine.map(root_task, roots, desc="components: roots")
    _unlink_all(garbage)
    stats = {"partitions": nparts, "rounds": len(history), "history": history}
    if not assemble:
        return [t.out for t in roots], stats
    root = np.arange(n, dtype=np.int64)
    for t in roots:
        nr = np.load(t.out)
        if len(nr):
            root[nr[:, 0]] = nr[:, 1]
        _unlink(t.out)
    return root, stats


# --- greedy centre clustering ------------------------------------------------------------------

def greedy_centres(indptr: np.ndarray, indices: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy centre clustering of a graph in CSR form (both directions of every edge).

    Nodes are visited in ``order`` (best first); a node nobody claimed becomes a centre and claims
    every neighbour nobody claimed yet. Claims follow exactly one edge, so a claimed node is always
    a direct neighbour of its centre, and the result does not depend on the order of the
    neighbours, only on ``order``.

    Returns:
        ``(claim, via)``: per node, the centre that claimed it (-1 for centres and lone nodes) and
        the CSR position of the claiming edge (-1 likewise).
    """
    n = len(indptr) - 1
    indptr = np.ascontiguousarray(indptr, np.int64)
    indices = np.ascontiguousarray(indices, np.int64)
    order = np.ascontiguousarray(order, np.int64)
    if kernels.speedups is not None:
        c, v = kernels.speedups.greedy_centres(indptr, indices, order, n)
        return np.frombuffer(c, np.int64).copy(), np.frombuffer(v, np.int64).copy()
    claim = np.full(n, -1, np.int64)
    via = np.full(n, -1, np.int64)
    seen = np.zeros(n, bool)
    for u in order.tolist():
        if seen[u]:
            continue
        seen[u] = True
        a, b = indptr[u], indptr[u + 1]
        nb = indices[a:b]
        new = ~seen[nb]
        seen[nb[new]] = True
        claim[nb[new]] = u
        via[nb[new]] = a + np.flatnonzero(new)
    return claim, via


def centre_clusters(edges: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy centres over verified pairs, in keep-priority order.

    Args:
        edges: int64 (m, 3) rows (i, j, payload), each undirected pair once.
        rank: keep-priority rank of every node (lower is kept first; a permutation, or at least
            distinct for the nodes of ``edges``), indexed by node id.

    Returns:
        ``(docs, centre, payload)``: the claimed (dropped) nodes in ascending order, the centre
        that claimed each, and the payload of the pair (centre, doc).

    Example:
        >>> e = np.array([[0, 1, 7], [1, 2, 8]])  # 0~1, 1~2, but not 0~2
        >>> centre_clusters(e, np.arange(3))[:2]  # 1 goes to 0; 2 stays (no chaining)
        (array([1]), array([0]))
    """
    if len(edges) == 0:
        z = np.zeros(0, np.int64)
        return z, z.copy(), z.copy()
    edges = np.asarray(edges, np.int64)
    nodes, inv = np.unique(edges[:, :2], return_inverse=True)
    inv = inv.reshape(-1, 2)
    k = len(nodes)
    src = np.concatenate([inv[:, 0], inv[:, 1]])
    dst = np.concatenate([inv[:, 1], inv[:, 0]])
    pay = np.concatenate([edges[:, 2], edges[:, 2]])
    by_src = np.argsort(src, kind="stable")
    indices, pay = dst[by_src], pay[by_src]
    indptr = np.zeros(k + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=k), out=indptr[1:])
    order = np.lexsort((nodes, np.asarray(rank)[nodes]))
    claim, via = greedy_centres(indptr, indices, order)
    got = np.flatnonzero(claim >= 0)
    return nodes[got], nodes[claim[got]], pay[via[got]]


@dataclass(frozen=True)
class CentreTask:
    """Greedy centres for the components of one partition (edges already grouped by component)."""

    srcs: tuple[str, ...]
    rank: str  # .npy of every node's rank
    out: str


def centre_task(task: CentreTask) -> int:
    e = [np.load(p) for p in task.srcs]
    e = [x for x in e if len(x)]
    edges = np.concatenate(e) if e else np.zeros((0, 3), np.int64)
    rank = np.load(task.rank, mmap_mode="r")
    docs, centre, pay = centre_clusters(edges, rank)
    _save(task.out, np.stack([docs, centre, pay], 1) if len(docs) else np.zeros((0, 3), np.int64))
    return int(len(docs))


@dataclass(frozen=True)
class ByRootTask:
    """Scatter the (i, j, payload) rows of one file by the component root of ``i``."""

    src: str
    root: str  # .npy of every node's component root
    prefix: str
    nparts: int


def by_root_task(task: ByRootTask) -> int:
    e = np.load(task.src)
    e = e.reshape(-1, 3) if len(e) else np.zeros((0, 3), np.int64)
    root = np.load(task.root, mmap_mode="r")
    dest = part_of(np.asarray(root[e[:, 0]]), task.nparts) if len(e) else np.zeros(0, np.int64)
    for q in range(task.nparts):
        _save(f"{task.prefix}-d{q:04d}.npy", e[dest == q])
    return int(len(e))


def centre_clusters_partitioned(files: Sequence[str], root: np.ndarray, rank: np.ndarray, work: str | Path,
                                engine: Any, nparts: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`centre_clusters` over pair files without gathering the pairs: greedy centres never
    cross a connected component, so the pairs are shuffled by their component's root
    (:func:`connected_components`) and each partition runs the greedy step on whole components.
    Same answer as :func:`centre_clusters` on all pairs at once; only per-node arrays come back.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if nparts is None:
        nparts = partitions_for(sum(_n_rows(f) for f in files))
    root_path, rank_path = str(work / "centre-root.npy"), str(work / "centre-rank.npy")
    _save(root_path, np.asarray(root, np.int64))
    _save(rank_path, np.asarray(rank, np.int64))
    split = [ByRootTask(f, root_path, str(work / f"centre-s{i:05d}"), nparts) for i, f in enumerate(files)]
    engine.map(by_root_task, split, desc="centres: partition")
    tasks = [CentreTask(tuple(f"{t.prefix}-d{q:04d}.npy" for t in split), rank_path, str(work / f"centre-p{q:04d}.npy"))
             for q in range(nparts)]
    engine.map(centre_task, tasks, desc="centres: greedy")
    _unlink_all([p for t in tasks for p in t.srcs])
    parts = [np.load(t.out) for t in tasks]
    _unlink_all([t.out for t in tasks] + [root_path, rank_path])
    parts = [p for p in parts if len(p)]
    if not parts:
        z = np.zeros(0, np.int64)
        return z, z.copy(), z.copy()
    res = np.concatenate(parts)
    res = res[np.argsort(res[:, 0], kind="stable")]
    return res[:, 0].copy(), res[:, 1].copy(), res[:, 2].copy()


def _n_rows(path: str) -> int:
    arr = np.load(path, mmap_mode="r")
    return int(arr.shape[0]) if arr.ndim else 0


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _unlink_all(paths: Sequence[str]) -> None:
    for p in paths:
        _unlink(p)
