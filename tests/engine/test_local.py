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


def _origin(_: int) -> dict:
    """Where a worker came from: its parent's threads and command line, what it had imported."""
    ppid = os.getppid()
    with open(f"/proc/{ppid}/cmdline", "rb") as fh:
        cmd = fh.read()
    return {"pid": os.getpid(), "parent": ppid, "parent_threads": len(os.listdir(f"/proc/{ppid}/task")),
            "parent_cmd": cmd, "preloaded": "dedupkit.engine.preload" in sys.modules}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_are_forked_from_a_single_threaded_server_that_preloaded_the_scan():
    """The pool's workers are forked from a fork server (not spawned: a spawned worker re-imports
    numpy, pyarrow and dedupkit, ~0.3 CPU s each), which imported the scan's modules before the
    fork and has one thread (numpy's BLAS pool and jemalloc's purging thread are kept from
    starting), so the fork cannot copy a lock another thread held."""
    engine = LocalEngine(workers=2)
    try:
        got = engine.map(_origin, list(range(6)))
    finally:
        engine.close()
    parents = {g["parent"] for g in got}
    assert len(parents) == 1 and os.getpid() not in parents  # one server, not this process
    assert all(b"forkserver" in g["parent_cmd"] for g in got)
    assert all(g["preloaded"] for g in got)
    assert all(g["parent_threads"] == 1 for g in got), got


_END_SCRIPT = r"""
import os, sys, time
from dedupkit.engine.local import LocalEngine

def burn(_):
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    return os.getpid(), os.getppid()

if __name__ == "__main__":
    engine = LocalEngine(workers=2)
    got = engine.map(burn, [0, 1])
    engine.close(wait=%s)
    print(" ".join(str(p) for p in sorted({p for pair in got for p in pair})), flush=True)
    %s
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("wait", [True, False])
def test_no_process_outlives_the_command_and_its_cpu_is_counted(tmp_path, wait):
    """When the command exits, its fork server has been killed and reaped, and with it the workers
    the server reaped: none is left running, and their CPU time counts in the command's (what
    ``time`` and the benchmarks measure; the server is not this process's child otherwise waited
    for)."""
    script = tmp_path / "end.py"
    script.write_text(_END_SCRIPT % (wait, "pass"))
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        left = [pid for pid in map(int, out.split()) if _alive(pid)]
    finally:
        p.stdout.close()
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(out.split()) == 3  # two workers and their server
    assert not left
    # the script's own CPU is well below 0.6 s; its two workers burnt 0.3 s each
    assert ru.ru_utime + ru.ru_stime >= 0.6, ru


_MAIN_KILLED_SCRIPT = _END_SCRIPT.replace("engine.close(wait=%s)", "pass  # %s") % (
    True, "os.kill(os.getpid(), 9)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_and_server_exit_when_the_main_process_is_killed(tmp_path):
    """SIGKILL of the main process (the OOM killer): the workers, whose parent is the fork server
    and not the main process, see the main process's end on their pipe from it and exit; the
    server then exits too."""
    import time

    script = tmp_path / "killed.py"
    script.write_text(_MAIN_KILLED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120,
                       start_new_session=True)
    assert p.returncode == -9
    pids = [int(x) for x in p.stdout.split()]
    assert len(pids) == 3
    deadline = time.time() + 60
    while any(_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.05)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:
        os.kill(pid, 9)
    assert not left, "worker processes or their server kept running after the main process died"


def _env(name: str) -> str | None:
    return os.environ.get(name)


def test_workers_see_the_environment_of_the_engine_not_of_the_fork_server(monkeypatch):
    """The fork server keeps the environment it started with; workers get the main process's
    environment of when their pool started, as spawned ones did (credentials set since, say)."""
    first = LocalEngine(workers=2)
    try:
        first.map(_pid, [1, 2])  # the fork server runs from here on
    finally:
        first.close()
    monkeypatch.setenv("DEDUPKIT_TEST_LOCAL_ENV", "set-later")
    engine = LocalEngine(workers=2)
    try:
        assert engine.map(_env, ["DEDUPKIT_TEST_LOCAL_ENV"] * 4) == ["set-later"] * 4
    finally:
        engine.close()
