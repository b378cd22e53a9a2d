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

from conftest import SRC


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
