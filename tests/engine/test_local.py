"""dedupkit.engine.local: a pool started early by prestart() is the one the next engine uses."""

from __future__ import annotations

import os

from dedupkit.engine import local
from dedupkit.engine.local import LocalEngine, prestart


def _pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_prestarted_pool_is_adopted_once():
    prestart(2)
    warm = local._warm
    assert warm is not None and warm[0] == 2
    pool = warm[1]
    engine = LocalEngine(workers=2)
    try:
        out = engine.map(_pid, list(range(6)))
        assert [v for v, _ in out] == [x * x for x in range(6)]
        assert all(pid != os.getpid() for _, pid in out)  # ran in the workers
        assert engine._pool is pool and local._warm is None
    finally:
        engine.close()
    # another size, or a second engine, starts its own pool
    prestart(3)
    try:
        other = LocalEngine(workers=2)
        other.map(_pid, [1, 2])
        assert other._pool is not local._warm[1]
        other.close()
    finally:
        local._warm[1].shutdown(cancel_futures=True)
        local._warm = None
