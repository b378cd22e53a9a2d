"""Where a ``dedupkit`` command's time goes, step by step (``benchmarks/ray.py --steps``).

Run as ``python -c "import _ray_steps; _ray_steps.main()" fuzzy ...`` with this folder on
PYTHONPATH and ``DEDUPKIT_BENCH_STEPS`` naming a JSON file: every ``Engine.map`` of the command
(local or Ray) is timed from the driver (wall) and inside each task (CPU seconds, when it
started), and the engine's start-up (for Ray: ``ray.init``, or the wait for the instance the CLI
prestarted) is recorded; the JSON is written when the process exits (after Ray's shutdown).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time

T0 = time.time()
_log: dict = {"t0": T0, "maps": [], "engine": []}


class Timed:
    """``fn(task)`` with the task's start time, CPU seconds and process id."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, task):
        t, c = time.time(), time.process_time()
        r = self.fn(task)
        return r, t, time.process_time() - c, os.getpid()


def _wrap_map(cls) -> None:
    orig = cls.map

    def map(self, fn, tasks, desc="", sizes=None):
        t = time.time()
        out = orig(self, Timed(fn), tasks, desc, sizes)
        starts = [s for _, s, _, _ in out]
        _log["maps"].append({"desc": desc, "tasks": len(tasks), "at": t - T0, "wall": time.time() - t,
                             "cpu": sum(c for _, _, c, _ in out),
                             "first_start": (min(starts) - t) if starts else 0.0,
                             "processes": len({p for *_, p in out})})
        return [r for r, *_ in out]

    cls.map = map


def install() -> None:
    from dedupkit.engine import local as L
    from dedupkit.engine import ray as R

    _wrap_map(L.LocalEngine)
    _wrap_map(R.RayEngine)
    connect = R.RayEngine._connect

    def _connect(self):
        t = time.time()
        connect(self)
        _log["engine"].append({"what": "ray engine ready (init or prestart wait)", "at": t - T0,
                               "wall": time.time() - t})

    R.RayEngine._connect = _connect

    def dump():
        _log["end"] = time.time() - T0
        path = os.environ.get("DEDUPKIT_BENCH_STEPS")
        if path:
            with open(path, "w") as fh:
                json.dump(_log, fh)

    atexit.register(dump)  # registered before Ray's: runs after Ray's shutdown


def main() -> None:
    install()
    from dedupkit.cli.main import main as cli_main

    sys.argv = ["dedupkit"] + sys.argv[1:]
    cli_main()
