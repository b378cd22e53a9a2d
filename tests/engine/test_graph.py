"""Partitioned pair shuffles and connected components (dedupkit.engine.graph) on the local engine.

The Ray run of the same functions is in test_ray.py; here a plain union-find is the reference.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupkit.engine.graph import component_roots, connected_components, part_of, unique_pairs
from dedupkit.engine.local import LocalEngine


def reference_roots(n: int, pairs) -> np.ndarray:
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


def write_chunks(tmp_path, pairs, k: int) -> list[str]:
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    files = []
    for i, chunk in enumerate(np.array_split(arr, k)):
        p = tmp_path / f"in-{i}.npy"
        np.save(p, chunk)
        files.append(str(p))
    return files


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 60), data=st.data(), nparts=st.integers(1, 5), nfiles=st.integers(1, 3))
def test_components_match_union_find(tmp_path_factory, n, data, nparts, nfiles):
    tmp = tmp_path_factory.mktemp("cc")
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))
    files = write_chunks(tmp, pairs, nfiles)
    root, stats = connected_components(n, files, tmp / "work", LocalEngine(), nparts=nparts)
    assert root.tolist() == reference_roots(n, pairs).tolist()
    assert stats["partitions"] == nparts
    assert not list((tmp / "work").glob("*.npy")), "shuffle files were left behind"


def test_long_chain_and_star_converge(tmp_path):
    rng = np.random.default_rng(3)
    n = 5000
    perm = rng.permutation(n)  # a chain through the nodes in random order: diameter n-1
    chain = np.stack([perm[:-1], perm[1:]], 1)
    star = np.stack([np.full(50, 4999), np.arange(4900, 4950)], 1)  # joins into the chain
    pairs = np.concatenate([chain[:3000], star])  # two big components + singletons
    files = write_chunks(tmp_path, pairs, 4)
    root, stats = connected_components(n, files, tmp_path / "w", LocalEngine(), nparts=4)
    assert root.tolist() == reference_roots(n, pairs.tolist()).tolist()
    assert 1 < stats["rounds"] < 40


def test_unique_pairs_partitioned_by_smaller_node(tmp_path):
    pairs = [(5, 1), (1, 5), (2, 3), (2, 3), (7, 7), (9, 0), (3, 2)]
    files = write_chunks(tmp_path, pairs, 2)
    out = unique_pairs(files, tmp_path / "w", LocalEngine(), nparts=3)
    got = [np.load(f) for f in out]
    allp = sorted(map(tuple, np.concatenate(got).tolist()))
    assert allp == [(0, 9), (1, 5), (2, 3)]  # self-pairs dropped, each pair once, (small, large)
    for q, g in enumerate(got):
        assert (part_of(g[:, 0], 3) == q).all()


def test_components_with_two_workers(tmp_path):
    pairs = [(i, i + 1) for i in range(0, 40, 2)] + [(1, 2), (10, 39)]
    files = write_chunks(tmp_path, pairs, 3)
    root, _ = connected_components(41, files, tmp_path / "w", LocalEngine(workers=2), nparts=3)
    assert root.tolist() == reference_roots(41, pairs).tolist()


# -- component_roots: the single-process helper (scipy) ------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))))
def test_component_roots_match_a_plain_search(case):
    n, edges = case
    a = np.array([e[0] for e in edges], np.int64)
    b = np.array([e[1] for e in edges], np.int64)
    got = component_roots(n, a, b)
    adj = {i: set() for i in range(n)}
    for x, y in edges:
        adj[x].add(y)
        adj[y].add(x)
    for i in range(n):
        seen, todo = {i}, [i]
        while todo:
            for y in adj[todo.pop()]:
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        assert got[i] == min(seen)


def test_component_roots_of_an_empty_graph_and_a_long_chain():
    assert component_roots(0, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []
    assert component_roots(3, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == [0, 1, 2]
    n = 10_000
    a = np.arange(n - 1, 0, -1)  # a chain walked from its end: deep for pointer jumping
    root = component_roots(n + 1, a, a - 1)
    assert (root[:n] == 0).all() and root[n] == n
