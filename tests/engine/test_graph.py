"""The single-process connected components helper (engine/graph.py's component_roots)."""

import numpy as np
from hypothesis import given, settings, strategies as st

from dedupkit.engine.graph import component_roots


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
