"""dedupkit.neighbours: exact / IVF / per-cluster search against brute force on random vectors."""

from __future__ import annotations

import numpy as np
import pytest

from dedupkit.errors import ConfigError
from dedupkit.neighbours import ann_recall, build_ivf, resolve_method, search

pytest.importorskip("faiss")


def clustered(n: int, d: int, seed: int, dup_share: float = 0.3, noise: float = 0.05) -> np.ndarray:
    """Unit vectors around a few centres, with near copies planted (what embeddings look like)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), d))
    x = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, d))
    ndup = int(n * dup_share)
    src = rng.integers(0, n - ndup, ndup)
    x[n - ndup:] = x[src] + noise * rng.standard_normal((ndup, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def brute(x: np.ndarray, k: int, thr: float, groups=None) -> tuple[set, np.ndarray]:
    """Every pair that is among one side's k nearest others (ties to the lower index) at >= thr."""
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    if groups is not None:
        sim[groups[:, None] != groups[None, :]] = -np.inf
    pairs = set()
    nearest = np.full(len(x), -1)
    for i in range(len(x)):
        order = np.lexsort((np.arange(len(x)), -sim[i]))
        top = [j for j in order[:k] if np.isfinite(sim[i, j])]
        if top:
            nearest[i] = top[0]
        pairs |= {(min(i, j), max(i, j)) for j in top if sim[i, j] >= thr}
    return pairs, nearest


@pytest.mark.parametrize("n,k,thr,chunk,seed", [(300, 5, 0.8, 64, 0), (257, 3, 0.5, 1000, 1), (120, 40, 0.9, 7, 2)])
def test_exact_matches_brute_force(n, k, thr, chunk, seed):
    x = clustered(n, 24, seed)
    nb = search(x, k=k, threshold=thr, method="exact", chunk=chunk)
    want, nearest = brute(x, k, thr)
    got = {tuple(e) for e in nb.edges.tolist()}
    sim = x @ x.T
    assert len(want) > 20 and got == want  # noisy copies: no exact ties, so the sets agree exactly
    assert np.all(nb.edges[:, 0] < nb.edges[:, 1])
    np.testing.assert_allclose(nb.sims, [sim[i, j] for i, j in nb.edges.tolist()], rtol=1e-5, atol=1e-6)
    assert np.array_equal(nb.nearest, nearest)
    assert np.allclose(nb.nearest_sim, sim[np.arange(n), nb.nearest], atol=1e-5)


def test_result_does_not_depend_on_chunking():
    x = clustered(400, 16, 3)
    a = search(x, k=8, threshold=0.7, method="exact", chunk=33)
    b = search(x, k=8, threshold=0.7, method="exact", chunk=4096)
    assert np.array_equal(a.edges, b.edges) and np.array_equal(a.nearest, b.nearest)


def test_kmeans_groups_restrict_the_search():
    x = clustered(200, 16, 4)
    groups = np.arange(200) % 3
    nb = search(x, k=10, threshold=0.6, method="kmeans", groups=groups)
    assert len(nb.edges) and np.all(groups[nb.edges[:, 0]] == groups[nb.edges[:, 1]])
    want, _ = brute(x, 10, 0.6, groups)
    assert want == {tuple(e) for e in nb.edges.tolist()}


def test_ivf_recall_and_edges_are_real():
    x = clustered(4000, 32, 5)
    nb = search(x, k=10, threshold=0.9, method="ivf", seed=1)
    exact = search(x, k=10, threshold=0.9, method="exact")
    got, want = {tuple(e) for e in nb.edges.tolist()}, {tuple(e) for e in exact.edges.tolist()}
    assert got <= want and len(got) >= 0.95 * len(want)
    sim = x @ x.T
    assert all(sim[i, j] >= 0.9 - 1e-6 for i, j in got)
    assert nb.stats["method"] == "ivf" and nb.stats["recall"]["recall_above_threshold"] >= 0.95
    # the reported recall is a real measurement: one probed list of many finds less
    idx = build_ivf(x, 64, seed=1)
    idx.nprobe = 1
    assert ann_recall(idx, x, 10, seed=1)["recall_at_k"] < nb.stats["recall"]["recall_at_k"]


def test_methods_and_errors():
    assert resolve_method("auto", 10) == "exact"
    assert resolve_method("auto", 10**7) == "ivf"
    with pytest.raises(ConfigError, match="search must be one of"):
        resolve_method("hnsw", 10)
    with pytest.raises(ConfigError, match="groups"):
        search(np.eye(3, dtype=np.float32), 2, 0.9, method="kmeans")
    with pytest.raises(ConfigError, match="at least 1"):
        search(np.eye(3, dtype=np.float32), 0, 0.9)
