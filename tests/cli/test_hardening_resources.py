"""Issue 15 items 11 and 12: file handles stay bounded, apply is linear, bad records are cheap."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import SRC


def _dedupkit(*args, nofile: int | None = None, cwd=None) -> subprocess.CompletedProcess:
    """The real command line in a subprocess, optionally under ``ulimit -n nofile``."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return subprocess.run([sys.executable, "-m", "dedupkit", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900, preexec_fn=limit)


def _one_row_shards(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        # seven distinct texts: most shards are duplicates of another, so every stage step runs
        text = f"document number {i % 7} says hello to the wide world of many small shards"
        (folder / f"s{i:05d}.jsonl").write_text(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    return folder


@pytest.mark.slow
def test_1100_one_row_shards_under_ulimit_1024(tmp_path):
    data = _one_row_shards(tmp_path / "data", 1100)
    for stage in ("exact", "fuzzy"):
        r = _dedupkit(stage, data, "-o", tmp_path / stage, "--id-column", "id", nofile=1024)
        assert r.returncode == 0, r.stderr[-2000:]
        s = json.loads((tmp_path / stage / "summary.json").read_text())
        assert s["counts"]["rows"] == 1100 and s["counts"]["kept"] == 7
    r = _dedupkit("apply", data, "--manifest", tmp_path / "exact", "--manifest", tmp_path / "fuzzy",
                  "-o", tmp_path / "clean", nofile=1024)
    assert r.returncode == 0, r.stderr[-2000:]
    written = sorted(p.name for p in (tmp_path / "clean").glob("*.jsonl") if p.stat().st_size)
    assert written == [f"s{i:05d}.jsonl" for i in range(7)]


def _apply_seconds_per_row(tmp_path: Path, n: int) -> float:
    data = _one_row_shards(tmp_path / f"data{n}", n)
    r = _dedupkit("exact", data, "-o", tmp_path / f"m{n}")
    assert r.returncode == 0, r.stderr[-2000:]
    t0 = time.perf_counter()
    r = _dedupkit("apply", data, "--manifest", tmp_path / f"m{n}", "-o", tmp_path / f"c{n}")
    assert r.returncode == 0, r.stderr[-2000:]
    return (time.perf_counter() - t0) / n


@pytest.mark.slow
def test_apply_time_per_row_does_not_grow_with_the_shard_count(tmp_path):
    # Quadratic apply (the whole manifest scanned per shard) made 8x the shards cost ~8x per row
    # (100 shards 3 s, 400 shards 33 s). Python start-up is amortised by the larger counts.
    small = _apply_seconds_per_row(tmp_path, 150)
    large = _apply_seconds_per_row(tmp_path, 1200)
    assert large < 2.5 * small, (small, large)


def _peak(*args) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one real command run (measured in a fresh parent)."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:], capture_output=True); "
            "print(r.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "dedupkit", *map(str, args)],
                         capture_output=True, text=True, env=env, timeout=900)
    rc, secs, rss = out.stdout.split()
    assert rc == "0", out
    return float(secs), int(rss)


@pytest.mark.slow
def test_bad_records_cost_no_more_than_good_ones(tmp_path):
    # The reproducer, at 1M lines: blank lines skipped with --on-bad-record skip used to
    # cost ~8x the time and ~2.6x the memory of as many good records (5M: 3.8 GB, 96 s).
    n = 1_000_000
    with gzip.open(tmp_path / "blank.jsonl.gz", "wb") as fh:
        fh.write(b"\n" * n)
    with gzip.open(tmp_path / "good.jsonl.gz", "wb") as fh:
        fh.write(b"".join(b'{"text": "document %d"}\n' % i for i in range(n)))
    t_bad, m_bad = _peak("exact", tmp_path / "blank.jsonl.gz", "-o", tmp_path / "b", "--on-bad-record", "skip")
    t_good, m_good = _peak("exact", tmp_path / "good.jsonl.gz", "-o", tmp_path / "g")
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["counts"]["bad_records"] == n and s["bad_records_listed"] == 1000
    assert s["bad_records"][999] == {"shard": str(tmp_path / "blank.jsonl.gz"), "row": 999, "line": 1000,
                                     "reason": "blank line"}
    import pyarrow.dataset as ds

    t = ds.dataset(str(tmp_path / "b" / "manifest")).to_table()
    assert len(t) == n and t.column("row").to_pylist()[-1] == n - 1
    assert set(t.column("reason").unique().to_pylist()) == {"bad record: blank line"}
    assert t_bad < 1.5 * t_good, (t_bad, t_good)
    assert m_bad < 1.5 * m_good, (m_bad, m_good)
