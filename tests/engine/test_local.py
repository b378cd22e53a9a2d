"""dedupkit.engine.local: a pool started early by prestart() is the one the next engine uses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dedupkit.engine import local
from dedupkit.engine.local import LocalEngine, prestart
from tests.support import SRC


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


_FROZEN_WORKER_SCRIPT = r"""
import os, signal, sys, time
from dedupkit.engine.local import LocalEngine

def _pid(x):
    return os.getpid()

if __name__ == "__main__":
    engine = LocalEngine(workers=2)
    pids = sorted(set(engine.map(_pid, list(range(8)))))
    time.sleep(0.3)  # both idle now, waiting on the task queue
    # A worker that cannot read its stop sentinel: stands for one killed while it held the task
    # queue's read lock (the other then blocks on that lock for ever).
    os.kill(pids[0], signal.SIGSTOP)
    t = time.perf_counter()
    engine.close(wait=%s)
    print(round(time.perf_counter() - t, 1), flush=True)
"""


@pytest.mark.parametrize("wait", [True, False])
def test_close_stops_workers_that_cannot_take_a_stop_sentinel(tmp_path, wait):
    """close() terminates its idle workers instead of queueing sentinels for them: a worker that
    cannot read the sentinel (frozen here; killed holding the queue lock under the OOM killer)
    used to hang close(wait=True), or with wait=False the interpreter's exit, for ever."""
    script = tmp_path / "frozen.py"
    script.write_text(_FROZEN_WORKER_SCRIPT % wait)
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90,
                           env=env, start_new_session=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"close(wait={wait}) with a frozen worker hung: the process did not exit in 90 s")
    assert p.returncode == 0, p.stderr
    assert float(p.stdout.split()[0]) < 30


def test_a_worker_dead_between_two_maps_gives_the_one_line_error():
    """A worker killed between two maps of one engine (the OOM killer, while the driver groups)
    breaks the pool, and the next map's submit() raises; that must be dedupkit's error with its
    fix, not a BrokenProcessPool traceback (CI's test_kill_and_resume[exact-one-worker])."""
    import signal
    import time

    from dedupkit.errors import DedupkitError

    engine = LocalEngine(workers=2)
    try:
        pids = sorted({pid for _, pid in engine.map(_pid, list(range(8)))})
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.time() + 30
        while not engine._pool._broken and time.time() < deadline:  # the pool notices in the background
            time.sleep(0.01)
        assert engine._pool._broken
        with pytest.raises(DedupkitError, match="a worker process died unexpectedly"):
            engine.map(_pid, list(range(8)))
        assert engine._pool is None  # stopped; a later map starts a new pool
        assert [v for v, _ in engine.map(_pid, [1, 2, 3])] == [1, 4, 9]
    finally:
        engine.close()
