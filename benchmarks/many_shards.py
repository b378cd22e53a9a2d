"""Many one-row shards under a low file-descriptor limit: exact, fuzzy and apply must finish, and
apply's time per row must not grow with the shard count (issue 15, item 11).

    python benchmarks/many_shards.py --work /tmp/many --counts 100,1000,10000 --nofile 256

For each count N it writes N one-row JSONL shards (seven distinct texts, so most rows are
duplicates and every stage step runs), then runs the real command line in a fresh process under
``ulimit -n NOFILE``: ``exact``, ``fuzzy``, and ``apply`` with both manifests. It prints a table and
writes benchmarks/results/many_shards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shards(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        text = f"document number {i % 7} says hello to the wide world of many small shards"
        (folder / f"s{i:06d}.jsonl").write_text(json.dumps({"id": f"d{i}", "text": text}) + "\n")


def _run(args: list[str], nofile: int, python: str) -> float:
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    p = subprocess.run([python, "-m", "dedupkit", *args], capture_output=True, text=True, env=env,
                       preexec_fn=limit)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"dedupkit {' '.join(args)} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="scratch folder (removed and recreated)")
    ap.add_argument("--counts", default="100,1000,10000", help="shard counts, comma-separated")
    ap.add_argument("--nofile", type=int, default=256, help="ulimit -n for every command")
    ap.add_argument("--python", default=sys.executable, help="python that runs dedupkit")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "many_shards.json"))
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    for n in [int(x) for x in a.counts.split(",")]:
        base = work / f"n{n}"
        data = base / "data"
        _shards(data, n)
        t_exact = _run(["exact", str(data), "-o", str(base / "exact"), "--id-column", "id", "-q"], a.nofile, a.python)
        t_fuzzy = _run(["fuzzy", str(data), "-o", str(base / "fuzzy"), "--id-column", "id", "-q"], a.nofile, a.python)
        t_apply = _run(["apply", str(data), "--manifest", str(base / "exact"), "--manifest", str(base / "fuzzy"),
                        "-o", str(base / "clean")], a.nofile, a.python)
        kept = sum(1 for p in (base / "clean").glob("*.jsonl") if p.stat().st_size)
        rows.append({"shards": n, "rows": n, "nofile": a.nofile, "exact_s": round(t_exact, 2),
                     "fuzzy_s": round(t_fuzzy, 2), "apply_s": round(t_apply, 2),
                     "apply_ms_per_row": round(1000 * t_apply / n, 3), "kept": kept})
        shutil.rmtree(base)
        r = rows[-1]
        print(f"{n:>7} shards: exact {r['exact_s']:.2f} s, fuzzy {r['fuzzy_s']:.2f} s, apply {r['apply_s']:.2f} s "
              f"({r['apply_ms_per_row']:.3f} ms/row), kept {kept}", file=sys.stderr)
    head = "| shards (1 row each) | ulimit -n | exact s | fuzzy s | apply s (2 manifests) | apply ms/row | kept |"
    print(head)
    print("|" + "---|" * 7)
    for r in rows:
        print(f"| {r['shards']:,} | {r['nofile']} | {r['exact_s']:.2f} | {r['fuzzy_s']:.2f} | {r['apply_s']:.2f} | "
              f"{r['apply_ms_per_row']:.3f} | {r['kept']} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "load": os.getloadavg(), "machine": platform.platform(),
                                       "cpus": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
