"""Shared helpers for the benchmark scripts: process-tree RSS sampling, timing, tables."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
    except OSError:
        pass
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    """Sum of RSS over a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += _rss_kb(p)
        stack.extend(_children(p))
    return total


def run_measured(cmd: list[str], env: dict | None = None, interval: float = 0.05, check: bool = True) -> dict:
    """Run a command with this checkout's src on PYTHONPATH.

    Returns wall seconds, CPU seconds (user + system of the process and every descendant it
    waited for, from wait4), the peak summed RSS of its process tree (MiB), stdout and stderr.
    """
    import tempfile

    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=e, stdout=out, stderr=err, text=True)
        peak = 0
        stop = threading.Event()

        def sample():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss_kb(proc.pid))
                stop.wait(interval)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if check and proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mib": peak / 1024,
            "stdout": stdout, "stderr": stderr, "returncode": proc.returncode}


def median_runs(cmd: list[str], repeats: int, before=None, env: dict | None = None) -> dict:
    runs = []
    for _ in range(repeats):
        if before:
            before()
        runs.append(run_measured(cmd, env=env))
    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "walls": [round(r["wall_s"], 2) for r in runs], "last": runs[-1]}


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:,.2f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


PY = sys.executable


def dir_bytes(path: Path) -> int:
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return total


def reshard(corpus: Path, shards: int, dest: Path, limit: int | None = None) -> tuple[list[str], int]:
    import pyarrow.parquet as pq

    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / f"done-{shards}.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        return meta["files"], meta["rows"]
    table = pq.read_table(corpus, columns=["id", "text"])
    if limit is not None:
        table = table.slice(0, limit)
    n = table.num_rows
    files = []
    for i in range(shards):
        a, b = i * n // shards, (i + 1) * n // shards
        f = dest / f"part-{i:03d}.parquet"
        pq.write_table(table.slice(a, b - a), f, row_group_size=8192)
        files.append(str(f))
    marker.write_text(json.dumps({"files": files, "rows": n}))
    return files, n
