"""The engine interface (engine/base.py): one protocol for both engines, progress in documents."""

from __future__ import annotations

import os
import re
import select
import struct
import subprocess
import sys
import time

import pytest

from dedupkit.engine import Engine, LocalEngine, get_engine
from dedupkit.engine.base import ProgressTracker, report_progress
from tests.support import write_parquet


class Recorder:
    """A progress factory that keeps every bar it made and every update."""

    def __init__(self) -> None:
        self.bars: list[dict] = []

    def __call__(self, total, desc, unit="task"):
        rec = {"total": total, "desc": desc, "unit": unit, "updates": [], "closed": False}
        self.bars.append(rec)

        class Bar:
            def update(self, n=1):
                rec["updates"].append(n)

            def close(self):
                rec["closed"] = True

        return Bar()


def _steps(task):
    """Report a task's documents in steps, pausing so the driver sees them before it ends."""
    n, pause = task
    for _ in range(n):
        report_progress(1)
        time.sleep(pause)
    return n


def test_both_engines_are_engines_and_close_the_same_way():
    with get_engine("local", workers=2) as eng:
        assert isinstance(eng, Engine) and eng.distributed is False
        assert eng.map(abs, [-1, -2, 3]) == [1, 2, 3]
    assert eng._pool is None  # closed on leaving the block; closing again is harmless
    eng.close()
    from dedupkit.engine.ray import RayEngine

    assert RayEngine.distributed is True and issubclass(RayEngine, Engine)
    assert RayEngine.close is not Engine.close


def test_tracker_counts_documents_and_never_twice():
    rec = Recorder()
    t = ProgressTracker(rec, 3, "scan", sizes=[5, None, 3])
    t.report(0, 2)
    t.report(0, 9)  # clipped to the task's size
    t.finish(0)
    t.report(0, 1)  # late report of a finished task: ignored
    t.report(1, 4)
    t.finish(1)
    t.finish(2)
    t.close()
    bar = rec.bars[0]
    assert bar["total"] is None and bar["unit"] == "doc"  # one size unknown: no total, still docs
    assert bar["updates"] == [2, 3, 4, 3] and bar["closed"]
    rec2 = Recorder()
    t2 = ProgressTracker(rec2, 2, "buckets")
    t2.report(0, 7)  # counting tasks: in-task reports do not apply
    t2.finish(0)
    t2.finish(1)
    assert rec2.bars[0]["total"] == 2 and rec2.bars[0]["unit"] == "task" and rec2.bars[0]["updates"] == [1, 1]
    made = []

    def old_factory(total, desc):  # the older two-argument form still works
        made.append((total, desc))
        return Recorder()(total, desc)

    ProgressTracker(old_factory, 1, "old", sizes=[4]).finish(0)
    assert made == [(4, "old")]


@pytest.mark.parametrize("workers,tasks", [(1, [(4, 0.0)]), (2, [(3, 0.0)]), (2, [(3, 0.4), (2, 0.4), (1, 0.0)])])
def test_local_engine_moves_the_bar_inside_a_task(workers, tasks):
    rec = Recorder()
    with LocalEngine(workers=workers, progress=rec) as eng:
        assert eng.map(_steps, tasks, desc="scan", sizes=[n for n, _ in tasks]) == [n for n, _ in tasks]
    bar = rec.bars[0]
    total = sum(n for n, _ in tasks)
    assert bar["unit"] == "doc" and bar["total"] == total and sum(bar["updates"]) == total
    # documents arrive while tasks run, not one whole task at a time
    assert bar["updates"].count(1) >= (total if len(tasks) == 1 else 2)


@pytest.mark.slow
def test_one_shard_run_shows_documents_with_rate_and_eta(tmp_path):
    """`dedupkit exact` on one Parquet shard, stderr on a terminal: the scan bar counts documents."""
    fcntl = pytest.importorskip("fcntl")  # a pseudo-terminal: POSIX
    termios = pytest.importorskip("termios")
    write_parquet(tmp_path / "one.parquet", [{"text": f"document number {i} " * 5} for i in range(3000)],
                  row_group_size=500)
    master, slave = os.openpty()
    # a terminal of 120 columns (tqdm draws nothing on a terminal of width 0)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "dedupkit", "exact", str(tmp_path / "one.parquet"), "-o",
                             str(tmp_path / "out"), "--batch-size", "100"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=120)
    os.close(master)
    text = err.decode("utf-8", "replace")
    assert proc.returncode == 0, text
    assert re.search(r"exact: scan:.*/3\.00k", text), text  # a total in documents
    assert "doc/s" in text and "task" not in text.split("exact: scan")[1].split("\r")[0], text
