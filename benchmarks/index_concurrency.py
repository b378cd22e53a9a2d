#!/usr/bin/env python3
"""Throughput of N concurrent `dedupkit check --update` runs against one Redis index, and Redis memory
per indexed document.

One command:

  python benchmarks/index_concurrency.py [--held 20000] [--drop 2000] [--ns 1,2,4,8] \\
      [--corpus FILE.jsonl] [--results benchmarks/results/index_concurrency.json]

It starts its own redis-server (free port, append-only file with fsync every second, in a temporary
folder), builds one index of --held documents (`dedupkit index create`, exact and fuzzy keys), then
for each N in turn starts N `dedupkit check --update` processes at once, each on its own drop of
--drop documents (10% copies of indexed documents, 10% documents that every drop of the round
holds, the rest new); the index grows by the kept documents of each round, as a CI index would. Throughput is all drops' documents over the wall time from the first start to
the last exit. Checks take the index's writer lock from their lookups to their commit (so their
decisions are those of a serial order); the table shows how long they waited for it. It also checks
the outcome: the documents that every drop holds were added to the index exactly once.

Memory: Redis `used_memory` (INFO memory) after building the index minus before, per indexed document.

Texts: --corpus takes them from a JSONL file (field `text`, one document a line, enough lines for
the held corpus and all drops); without it they are generated (200 words from a 3,000-word
vocabulary, seeded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from index import start_redis  # noqa: E402  (benchmarks/index.py: redis-server on a free port)


def texts_source(corpus: str | None, need: int):
    if corpus:
        out = []
        with open(corpus) as fh:
            for line in fh:
                out.append(json.loads(line)["text"])
                if len(out) == need:
                    return out
        sys.exit(f"{corpus}: {len(out)} documents, the benchmark needs {need}")
    import numpy as np

    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}x{(i * 7919) % 1000}" for i in range(3000)])
    words = vocab[rng.integers(0, len(vocab), size=(need, 200))]
    return [" ".join(row) for row in words.tolist()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def spawn(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "dedupkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def must(p: subprocess.Popen, what: str) -> tuple[str, str]:
    out, err = p.communicate()
    if p.returncode != 0:
        sys.exit(f"{what} failed with exit code {p.returncode}:\n{err[-3000:]}")
    return out, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--held", type=int, default=100000, help="documents in the index")
    ap.add_argument("--drop", type=int, default=5000, help="documents per drop")
    ap.add_argument("--ns", default="1,2,4,8", help="concurrent checks per round")
    ap.add_argument("--stages", default="exact,fuzzy")
    ap.add_argument("--corpus", default=None, help="JSONL with a `text` field (default: generated texts)")
    ap.add_argument("--redis-server", default=None, help="redis-server executable (default: on PATH)")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "index_concurrency.json"))
    a = ap.parse_args()
    ns = [int(x) for x in a.ns.split(",")]
    exe = a.redis_server or shutil.which("redis-server")
    if not exe:
        sys.exit("redis-server not found: apt-get install redis-server, or pass --redis-server")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="dedupkit-bench-conc-"))
    work.mkdir(parents=True, exist_ok=True)
    n_new = sum(ns) * a.drop
    pool = texts_source(a.corpus, a.held + n_new)
    held, fresh = pool[:a.held], pool[a.held:]
    write_jsonl(work / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(held)])
    proc, port, client = start_redis(exe, work, appendonly=True)
    load = os.getloadavg()
    results: dict = {"held_docs": a.held, "drop_docs": a.drop, "stages": a.stages, "cpus": os.cpu_count(),
                     "loadavg_before": [round(x, 2) for x in load], "texts": a.corpus or "generated", "rounds": []}
    try:
        mem0 = client.info("memory")["used_memory"]
        loc = f"redis://127.0.0.1:{port}/0?prefix=bench"
        print(f"building the index of {a.held} documents ...", file=sys.stderr)
        t0 = time.perf_counter()
        must(spawn(["index", "create", loc, "--from", str(work / "held.jsonl"), "--stages", a.stages,
                    "--id-column", "id", "-q"]), "index create")
        results["build_s"] = round(time.perf_counter() - t0, 2)
        mem1 = client.info("memory")["used_memory"]
        results["redis_used_memory_bytes"] = mem1 - mem0
        results["redis_bytes_per_doc"] = round((mem1 - mem0) / a.held, 1)
        for n in ns:
            before = json.loads(must(spawn(["index", "info", loc, "--json"]), "index info")[0])["documents"]
            # Drops: 10% copies of indexed documents, 10% shared by every drop of the round, the rest new.
            n_copy = n_shared = a.drop // 10
            shared, rest, fresh = fresh[:n_shared], fresh[n_shared:n * a.drop], fresh[n * a.drop:]
            drops = []
            for k in range(n):
                own = rest[k * (a.drop - n_copy - n_shared):(k + 1) * (a.drop - n_copy - n_shared)]
                docs = held[k * n_copy:(k + 1) * n_copy] + shared + own
                p = work / f"n{n}" / f"drop{k}.jsonl"
                write_jsonl(p, [{"id": f"n{n}d{k}-{j}", "text": t} for j, t in enumerate(docs)])
                drops.append(p)
            print(f"[N={n}] {n} concurrent checks of {a.drop} documents ...", file=sys.stderr)
            t0 = time.perf_counter()
            procs = [spawn(["check", str(d), "--against", loc, "-o", str(work / f"n{n}" / f"out{k}"), "--update",
                            "--id-column", "id", "--json"]) for k, d in enumerate(drops)]
            outs = []
            ends = []
            for k, p in enumerate(procs):
                out, err = must(p, f"check {k}")
                ends.append(time.perf_counter() - t0)
                outs.append(json.loads(out))
            wall = max(ends)
            added = sum(s["check"]["added_to_index"] for s in outs)
            info = json.loads(must(spawn(["index", "info", loc, "--json"]), "index info")[0])
            # The shared documents were added exactly once (by whichever check committed first).
            shared_kept = sum(1 for k in range(n) for r in _kept_ids(work / f"n{n}" / f"out{k}")
                              if a.drop // 10 <= int(r.split("-")[1]) < 2 * (a.drop // 10))
            row = {"n": n, "docs": n * a.drop, "wall_s": round(wall, 2), "docs_per_s": round(n * a.drop / wall),
                   "index_docs_before": before,
                   "check_s_median": round(statistics.median(s["timings"]["total_s"] for s in outs), 2),
                   "lock_held_s_median": round(statistics.median(s["check"]["lock_held_s"] for s in outs), 2),
                   "lock_wait_s_max": round(max(s["check"]["lock_wait_s"] for s in outs), 2),
                   "added": added, "index_docs_after": info["documents"],
                   "shared_docs_added": shared_kept, "shared_docs_expected": n_shared}
            if shared_kept != n_shared or info["documents"] != before + added:
                sys.exit(f"wrong outcome at N={n}: {row}")
            results["rounds"].append(row)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results).write_text(json.dumps(results, indent=1))
    print(f"{'N':>3} {'docs':>7} {'wall s':>7} {'docs/s':>7} {'check s (median)':>17} {'lock held s (median)':>21} "
          f"{'max lock wait s':>16} {'added':>6} {'shared added':>13}")
    for r in results["rounds"]:
        print(f"{r['n']:>3} {r['docs']:>7} {r['wall_s']:>7} {r['docs_per_s']:>7} {r['check_s_median']:>17} "
              f"{r['lock_held_s_median']:>21} {r['lock_wait_s_max']:>16} {r['added']:>6} "
              f"{r['shared_docs_added']:>6}/{r['shared_docs_expected']:<6}")
    print(f"Redis memory per indexed document ({a.stages}): {results['redis_bytes_per_doc']:.0f} bytes "
          f"(used_memory after `index create` of {a.held} documents, minus before)")
    print(f"load average before/after: {results['loadavg_before']} / {results['loadavg_after']}; "
          f"results in {a.results}")


def _kept_ids(out: Path) -> list[str]:
    import pyarrow.dataset as ds

    t = ds.dataset(str(out / "manifest"), format="parquet").to_table(columns=["doc_id", "keep"])
    return [d for d, k in zip(t.column("doc_id").to_pylist(), t.column("keep").to_pylist()) if k]


if __name__ == "__main__":
    main()
